"""Long-running evaluations survive their driver and their workers: SIGKILL the driver
mid-training, resume, SIGKILL an evaluation worker, and every run still ends exactly as
an uninterrupted one, each step recorded once, training continued from checkpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import psutil
import pytest
from sqlalchemy import func, select

from tests.test_platform_v2 import _check_episodes
from tunelab.platform import jobs
from tunelab.platform.spec import parse_spec
from tunelab.schema.db import get_engine
from tunelab.schema.models import Step, Trial

SPEC = {
    "name": "episodic-kills",
    "kind": "testing-episodic",
    "workload": {"runs": 4, "steps": 40, "checkpoint_every": 5, "step_s": 0.08, "workers": 2},
    "measure": {"keep_checkpoints": 2, "max_attempts": 3},
}


def _driver(job_id: int, db_url: str, ray: str, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tunelab.platform.cli", "run-driver", str(job_id),
         "--db", db_url, "--ray", ray, *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _wait(what: str, ready: Callable[[], bool], driver: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 240
    while not ready():
        assert driver.poll() is None, f"the driver ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _n_steps(engine, job_id: int) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(select(func.count()).where(Step.job_id == job_id)).scalar_one()


def _evaluation_workers() -> list[psutil.Process]:
    """Ray worker processes running an evaluation right now."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd.startswith("ray::MeasureWorker.measure_many"):
            found.append(p)
    return found


@pytest.mark.slow
def test_driver_then_worker_killed_mid_training(db_url: str, ray_cluster: str) -> None:
    engine = get_engine(db_url)
    spec = parse_spec(SPEC)
    job_id = jobs.create_job(engine, spec)

    driver = _driver(job_id, db_url, ray_cluster)
    _wait("two runs passed a checkpoint", lambda: _n_steps(engine, job_id) >= 16, driver)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    with engine.connect() as conn:
        running = conn.execute(
            select(func.count()).where(Trial.job_id == job_id, Trial.status == "running")
        ).scalar_one()
    assert running >= 1  # the killed evaluations stay visible as running
    assert {k: v for k, v, _ in jobs.recorded(engine, job_id)}.keys().isdisjoint(
        {t.candidate for t in jobs.trials(engine, job_id) if t.status == "running"}
    )  # and are not done: a resumed driver evaluates them again
    killed_at = _n_steps(engine, job_id)

    driver = _driver(job_id, db_url, ray_cluster, "--force")
    _wait(
        "the resumed runs to report",
        lambda: _n_steps(engine, job_id) >= killed_at + 12 and bool(_evaluation_workers()),
        driver,
    )
    victim = _evaluation_workers()[0]
    victim.send_signal(signal.SIGKILL)
    assert driver.wait(timeout=300) == 0

    _check_episodes(engine, job_id, spec)  # steps 0..39 once each, as if never stopped
    trials = jobs.trials(engine, job_id)
    resumed = [t for t in trials if t.extra["resumed_from_step"] > 0]
    assert resumed, "no run continued from a checkpoint"
    assert all(t.extra["resumed_from_step"] % 5 == 0 for t in resumed)
    retried = [t for t in trials if t.attempt_errors]
    assert any("measure worker died" in e for t in retried for e in t.attempt_errors)
    job = jobs.get_job(engine, job_id)
    assert (job.status, job.n_done, job.n_ok) == ("completed", 4, 4)
    assert _n_steps(engine, job_id) == 4 * 40  # none twice
