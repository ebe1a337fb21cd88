"""The cluster without Docker, end to end: PostgreSQL, a Ray head and two workers on this
machine; a real job submitted from outside; one worker killed mid-job; then all stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from sqlalchemy import func, select

from tunelab.platform import cluster, jobs
from tunelab.platform.kinds import candidate_key, get_kind
from tunelab.platform.spec import parse_spec
from tunelab.schema.db import get_engine
from tunelab.schema.models import Trial

SPEC = {
    "name": "on-the-cluster",
    "kind": "pipeline-search",
    "workload": {"M": 64, "N": 64, "K": 64},
    "space": {"tile_m": [16, 32], "tile_n": [32, 64], "tile_k": [16, 32], "micro_m": [2, 4],
              "micro_n": [8], "stages": [1, 2], "reg_stages": [1]},
    "measure": {"repeats": 3, "min_repeat_ms": 100},
}  # fmt: skip


def _cannot_start_postgres() -> str | None:
    try:
        cluster._pg_bin("initdb")
    except cluster.ClusterError as exc:
        return str(exc)
    return None


def _ours(state: cluster.ClusterState) -> list[psutil.Process]:
    """Processes that belong to the cluster: Ray's under its temp dir, its PostgreSQL."""
    marks = [state.temp_dir] + ([state.postgres_dir] if state.postgres_dir else [])
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if any(m in cmdline for m in marks):
            found.append(proc)
    return found


def _answers(url: str, timeout_s: float = 90) -> bool:
    """Streamlit's health endpoint says ok within `timeout_s`."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as resp:
                if resp.read().strip() == b"ok":
                    return True
        except OSError:
            pass
        time.sleep(1)
    return False


def test_up_refuses_bad_sizes() -> None:
    with pytest.raises(cluster.ClusterError, match="at least 2 CPUs"):
        cluster.up(cpus_per_worker=1)
    with pytest.raises(cluster.ClusterError, match="at least one worker"):
        cluster.up(workers=0)
    assert cluster.status() is None  # nothing was started or recorded


@pytest.mark.slow
@pytest.mark.skipif(_cannot_start_postgres() is not None, reason="no PostgreSQL server binaries")
def test_cluster_runs_a_job_survives_a_lost_worker_and_stops_cleanly(tmp_path: Path) -> None:
    state = cluster.up(workers=2, cpus_per_worker=2, dashboard=True)
    try:
        assert state.postgres_dir and ":" in state.ray_address
        info = cluster.status()
        assert info is not None and all(p["running"] for p in info["processes"])
        roles = [p["role"] for p in info["processes"]]
        assert roles == ["ray-head", "ray-cpu-worker-0", "ray-cpu-worker-1", "dashboard",
                         "postgres"]  # fmt: skip
        assert state.tunelab_dashboard_url and _answers(state.tunelab_dashboard_url)

        spec_path = tmp_path / "job.yaml"
        spec_path.write_text(yaml.safe_dump(SPEC))
        env = {**os.environ, **state.env()}  # a client outside the cluster
        submit = subprocess.Popen(
            [sys.executable, "-m", "tunelab.platform.cli", "submit", str(spec_path), "--wait"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        engine = get_engine(state.db_url)
        deadline = time.monotonic() + 300
        while True:
            assert submit.poll() is None, submit.communicate()
            assert time.monotonic() < deadline, "no trials recorded on both workers in time"
            job_list = jobs.list_jobs(engine)
            if job_list:
                nodes = {t.worker_node for t in jobs.trials(engine, job_list[0].id)}
                if len(nodes) == 2:
                    break
            time.sleep(0.5)
        # Lose a worker node for good while the job runs: its whole process tree, SIGKILL.
        victim = next(p for p in state.procs if p.role == "ray-cpu-worker-1")
        tree = cluster._tree(victim)
        for proc in tree:
            proc.send_signal(signal.SIGKILL)
        psutil.wait_procs(tree, timeout=10)

        stdout, stderr = submit.communicate(timeout=600)
        assert submit.returncode == 0, stderr[-3000:]
        job_id = int(stdout.split()[0])
        spec = parse_spec(SPEC)
        kind = get_kind(spec.kind)
        space = {candidate_key(p) for p in kind.space(spec) + kind.baselines(spec)}
        trials = jobs.trials(engine, job_id)
        assert {t.candidate for t in trials} == space  # nothing lost
        with engine.connect() as conn:
            n = conn.execute(select(func.count()).where(Trial.job_id == job_id)).scalar_one()
        assert n == len(space) == 32 + 2  # nothing twice (32 candidates + NumPy, 2 threads and 1)
        assert {t.status for t in trials} == {"ok"}, [
            (t.status, t.error, t.attempt_errors) for t in trials if t.status != "ok"
        ]
        assert len({t.worker_node for t in trials}) == 2  # both workers measured

        # The Jobs API route: the client needs only the Ray dashboard URL and the token.
        small = {**SPEC, "name": "via-jobs-api", "space": {**SPEC["space"], "tile_m": [16],
                 "tile_n": [32], "tile_k": [16], "micro_m": [2]}}  # fmt: skip
        spec_path.write_text(yaml.safe_dump(small))
        client_env = {k: v for k, v in env.items() if k not in ("TUNELAB_DB_URL", "RAY_ADDRESS")}
        via_api = subprocess.run(
            [sys.executable, "-m", "tunelab.platform.cli", "submit", str(spec_path), "--wait",
             "--jobs-api", state.dashboard_url],
            env=client_env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert via_api.returncode == 0, via_api.stderr[-3000:]
        assert via_api.stdout.strip().startswith("tunelab-via-jobs-api-")
        assert "SUCCEEDED" in via_api.stderr and "Best 2 trials" in via_api.stderr
        recorded = [j for j in jobs.list_jobs(engine) if j.name == "via-jobs-api"]
        assert [(j.status, j.n_done) for j in recorded] == [("completed", 2 + 2)]  # + NumPy x2

        # Neither RAY_ADDRESS nor a token given: a submit from this data directory joins
        # the cluster `tunelab cluster up` runs from it instead of starting a local Ray.
        spec_path.write_text(yaml.safe_dump({**small, "name": "joins-the-cluster"}))
        local_env = {k: v for k, v in env.items() if not k.startswith("RAY_")}
        joined = subprocess.run(
            [sys.executable, "-m", "tunelab.platform.cli", "submit", str(spec_path), "--wait"],
            env=local_env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert joined.returncode == 0, joined.stderr[-3000:]
        assert "Started a local Ray instance" not in joined.stderr
        assert "Token authentication is enabled" not in joined.stderr
        job_id = int(joined.stdout.split()[0])
        assert {t.worker_node for t in jobs.trials(engine, job_id)} <= {
            t.worker_node for t in trials
        }  # measured on the cluster's (surviving) worker
    finally:
        stopped = cluster.down()
    assert "ray-head" in stopped and "postgres" in stopped
    assert cluster.status() is None
    leftovers = _ours(state)
    assert leftovers == [], [p.info["cmdline"] for p in leftovers]
