"""Platform v2: objectives and directions, generated spaces searched through ask/tell,
strategies installed through an entry point, kinds without a build step, long-running
evaluations with steps and checkpoints, and real failures of each kind — all with the
testing kit's kinds (no TVM, no torch) on a real Ray and real databases."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from tunelab.platform import artifacts, jobs, kind_data, steps
from tunelab.platform.execution import run_job
from tunelab.platform.kinds import (
    Built,
    EvalContext,
    JobKind,
    Measurement,
    Objective,
    Resources,
    register_kind,
)
from tunelab.platform.search.space import ProductSpace
from tunelab.platform.search.strategies import available_strategies, get_strategy, make_strategy
from tunelab.platform.spec import JobSpec, SpecError, parse_spec
from tunelab.schema.db import get_engine
from tunelab.schema.models import JobStatus
from tunelab.testing.kinds import NoSpace, TrainingRun, TrivialWorkload, quadratic_loss
from tunelab.testing.strategies import HillClimb

QUADRATIC = {"name": "q", "kind": "testing-quadratic", "workload": {}}


class CountingSpace(ProductSpace):
    """A product space that counts how many candidates were materialised."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.materialised = 0

    def params(self, i: int) -> dict[str, Any]:
        self.materialised += 1
        return super().params(i)


def _billion() -> CountingSpace:
    values = list(range(1000))
    return CountingSpace({"x": values, "y": values, "z": values})


def _drive(strategy: Any, batches: int, batch: int) -> list[tuple[str, dict[str, Any]]]:
    """The driver's ask/tell loop without Ray: ask a batch, tell its losses."""
    done: set[str] = set()
    asked = []
    workload = parse_spec(QUADRATIC).workload
    for _ in range(batches):
        got = strategy.ask(batch, done)
        for key, params in got:
            done.add(key)
            strategy.tell(key, quadratic_loss(workload, params))
        asked += got
    return asked


@pytest.mark.parametrize(
    "search",
    [
        {"strategy": "random", "budget": 256},
        {"strategy": "exhaustive", "budget": 256},
        {"strategy": "model", "cost_model": "xgboost", "budget": 64, "batch_size": 16},
        {"strategy": "testing-hill", "budget": 256, "testing-hill": {"strides": [1, 1000]}},
    ],
    ids=lambda s: s["strategy"],
)
def test_a_billion_candidates_are_searched_without_listing_them(search: dict) -> None:
    space = _billion()
    assert len(space) == 10**9
    spec = parse_spec({**QUADRATIC, "search": search})
    strategy = make_strategy(space, spec.search, lambda p: {k: float(v) for k, v in p.items()})
    asked = _drive(strategy, batches=search["budget"] // 16 + 2, batch=16)
    keys = [k for k, _ in asked]
    assert len(keys) == search["budget"] == len(set(keys))  # the budget, no repeats
    assert space.materialised < 20_000  # a pool at most, never the space
    assert strategy.ask(16, set(keys)) == []  # done when the budget is spent


def test_random_over_a_generated_space_is_seeded() -> None:
    def plan(seed: int) -> list[str]:
        spec = parse_spec(
            {**QUADRATIC, "search": {"strategy": "random", "budget": 50, "seed": seed}}
        )
        return [k for k, _ in make_strategy(_billion(), spec.search).ask(50, set())]

    assert plan(0) == plan(0) != plan(1)


def test_strategy_installed_through_an_entry_point() -> None:
    assert {"exhaustive", "random", "model", "testing-hill"} <= available_strategies()
    assert get_strategy("testing-hill") is HillClimb
    spec = parse_spec(
        {**QUADRATIC, "search": {"strategy": "testing-hill", "testing-hill": {"strides": [7]}}}
    )
    strategy = make_strategy(_billion(), spec.search)
    assert strategy.options.strides == [7]


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ({"strategy": "annealing"},
         r"search\.strategy: unknown strategy 'annealing' \(known: .*random"),
        ({"strategy": "testing-hill", "testing-hill": {"strides": "x"}},
         r"search: testing-hill\.strides: Input should be a valid list"),
        ({"strategy": "random", "testing-hill": {}},
         r"search: testing-hill: not an option of strategy 'random'"),
        ({"strategy": "testing-hill", "testing-hill": {"strides": []}},
         r"search: testing-hill\.strides: List should have at least 1 item"),
    ],
)  # fmt: skip
def test_strategy_errors_name_the_field(search: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec({**QUADRATIC, "search": search})


def test_kind_sections_are_the_kinds() -> None:
    with pytest.raises(SpecError, match="target: kind 'testing-quadratic' takes no target"):
        parse_spec({**QUADRATIC, "target": {"kind": "llvm"}})
    spec = parse_spec(
        {"name": "p", "kind": "pipeline-search", "workload": {"M": 64, "N": 64, "K": 64},
         "measure": {"number": 3}}
    )  # fmt: skip
    assert spec.target.kind == "llvm" and spec.measure.number == 3
    with pytest.raises(SpecError, match=r"measure\.number: Extra inputs are not permitted"):
        parse_spec({**QUADRATIC, "measure": {"number": 3}})
    # A spec survives its own JSON (how jobs store it) unchanged.
    assert parse_spec(spec.model_dump(mode="json")) == spec


class Score(JobKind):
    """Candidate i scores i: an objective to maximise, evaluated in a pool, no build."""

    name = "test-score"
    workload_model = TrivialWorkload
    space_model = NoSpace
    objectives: ClassVar = (Objective("score", "maximize"), Objective("latency_s", "minimize"))

    def resources(self, spec: JobSpec) -> Resources:
        return Resources(evaluate="pool", workers=1, build=None)

    def space(self, spec: JobSpec) -> list[dict[str, Any]]:
        return [{"i": i} for i in range(spec.workload["n"])]

    def baselines(self, spec: JobSpec) -> list[dict[str, Any]]:
        return [{"baseline": "oracle", "i": 10**6}]  # scores best of all, never the best

    def measure(
        self, spec: JobSpec, params: dict[str, Any], built: Built, ctx: EvalContext
    ) -> Measurement:
        if params["i"] == 3:
            return Measurement(objectives={"latency_s": 1.0})  # no score: not rankable
        # Data kept for later jobs of this kind, and an artifact every node can read.
        ctx.put_kind_data({"i": params["i"]}, {"score": params["i"]})
        if params["i"] == 0:
            ctx.save_artifact("note", b"scored on a worker")
            assert ctx.load_artifact(f"{ctx.job_id}:note") == b"scored on a worker"
        return Measurement(latencies_s=[1e-3, 2e-3], objectives={"score": float(params["i"])})


@pytest.mark.slow
def test_a_maximised_objective_ranks_everywhere(db_url: str, ray_cluster: str) -> None:
    register_kind(Score())
    engine = get_engine(db_url)
    job_id = jobs.create_job(
        engine, parse_spec({"name": "s", "kind": "test-score", "workload": {"n": 6}})
    )
    seen = []
    assert run_job(engine, job_id, on_progress=seen.append) == JobStatus.completed
    job = jobs.get_job(engine, job_id)
    assert (job.objective, job.direction, job.n_done) == ("score", "maximize", 7)
    assert job.best_value == 5.0 and seen[-1].best == 5.0
    top = jobs.trials(engine, job_id, top=3)
    assert [t.value for t in top] == [5.0, 4.0, 2.0]
    assert top[0].objectives == {"score": 5.0, "latency_s": 1.5e-3}
    assert top[0].latency_median_s == 1.5e-3 and top[0].latencies_s == [1e-3, 2e-3]
    oracle = jobs.baseline_trials(engine, job_id)
    assert [(t.baseline, t.value) for t in oracle] == [("oracle", 1e6)]
    assert kind_data.get(engine, "test-score", {"i": 4}) == {"score": 4}
    assert kind_data.count(engine, "test-score") == 6  # 5 scored candidates + the oracle
    note = artifacts.get_artifact(engine, f"{job_id}:note")
    assert artifacts.read_blob(engine, note.hash) == b"scored on a worker"


@pytest.mark.slow
def test_generated_space_job_with_an_installed_strategy(db_url: str, ray_cluster: str) -> None:
    engine = get_engine(db_url)
    spec = parse_spec(
        {**QUADRATIC, "search": {"strategy": "testing-hill", "budget": 48, "batch_size": 8,
                                 "testing-hill": {"strides": [1, 1000, 1000000], "starts": 4}}}
    )  # fmt: skip
    job_id = jobs.create_job(engine, spec)
    assert run_job(engine, job_id) == JobStatus.completed
    job = jobs.get_job(engine, job_id)
    trials = jobs.trials(engine, job_id)
    assert job.n_done == len(trials) == 48 == len({t.candidate for t in trials})
    values = [t.value for t in trials]
    assert job.best_value == min(values) < values[0]
    assert all(t.value == quadratic_loss(spec.workload, t.params) for t in trials)
    # The strategy's job-level learning curve: one step per result, best never worse.
    curve = [s["metrics"]["best"] for s in steps.read_steps(engine, job_id)]
    assert len(curve) == 48 and curve == sorted(curve, reverse=True)
    assert curve[-1] == job.best_value


EPISODIC = {
    "name": "episodic",
    "kind": "testing-episodic",
    "workload": {"runs": 3, "steps": 12, "checkpoint_every": 4, "step_s": 0.01, "workers": 2},
    "measure": {"keep_checkpoints": 2},
}


def _check_episodes(engine: Any, job_id: int, spec: JobSpec) -> None:
    """Every run's steps are 0..steps-1, once each, equal to an uninterrupted run's."""
    wl = spec.workload
    trials = jobs.trials(engine, job_id)
    assert len(trials) == wl["runs"]
    for t in trials:
        assert t.status == "ok", t.error
        expected = TrainingRun.uninterrupted(t.params["lr"], t.params["seed"], wl["steps"])
        got = list(steps.read_steps(engine, job_id, trial_key=t.candidate))
        assert [s["step"] for s in got] == list(range(wl["steps"]))
        assert [s["metrics"] for s in got] == expected  # bit for bit: deterministic
        assert t.objectives["final_loss"] == pytest.approx(expected[-1]["loss"])
        assert t.value == t.objectives["final_loss"]
        kept = artifacts.list_artifacts(engine, job_id, checkpoints=True, trial_key=t.candidate)
        every = range(wl["checkpoint_every"], wl["steps"] + 1, wl["checkpoint_every"])
        assert [a.step for a in kept] == list(every)[-spec.measure.keep_checkpoints :]


@pytest.mark.slow
def test_long_running_evaluations_report_steps_and_checkpoint(
    db_url: str, ray_cluster: str
) -> None:
    engine = get_engine(db_url)
    spec = parse_spec(EPISODIC)
    job_id = jobs.create_job(engine, spec)
    assert run_job(engine, job_id) == JobStatus.completed
    _check_episodes(engine, job_id, spec)
    job = jobs.get_job(engine, job_id)
    assert job.best_value == min(t.value for t in jobs.trials(engine, job_id))


@pytest.mark.slow
def test_faults_of_every_kind(db_url: str, ray_cluster: str, tmp_path: Any) -> None:
    """Real failures: an exception, a wrong result, a hang (deadline), a worker that
    SIGKILLs itself once (retried) or always (lost), and one frozen by SIGSTOP — alive
    to Ray, silent to the heartbeat — replaced and, frozen again, given up."""
    engine = get_engine(db_url)
    faults = ["good", "wrong", "error", "hang", "crash_once", "crash", "stop", "good"]
    spec = parse_spec(
        {"name": "faults", "kind": "testing-faulty",
         "workload": {"faults": faults, "marker_dir": str(tmp_path)},
         "measure": {"run_timeout_s": 12, "heartbeat_timeout_s": 3, "max_attempts": 2}}
    )  # fmt: skip
    job_id = jobs.create_job(engine, spec)
    assert run_job(engine, job_id) == JobStatus.completed
    by_fault = {t.params["fault"]: t for t in jobs.trials(engine, job_id) if t.params["i"] < 7}
    status = {f: t.status for f, t in by_fault.items()}
    assert status == {
        "good": "ok", "wrong": "wrong_result", "error": "run_error", "hang": "timeout",
        "crash_once": "ok", "crash": "worker_lost", "stop": "worker_lost",
    }  # fmt: skip
    assert by_fault["crash_once"].attempts == 2 and len(by_fault["crash_once"].attempt_errors) == 1
    assert "no heartbeat for 3 s" in by_fault["stop"].error
    assert by_fault["hang"].error.startswith("run exceeded 12 s")
    job = jobs.get_job(engine, job_id)
    assert job.n_done == 8 and job.best_value == pytest.approx(1e-3)  # wrong is never best
