"""A job kind whose evaluation costs nothing: what is left is the platform's own overhead."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, PositiveInt

from tunelab.platform.kinds import Built, EvalContext, JobKind, Measurement
from tunelab.platform.spec import JobSpec


class TrivialWorkload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: PositiveInt


class NoSpace(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Trivial(JobKind):
    """Candidate i "builds" to nothing and "measures" as 1 us: no work, only bookkeeping."""

    name = "trivial"
    workload_model = TrivialWorkload
    space_model = NoSpace

    def space(self, spec: JobSpec) -> list[dict[str, Any]]:
        return [{"i": i} for i in range(spec.workload["n"])]

    def build(self, spec: JobSpec, params: dict[str, Any]) -> Built:
        return Built(b"")

    def measure(
        self, spec: JobSpec, params: dict[str, Any], built: Built, ctx: EvalContext
    ) -> Measurement:
        return Measurement([1e-6])


class SleepyWorkload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: PositiveInt
    seconds: float


class Sleepy(Trivial):
    """Each measurement holds its worker for a fixed time: a measurement-bound job."""

    name = "sleepy"
    workload_model = SleepyWorkload

    def measure(
        self, spec: JobSpec, params: dict[str, Any], built: Built, ctx: EvalContext
    ) -> Measurement:
        import time

        time.sleep(spec.workload["seconds"])
        return Measurement([spec.workload["seconds"]])
