"""The public surface for kind authors: the JobKind contract, its errors and results, the
evaluation context, and registration.

A kind is found by name among the `tunelab.kinds` entry points (the built-in
`pipeline-search` is one) or registered in-process with `register_kind`. The kind object
itself travels to Ray workers, so its `build` and `measure` run there unchanged. Loading
a kind must stay cheap: import heavy libraries (TVM, torch) inside the methods that need
them, so listing kinds, `--help`, `jobs` and `show` never import them.

The smallest kind (see README, "Writing a kind")::

    class Square(JobKind):
        name = "square"
        workload_model = SquareWorkload          # pydantic model of `workload:`
        space_model = NoSpace                     # pydantic model of `space:`
        objectives = (Objective("value", "minimize"),)

        def space(self, spec):
            return [{"x": x} for x in range(-10, 11)]

        def measure(self, spec, params, built, ctx):
            return Measurement(objectives={"value": params["x"] ** 2})
"""

from __future__ import annotations

import functools
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel

from tunelab.platform.objectives import LATENCY_OBJECTIVE, Objective
from tunelab.platform.spec import MeasureSpec
from tunelab.schema.models import Direction, TrialStatus

if TYPE_CHECKING:
    from tunelab.platform.search.space import Space
    from tunelab.platform.search.strategies import SearchStrategy
    from tunelab.platform.spec import JobSpec

__all__ = [
    "BuildError",
    "Built",
    "CandidateError",
    "Direction",
    "EvalContext",
    "ExportUnsupported",
    "FinalRuns",
    "Finalist",
    "InvalidCandidate",
    "JobKind",
    "Measurement",
    "Objective",
    "Resources",
    "RunError",
    "WorkerAccess",
    "WrongResult",
    "available_kinds",
    "candidate_key",
    "canonical_json",
    "get_kind",
    "register_kind",
]


class CandidateError(Exception):
    """A candidate failed in a way that is its own fault; `status` says how."""

    status: ClassVar[TrialStatus] = TrialStatus.run_error


class InvalidCandidate(CandidateError):
    """Rejected before building: it would exceed the target's limits."""

    status = TrialStatus.invalid


class BuildError(CandidateError):
    status = TrialStatus.build_error


class RunError(CandidateError):
    status = TrialStatus.run_error


class WrongResult(CandidateError):
    """The candidate ran but its output differs from the reference: never a winner."""

    status = TrialStatus.wrong_result


class ExportUnsupported(NotImplementedError):
    """The kind cannot export a candidate as deployable files (`JobKind.export`)."""


@dataclass
class Built:
    """What a build produces: an artifact the measurement worker needs nothing else to run."""

    artifact: bytes
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Measurement:
    """What an evaluation reports: the seconds of each timed repeat (timing kinds), named
    objective values (`latency_s`, the median repeat, is added when repeats are given),
    anything the kind wants recorded on the trial (`info`, the trial's `extra`), and
    `payload`: data for the kind's own search strategy (an RL episode's trajectory),
    handed to its `tell_result` with the result and never recorded."""

    latencies_s: list[float] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    objectives: dict[str, float] = field(default_factory=dict)
    payload: Any = None


@dataclass(frozen=True)
class Finalist:
    """A trial sent to the final rounds: its candidate key, parameters and what its
    measurement recorded (`info`, the trial's `extra`: e.g. the artifact it made)."""

    key: str
    params: dict[str, Any]
    info: dict[str, Any]


@dataclass
class FinalRuns:
    """What a kind times in its final rounds (`JobKind.final_runs`): one callable per
    finalist (by candidate key) and the reference they are compared with; each sample
    lasts at least `min_sample_s` (a fast callable repeats within it)."""

    runs: dict[str, Callable[[], Any]]
    reference: Callable[[], Any]
    min_sample_s: float = 2e-3
    sync: Callable[[], None] | None = None


@dataclass(frozen=True)
class Resources:
    """Where a kind's work runs on the cluster.

    `evaluate`: `node` = one evaluation at a time per node, holding it alone (timing on
    CPUs); `gpu` = one per GPU; `pool` = as many at once as `workers` (default: as many
    as the cluster's CPUs allow, `evaluate_cpus` each, leaving one for builds).
    `build`: Ray resources a build prefers (e.g. {"nvcc": 1}), used when the cluster
    offers them. `build=None`: the kind has no build step."""

    evaluate: Literal["node", "gpu", "pool"] = "node"
    evaluate_cpus: float = 1
    workers: int | None = None
    build: dict[str, float] | None = field(default_factory=dict)


class EvalContext(ABC):
    """What an evaluation can use while it runs on a worker.

    Steps are buffered and written in batches; checkpoints and artifacts go to the
    database, where every node of the cluster reaches them; kind data persists across
    jobs. `cache` lives as long as the worker process (reference data shared by
    candidates of one workload)."""

    cache: dict[str, Any]
    job_id: int
    trial_key: str
    attempt: int
    deadline: float | None  # time.monotonic() by which the evaluation must end

    @abstractmethod
    def report(self, step: int, metrics: dict[str, Any]) -> None:
        """An intermediate result (a learning-curve point) of this evaluation."""

    @abstractmethod
    def should_stop(self) -> bool:
        """True once the job is cancelled or the driver gave this evaluation up: stop soon
        (a checkpoint first, if the work is worth keeping)."""

    @abstractmethod
    def save_checkpoint(self, step: int, data: bytes) -> None:
        """Everything a resumed evaluation needs to go on as if uninterrupted (model,
        optimiser and RNG states) after `step`; older ones are pruned."""

    @abstractmethod
    def load_checkpoint(self) -> tuple[int, bytes] | None:
        """The latest checkpoint of this evaluation (from an earlier attempt), if any."""

    @abstractmethod
    def save_artifact(self, name: str, data: bytes, meta: dict[str, Any] | None = None) -> str:
        """Store a named artifact of this job (a rewritten graph, a kernel's source);
        returns its content hash."""

    @abstractmethod
    def load_artifact(self, ref: str) -> bytes:
        """An artifact by `JOB:NAME`, id or hash prefix: artifacts of other jobs too."""

    @abstractmethod
    def kind_data(self, key: dict[str, Any]) -> dict[str, Any] | None:
        """This kind's data stored under `key` by any job, if any."""

    @abstractmethod
    def put_kind_data(self, key: dict[str, Any], value: dict[str, Any]) -> None:
        """Keep `value` under `key` for every later job of this kind (first writer wins)."""


class WorkerAccess:
    """What the driver hands `JobKind.resolve_spec`: call it with a function to run that
    function on an evaluation worker (a node that measures) and get its result;
    `kind_data` / `put_kind_data` read and keep the kind's data in the database as
    `EvalContext`'s do, so what was learnt about a node (say, its calibration) serves
    later jobs. Without a database (`get`/`put` None) nothing is kept."""

    def __init__(
        self,
        run: Callable[[Callable[[], Any]], Any],
        get: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
        put: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    ) -> None:
        self._run, self._get, self._put = run, get, put

    def __call__(self, fn: Callable[[], Any]) -> Any:
        return self._run(fn)

    def kind_data(self, key: dict[str, Any]) -> dict[str, Any] | None:
        """This kind's data stored under `key` by any job, if any."""
        return self._get(key) if self._get is not None else None

    def put_kind_data(self, key: dict[str, Any], value: dict[str, Any]) -> None:
        """Keep `value` under `key` for every later job of this kind (first writer wins)."""
        if self._put is not None:
            self._put(key, value)


class JobKind(ABC):
    """The contract between the platform and one kind of work.

    `space` runs on the driver; `build` runs in a CPU task on any node; `measure` runs in
    an evaluation worker placed as `resources()` says. Everything a kind says about its
    trials (objectives, resources, baselines, model features) comes through here.
    """

    name: ClassVar[str]
    # Validators of the spec's sections: anything whose model_validate(data) returns a
    # pydantic model (a BaseModel subclass, or a dispatcher over several).
    workload_model: ClassVar[Any]
    space_model: ClassVar[type[BaseModel]]
    target_model: ClassVar[type[BaseModel] | None] = None
    measure_model: ClassVar[type[MeasureSpec]] = MeasureSpec
    # Primary first: every ranking of this kind's trials follows it.
    objectives: ClassVar[Sequence[Objective]] = (LATENCY_OBJECTIVE,)
    # Evaluations that report steps and checkpoints: recorded as `running` with a
    # heartbeat while they run, retried from their last checkpoint when lost.
    long_running: ClassVar[bool] = False
    # Keys of a trial's `extra` that a sweep file keeps (for replay).
    replay_keys: ClassVar[tuple[str, ...]] = ()
    # What `final_runs` compares the finalists with, in words (shown with the verdict).
    reference_label: ClassVar[str] = "the reference"

    def validate_spec(self, spec: JobSpec) -> None:  # noqa: B027 - optional hook
        """Raise ValueError for combinations the field validators cannot see."""

    def resolve_spec(self, spec: JobSpec, on_worker: Callable[[Callable[[], Any]], Any]) -> JobSpec:
        """Fill in what depends on the evaluation workers (`on_worker(fn)` runs fn on one).

        Runs on the driver once the workers are up, before the search strategy is made
        (so the model features it ranks by see the resolved spec) and before anything is
        built. The driver passes a `WorkerAccess`, which also reads and keeps kind data."""
        return spec

    def resources(self, spec: JobSpec) -> Resources:
        """Where builds and evaluations of this job run."""
        return Resources()

    def strategies(self) -> dict[str, type[SearchStrategy]]:
        """Search strategies this kind brings, by name (`search.strategy`)."""
        return {}

    def describe(self, workload: dict[str, Any]) -> str:
        """A short human label for a workload."""
        return canonical_json(workload)

    def describe_target(self, spec: JobSpec) -> str:
        """A short label of where the job's candidates run (recorded on the job)."""
        return ""

    def environment(self) -> dict[str, Any]:
        """This kind's library versions on the evaluating node (part of its fingerprint)."""
        return {}

    def model_features(self, spec: JobSpec, params: dict[str, Any]) -> dict[str, float] | None:
        """Numbers a cost model can learn from, for a candidate not yet built; the key
        `predicted_s` is the kind's own analytical prediction. None: no model."""
        return None

    def suites(self) -> dict[str, list[dict[str, Any]]]:
        """Named lists of workloads a spec can ask for with `suite:`."""
        return {}

    def baselines(self, spec: JobSpec) -> list[dict[str, Any]]:
        """Reference candidates evaluated once per job beside the search (vendor
        libraries); `build`/`measure` receive them like any candidate. Each is a dict
        with a `baseline` key naming it; recorded with `baseline` set, never the best."""
        return []

    @abstractmethod
    def space(self, spec: JobSpec) -> Space | list[dict[str, Any]]:
        """The candidates: a list in a fixed order, or a generated `Space`."""

    def build(self, spec: JobSpec, params: dict[str, Any]) -> Built:
        """Compile one candidate; raise a CandidateError subclass on failure. Kinds that
        do not override it have no build step."""
        return Built(b"")

    @abstractmethod
    def measure(
        self, spec: JobSpec, params: dict[str, Any], built: Built, ctx: EvalContext
    ) -> Measurement:
        """Check and evaluate one built candidate; raise WrongResult if it is wrong."""

    def export(self, spec: JobSpec, params: dict[str, Any], out_dir: Path) -> list[Path]:
        """Write candidate `params` as deployable files (compiled code, its source, how
        to call it) into `out_dir`, an empty directory; return the paths written.

        `tunelab best JOB --out DIR` calls it for a job's best trial, then moves the
        files into DIR (never over a file there unless asked) and adds `params.json`.
        Raise a CandidateError if the candidate no longer builds. Kinds that do not
        override it cannot export: ExportUnsupported."""
        raise ExportUnsupported(f"kind {self.name} cannot export its trials")

    def final_runs(self, spec: JobSpec, finalists: list[Finalist], ctx: EvalContext) -> FinalRuns:
        """Final rounds for a kind whose primary objective is a speedup over a reference
        (reference seconds / candidate seconds, maximised) rather than a latency: the
        callables that run each finalist and the reference, made on a worker. The
        platform times them in paired, shuffled rounds on one worker and the job's best
        becomes the winner of those rounds (`platform/execution/finals.py`). Kinds that
        do not override it have no such final rounds."""
        raise NotImplementedError(f"kind {self.name} has no final runs")

    def final_identity(self, params: dict[str, Any], info: dict[str, Any]) -> str:
        """Finalists with the same identity are one thing timed once (two episodes that
        end in the same graph); default: the candidate itself."""
        return candidate_key(params)

    def has_final_runs(self) -> bool:
        return type(self).final_runs is not JobKind.final_runs

    def has_build(self) -> bool:
        return type(self).build is not JobKind.build

    def can_export(self) -> bool:
        return type(self).export is not JobKind.export

    def primary(self) -> Objective:
        return self.objectives[0]


def canonical_json(value: Any) -> str:
    """Canonical JSON text of parameters, a workload or a key: sorted keys, no spaces, no
    NaN — one text per value, whatever the dicts' order. ValueError if it is not JSON."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not JSON-serialisable: {exc}") from None


def candidate_key(params: dict[str, Any]) -> str:
    """A candidate's identity within a job: the SHA-256 of its parameters' canonical JSON."""
    return hashlib.sha256(canonical_json(params).encode()).hexdigest()


def workload_hash(kind: str, workload: dict[str, Any]) -> str:
    return hashlib.sha256(f"{kind}\n{canonical_json(workload)}".encode()).hexdigest()


_registered: dict[str, JobKind] = {}


def register_kind(kind: JobKind) -> None:
    """Make a kind available in this process (entry points do this for installed ones)."""
    _registered[kind.name] = kind


@functools.cache
def _entry_point_kinds() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group="tunelab.kinds")}


def available_kinds() -> set[str]:
    return set(_registered) | set(_entry_point_kinds())


def get_kind(name: str) -> JobKind:
    """The kind called `name`; KeyError if none is known."""
    if name not in _registered:
        eps = _entry_point_kinds()
        if name not in eps:
            raise KeyError(f"unknown job kind {name!r}")
        _registered[name] = eps[name].load()()
    return _registered[name]
