"""The node-health guard wired through the platform: a measurement on a busy node is
recorded as such (trial, remeasurement, job), shown, and kept from every cache (op costs,
calibration, warm-start priors). Load is injected for real: busy-loop processes on every
core, always killed afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest
from sqlalchemy import select

from tunelab.platform import health, jobs, kind_data
from tunelab.platform.recorder import Recorder, insert_remeasurements, measured_busy, measured_quiet
from tunelab.platform.spec import parse_spec
from tunelab.schema.db import get_engine
from tunelab.schema.models import Job, Remeasurement, Trial, TrialStatus

CORES = os.cpu_count() or 1
QUIET = 1000.0  # a busy_per_core no load reaches: isolates a test from the machine's own
BUSY = {"others": 2.0, "cores": 2, "load1": 2.5, "steal": 0.0, "mhz": 2600.0,
        "waited_s": 1.0, "busy": True, "samples": 2}  # fmt: skip
CALM = {**BUSY, "others": 0.0, "load1": 0.1, "waited_s": 0.0, "busy": False}


@contextmanager
def busy_loops(n: int = CORES, title: str | None = None) -> Iterator[list[int]]:
    """`n` processes spinning (`while True: pass`), not our children (a process the
    sampling one started is its own load), killed on the way out; `title`: their command
    line's first word (as Ray titles its workers)."""
    loop = f'exec -a "{title or sys.executable}" {sys.executable} -c "while True: pass"'
    script = f"for i in $(seq {n}); do ( {loop} ) </dev/null >/dev/null 2>&1 & echo $!; done"
    started = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    pids = [int(p) for p in started.stdout.split()]
    try:
        time.sleep(0.3)  # running before anyone samples
        yield pids
    finally:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while any(os.path.exists(f"/proc/{pid}") for pid in pids):
            time.sleep(0.01)  # reaped by init


# -- sampling and the guard ---------------------------------------------------------------


def test_sampling_sees_busy_loops_and_not_its_own_threads() -> None:
    with busy_loops() as pids:
        loaded = health.sample(1.0)
        own = health._own_pids()
    assert loaded.others >= CORES  # every loop is runnable, always
    assert loaded.busy and loaded.cores == CORES and not set(pids) & own
    record = loaded.as_json()
    assert set(record) >= {"others", "cores", "load1", "steal", "mhz", "waited_s", "busy"}
    # The platform's measuring workers (Ray titles them) are the job's own load, and so
    # is whatever this process started (a library measured in a child process).
    with busy_loops(1, title="ray::MeasureWorker.measure_many") as pids:
        assert set(pids) <= health._own_pids()
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert child.pid in health._own_pids()
    finally:
        child.kill()
        child.wait()
    assert not health.sample(QUIET).busy


def test_the_guard_waits_at_most_its_bound_then_cools_down() -> None:
    with busy_loops():
        guard = health.Guard(1.0, 0.5, cooldown_s=60)
        t0 = time.monotonic()
        first = guard.check()
        took = time.monotonic() - t0
        # waited until its bound, then one more sample; waited_s: until that sample
        assert first.busy and 1.0 <= took < 1.0 + 1.5 and first.waited_s >= 0.5
        second = guard.check()  # in its cooldown: samples, does not wait again
        assert second.busy and second.waited_s < 0.01
        again = health.Guard(0.5, 0.5, cooldown_s=0)
        again.check()
        assert again.check().waited_s >= 0.2  # no cooldown: waits each time
        busy_after = health.Guard(0.5, 0.5, cooldown_s=0)
        assert busy_after.after().busy
        assert busy_after.check().waited_s >= 0.2  # a busy sample never stands for quiet
    calm = health.Guard(5.0, QUIET)
    assert not calm.check().busy  # quiet: no wait at all
    assert not calm.after().busy
    t0 = time.monotonic()
    assert not calm.check().busy and time.monotonic() - t0 < 0.05  # the fresh `after`
    t0 = time.monotonic()
    calm.check()  # that one stood for one measurement: a window again
    assert time.monotonic() - t0 >= health.WINDOW_S
    merged = health.merge([first, second.as_json(), None])
    assert merged is not None and merged["busy"] and merged["samples"] == 2
    assert merged["waited_s"] == pytest.approx(first.waited_s, abs=1e-3)


def test_measure_settings_of_the_guard() -> None:
    spec = parse_spec({"name": "p", "kind": "pipeline-search", "workload": {"M": 64, "N": 64,
                                                                           "K": 64}})  # fmt: skip
    assert spec.measure.quiet_wait_s == 10.0
    assert spec.measure.busy_per_core == health.DEFAULT_BUSY_PER_CORE
    trivial = parse_spec({"name": "t", "kind": "testing-trivial", "workload": {"n": 1}})
    assert trivial.measure.quiet_wait_s is None  # times nothing: not watched by default
    with pytest.raises(ValueError, match="quiet_wait_s"):
        parse_spec({"name": "t", "kind": "testing-trivial", "workload": {"n": 1},
                    "measure": {"quiet_wait_s": -1}})  # fmt: skip


def test_a_worker_records_the_node_around_each_evaluation() -> None:
    """MeasureWorker outside Ray: `Outcome.health` from a wait for quiet and a sample
    after, busy under load; nothing when the spec does not watch the node."""
    from tunelab.platform.kinds import get_kind
    from tunelab.workers.context import JobHandle
    from tunelab.workers.tasks import EvalItem, MeasureWorker

    kind = get_kind("testing-trivial")
    spec = parse_spec({"name": "w", "kind": "testing-trivial", "workload": {"n": 2},
                       "measure": {"quiet_wait_s": 0.5}})  # fmt: skip
    worker = MeasureWorker(kind)
    job = JobHandle("sqlite://", 0, kind.name)
    with busy_loops():
        out = worker.measure(kind, spec, job, EvalItem("k", {"i": 0}, None, 1))
    assert out.status == TrialStatus.ok and out.health is not None
    assert out.health["busy"] and out.health["samples"] == 2 and out.health["waited_s"] >= 0.2
    assert out.seconds < 0.4  # the wait is not the evaluation's time
    measure = {"quiet_wait_s": 0.5, "busy_per_core": QUIET}
    quiet = parse_spec({**spec.model_dump(mode="json"), "measure": measure})
    out = worker.measure(kind, quiet, job, EvalItem("k", {"i": 1}, None, 1))
    assert out.health is not None and not out.health["busy"]
    plain = parse_spec({"name": "w", "kind": "testing-trivial", "workload": {"n": 2}})
    assert worker.measure(kind, plain, job, EvalItem("k", {"i": 1}, None, 1)).health is None


# -- recording --------------------------------------------------------------------------


SPEC = {"name": "h", "kind": "pipeline-search", "workload": {"M": 64, "N": 64, "K": 64}}


def test_busy_trials_and_rounds_mark_the_job(db_url: str) -> None:
    engine = get_engine(db_url)
    job_id = jobs.create_job(engine, parse_spec(SPEC))
    rec = Recorder(engine, job_id)
    for key, record in (("a", CALM), ("b", BUSY), ("c", None), ("d", BUSY)):
        rec.add(candidate=key, params={"k": key}, status=TrialStatus.ok,
                latencies_s=[1e-3, 1.1e-3], node_health=record)  # fmt: skip
    rec.flush()
    job = jobs.get_job(engine, job_id)
    assert (job.busy_trials, job.busy_rounds) == (2, 0)
    with engine.connect() as conn:
        rows = dict(conn.execute(select(Trial.candidate, Trial.node_health)).all())
        busy = set(conn.execute(select(Trial.candidate).where(measured_busy(Trial.node_health)))
                   .scalars())  # fmt: skip
        quiet = set(
            conn.execute(select(Trial.candidate).where(measured_quiet(Trial.node_health))).scalars()
        )
        ids = dict(conn.execute(select(Trial.candidate, Trial.id)).all())
    assert rows["b"] == BUSY and rows["a"] == CALM and rows["c"] is None
    assert busy == {"b", "d"} and quiet == {"a", "c"}

    # A quiet flush leaves the count alone; a timed-out busy trial retried quietly drops it.
    rec2 = Recorder(engine, job_id, replace={"d"})
    rec2.add(candidate="e", params={"k": "e"}, status=TrialStatus.ok, latencies_s=[1e-3],
             node_health=CALM)  # fmt: skip
    rec2.flush()
    assert jobs.get_job(engine, job_id).busy_trials == 2
    with engine.begin() as conn:
        conn.execute(Trial.__table__.update().where(Trial.candidate == "d")
                     .values(status=str(TrialStatus.timeout)))  # fmt: skip
    rec2.add(candidate="d", params={"k": "d"}, status=TrialStatus.ok, latencies_s=[1e-3],
             node_health=CALM)  # fmt: skip
    rec2.flush()
    assert jobs.get_job(engine, job_id).busy_trials == 1

    # Final rounds: the finals code hands each row its Outcome.health.
    rows_in = [
        {"job_id": job_id, "trial_id": ids["a"], "round": r, "latencies_s": [1e-3],
         "latency_median_s": 1e-3, "worker_node": "n", "node_health": h}
        for r, h in ((1, CALM), (2, BUSY), (3, None))
    ]  # fmt: skip
    insert_remeasurements(engine, rows_in)
    insert_remeasurements(engine, rows_in)  # idempotent
    job = jobs.get_job(engine, job_id)
    assert (job.busy_trials, job.busy_rounds) == (1, 1)
    with engine.connect() as conn:
        got = dict(conn.execute(select(Remeasurement.round, Remeasurement.node_health)).all())
        assert conn.execute(select(Job.busy_rounds).where(Job.id == job_id)).scalar_one() == 1
    assert got == {1: CALM, 2: BUSY, 3: None}


# -- caches -----------------------------------------------------------------------------


def _store() -> tuple[dict[str, Any], Any]:
    from tunelab.platform.kinds import canonical_json

    data: dict[str, Any] = {}

    def get(key: dict[str, Any]) -> dict[str, Any] | None:
        return data.get(canonical_json(key))

    def put(key: dict[str, Any], value: dict[str, Any]) -> None:
        data.setdefault(canonical_json(key), value)

    return data, (get, put)


def _graph() -> Any:
    from tunelab.workers.graphs.ir import Graph, Node, TensorType

    t = TensorType((32, 32))
    return Graph(
        inputs=["x", "y"],
        constants=[],
        nodes=[Node("mm", "matmul", ["x", "y"], ["m"]), Node("r", "relu", ["m"], ["z"])],
        outputs=["z"],
        types={"x": t, "y": t, "m": t, "z": t},
    )


def test_op_costs_measured_on_a_busy_node_stay_in_their_process() -> None:
    pytest.importorskip("torch")
    from tunelab.workers.graph_rewrite.cost import OpCostModel

    graph = _graph()
    data, store = _store()
    with busy_loops():
        busy = OpCostModel("cpu", {"t": 1}, store, repeats=3, busy_per_core=0.5)
        costs = busy.graph_cost(graph)
    assert costs > 0 and busy.measured == 2 and busy.unshared == 2
    assert data == {}  # nothing reached the shared store
    assert busy.graph_cost(graph) == costs  # this process keeps its own numbers

    quiet = OpCostModel("cpu", {"t": 1}, store, repeats=3, busy_per_core=QUIET)
    quiet.graph_cost(graph)
    assert quiet.measured == 2 and quiet.unshared == 0 and len(data) == 2
    for value in data.values():
        assert set(value) == {"seconds", "repeats", "measured_at", "health"}
        assert value["repeats"] == 3 and value["health"]["busy"] is False
        assert value["health"]["samples"] == 2  # before and after
    again = OpCostModel("cpu", {"t": 1}, store, repeats=3, busy_per_core=QUIET)
    assert again.graph_cost(graph) == quiet.graph_cost(graph) and again.measured == 0


def test_a_calibration_measured_busy_serves_its_job_but_is_not_kept() -> None:
    from tunelab.workers.pipeline_search.calibrate import cached, nominal

    machine = nominal().__class__(**{**nominal().to_dict(), "method": "tvm"})
    data, (get, put) = _store()
    key = {"calibration": 1, "environment": "e"}
    assert cached(key, lambda: (machine, BUSY), get, put) == machine
    assert data == {}
    assert cached(key, lambda: (machine, CALM), get, put) == machine
    (stored,) = data.values()
    assert stored["health"] == CALM and "measured_at" in stored
    assert cached(key, lambda: pytest.fail("measured again"), get, put) == machine


@pytest.mark.slow
def test_a_calibration_under_real_load_is_not_cached(db_url: str) -> None:
    """resolve_spec as the driver calls it, with busy loops on every core."""
    pytest.importorskip("tvm")
    from tunelab.platform.kinds import WorkerAccess, get_kind

    engine = get_engine(db_url)
    kind = get_kind("pipeline-search")
    spec = parse_spec({**SPEC, "target": {"kind": "llvm"}, "measure": {"quiet_wait_s": 0.5}})
    access = WorkerAccess(
        lambda fn: fn(),
        lambda key: kind_data.get(engine, kind.name, key),
        lambda key, value: kind_data.put(engine, kind.name, key, value),
    )
    with busy_loops():
        resolved = kind.resolve_spec(spec, access)
    assert resolved.target.machine is not None  # used for this job
    assert kind_data.count(engine, kind.name) == 0  # but not kept


def test_priors_skip_trials_measured_on_a_busy_node(db_url: str) -> None:
    from tunelab.platform.kinds import candidate_key, get_kind
    from tunelab.platform.search.priors import read_priors

    engine = get_engine(db_url)
    tile = {"tile_m": 32, "tile_n": 64, "tile_k": 32, "micro_m": 4, "micro_n": 16,
            "stages": 1, "reg_stages": 1}  # fmt: skip
    me = jobs.create_job(engine, parse_spec(SPEC))
    other = jobs.create_job(engine, parse_spec({**SPEC, "workload": {"M": 128, "N": 128,
                                                                     "K": 128}}))  # fmt: skip
    rec = Recorder(engine, other)
    for stages, record in ((1, CALM), (2, BUSY), (3, None)):
        params = {**tile, "stages": stages}
        rec.add(candidate=candidate_key(params), params=params, status=TrialStatus.ok,
                latencies_s=[1e-4 * stages] * 3, node_health=record)  # fmt: skip
    rec.flush()
    priors = read_priors(engine, me, get_kind("pipeline-search"))
    assert sorted(p.params["stages"] for p in priors) == [1, 3]


# -- a real job under injected load -------------------------------------------------------


def _cli(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "tunelab.platform.cli", *args],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return " ".join(proc.stdout.split())


@pytest.mark.slow
def test_a_job_under_load_is_marked_shown_and_a_quiet_one_is_not(
    sqlite_url: str, ray_cluster: str
) -> None:
    """Through the driver and Ray: busy loops on every core while a timed job measures;
    every trial and the job are marked and `show`, `trials` and `best` say so. The same
    job with the loops stopped (and a threshold the machine's other work cannot reach)
    is not."""
    from tunelab.platform.execution import run_job
    from tunelab.schema.models import JobStatus

    engine = get_engine(sqlite_url)

    def job(measure: dict[str, Any]) -> int:
        spec = {"name": "load", "kind": "testing-trivial", "workload": {"n": 3, "seconds": 0.05},
                "measure": {"final_top_k": 0, **measure}}  # fmt: skip
        job_id = jobs.create_job(engine, parse_spec(spec))
        assert run_job(engine, job_id) == JobStatus.completed
        return job_id

    with busy_loops():
        loaded = job({"quiet_wait_s": 0.5})
    quiet = job({"quiet_wait_s": 0.5, "busy_per_core": QUIET})

    marked = jobs.trials(engine, loaded)
    assert len(marked) == 3 and all(t.node_health and t.node_health["busy"] for t in marked)
    assert all(t.node_health["others"] >= CORES for t in marked)  # the loops, seen
    assert jobs.get_job(engine, loaded).busy_trials == 3
    calm = jobs.trials(engine, quiet)
    assert all(t.node_health and not t.node_health["busy"] for t in calm)
    assert jobs.get_job(engine, quiet).busy_trials == 0

    shown = _cli("show", str(loaded), "--db", sqlite_url)
    assert "measured on a busy node: 3 of 3 trials" in shown and "kept from every cache" in shown
    listed = _cli("trials", str(loaded), "--db", sqlite_url)
    assert listed.count("ok busy") == 3 and "busy: measured on a busy node" in listed
    assert "measured on a busy node" in _cli("best", str(loaded), "--db", sqlite_url)
    as_json = subprocess.run(
        [sys.executable, "-m", "tunelab.platform.cli", "trials", str(loaded), "--db", sqlite_url,
         "--format", "json"], capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    assert '"busy_node": true' in as_json
    for command in ("show", "trials", "best"):
        assert "busy" not in _cli(command, str(quiet), "--db", sqlite_url)


# -- the dashboard ------------------------------------------------------------------------


@pytest.fixture
def _fresh_dashboard() -> Iterator[None]:
    yield
    import streamlit as st

    from tunelab.dashboard.db import clear_cache

    st.cache_resource.clear()
    clear_cache()


@pytest.mark.usefixtures("_fresh_dashboard")
def test_the_dashboard_warns_of_a_busy_node(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_dashboard import app, select_row, texts

    engine = get_engine(sqlite_url)
    job_id = jobs.create_job(engine, parse_spec(SPEC))
    rec = Recorder(engine, job_id)
    for key, record in (("a", CALM), ("b", BUSY)):
        rec.add(candidate=key, params={"tile_m": 32 if key == "a" else 64},
                status=TrialStatus.ok, latencies_s=[1e-3], node_health=record)  # fmt: skip
    rec.flush()
    job_page = app(sqlite_url, monkeypatch, "job", job=job_id)
    assert "Measured on a busy node: 1 of 2 trials (load 2.50" in texts(job_page)
    trials = app(sqlite_url, monkeypatch, "trials", job=job_id)
    assert list(trials.dataframe[0].value["status"]) == ["ok", "ok ⚠ busy node"]
    select_row(trials, 1)
    assert "Measured on a busy node: 2.0 runnable tasks not ours on 2 cores" in texts(trials)
    quiet = jobs.create_job(engine, parse_spec({**SPEC, "name": "quiet"}))
    Recorder(engine, quiet).flush()
    assert "busy node" not in texts(app(sqlite_url, monkeypatch, "job", job=quiet))
