"""The `tunelab` command line: exit codes, nothing written on bad input, queries and exports."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tunelab.platform import api, jobs
from tunelab.schema.db import get_engine
from tunelab.schema.models import JobStatus

SPEC = {
    "name": "cli",
    "kind": "pipeline-search",
    "workload": {"M": 64, "N": 64, "K": 64},
    "space": {
        "tile_m": [16, 32],
        "tile_n": [32],
        "tile_k": [16],
        "micro_m": [2],
        "micro_n": [8],
        "stages": [1, 2],
        "reg_stages": [1],
    },
    "measure": {"repeats": 3},
}


def tunelab(*args: str, check: int | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "tunelab.platform.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ.copy(),
    )
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def said(proc: subprocess.CompletedProcess[str]) -> str:
    """stderr with the line breaks rich adds to fit the terminal undone."""
    return " ".join(proc.stderr.split())


def write_spec(tmp_path: Path, data: dict, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_help_explains_exit_codes() -> None:
    proc = tunelab("--help", check=0)
    assert "Exit codes" in proc.stdout and "submit" in proc.stdout


def test_every_subcommand_runs_as_a_module() -> None:
    """`python -m tunelab.platform.cli` knows every command, the last defined included."""
    for group, command in (("replay", "run"), ("replay", "save"), ("db", "upgrade")):
        proc = tunelab(group, command, "--help", check=0)
        assert f"{group} {command} [OPTIONS]" in proc.stdout


def test_invalid_spec_exits_2_and_writes_nothing(tmp_path: Path, sqlite_url: str) -> None:
    bad = write_spec(tmp_path, {**SPEC, "search": {"budget": -1}})
    proc = tunelab("submit", str(bad), "--db", sqlite_url, check=2)
    assert "search.budget" in proc.stderr
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()  # not even created
    unknown = write_spec(tmp_path, {**SPEC, "kind": "teleport"}, "unknown.yaml")
    assert "unknown job kind" in tunelab("submit", str(unknown), check=2).stderr
    missing = tunelab("submit", str(tmp_path / "nope.yaml"), check=2)
    assert "no such spec file" in missing.stderr


def test_unreachable_database_exits_3(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPEC)
    proc = tunelab("submit", str(spec), "--db", "postgresql://postgres@127.0.0.1:1/x", check=3)
    assert "cannot reach database" in proc.stderr
    assert "cannot reach" in tunelab("jobs", "--db", "postgresql://u@127.0.0.1:1/x", check=3).stderr


def test_unknown_job_exits_4(sqlite_url: str) -> None:
    assert "no job 42" in tunelab("show", "42", "--db", sqlite_url, check=4).stderr
    tunelab("resume", "42", "--db", sqlite_url, check=4)
    tunelab("cancel", "42", "--db", sqlite_url, check=4)


@contextmanager
def http_server(status: int) -> Iterator[str]:
    """A loopback HTTP server answering every GET with `status`; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(status)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow  # each submission loads Ray's Jobs API client: seconds apiece
def test_jobs_api_errors_exit_codes(tmp_path: Path) -> None:
    """--jobs-api: no answer is exit 3, an unusable address exit 2, anything else exit 1
    with the error's type; never a traceback."""
    spec = write_spec(tmp_path, SPEC)
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    refused = tunelab("submit", str(spec), "--jobs-api", f"http://127.0.0.1:{closed}", check=3)
    assert "cannot reach the Ray Jobs API" in said(refused)
    bad = tunelab("submit", str(spec), "--jobs-api", "http://127.0.0.1:99999", check=2)
    assert "not a Ray Jobs API address" in said(bad)
    with http_server(500) as url:
        failed = tunelab("submit", str(spec), "--jobs-api", url, check=1)
    assert "HTTPError" in said(failed)
    for proc in (refused, bad, failed):
        assert "Traceback" not in proc.stderr


def test_cluster_up_twice_exits_2() -> None:
    """A cluster recorded as up (here: a state naming this live test process) is refused as
    bad input, before anything starts."""
    import psutil

    from tunelab.platform import cluster

    directory = cluster.state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    me = psutil.Process()
    proc = cluster.Proc("ray-head", me.pid, me.create_time(), str(directory / "head.log"), [])
    state = cluster.ClusterState("127.0.0.1:1", "http://127.0.0.1:1", "sqlite://", "", "", [proc])
    cluster._save(state, directory)
    assert "already up" in said(tunelab("cluster", "up", check=2))


def test_background_resume_refuses_like_the_driver(sqlite_url: str) -> None:
    """`resume` without --wait refuses, before starting a driver, what the driver would."""
    from tunelab.platform.spec import parse_spec

    engine = get_engine(sqlite_url)
    job_id = jobs.create_job(engine, parse_spec(SPEC))
    jobs.claim(engine, job_id)  # running, with a fresh heartbeat
    running = tunelab("resume", str(job_id), "--db", sqlite_url, check=4)
    assert "use --force" in running.stderr
    jobs.finish(engine, job_id, JobStatus.completed)  # (a cancelled job can be resumed)
    assert "nothing to run" in tunelab("resume", str(job_id), "--db", sqlite_url, check=4).stderr
    assert not api.driver_log_path(job_id, db=sqlite_url).exists()
    assert list((Path(os.environ["TUNELAB_DATA_DIR"]) / "logs").rglob("*.log")) == []


def test_empty_database(sqlite_url: str) -> None:
    assert "no jobs yet" in tunelab("jobs", "--db", sqlite_url, check=0).stdout
    assert json.loads(tunelab("jobs", "--db", sqlite_url, "--format", "json", check=0).stdout) == []


@pytest.mark.slow
def test_submit_wait_then_query_and_export(tmp_path: Path, db_url: str, ray_cluster: str) -> None:
    spec = write_spec(tmp_path, SPEC)
    proc = tunelab("submit", str(spec), "--wait", "--db", db_url, "--ray", ray_cluster, check=0)
    job_id = int(proc.stdout.split()[0])
    # Four searched candidates, ranked; NumPy's matmul measured beside them (two baselines).
    assert "Best 4 trials" in proc.stdout and "database:" in proc.stdout
    # NumPy at the candidates' threads and at one, each in a process of its own.
    assert "baseline numpy" in proc.stdout and "baseline numpy@1t" in proc.stdout

    listed = json.loads(tunelab("jobs", "--db", db_url, "--format", "json", check=0).stdout)
    assert [(j["id"], j["status"], j["done"]) for j in listed] == [(job_id, "completed", 6)]
    assert "completed" in tunelab("show", str(job_id), "--db", db_url, check=0).stdout

    top = json.loads(
        tunelab(
            "trials", str(job_id), "--top", "2", "--format", "json", "--db", db_url, check=0
        ).stdout
    )
    assert len(top) == 2 and top[0]["latency_median_s"] <= top[1]["latency_median_s"]
    assert {"param_tile_m", "param_stages", "worker_node", "error"} <= set(top[0])
    rows = list(
        csv.DictReader(
            tunelab(
                "trials", str(job_id), "--status", "ok", "--format", "csv", "--db", db_url, check=0
            ).stdout.splitlines()
        )
    )
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}

    for fmt in ("csv", "jsonl", "parquet"):
        out = tmp_path / f"trials.{fmt}"
        tunelab("export", str(job_id), "--format", fmt, "-o", str(out), "--db", db_url, check=0)
        if fmt == "parquet":
            table = pq.read_table(out)
            assert table.num_rows == 6 and "param_stages" in table.column_names
        elif fmt == "jsonl":
            assert len(out.read_text().splitlines()) == 6
        else:
            assert len(list(csv.DictReader(out.open()))) == 6
    # A completed job cannot be cancelled or resumed.
    tunelab("cancel", str(job_id), "--db", db_url, check=4)
    tunelab("resume", str(job_id), "--wait", "--db", db_url, check=4)


@pytest.mark.slow
def test_background_submit_and_cancel(tmp_path: Path, sqlite_url: str, ray_cluster: str) -> None:
    many = {
        **SPEC,
        "space": {},
        "search": {"strategy": "random", "budget": 200},
        "measure": {"repeats": 3, "min_repeat_ms": 50},
    }
    spec = write_spec(tmp_path, many)
    proc = tunelab("submit", str(spec), "--db", sqlite_url, "--ray", ray_cluster, check=0)
    job_id = int(proc.stdout.strip())
    log = api.driver_log_path(job_id, db=sqlite_url)
    assert f"driver log: {log}" in said(proc)  # kept per database: job ids are per database
    assert log.parent.parent == Path(os.environ["TUNELAB_DATA_DIR"]) / "logs"
    engine = get_engine(sqlite_url)
    deadline = time.monotonic() + 300
    while jobs.get_job(engine, job_id).n_done < 2:
        assert time.monotonic() < deadline, "background driver recorded nothing"
        time.sleep(0.3)
    tunelab("cancel", str(job_id), "--db", sqlite_url, check=0)
    time.sleep(4)  # the driver notices within about a second and stops
    job = jobs.get_job(engine, job_id)
    n = job.n_done
    time.sleep(3)
    job = jobs.get_job(engine, job_id)
    assert job.status == "cancelled" and job.n_done == n < 200
    assert log.exists()
    assert f"driver log: {log}" in tunelab("show", str(job_id), "--db", sqlite_url, check=0).stdout


@pytest.mark.slow
def test_a_job_with_no_correct_trial_is_no_success(
    tmp_path: Path, sqlite_url: str, ray_cluster: str
) -> None:
    """It completes (every candidate was tried) but found nothing: `--wait` exits 1, why."""
    faulty = {
        "name": "faulty",
        "kind": "testing-faulty",
        "workload": {"faults": ["wrong", "error"]},
    }
    spec = write_spec(tmp_path, faulty)
    why = "no trial produced a correct result: 1 run_error, 1 wrong_result"
    proc = tunelab("submit", str(spec), "--wait", "--db", sqlite_url, "--ray", ray_cluster, check=1)
    job_id = int(proc.stdout.split()[0])
    assert f"job {job_id} completed, but {why}" in said(proc)
    assert jobs.get_job(get_engine(sqlite_url), job_id).status == "completed"
    pending = api.create(faulty, db=sqlite_url)  # recorded, not run: resume runs it
    proc = tunelab("resume", str(pending), "--wait", "--db", sqlite_url, "--ray", ray_cluster,
                   check=1)  # fmt: skip
    assert f"job {pending} completed, but {why}" in said(proc)


@pytest.mark.slow
def test_a_resumed_job_s_progress_counts_what_was_recorded_before(
    sqlite_url: str, ray_cluster: str
) -> None:
    """Six of ten trials recorded by an earlier run: the bar ends at 10/10, ok 10."""
    from tunelab.platform.kinds import candidate_key
    from tunelab.platform.recorder import Recorder
    from tunelab.platform.spec import parse_spec
    from tunelab.schema.models import JobStatus, TrialStatus

    engine = get_engine(sqlite_url)
    job_id = jobs.create_job(engine, parse_spec({"name": "half", "kind": "testing-trivial",
                                                 "workload": {"n": 10}}))  # fmt: skip
    recorder = Recorder(engine, job_id)
    for i in range(6):
        recorder.add(candidate=candidate_key({"i": i}), params={"i": i}, status=TrialStatus.ok,
                     latencies_s=[0.5e-6])  # fmt: skip
    recorder.flush()
    jobs.finish(engine, job_id, JobStatus.interrupted)
    proc = tunelab("resume", str(job_id), "--wait", "--db", sqlite_url, "--ray", ray_cluster,
                   check=0)  # fmt: skip
    bar = said(proc)
    assert "10/10" in bar and "ok 10 " in bar and "best 0.5 µs" in bar, bar
    assert len(api.trials(job_id, db=sqlite_url)) == 10
