"""Job kinds for testing the platform and kinds built on it: no TVM, no torch.

- `testing-trivial`: n candidates that evaluate to nothing (1 us): platform overhead.
- `testing-quadratic`: a generated space of axes^3 candidates (10^9 by default), never
  listed; its loss is a quadratic bowl, so search strategies have something to find.
- `testing-faulty`: candidates that fail on purpose, for real: a wrong result, a raised
  error, an evaluation that hangs, a worker process that SIGKILLs itself, one that stops
  (SIGSTOP: alive to Ray, silent to the heartbeat).
- `testing-episodic`: long-running evaluations — a small deterministic "training run"
  per candidate that reports a step per iteration, checkpoints every few steps and,
  retried after its worker died, goes on from its last checkpoint exactly as if it had
  never stopped (its RNG state is in the checkpoint).

Ray workers unpickle these by module path, so they live in the installed package.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveInt

from tunelab.platform.datafile import DataFormatError, pack, unpack
from tunelab.platform.kinds import (
    Built,
    EvalContext,
    JobKind,
    Measurement,
    Objective,
    Resources,
    RunError,
    WrongResult,
)
from tunelab.platform.search.space import ProductSpace
from tunelab.platform.spec import JobSpec, MeasureSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UntimedMeasure(MeasureSpec):
    """These kinds time nothing real, so the node-health guard is off unless a spec sets
    `measure.quiet_wait_s` (tests of the guard do)."""

    quiet_wait_s: NonNegativeFloat | None = Field(
        None, description="as MeasureSpec's; null here: the node is not watched"
    )


class NoSpace(_Strict):
    """These kinds take no `space:` section."""


# -- trivial --------------------------------------------------------------------------


class TrivialWorkload(_Strict):
    n: PositiveInt
    seconds: NonNegativeFloat = Field(0.0, description="each measurement holds its worker")


class Trivial(JobKind):
    """Candidate i builds to nothing and measures as 1 us: what is left is bookkeeping.
    With `seconds`, each measurement holds its worker that long (a measurement-bound job)."""

    name = "testing-trivial"
    workload_model = TrivialWorkload
    measure_model = UntimedMeasure
    space_model = NoSpace

    def space(self, spec: JobSpec) -> list[dict[str, Any]]:
        return [{"i": i} for i in range(spec.workload["n"])]

    def build(self, spec: JobSpec, params: dict[str, Any]) -> Built:
        return Built(b"")

    def measure(
        self, spec: JobSpec, params: dict[str, Any], built: Built, ctx: EvalContext
    ) -> Measurement:
        seconds = spec.workload.get("seconds") or 0.0
        if seconds:
            time.sleep(seconds)
        return Measurement([seconds or 1e-6])


# -- quadratic (a generated space) ----------------------------------------------------


class QuadraticWorkload(_Strict):
    axis: PositiveInt = Field(1000, description="values per axis: axis^3 candidates")
    center: tuple[int, int, int] = (123, 456, 789)


class Quadratic(JobKind):
    """loss(x, y, z) = 1 + squared distance to `center`, over a never-listed product space.
    No build step; evaluations run in a pool."""

    name = "testing-quadratic"
    workload_model = QuadraticWorkload
    measure_model = UntimedMeasure
    space_model = NoSpace
    objectives = (Objective("loss", "minimize"),)

    def resources(self, spec: JobSpec) -> Resources:
        return Resources(evaluate="pool", workers=1, build=None)

    def space(self, spec: JobSpec) -> ProductSpace:
        values = list(range(spec.workload["axis"]))
        return ProductSpace({"x": values, "y": values, "z": values})

    def model_features(self, spec: JobSpec, params: dict[str, Any]) -> dict[str, float]:
        return {k: float(v) for k, v in params.items()}

    def measure(
        self, spec: JobSpec, params: dict[str, Any], built: Built, ctx: EvalContext
    ) -> Measurement:
        return Measurement(objectives={"loss": quadratic_loss(spec.workload, params)})


def quadratic_loss(workload: dict[str, Any], params: dict[str, Any]) -> float:
    cx, cy, cz = workload.get("center", QuadraticWorkload().center)
    return 1.0 + (params["x"] - cx) ** 2 + (params["y"] - cy) ** 2 + (params["z"] - cz) ** 2


# -- faulty ---------------------------------------------------------------------------

Fault = Literal["good", "wrong", "error", "hang", "crash", "crash_once", "stop"]


class FaultyWorkload(_Strict):
    faults: list[Fault]
    marker_dir: str | None = Field(None, description="where crash_once notes it crashed")
    seconds: NonNegativeFloat = 0.0


class Faulty(JobKind):
    """Candidate i behaves as `faults[i]` says. Long-running (with heartbeats), so that
    `stop` — a worker process frozen by SIGSTOP — is caught by its silent heartbeat."""

    name = "testing-faulty"
    workload_model = FaultyWorkload
    measure_model = UntimedMeasure
    space_model = NoSpace
    long_running = True

    def resources(self, spec: JobSpec) -> Resources:
        return Resources(evaluate="pool", build=None)

    def space(self, spec: JobSpec) -> list[dict[str, Any]]:
        return [{"i": i, "fault": f} for i, f in enumerate(spec.workload["faults"])]

    def measure(
        self, spec: JobSpec, params: dict[str, Any], built: Built, ctx: EvalContext
    ) -> Measurement:
        fault = params["fault"]
        time.sleep(spec.workload["seconds"])
        if fault == "wrong":
            raise WrongResult("output differs from the reference by 1.0 at [0]")
        if fault == "error":
            raise RunError("the evaluation raised an error on purpose")
        if fault == "hang":
            while True:
                time.sleep(1)
        if fault == "crash" or (fault == "crash_once" and not self._crashed_before(spec, params)):
            os.kill(os.getpid(), signal.SIGKILL)
        if fault == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
        return Measurement(latencies_s=[1e-3 * (1 + params["i"])])

    @staticmethod
    def _crashed_before(spec: JobSpec, params: dict[str, Any]) -> bool:
        marker = os.path.join(spec.workload["marker_dir"] or ".", f"crashed-{params['i']}")
        if os.path.exists(marker):
            return True
        with open(marker, "w"):
            pass
        return False


# -- episodic (long-running, with steps and checkpoints) -----------------------------


class EpisodicWorkload(_Strict):
    runs: PositiveInt = Field(4, description="candidates: one training run each")
    steps: PositiveInt = Field(40, description="steps of one run")
    checkpoint_every: PositiveInt = 5
    step_s: NonNegativeFloat = Field(0.05, description="time one step takes")
    workers: PositiveInt | None = Field(None, description="parallel evaluations")


class Episodic(JobKind):
    """Each candidate (a learning rate and a seed) is a small deterministic training run:
    noisy gradient descent on a 1-D quadratic, one reported step per iteration (loss and
    weight), a checkpoint every `checkpoint_every` steps. Interrupted anywhere, a rerun
    resumes from its last checkpoint and ends exactly as an uninterrupted run would."""

    name = "testing-episodic"
    workload_model = EpisodicWorkload
    measure_model = UntimedMeasure
    space_model = NoSpace
    long_running = True
    objectives = (Objective("final_loss", "minimize"), Objective("reward", "maximize"))

    def resources(self, spec: JobSpec) -> Resources:
        return Resources(evaluate="pool", workers=spec.workload.get("workers"), build=None)

    def space(self, spec: JobSpec) -> list[dict[str, Any]]:
        lrs = [0.05, 0.1, 0.2, 0.4]
        return [{"lr": lrs[i % len(lrs)], "seed": i} for i in range(spec.workload["runs"])]

    def measure(
        self, spec: JobSpec, params: dict[str, Any], built: Built, ctx: EvalContext
    ) -> Measurement:
        wl = spec.workload
        resumed = ctx.load_checkpoint()
        try:
            run = (
                TrainingRun.from_bytes(resumed[1], f"the checkpoint at step {resumed[0]}")
                if resumed
                else TrainingRun.start(params["lr"], params["seed"])
            )
        except DataFormatError as exc:
            raise RunError(str(exc)) from None
        started_at = run.step
        while run.step < wl["steps"]:
            if ctx.should_stop():
                raise RunError(f"stopped at step {run.step}")
            time.sleep(wl["step_s"])
            ctx.report(run.step, run.advance())
            if run.step % wl["checkpoint_every"] == 0:
                ctx.save_checkpoint(run.step, run.to_bytes())
        return Measurement(
            objectives={"final_loss": run.loss(), "reward": -run.loss()},
            info={"resumed_from_step": started_at, "attempt": ctx.attempt},
        )


class TrainingRun:
    """The state of one episodic run: everything a checkpoint must hold."""

    def __init__(self, lr: float, w: float, step: int, rng: np.random.Generator) -> None:
        self.lr, self.w, self.step, self.rng = lr, w, step, rng

    @classmethod
    def start(cls, lr: float, seed: int) -> TrainingRun:
        rng = np.random.default_rng(seed)
        return cls(lr, float(rng.normal(5.0, 1.0)), 0, rng)

    def loss(self) -> float:
        return (self.w - 1.0) ** 2

    def to_bytes(self) -> bytes:
        """The run as data (JSON: its weight, step and RNG state), never a pickle."""
        state = {"lr": self.lr, "w": self.w, "step": self.step,
                 "rng": self.rng.bit_generator.state}  # fmt: skip
        return pack("episodic-run", state)

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "checkpoint") -> TrainingRun:
        """A run saved by `to_bytes` (DataFormatError for anything else)."""
        state, _ = unpack("episodic-run", data, what)
        try:
            rng = np.random.default_rng()
            rng.bit_generator.state = state["rng"]
            return cls(float(state["lr"]), float(state["w"]), int(state["step"]), rng)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataFormatError(f"{what}: not an episodic run's state ({exc})") from None

    def advance(self) -> dict[str, float]:
        """One noisy gradient step; returns the metrics of the step just taken."""
        grad = 2.0 * (self.w - 1.0) + float(self.rng.normal(0.0, 0.1))
        self.w -= self.lr * grad
        self.step += 1
        return {"loss": self.loss(), "w": self.w}

    @classmethod
    def uninterrupted(cls, lr: float, seed: int, steps: int) -> list[dict[str, float]]:
        """Every step's metrics of a run that never stopped (what tests compare with)."""
        run = cls.start(lr, seed)
        return [run.advance() for _ in range(steps)]
