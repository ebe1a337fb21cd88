"""A driver killed with SIGKILL mid-run, then resumed: every candidate recorded exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select

from tunelab.platform import jobs
from tunelab.platform.kinds import candidate_key, get_kind
from tunelab.platform.spec import parse_spec
from tunelab.schema.db import get_engine
from tunelab.schema.models import Trial

SPEC = {
    "name": "resume",
    "kind": "pipeline-search",
    "workload": {"M": 64, "N": 64, "K": 64},
    "space": {"tile_m": [16, 32], "tile_n": [32, 64], "tile_k": [16, 32], "micro_m": [2],
              "micro_n": [8], "stages": [1, 2], "reg_stages": [1]},
    "measure": {"repeats": 3, "min_repeat_ms": 30},
}  # fmt: skip


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tunelab.platform.cli", *args],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip


@pytest.mark.slow
def test_killed_driver_resumes_without_losing_or_repeating(db_url: str, ray_cluster: str) -> None:
    engine = get_engine(db_url)
    spec = parse_spec(SPEC)
    kind = get_kind(spec.kind)
    space = {candidate_key(p) for p in kind.space(spec) + kind.baselines(spec)}
    assert len(space) == 18  # 16 candidates and NumPy's matmul (all threads, and one)
    job_id = jobs.create_job(engine, spec)

    driver = subprocess.Popen(
        [sys.executable, "-m", "tunelab.platform.cli", "run-driver", str(job_id),
         "--db", db_url, "--ray", ray_cluster],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while jobs.get_job(engine, job_id).n_done < 4:
        assert driver.poll() is None, "the driver ended before it was killed"
        assert time.monotonic() < deadline, "the driver recorded nothing in time"
        time.sleep(0.2)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()

    before = {t.candidate: (t.id, t.finished_at) for t in jobs.trials(engine, job_id)}
    assert 4 <= len(before) < 18
    job = jobs.get_job(engine, job_id)
    assert job.status == "running"  # nobody told the database
    # The heartbeat is fresh, but the driver ran on this host and its process is gone:
    # the job is resumable at once, without --force and without waiting for staleness.
    assert jobs.display_status(job) == "running (driver lost)"
    jobs.check_resumable(job)

    resumed = _cli("resume", str(job_id), "--wait", "--db", db_url, "--ray", ray_cluster)
    assert resumed.returncode == 0, resumed.stderr

    after = jobs.trials(engine, job_id)
    assert {t.candidate for t in after} == space
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).where(Trial.job_id == job_id)).scalar_one()
    assert n == 18  # each candidate exactly once
    for t in after:  # what was recorded before the kill is kept as it was
        if t.candidate in before:
            assert (t.id, t.finished_at) == before[t.candidate]
    job = jobs.get_job(engine, job_id)
    assert (job.status, job.n_done, job.n_planned) == ("completed", 18, 18)


def test_stale_heartbeat_is_shown_as_driver_lost(sqlite_url: str) -> None:
    """On another host a driver is judged by its heartbeat (on this one, by its process:
    tests/test_liveness.py)."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from tunelab.schema.models import Job

    engine = get_engine(sqlite_url)
    job_id = jobs.create_job(engine, parse_spec(SPEC))
    jobs.claim(engine, job_id)
    assert jobs.display_status(jobs.get_job(engine, job_id)) == "running"
    with pytest.raises(jobs.JobStateError, match="--force"):
        jobs.claim(engine, job_id)  # its driver (this process) is alive and beating
    with engine.begin() as conn:
        old = datetime.now(UTC) - timedelta(minutes=5)
        conn.execute(
            update(Job).where(Job.id == job_id).values(heartbeat_at=old, driver_host="elsewhere")
        )
    job = jobs.get_job(engine, job_id)
    assert jobs.display_status(job) == "running (driver lost)"
    jobs.claim(engine, job_id)  # a lost driver's job can be taken over without --force
