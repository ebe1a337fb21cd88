"""A driver rides out its database going away: restarted, stopped for a while, full.

The end-to-end tests start a throw-away PostgreSQL server of their own (initdb into a
temporary directory, `pg_ctl` on a free loopback port: `tunelab cluster`'s own way),
run a real job on the test session's Ray through a real driver process, and stop or
restart that server under it. The recorder's tests fill a real SQLite file to its size
limit. Nothing is mocked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, distinct, func, select, text
from sqlalchemy.pool import StaticPool

from tunelab.platform import jobs
from tunelab.platform.cluster import ClusterError, _as_user, _pg_bin, start_postgres, stop_postgres
from tunelab.platform.kinds import candidate_key
from tunelab.platform.outage import DatabaseOutage, Outage, is_outage
from tunelab.platform.recorder import Recorder
from tunelab.platform.spec import parse_spec
from tunelab.schema.db import DatabaseError, dispose_engines, get_engine
from tunelab.schema.models import Trial, TrialStatus

N = 400
SPEC = {"name": "outage", "kind": "testing-trivial", "workload": {"n": N, "seconds": 0.02}}


class Server:
    """A PostgreSQL server of the test's own, to stop and restart at will."""

    def __init__(self, directory: Path) -> None:
        self.url, self.pgdata, self.user = start_postgres(directory)

    def _ctl(self, *args: str) -> None:
        log = f"{self.pgdata}/server.log"
        cmd = _as_user(self.user, [_pg_bin("pg_ctl"), "-D", self.pgdata, "-w", "-l", log, *args])
        subprocess.run(cmd, check=True, capture_output=True)

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    def start(self) -> None:
        self._ctl("restart")  # on a stopped server: start with the options of its first start

    def restart(self) -> None:
        self._ctl("-m", "fast", "restart")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    try:
        _pg_bin("initdb")
        _pg_bin("pg_ctl")
    except ClusterError as exc:
        pytest.skip(str(exc))
    srv = Server(tmp_path)
    yield srv
    dispose_engines()
    stop_postgres(srv.pgdata, srv.user)
    if srv.user:  # its data directory is its own, under /tmp
        shutil.rmtree(srv.pgdata, ignore_errors=True)


def _cli(*args: str, env: dict[str, str] | None = None, **popen: object) -> subprocess.Popen:
    """A `tunelab` process; COLUMNS keeps each of its messages on one line."""
    return subprocess.Popen(
        [sys.executable, "-m", "tunelab.platform.cli", *args],
        env={**os.environ, "COLUMNS": "400", **(env or {})},
        **popen,  # type: ignore[arg-type]
    )


def _driver(job_id: int, url: str, ray: str, log: Path, **env: str) -> subprocess.Popen:
    """The job's driver as `tunelab submit` starts it, its stderr in `log`."""
    with open(log, "wb") as err:
        return _cli(
            "run-driver", str(job_id), "--db", url, "--ray", ray, env=env,
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip


def _wait_for_trials(engine, job_id: int, n: int, driver: subprocess.Popen) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 180
    while jobs.get_job(engine, job_id).n_done < n:
        assert driver.poll() is None, "the driver ended before the outage"
        assert time.monotonic() < deadline, f"fewer than {n} trials recorded in time"
        time.sleep(0.1)


def _assert_each_candidate_once(engine, job_id: int) -> None:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        n, unique = conn.execute(
            select(func.count(), func.count(distinct(Trial.candidate))).where(
                Trial.job_id == job_id
            )
        ).one()
    assert n == unique == N
    assert {t.candidate for t in jobs.trials(engine, job_id)} == {
        candidate_key({"i": i}) for i in range(N)
    }
    job = jobs.get_job(engine, job_id)
    assert (job.status, job.n_done, job.n_ok, job.n_planned) == ("completed", N, N, N)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("outage", "after"),
    [
        ("restart", 40),
        ("stopped for 5 s", 40),
        # The last results come in while the database is away: the driver waits to write
        # them and the job's final status.
        ("stopped for 5 s", N - 100),
    ],
)
def test_driver_rides_out_its_database_going_away(
    server: Server, ray_cluster: str, tmp_path: Path, outage: str, after: int
) -> None:
    engine = get_engine(server.url)
    job_id = jobs.create_job(engine, parse_spec(SPEC))
    log = tmp_path / "driver.log"
    driver = _driver(job_id, server.url, ray_cluster, log)
    try:
        _wait_for_trials(engine, job_id, after, driver)
        if outage == "restart":
            server.restart()
        else:
            server.stop()
            time.sleep(5)
            assert driver.poll() is None, log.read_text()
            server.start()
        code = driver.wait(timeout=300)
    finally:
        driver.kill()
    said = log.read_text()
    assert code == 0, said
    assert "Traceback" not in said and "error:" not in said, said
    if outage != "restart":  # a restart may be over before the driver next looks
        assert "unreachable since" in said and "retrying" in said, said
        assert "answers again" in said, said
    _assert_each_candidate_once(engine, job_id)


@pytest.mark.slow
def test_an_outage_past_the_limit_exits_3_and_the_job_resumes(
    server: Server, ray_cluster: str, tmp_path: Path
) -> None:
    engine = get_engine(server.url)
    job_id = jobs.create_job(engine, parse_spec(SPEC))
    log = tmp_path / "driver.log"
    driver = _driver(job_id, server.url, ray_cluster, log, TUNELAB_DB_OUTAGE_S="3")
    try:
        _wait_for_trials(engine, job_id, 40, driver)
        server.stop()
        stopped = time.monotonic()
        code = driver.wait(timeout=120)
        waited = time.monotonic() - stopped
    finally:
        driver.kill()
    said = log.read_text()
    assert code == 3, said
    assert "Traceback" not in said, said
    errors = [line for line in said.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, said
    assert "unreachable since" in errors[0] and "TUNELAB_DB_OUTAGE_S=3" in errors[0], said
    assert f"tunelab resume {job_id}" in errors[0]
    assert 3 <= waited < 30, said

    server.start()
    before = {t.candidate: t.id for t in jobs.trials(engine, job_id)}
    assert 40 <= len(before) < N
    assert jobs.get_job(engine, job_id).status == "running"  # the driver could not say more
    # --force: the driver's last heartbeat is seconds old, younger than what marks a
    # driver lost (a real outage limit, 10 minutes, is far older).
    resumed = _cli(
        "resume", str(job_id), "--wait", "--force", "--db", server.url, "--ray", ray_cluster,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    _assert_each_candidate_once(engine, job_id)
    for t in jobs.trials(engine, job_id):  # what was recorded before stays as it was
        if t.candidate in before:
            assert t.id == before[t.candidate]


# -- the recorder and a full database ---------------------------------------------------


def _full_sqlite(tmp_path: Path) -> tuple[object, object]:
    """A migrated SQLite file and an engine of one connection that may not grow it: SQLite's
    own size limit (`max_page_count`) answers "database or disk is full" exactly as a
    full disk does."""
    url = f"sqlite:///{tmp_path / 'trials.db'}"
    job_id = jobs.create_job(get_engine(url), parse_spec(SPEC))
    engine = create_engine(url, poolclass=StaticPool)
    with engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
        conn.exec_driver_sql(f"PRAGMA max_page_count = {pages}")
    return engine, job_id


def _add(rec: Recorder, n: int) -> None:
    for i in range(n):
        rec.add(
            candidate=candidate_key({"i": i}), params={"i": i}, status=TrialStatus.ok,
            latencies_s=[1e-3], extra={"padding": "x" * 2000},
        )  # fmt: skip


def _grow(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA max_page_count = 1073741823")


def test_recorder_keeps_results_while_the_database_is_full(tmp_path: Path) -> None:
    engine, job_id = _full_sqlite(tmp_path)
    rec = Recorder(engine, job_id, max_rows=10_000, outage=Outage("trials.db", limit_s=60))
    _add(rec, 300)
    assert rec.flush() is False  # full: kept, no error
    assert rec.outage is not None and rec.outage.away and rec.pending() == 300
    assert rec.flush() is False  # not tried again before the backoff has passed
    _grow(engine)  # room again
    rec.drain()
    assert rec.pending() == 0 and not rec.outage.away
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).where(Trial.job_id == job_id)).scalar_one()
    assert n == 300
    assert jobs.get_job(engine, job_id).n_done == 300


def test_recorder_gives_up_past_the_outage_limit(tmp_path: Path) -> None:
    engine, job_id = _full_sqlite(tmp_path)
    rec = Recorder(engine, job_id, max_rows=10_000, outage=Outage("trials.db", limit_s=0.5))
    _add(rec, 300)
    assert rec.flush() is False
    time.sleep(0.6)
    with pytest.raises(DatabaseOutage, match=r"full since .*longer than TUNELAB_DB_OUTAGE_S=0\.5"):
        rec.flush()
    assert issubclass(DatabaseOutage, DatabaseError)  # the CLI's exit 3
    assert rec.pending() == 300  # nothing half-written, nothing let go


def test_recorder_waits_for_the_database_when_its_buffer_is_full(tmp_path: Path) -> None:
    """Past `max_buffer` results, `add` blocks on the database instead of growing."""
    engine, job_id = _full_sqlite(tmp_path)
    rec = Recorder(
        engine, job_id, max_rows=50, max_buffer=200, outage=Outage("trials.db", limit_s=1)
    )
    _add(rec, 199)
    assert rec.pending() == 199
    with pytest.raises(DatabaseOutage):
        _add(rec, 1)  # the 200th waits the outage out: here it lasts past the limit


def test_what_counts_as_an_outage(tmp_path: Path, pg_url: str) -> None:
    def error_of(fn) -> BaseException:  # type: ignore[no-untyped-def]
        try:
            fn()
        except Exception as exc:
            return exc
        raise AssertionError("no error")

    refused = error_of(lambda: psycopg.connect("host=127.0.0.1 port=1 user=x connect_timeout=2"))
    assert is_outage(refused)
    engine = get_engine(pg_url)
    with engine.connect() as conn:
        assert not is_outage(error_of(lambda: conn.execute(text("SELEC 1"))))
    with engine.connect() as conn:
        assert not is_outage(error_of(lambda: conn.execute(text("SELECT * FROM nowhere"))))
    sqlite = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with sqlite.connect() as conn:
        assert not is_outage(error_of(lambda: conn.execute(text("SELECT * FROM nowhere"))))


PPO = {
    "name": "ppo-outage", "kind": "graph-rewrite",
    "workload": {"model": "bert", "size": "test", "horizon": 4, "max_candidates": 8,
                 "workers": 2},
    "search": {"strategy": "ppo", "seed": 3, "ppo": {
        "episodes": 16, "episodes_per_update": 4, "eval_every": 2, "checkpoint_every": 1,
        "minibatch": 4, "epochs": 2, "network": {"hidden": 16, "message_passing_steps": 2},
    }},
    "measure": {"threads": 1, "rounds": 3, "min_sample_ms": 0.5, "busy_per_core": 1000,
                "final_top_k": 0},
}  # fmt: skip


@pytest.mark.slow
def test_ppo_training_rides_out_a_20_s_database_stop(
    server: Server, ray_cluster: str, tmp_path: Path
) -> None:
    """PostgreSQL stopped for 20 s while PPO episodes run on two rollout workers (whose
    steps, graph artifacts and op costs go to the database) and the learner checkpoints:
    the job completes, every episode recorded once, no trial left `running`."""
    engine = get_engine(server.url)
    job_id = jobs.create_job(engine, parse_spec(PPO))
    log = tmp_path / "driver.log"
    driver = _driver(job_id, server.url, ray_cluster, log)
    try:
        _wait_for_trials(engine, job_id, 3, driver)
        server.stop()
        time.sleep(20)
        assert driver.poll() is None, log.read_text()
        server.start()
        code = driver.wait(timeout=600)
    finally:
        driver.kill()
    said = log.read_text()
    assert code == 0, said
    job = jobs.get_job(engine, job_id)
    assert job.status == "completed", (job.error, said)
    trials = jobs.trials(engine, job_id)
    assert not [t.id for t in trials if t.status == TrialStatus.running]
    episodes = [t for t in trials if t.baseline is None]
    assert sorted(t.params["episode"] for t in episodes) == list(range(16))
    assert all(t.status == TrialStatus.ok for t in episodes), [
        (t.params["episode"], t.status, t.error) for t in episodes if t.status != "ok"
    ]
