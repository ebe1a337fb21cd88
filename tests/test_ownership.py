"""Who drives a job: a takeover stops the old driver, SIGTERM interrupts, a cancel is a
pause, and lost trials can be run again in place (real drivers, real Ray)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tunelab.platform import jobs
from tunelab.platform.spec import parse_spec
from tunelab.schema.db import get_engine
from tunelab.schema.models import Trial

SLOW_TRIVIAL = {"name": "own", "kind": "testing-trivial", "workload": {"n": 120, "seconds": 0.05},
                "measure": {"final_top_k": 0}}  # fmt: skip


def _driver(job_id: int, db: str, ray: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tunelab.platform.cli", "run-driver", str(job_id), "--db", db,
         "--ray", ray, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_done(engine, job_id: int, n: int, proc: subprocess.Popen[str]) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 240
    while jobs.get_job(engine, job_id).n_done < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)


def _count(engine, job_id: int) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(
            select(func.count(), func.count(func.distinct(Trial.candidate))).where(
                Trial.job_id == job_id
            )
        ).one()


@pytest.mark.slow
def test_a_forced_takeover_stops_the_old_driver(db_url: str, ray_cluster: str) -> None:
    engine = get_engine(db_url)
    job_id = jobs.create_job(engine, parse_spec(SLOW_TRIVIAL))
    old = _driver(job_id, db_url, ray_cluster)
    _wait_done(engine, job_id, 10, old)
    new = _driver(job_id, db_url, ray_cluster, "--force")
    _, err = old.communicate(timeout=60)  # the old one notices within a second or two
    assert old.returncode == 4, err
    assert "taken over by another driver" in err and "Traceback" not in err
    assert "recorded the" in err and "measured here that it had not" in err  # handed over
    _, err = new.communicate(timeout=300)
    assert new.returncode == 0, err
    job = jobs.get_job(engine, job_id)
    assert (job.status, job.n_done) == ("completed", 120)
    assert _count(engine, job_id) == (120, 120)


@pytest.mark.slow
def test_sigterm_interrupts_and_a_cancel_is_a_pause(db_url: str, ray_cluster: str) -> None:
    engine = get_engine(db_url)
    job_id = jobs.create_job(engine, parse_spec(SLOW_TRIVIAL))
    driver = _driver(job_id, db_url, ray_cluster)
    _wait_done(engine, job_id, 5, driver)
    driver.send_signal(signal.SIGTERM)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 130, err
    assert jobs.get_job(engine, job_id).status == "interrupted"

    jobs.cancel(engine, job_id)
    assert jobs.get_job(engine, job_id).status == "cancelled"
    driver = _driver(job_id, db_url, ray_cluster)  # resumed: a cancel is a pause
    _, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err
    assert jobs.get_job(engine, job_id).status == "completed"
    assert _count(engine, job_id) == (120, 120)


@pytest.mark.slow
def test_retry_failed_runs_lost_trials_again_in_place(
    db_url: str, ray_cluster: str, tmp_path: Path
) -> None:
    engine = get_engine(db_url)
    spec = parse_spec({"name": "retry", "kind": "testing-faulty",
                       "workload": {"faults": ["good", "crash_once"], "marker_dir": str(tmp_path)},
                       "measure": {"max_attempts": 1}})  # fmt: skip
    job_id = jobs.create_job(engine, spec)
    driver = _driver(job_id, db_url, ray_cluster)
    assert driver.wait(timeout=300) == 0
    lost = next(t for t in jobs.trials(engine, job_id) if t.params["fault"] == "crash_once")
    assert lost.status == "worker_lost"
    # Completed: a plain resume has nothing to run; --retry-failed runs the lost one again.
    driver = _driver(job_id, db_url, ray_cluster)
    assert driver.wait(timeout=60) == 4
    driver = _driver(job_id, db_url, ray_cluster, "--retry-failed")
    _, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err
    again = next(t for t in jobs.trials(engine, job_id) if t.params["fault"] == "crash_once")
    assert (again.id, again.status) == (lost.id, "ok")  # the same trial, replaced in place
    assert any(e.startswith("before --retry-failed: measure worker died") for e in
               again.attempt_errors)  # fmt: skip
    assert _count(engine, job_id) == (2, 2)
    job = jobs.get_job(engine, job_id)
    assert (job.status, job.n_ok) == ("completed", 2)
