"""What the command line takes in and gives out: spec files read strictly (encoding,
duplicate keys, booleans for numbers), options checked, exports that never clobber a file,
JSON that nests, tables that fit 80 columns, driver logs kept per database. No Ray."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from sqlalchemy import update
from typer.testing import CliRunner

from tunelab.platform import api, jobs
from tunelab.platform.cli import app
from tunelab.platform.kinds import candidate_key, get_kind
from tunelab.platform.recorder import Recorder
from tunelab.platform.spec import SpecError, load_spec, parse_spec
from tunelab.schema.db import get_engine
from tunelab.schema.models import Job, JobStatus, TrialStatus

SPEC = {
    "name": "input",
    "kind": "pipeline-search",
    "workload": {"M": 64, "N": 64, "K": 64},
    "space": {"tile_m": [16, 32], "tile_n": [32], "tile_k": [16], "micro_m": [2],
              "micro_n": [8], "stages": [1, 2], "reg_stages": [1]},
}  # fmt: skip


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def tunelab(*args: str, check: int | None = None, columns: int | None = None) -> Ran:
    """Run the command line: in this process (an unexpected exception fails the test with
    its traceback), or, to set the terminal's width, as a program of its own."""
    if columns is None:
        result = CliRunner().invoke(app, list(args))
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        ran = Ran(result.exit_code, result.stdout, result.stderr)
    else:
        env = {**os.environ, "COLUMNS": str(columns)}
        proc = subprocess.run(
            [sys.executable, "-m", "tunelab.platform.cli", *args],
            capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
        ran = Ran(proc.returncode, proc.stdout, proc.stderr)
        assert "Traceback" not in ran.stderr, ran.stderr
    if check is not None:
        assert ran.returncode == check, f"exit {ran.returncode}\n{ran.stdout}\n{ran.stderr}"
    return ran


def said(proc: Ran) -> str:
    """stderr with the line breaks rich adds to fit the terminal undone."""
    return " ".join(proc.stderr.split())


def recorded_job(url: str, spec: dict | None = None, n: int | None = None) -> int:
    """A pipeline-search job with its first `n` candidates recorded as ok trials (their
    earlier attempts' errors and `extra` filled in), the last as a wrong result."""
    engine = get_engine(url)
    job_spec = parse_spec(spec or SPEC)
    job_id = jobs.create_job(engine, job_spec)
    kind = get_kind(job_spec.kind)
    recorder = Recorder(engine, job_id, objective=kind.primary())
    space = list(kind.space(job_spec))[:n]
    for i, params in enumerate(space):
        last = i == len(space) - 1
        recorder.add(
            candidate=candidate_key(params), params=params,
            status=TrialStatus.wrong_result if last else TrialStatus.ok,
            latencies_s=[1e-3 * (i + 1), 1.1e-3 * (i + 1)], attempts=2,
            attempt_errors=["worker died"], worker_node="node-a",
            extra={"pipelined": [{"buffer": "A", "stages": 2}]},
        )  # fmt: skip
    recorder.flush()
    jobs.finish(engine, job_id, JobStatus.completed)
    return job_id


# -- spec files ----------------------------------------------------------------------


def test_a_spec_that_is_not_utf8_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    text = yaml.safe_dump({**SPEC, "name": "café"}, allow_unicode=True)
    path.write_bytes(text.encode("latin-1"))
    assert b"caf\xe9" in path.read_bytes()  # truly Latin-1, not UTF-8 or escaped
    proc = tunelab("submit", str(path), "--db", f"sqlite:///{tmp_path / 'x.db'}", check=2)
    assert str(path) in said(proc) and "not UTF-8" in said(proc)
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("twice.yaml",
         "name: twice\nkind: pipeline-search\nworkload: {M: 64, N: 64, K: 64}\n"
         "search:\n  budget: 4\n  seed: 1\n  budget: 8\n",
         "duplicate key 'budget' at line 7 (first at line 5)"),
        ("twice.json", '{"name": "a", "kind": "pipeline-search", "name": "b"}',
         "duplicate key 'name'"),
    ],
)  # fmt: skip
def test_a_key_given_twice_is_refused(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    assert str(exc.value) == f"{path}: {message}"
    proc = tunelab("submit", str(path), "--db", f"sqlite:///{tmp_path / 'x.db'}", check=2)
    assert message in said(proc)
    assert not (tmp_path / "x.db").exists()


def test_anchors_and_merge_keys_still_load(tmp_path: Path) -> None:
    """A key merged in with `<<:` may be overridden: that is no duplicate."""
    path = tmp_path / "merged.yaml"
    path.write_text(
        "name: merged\nkind: pipeline-search\nworkload: {M: 64, N: 64, K: 64}\n"
        "space: {tile_m: &tiles [16, 32], tile_n: *tiles}\n"
        "measure:\n  <<: {repeats: 3, warmup: 2}\n  repeats: 7\n"
    )
    spec = load_spec(path)
    assert (spec.measure.repeats, spec.measure.warmup) == (7, 2)
    assert spec.space["tile_n"] == [16, 32]


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        ("search", "budget", True),
        ("search", "batch_size", True),
        ("search", "seed", False),
        ("search", "explore", True),
        ("measure", "repeats", True),
        ("measure", "warmup", False),
        ("measure", "run_timeout_s", True),
        ("measure", "max_attempts", True),
        ("measure", "number", True),  # a kind's own measure setting (pipeline-search)
    ],
)
def test_booleans_are_not_numbers(section: str, field: str, value: bool) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec({**SPEC, section: {field: value}}, "job.yaml")
    assert f"  {section}.{field}: Input should be a number, not a boolean" in str(exc.value)


def test_numbers_still_convert_where_they_should(tmp_path: Path) -> None:
    spec = parse_spec({**SPEC, "search": {"budget": 3, "explore": 0},
                       "measure": {"run_timeout_s": 30, "build_only": True}})  # fmt: skip
    assert spec.search.budget == 3 and spec.search.explore == 0.0
    assert spec.measure.run_timeout_s == 30.0 and isinstance(spec.measure.run_timeout_s, float)
    assert spec.measure.build_only is True
    bad = tmp_path / "bool.yaml"
    bad.write_text(yaml.safe_dump({**SPEC, "search": {"budget": True}}))
    proc = tunelab("submit", str(bad), "--db", f"sqlite:///{tmp_path / 'x.db'}", check=2)
    assert "search.budget: Input should be a number, not a boolean" in said(proc)


# -- options -------------------------------------------------------------------------


def test_an_unknown_status_is_refused_naming_the_valid_ones(sqlite_url: str) -> None:
    job_id = recorded_job(sqlite_url)
    proc = tunelab("jobs", "--status", "bogus", "--db", sqlite_url, check=2)
    assert "bogus" in said(proc)
    for status in JobStatus:
        assert status.value in said(proc)
    proc = tunelab("trials", str(job_id), "--status", "bogus", "--db", sqlite_url, check=2)
    for status in TrialStatus:
        assert status.value in said(proc)
    listed = tunelab("jobs", "--status", "completed", "--format", "json", "--db", sqlite_url,
                     check=0)  # fmt: skip
    assert [j["id"] for j in json.loads(listed.stdout)] == [job_id]
    wrong = tunelab("trials", str(job_id), "--status", "wrong_result", "--format", "json",
                    "--db", sqlite_url, check=0)  # fmt: skip
    assert [t["status"] for t in json.loads(wrong.stdout)] == ["wrong_result"]


# -- export --------------------------------------------------------------------------


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_export_of_an_unknown_job_leaves_the_file_alone(
    tmp_path: Path, sqlite_url: str, fmt: str
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    existing = out_dir / f"existing.{fmt}"
    existing.write_text("precious\n")
    tunelab("export", "99999", "--format", fmt, "-o", str(existing), "--db", sqlite_url, check=4)
    assert existing.read_text() == "precious\n"
    assert _siblings(existing) == [existing.name]


def test_export_into_a_missing_directory_or_onto_one_is_bad_input(
    tmp_path: Path, sqlite_url: str
) -> None:
    job_id = str(recorded_job(sqlite_url))
    missing = tmp_path / "nope" / "t.csv"
    proc = tunelab("export", job_id, "--format", "csv", "-o", str(missing), "--db", sqlite_url,
                   check=2)  # fmt: skip
    assert f"directory {missing.parent} does not exist" in said(proc)
    proc = tunelab("export", job_id, "--format", "csv", "-o", str(tmp_path), "--db", sqlite_url,
                   check=2)  # fmt: skip
    assert f"{tmp_path} is a directory" in said(proc)
    afile = tmp_path / "afile"
    afile.write_text("x")
    proc = tunelab("export", job_id, "--format", "csv", "-o", str(afile / "t.csv"),
                   "--db", sqlite_url, check=2)  # fmt: skip
    assert "is not a directory" in said(proc)
    assert not missing.parent.exists()


def test_an_interrupted_export_leaves_the_existing_file_and_no_partial_one(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Ctrl-C while an export streams (raised in this process as soon as the export's
    file appears): the file it was to replace is untouched, and nothing else is left.

    KeyboardInterrupt comes from a signal handler in the main thread, as a real Ctrl-C
    does: a timer signal every 0.5 ms looks for the export's file and raises once it is
    there. (A watcher thread raced the export for the GIL and lost it in full-suite runs,
    with Ray's threads about.)"""
    import signal
    import time

    engine = get_engine(sqlite_url)
    n = 5_000
    job_id = jobs.create_job(engine, parse_spec({"name": "big", "kind": "testing-trivial",
                                                 "workload": {"n": n}}))  # fmt: skip
    recorder = Recorder(engine, job_id)
    for i in range(n):
        recorder.add(candidate=f"{i:064d}", params={"i": i}, status=TrialStatus.ok,
                     latencies_s=[1e-6])  # fmt: skip
    recorder.flush()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "trials.csv"
    target.write_text("the previous export\n")
    seen: list[str] = []

    def interrupt_once_writing(signum: int, frame: object) -> None:
        if seen:
            return
        if temps := [p.name for p in out_dir.iterdir() if p.name != target.name]:
            seen.extend(temps)
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt_once_writing)
    signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
    try:
        with pytest.raises(KeyboardInterrupt):
            api.export(job_id, target, "csv", db=sqlite_url)
            time.sleep(5)  # finished before the handler saw the file: the test is wrong
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert seen and seen[0].startswith(".trials.csv.")  # written beside the target
    assert target.read_text() == "the previous export\n"
    assert _siblings(target) == [target.name]
    assert api.export(job_id, target, "csv", db=sqlite_url) == n  # and it can be redone
    assert len(target.read_text().splitlines()) == n + 1
    assert _siblings(target) == [target.name]


def test_export_replaces_a_file_whole_and_keeps_its_mode(tmp_path: Path, sqlite_url: str) -> None:
    job_id = recorded_job(sqlite_url)
    target = tmp_path / "trials.csv"
    target.write_text("old\n" * 1000)
    target.chmod(0o640)
    tunelab("export", str(job_id), "--format", "csv", "-o", str(target), "--db", sqlite_url,
            check=0)  # fmt: skip
    rows = list(csv.DictReader(target.open()))
    assert len(rows) == 4 and "old" not in target.read_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [n for n in _siblings(target) if n.startswith(".")] == []


# -- JSON nests, CSV and Parquet flatten ---------------------------------------------


def test_json_output_nests_extra_and_attempt_errors(tmp_path: Path, sqlite_url: str) -> None:
    job_id = str(recorded_job(sqlite_url))
    extra = {"pipelined": [{"buffer": "A", "stages": 2}]}
    listed = json.loads(tunelab("trials", job_id, "--format", "json", "--db", sqlite_url,
                                check=0).stdout)  # fmt: skip
    assert listed[0]["extra"] == extra and listed[0]["attempt_errors"] == ["worker died"]
    jsonl = tmp_path / "t.jsonl"
    tunelab("export", job_id, "--format", "jsonl", "-o", str(jsonl), "--db", sqlite_url, check=0)
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert rows[0]["extra"] == extra and rows[0]["attempt_errors"] == ["worker died"]
    # Flat formats keep JSON text: CSV (from `trials` and `export`) and Parquet.
    text = tunelab("trials", job_id, "--format", "csv", "--db", sqlite_url, check=0).stdout
    first = next(csv.DictReader(io.StringIO(text)))
    assert json.loads(first["extra"]) == extra
    assert json.loads(first["attempt_errors"]) == ["worker died"]
    parquet = tmp_path / "t.parquet"
    tunelab("export", job_id, "--format", "parquet", "-o", str(parquet), "--db", sqlite_url,
            check=0)  # fmt: skip
    assert json.loads(pq.read_table(parquet).to_pylist()[0]["extra"]) == extra


# -- tables at 80 columns ------------------------------------------------------------


def _rows(table: str, ids: set[str]) -> dict[str, list[str]]:
    """A printed table's rows by their first cell (an id), each with its wrapped lines."""
    rows: dict[str, list[str]] = {}
    current: str | None = None
    for line in table.splitlines():
        words = line.split()
        if words and words[0] in ids:
            current = words[0]
            rows[current] = [line]
        elif current is not None and words and "─" not in line:
            rows[current].append(line)
    return rows


def test_tables_are_readable_at_80_columns(sqlite_url: str) -> None:
    long_name = "resnet50-conv2d-layer-17-sweep"
    job_id = recorded_job(sqlite_url, {**SPEC, "name": long_name})
    lost = recorded_job(sqlite_url, {**SPEC, "name": "lost-driver-job"}, n=1)
    engine = get_engine(sqlite_url)
    with engine.begin() as conn:  # a driver that stopped writing minutes ago
        old = datetime.now(UTC) - timedelta(minutes=5)
        conn.execute(update(Job).where(Job.id == lost)
                     .values(status=JobStatus.running, heartbeat_at=old))  # fmt: skip

    listed = tunelab("jobs", "--db", sqlite_url, check=0, columns=80).stdout
    assert max(len(line) for line in listed.splitlines()) <= 80
    assert long_name in listed and "lost-driver-job" in listed
    assert "running (driver lost)" in listed and "completed" in listed

    trials = api.trials(job_id, db=sqlite_url)
    ids = {str(t.id) for t in trials}
    for args in (("trials", str(job_id)), ("show", str(job_id))):
        text = tunelab(*args, "--db", sqlite_url, check=0, columns=80).stdout
        assert max(len(line) for line in text.splitlines()) <= 80
        rows = _rows(text, ids)
        assert rows, text
        for t in trials:
            if str(t.id) not in rows:  # `show` lists the best only
                continue
            lines = rows[str(t.id)]
            assert len(lines) <= 2, "\n".join(lines)
            assert t.status in lines[0]
            joined = " ".join(" ".join(lines).split())
            for k, v in t.params.items():
                assert f"{k}={v}" in joined, (k, joined)


# -- driver logs ---------------------------------------------------------------------


def test_driver_logs_are_kept_per_database(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = f"sqlite:///{tmp_path / 'a' / 'tunelab.db'}"
    b = f"sqlite:///{tmp_path / 'b' / 'tunelab.db'}"
    logs = {api.driver_log_path(3, db=url) for url in (a, b, pg_url)}
    assert len(logs) == 3
    assert all(p.name == "job-3.log" and p.parent.parent.name == "logs" for p in logs)
    # The same database, however it is named, keeps one folder.
    monkeypatch.chdir(tmp_path)
    assert api.driver_log_path(3, db="sqlite:///a/tunelab.db") == api.driver_log_path(3, db=a)
    with_password = pg_url.replace("postgres@", "postgres:secret@")
    assert api.driver_log_path(3, db=with_password).parent.name.startswith("postgresql")
    assert "secret" not in str(api.driver_log_path(3, db=with_password))


def test_db_url_hides_the_password_as_sqlalchemy_does() -> None:
    from tunelab.config import redact_url
    from tunelab.schema.db import redact

    for url in ("sqlite:////tmp/x.db", "sqlite:///rel.db", "sqlite://",
                "postgresql://postgres@127.0.0.1:5432/postgres",
                "postgresql+psycopg://u:secret@h:5/db?sslmode=require",
                "postgresql://u:p/w@h/db", "postgresql://u:@h/db"):  # fmt: skip
        assert redact_url(url) == redact(url)
    proc = tunelab("db", "url", "--db", "postgresql://u:secret@h/db", check=0)
    assert proc.stdout.strip() == "postgresql://u:***@h/db"


# -- the CLI's error table and fast schema check -------------------------------------


def test_every_error_the_cli_handles_exists() -> None:
    import importlib

    from tunelab.platform.cli.common import ERRORS

    for module, name, _, _ in ERRORS:
        cls = getattr(importlib.import_module(module), name)
        assert isinstance(cls, type) and issubclass(cls, Exception), (module, name)


def test_the_head_revision_is_read_as_alembic_reads_it(db_url: str, tmp_path: Path) -> None:
    from tunelab.schema import db, revision

    assert revision.head_revision() == db.head_revision()
    new = db.get_engine(f"sqlite:///{tmp_path / 'new.db'}", migrate=False)
    assert not revision.at_head(new)  # no schema yet: `get_engine` must migrate it
    assert revision.at_head(db.get_engine(db_url))
