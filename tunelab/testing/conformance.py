"""The checks every job kind must pass, as a pytest base class (like Optuna's storage
test cases): subclass it in a test module, name the kind and a small job's spec.

    class TestMyKind(KindConformance):
        kind = MyKind()
        spec = {"name": "c", "kind": "my-kind", "workload": {...},
                "search": {"strategy": "random", "budget": 4}}

The end-to-end check needs the fixtures `db_url` (a database URL) and `ray_cluster` (a
running Ray's address), as tunelab's own tests/conftest.py provides; it is marked slow.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, ClassVar

import pytest

from tunelab.platform.kinds import CandidateError, JobKind, Measurement, register_kind
from tunelab.platform.objectives import objective_values
from tunelab.platform.search.space import as_space
from tunelab.platform.spec import parse_spec
from tunelab.schema.models import Direction, JobStatus
from tunelab.testing.context import MemoryContext

HEAVY = ("tvm", "torch", "xgboost")


class KindConformance:
    """What a kind promises the platform."""

    kind: ClassVar[JobKind]
    spec: ClassVar[dict[str, Any]]
    sample: ClassVar[int] = 200  # candidates checked for unique, stable keys

    @pytest.fixture(autouse=True)
    def _registered(self) -> None:
        register_kind(self.kind)

    def test_spec_validates_and_survives_its_json(self) -> None:
        spec = parse_spec(self.spec)
        assert spec.kind == self.kind.name
        assert parse_spec(spec.model_dump(mode="json")) == spec  # how jobs store specs

    def test_objectives_are_declared(self) -> None:
        names = [o.name for o in self.kind.objectives]
        assert names and len(set(names)) == len(names)
        assert all(o.direction in tuple(Direction) for o in self.kind.objectives)
        assert self.kind.primary() == self.kind.objectives[0]

    def test_space_keys_are_unique_and_stable(self) -> None:
        spec = parse_spec(self.spec)
        first, again = as_space(self.kind.space(spec)), as_space(self.kind.space(spec))
        n = min(len(first), self.sample)
        assert n > 0, "the space is empty"
        keys = [first.key(i) for i in range(n)]
        assert len(set(keys)) == n
        assert keys == [again.key(i) for i in range(n)]
        for i in range(n):  # parameters are JSON, and their key is their identity
            params = first.params(i)
            assert json.loads(json.dumps(params)) == params

    def test_a_candidate_evaluates_or_fails_as_its_own_fault(self) -> None:
        spec = parse_spec(self.spec)
        params = as_space(self.kind.space(spec)).params(0)
        try:
            built = self.kind.build(spec, params)
            result = self.kind.measure(spec, params, built, MemoryContext())
        except CandidateError:
            return  # recorded with the error's status
        assert isinstance(result, Measurement)
        values = objective_values(result.latencies_s, result.objectives)
        assert self.kind.primary().name in values, "no value for the primary objective"

    def test_loading_the_kind_imports_nothing_heavy(self) -> None:
        module = type(self.kind).__module__
        code = (
            f"import sys, {module}\n"
            f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
            "assert not heavy, heavy\n"
        )
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-2000:]

    @pytest.mark.slow
    def test_a_small_job_records_each_candidate_once(self, db_url: str, ray_cluster: str) -> None:
        from tunelab.platform import jobs
        from tunelab.platform.execution import run_job
        from tunelab.platform.objectives import better
        from tunelab.schema.db import get_engine

        engine = get_engine(db_url)
        job_id = jobs.create_job(engine, parse_spec(self.spec))
        assert run_job(engine, job_id) == JobStatus.completed
        job = jobs.get_job(engine, job_id)
        trials = jobs.trials(engine, job_id)
        assert len({t.candidate for t in trials}) == len(trials) == job.n_done == job.n_planned
        ranked = [t for t in trials if t.status == "ok" and t.baseline is None and t.value]
        if job.verdict:  # the winner of the final rounds, re-measured
            assert job.best_trial_id == job.verdict["winner_trial_id"]
            if job.verdict.get("best") is not None:  # a ratio against a reference
                assert job.best_value == job.verdict["best"]["value"]
            else:  # timed: the winner's pooled median
                assert job.best_value == job.verdict["winner_median_s"]
        elif ranked:
            best = ranked[0].value
            for t in ranked[1:]:
                best = t.value if better(t.value, best, job.direction) else best
            assert job.best_value == best
        with pytest.raises(jobs.JobStateError, match="completed"):
            run_job(engine, job_id)  # a completed job is not run again
        assert len(jobs.trials(engine, job_id)) == len(trials)
