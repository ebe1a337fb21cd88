"""Liveness you can trust: a driver alive on this host is never `driver lost`, its
heartbeat beats while its main thread is blocked, SIGTERM ends it as interrupted at any
moment, a failure after the claim fails the job with its reason, and a driver that loses
its job records what it measured (real driver processes, real databases).

A driver blocked in Ray's start-up is real and cheap: `--ray` names a port that accepts
connections and never answers, so `ray.init` blocks in native code for minutes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
import pytest
from sqlalchemy import update

from tests.test_db_outage import Server, server  # noqa: F401  (a PostgreSQL of its own)
from tunelab.platform import jobs
from tunelab.platform.recorder import Recorder
from tunelab.platform.spec import parse_spec
from tunelab.schema.db import get_engine
from tunelab.schema.models import Job, TrialStatus

SPEC = {"name": "live", "kind": "testing-trivial", "workload": {"n": 20}}
WAIT_S = 120.0  # generous: CLI start-up on a loaded 2-core machine takes seconds


def _until(what: str, check: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tunelab.platform.cli", *args],
        capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})},
    )  # fmt: skip


def _driver(job_id: int, db: str, ray: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tunelab.platform.cli", "run-driver", str(job_id), "--db", db,
         "--ray", ray],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **env},
    )  # fmt: skip


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _end(pid: int) -> None:
    """SIGTERM a process this test started (if it still runs) and wait for it to go."""
    if not _gone(pid):
        os.kill(pid, signal.SIGTERM)
        _until(f"pid {pid} to end", lambda: _gone(pid), 30)


@pytest.fixture
def silent_ray() -> Iterator[str]:
    """A Ray address where something accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))  # Ray may dial the node's own address for 127.0.0.1
    listener.listen(64)
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


@pytest.fixture
def closed_ray() -> str:
    """A Ray address where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _claimed(engine: Any, job_id: int, proc: subprocess.Popen[str]) -> Job:
    def check() -> Job | None:
        assert proc.poll() is None, proc.communicate()[0]
        job = jobs.get_job(engine, job_id)
        return job if job.status == "running" and job.driver_pid == proc.pid else None

    return _until("the driver's claim", check)


# -- judging a driver ------------------------------------------------------------------


def _terminate(driver: subprocess.Popen) -> tuple[str, float]:
    """SIGTERM the driver; what it printed and the seconds it took to end."""
    t0 = time.monotonic()
    driver.send_signal(signal.SIGTERM)
    out, _ = driver.communicate(timeout=60)
    return out, time.monotonic() - t0


def _reap(driver: subprocess.Popen) -> None:
    """Kill a driver a failed test left running."""
    if driver.poll() is None:
        driver.kill()
        driver.communicate()


def test_a_driver_on_this_host_is_judged_by_its_process(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = get_engine(sqlite_url)
    job_id = jobs.create_job(engine, parse_spec(SPEC))
    jobs.claim(engine, job_id)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        started = datetime.fromtimestamp(psutil.Process(proc.pid).create_time(), UTC)

        def record(**values: Any) -> Job:
            with engine.begin() as conn:
                conn.execute(update(Job).where(Job.id == job_id).values(**values))
            return jobs.get_job(engine, job_id)

        # Alive and silent for an hour (longer than any window): still running.
        monkeypatch.setenv(jobs.ENV_STALE_AFTER_S, "1")
        job = record(driver_pid=proc.pid, heartbeat_at=started + timedelta(seconds=2))
        now = datetime.now(UTC) + timedelta(hours=1)
        assert not jobs.is_stale(job, now) and jobs.display_status(job) == "running"
        with pytest.raises(jobs.JobStateError, match="its process is alive"):
            jobs.check_resumable(job, now=now)
        # A process started after the driver's last heartbeat has its pid, not its life.
        job = record(heartbeat_at=started - timedelta(seconds=30))
        assert jobs.display_status(job) == "running (driver lost)"
        proc.kill()
        proc.wait()
        job = record(heartbeat_at=datetime.now(UTC))  # a fresh beat from a dead process
        assert jobs.display_status(job) == "running (driver lost)"
        jobs.check_resumable(job)
    finally:
        proc.kill()
        proc.wait()


def test_a_zombie_is_no_driver(sqlite_url: str) -> None:
    engine = get_engine(sqlite_url)
    job_id = jobs.create_job(engine, parse_spec(SPEC))
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    _until("the child to exit", lambda: psutil.Process(proc.pid).status() == "zombie", 60)
    with engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == job_id).values(
            status="running", driver_host=socket.gethostname(), driver_pid=proc.pid,
            heartbeat_at=datetime.now(UTC)))  # fmt: skip
    assert jobs.display_status(jobs.get_job(engine, job_id)) == "running (driver lost)"
    proc.wait()


def test_a_driver_on_another_host_is_judged_by_its_heartbeat(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = get_engine(sqlite_url)
    job_id = jobs.create_job(engine, parse_spec(SPEC))
    jobs.claim(engine, job_id)
    beat = datetime.now(UTC) - timedelta(seconds=90)
    with engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == job_id)
                     .values(driver_host="elsewhere.example", heartbeat_at=beat))  # fmt: skip
    job = jobs.get_job(engine, job_id)
    assert jobs.display_status(job) == "running"  # within the default 2 minutes
    with pytest.raises(jobs.JobStateError, match="--force"):
        jobs.claim(engine, job_id)
    monkeypatch.setenv(jobs.ENV_STALE_AFTER_S, "60")
    assert jobs.display_status(job) == "running (driver lost)"
    assert jobs.claim(engine, job_id).lease == 2


# -- a live, silent driver -------------------------------------------------------------


def test_a_live_silent_driver_keeps_its_job(sqlite_url: str, silent_ray: str) -> None:
    """A driver blocked (in Ray's start-up) whose heartbeat is older than the window:
    `jobs` shows it running, `resume` refuses it, `resume --force` takes it, and the old
    driver, once it ends, writes nothing over the new one's job."""
    engine = get_engine(sqlite_url)
    job_id = jobs.create_job(engine, parse_spec(SPEC))
    # One beat at the claim, none after: silent as a driver deep in a learner update.
    old = _driver(job_id, sqlite_url, silent_ray, {"TUNELAB_HEARTBEAT_S": "3600"})
    new_pid: int | None = None
    try:
        claimed = _claimed(engine, job_id, old)
        cli_env = {jobs.ENV_STALE_AFTER_S: "1"}
        age = lambda: datetime.now(UTC) - jobs.last_beat(claimed)  # noqa: E731
        _until("a heartbeat older than the window", lambda: age() > timedelta(seconds=2))

        listed = _cli("jobs", "--db", sqlite_url, "--format", "json", env=cli_env)
        assert listed.returncode == 0, listed.stderr
        assert [r["status"] for r in json.loads(listed.stdout)] == ["running"]

        refused = _cli("resume", str(job_id), "--db", sqlite_url, "--ray", silent_ray,
                       env=cli_env)  # fmt: skip
        assert refused.returncode == 4, refused.stderr
        assert "its process is alive" in refused.stderr and "--force" in refused.stderr
        assert jobs.get_job(engine, job_id).lease == 1

        forced = _cli("resume", str(job_id), "--force", "--db", sqlite_url, "--ray", silent_ray,
                      env=cli_env)  # fmt: skip
        assert forced.returncode == 0, forced.stderr
        job = _until("the new driver's claim", lambda: (j := jobs.get_job(engine, job_id))
                     .lease == 2 and j.driver_pid != old.pid and j)  # fmt: skip
        new_pid = job.driver_pid
        assert new_pid is not None

        # The old driver ends (interrupted in seconds); the job stays the new one's.
        old.send_signal(signal.SIGTERM)
        out, _ = old.communicate(timeout=60)
        assert old.returncode == 130, out
        job = jobs.get_job(engine, job_id)
        assert (job.status, job.lease, job.driver_pid) == ("running", 2, new_pid)
        assert jobs.display_status(job) == "running"
    finally:
        if old.poll() is None:
            old.kill()
            old.communicate()
        if new_pid is not None:
            _end(new_pid)
    assert jobs.get_job(engine, job_id).status == "interrupted"  # by the new driver's end


# -- heartbeat and SIGTERM while blocked ------------------------------------------------


def test_heartbeat_beats_while_blocked_and_sigterm_interrupts_at_once(
    sqlite_url: str, silent_ray: str
) -> None:
    engine = get_engine(sqlite_url)
    job_id = jobs.create_job(engine, parse_spec(SPEC))
    driver = _driver(job_id, sqlite_url, silent_ray, {"TUNELAB_HEARTBEAT_S": "0.5"})
    try:
        first = _claimed(engine, job_id, driver).heartbeat_at
        seen = {first}

        def beats() -> bool:
            assert driver.poll() is None
            seen.add(jobs.get_job(engine, job_id).heartbeat_at)
            return len(seen) >= 4

        _until("three heartbeats after the claim", beats, 60)
        assert jobs.get_job(engine, job_id).n_planned == 0  # still starting Ray
        family = [driver.pid, *(c.pid for c in psutil.Process(driver.pid).children(True))]

        out, took = _terminate(driver)
    finally:
        _reap(driver)
    assert driver.returncode == 130, out
    assert took < 15, f"SIGTERM took {took:.1f} s"
    job = jobs.get_job(engine, job_id)
    assert (job.status, job.error) == ("interrupted", "interrupted (Ctrl-C or SIGTERM)")
    _until("the driver's processes to end", lambda: all(_gone(p) for p in family), 30)


def test_sigterm_while_waiting_for_ray_interrupts_at_once(sqlite_url: str, closed_ray: str) -> None:
    """SIGTERM while the main thread runs Python (waiting for a Ray that does not answer):
    its handler ends the driver; the watchdog has nothing to do."""
    engine = get_engine(sqlite_url)
    job_id = jobs.create_job(engine, parse_spec(SPEC))
    driver = _driver(job_id, sqlite_url, closed_ray, {"TUNELAB_RAY_CONNECT_TIMEOUT_S": "300"})
    try:
        _claimed(engine, job_id, driver)
        time.sleep(1.0)  # into the wait for Ray
        out, took = _terminate(driver)
    finally:
        _reap(driver)
    assert driver.returncode == 130, out
    assert took < 15 and "did not act on the signal" not in out, (took, out)
    assert jobs.get_job(engine, job_id).status == "interrupted"


def test_heartbeat_rides_out_the_database_going_away(
    server: Server,  # noqa: F811
    silent_ray: str,
) -> None:
    """The driver's heartbeat thread keeps trying while its database is stopped and beats
    again once it answers; the driver never notices (its main thread is in Ray's start-up)."""
    engine = get_engine(server.url)
    job_id = jobs.create_job(engine, parse_spec(SPEC))
    driver = _driver(job_id, server.url, silent_ray, {"TUNELAB_HEARTBEAT_S": "0.3"})
    try:
        _claimed(engine, job_id, driver)
        server.stop()
        time.sleep(3)  # an outage of a few seconds, beats failing all along
        assert driver.poll() is None
        server.start()
        back = datetime.now(UTC)
        beat = lambda: jobs.last_beat(jobs.get_job(engine, job_id))  # noqa: E731
        _until("a heartbeat after the outage", lambda: beat() > back, 60)
        assert driver.poll() is None
        out, _ = _terminate(driver)
    finally:
        _reap(driver)
    assert driver.returncode == 130, out
    assert "heartbeat not written, retrying" in out and "heartbeat written again" in out, out
    assert jobs.get_job(engine, job_id).status == "interrupted"


# -- failures after the claim ----------------------------------------------------------


@pytest.mark.parametrize("broken", ["spec", "kind", "ray"])
def test_a_failure_after_the_claim_fails_the_job_with_its_reason(
    sqlite_url: str, closed_ray: str, broken: str
) -> None:
    engine = get_engine(sqlite_url)
    job_id = jobs.create_job(engine, parse_spec(SPEC))
    spec, why, code = dict(SPEC), "", 1
    if broken == "spec":  # e.g. the kind's workload model changed since the job was made
        spec["workload"] = {"n": "many"}
        why = "its spec no longer holds"
    elif broken == "kind":  # e.g. its package was uninstalled
        spec["kind"] = "no-such-kind"
        why = "unknown job kind"
    else:
        why, code = "no Ray cluster answers", 3
    with engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == job_id).values(spec=spec))
    driver = _driver(job_id, sqlite_url, closed_ray, {"TUNELAB_RAY_CONNECT_TIMEOUT_S": "1"})
    out, _ = driver.communicate(timeout=300)
    assert driver.returncode == code, out
    job = jobs.get_job(engine, job_id)
    assert job.status == "failed" and why in (job.error or ""), job.error
    shown = _cli("show", str(job_id), "--db", sqlite_url)
    assert "status: failed" in shown.stdout and why in shown.stdout, shown.stdout


# -- a takeover keeps what the old driver measured -------------------------------------


def test_a_driver_that_lost_its_job_hands_over_what_it_measured(db_url: str) -> None:
    engine = get_engine(db_url)
    job_id = jobs.create_job(engine, parse_spec(SPEC))
    first = jobs.claim(engine, job_id)
    old = Recorder(engine, job_id, lease=first.lease, max_wait_s=3600)
    for i, seconds in ((0, 0.1), (1, 0.2)):
        old.add(candidate=f"c{i}", params={"i": i}, status=TrialStatus.ok, latencies_s=[seconds])

    second = jobs.claim(engine, job_id, force=True)
    assert not jobs.beat(engine, job_id, first.lease) and jobs.beat(engine, job_id, second.lease)
    new = Recorder(engine, job_id, lease=second.lease)
    new.add(candidate="c1", params={"i": 1}, status=TrialStatus.ok, latencies_s=[0.5])
    new.flush()

    with pytest.raises(jobs.LostOwnership):
        old.flush()  # refused as a whole: nothing of it is written under the old lease
    assert {t.candidate for t in jobs.trials(engine, job_id)} == {"c1"}
    assert old.hand_over() == 2 and old.pending() == 0
    values = {t.candidate: t.value for t in jobs.trials(engine, job_id)}
    assert values == {"c0": pytest.approx(0.1), "c1": pytest.approx(0.5)}  # first one wins
    new.flush()  # the new driver counts what was handed over
    job = jobs.get_job(engine, job_id)
    assert (job.lease, job.n_done, job.n_ok) == (2, 2, 2)
