"""Opening the database: concurrent first use migrates once, read-only databases are named.

Real SQLite files, a real PostgreSQL server (a fresh database per round, a SELECT-only
role) and real `tunelab` processes; nothing is mocked.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import types
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import PG_ADMIN_URL
from tunelab.dashboard.db import clear_cache, open_readonly
from tunelab.platform import jobs
from tunelab.platform.spec import parse_spec
from tunelab.schema.db import (
    DatabaseReadOnly,
    check_writable,
    current_revision,
    dispose_engines,
    get_engine,
    head_revision,
)

OPENERS = 4
ROUNDS = 5


def _open(url: str, barrier: Any) -> str:
    """In a child process: wait for the others, then open (and migrate) `url`."""
    barrier.wait()
    try:
        get_engine(url)
    except BaseException as exc:  # reported back to the test, whatever it is
        return f"{type(exc).__name__}: {exc}"
    finally:
        dispose_engines()
    return "ok"


@pytest.fixture(scope="module")
def openers() -> Iterator[tuple[Any, Any]]:
    """Four spawned processes (no fork: a clean interpreter each) and a barrier that
    releases them together. A barrier of four parties holds each task in its process, so
    the four tasks of a round run in four processes at once."""
    ctx = multiprocessing.get_context("spawn")
    # Spawned children re-run __main__ from its path; earlier tests (Streamlit's AppTest)
    # may have left a page script there: start them from an empty __main__ instead.
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        with ctx.Manager() as manager, ctx.Pool(OPENERS) as pool:
            sys.modules["__main__"] = main
            yield pool, manager.Barrier(OPENERS)
    finally:
        sys.modules["__main__"] = main


def _race(openers: tuple[Any, Any], url: str) -> None:
    pool, barrier = openers
    results = pool.starmap(_open, [(url, barrier)] * OPENERS, chunksize=1)
    assert results == ["ok"] * OPENERS, results
    engine = create_engine(url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_concurrent_first_use_of_a_sqlite_file_migrates_once(
    openers: tuple[Any, Any], tmp_path
) -> None:
    for round_ in range(ROUNDS):
        _race(openers, f"sqlite:///{tmp_path / f'round{round_}' / 'trials.db'}")


@pytest.mark.postgres
def test_concurrent_first_use_of_a_postgres_database_migrates_once(
    openers: tuple[Any, Any], pg_url: str
) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    names = [f"tunelab_race_{uuid.uuid4().hex[:10]}" for _ in range(ROUNDS)]
    try:
        for name in names:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
            _race(openers, url)
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# -- read-only databases ----------------------------------------------------------------

SPEC = {"name": "ro", "kind": "testing-trivial", "workload": {"n": 3}}


def tunelab(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line; wide enough that rich prints each message on one line."""
    return subprocess.run(
        [sys.executable, "-m", "tunelab.platform.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "400"},
    )


def _one_line_error(proc: subprocess.CompletedProcess[str], code: int, says: str) -> None:
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    # (`resume --wait` draws its progress bar before the error: that line is no error)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], proc.stderr


def _reads_work_and_writes_say_read_only(url: str, job_id: int, tmp_path: Path) -> None:
    listed = tunelab("jobs", "--db", url, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert [j["id"] for j in json.loads(listed.stdout)] == [job_id]
    shown = tunelab("show", str(job_id), "--db", url)
    assert shown.returncode == 0 and f"job {job_id}" in shown.stdout, shown.stderr

    spec = tmp_path / "ro.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    for args in (
        ("submit", str(spec)),
        ("cancel", str(job_id)),
        ("resume", str(job_id), "--wait"),
    ):
        _one_line_error(tunelab(*args, "--db", url), 3, "is read-only")

    # In-process: the engine opens (reads work), says why it cannot write, and a write
    # raises DatabaseReadOnly, not the driver's error.
    engine = get_engine(url)
    assert [j.id for j in jobs.list_jobs(engine)] == [job_id]
    with pytest.raises(DatabaseReadOnly, match="is read-only"):
        check_writable(engine)
    with pytest.raises(DatabaseReadOnly, match="is read-only"):
        jobs.create_job(engine, parse_spec(SPEC))
    dispose_engines()


def _job(url: str) -> int:
    engine = get_engine(url)
    job_id = jobs.create_job(engine, parse_spec(SPEC))
    check_writable(engine)  # writable so far
    dispose_engines()
    return job_id


@contextmanager
def _unwritable(path: Path) -> Iterator[None]:
    """Make a file that this user cannot write. chmod 444 does that for a user, but root
    writes through permissions; the immutable attribute (`chattr +i`) stops root too, as a
    read-only mount would. Where neither can be had, the test is skipped."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)
        return
    if not shutil.which("chattr"):
        pytest.skip("running as root without chattr: no way to make a file read-only")
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not allowed here: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_read_only_sqlite_file_reads_and_refuses_writes(tmp_path: Path) -> None:
    db = tmp_path / "trials.db"
    url = f"sqlite:///{db}"
    job_id = _job(url)
    with _unwritable(db):
        _reads_work_and_writes_say_read_only(url, job_id, tmp_path)
        assert open_readonly(url) is not None  # the dashboard's engine, unchanged
        clear_cache()
    engine = get_engine(url)
    assert len(jobs.list_jobs(engine)) == 1  # nothing was written
    check_writable(engine)


@pytest.mark.postgres
def test_select_only_postgres_role_reads_and_refuses_writes(pg_url: str, tmp_path: Path) -> None:
    job_id = _job(pg_url)
    role = f"tunelab_ro_{uuid.uuid4().hex[:10]}"
    database = make_url(pg_url).database
    owner = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with owner.connect() as conn:
        for sql in (
            f'CREATE ROLE "{role}" LOGIN',
            f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"',
            f'GRANT USAGE ON SCHEMA public TO "{role}"',
            f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"',
        ):
            conn.execute(text(sql))
    try:
        ro_url = make_url(pg_url).set(username=role).render_as_string(hide_password=False)
        _reads_work_and_writes_say_read_only(ro_url, job_id, tmp_path)
    finally:
        dispose_engines()
        with owner.connect() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
        owner.dispose()
    assert len(jobs.list_jobs(get_engine(pg_url))) == 1  # nothing was written
