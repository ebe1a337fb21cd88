"""Job kinds are plug-ins: each brings its spec sections, candidate space, build and measure.

A kind is found by name among the `tunelab.kinds` entry points (the built-in
`pipeline-search` is one) or registered in-process with `register_kind`. The kind object
itself travels to Ray workers, so its `build` and `measure` run there unchanged.
"""

from __future__ import annotations

import functools
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from tunelab.schema.models import TrialStatus

if TYPE_CHECKING:
    from tunelab.platform.spec import JobSpec


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
    """The kernel ran but its output differs from the reference: never a winner."""

    status = TrialStatus.wrong_result


@dataclass
class Built:
    """What a build produces: an artifact the measurement worker needs nothing else to run."""

    artifact: bytes
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Measurement:
    """Seconds per run of each repeat, plus anything the kind wants recorded on the trial."""

    latencies_s: list[float]
    info: dict[str, Any] = field(default_factory=dict)


class JobKind(ABC):
    """The contract between the platform and one kind of work.

    `space` runs on the driver; `build` runs in a CPU task on any node; `measure` runs in
    a measurement worker that holds the device alone. `cache` is a dict that lives as long
    as that worker, for reference data shared by candidates of one workload.
    """

    name: ClassVar[str]
    # Validators of the spec's sections: anything whose model_validate(data) returns a
    # pydantic model (a BaseModel subclass, or a dispatcher over several).
    workload_model: ClassVar[Any]
    space_model: ClassVar[type[BaseModel]]

    def validate_spec(self, spec: JobSpec) -> None:  # noqa: B027 - optional hook
        """Raise ValueError for combinations the field validators cannot see."""

    def resolve_spec(self, spec: JobSpec, on_worker: Callable[[Callable[[], Any]], Any]) -> JobSpec:
        """Fill in what depends on the measurement workers (`on_worker(fn)` runs fn on one).

        Runs on the driver once the workers are up, before anything is built."""
        return spec

    def describe(self, workload: dict[str, Any]) -> str:
        """A short human label for a workload."""
        return json.dumps(workload, sort_keys=True)

    def model_features(self, spec: JobSpec, params: dict[str, Any]) -> dict[str, float] | None:
        """Numbers a cost model can learn from, for a candidate not yet built; the key
        `predicted_s` is the kind's own analytical prediction. None: no model."""
        return None

    def suites(self) -> dict[str, list[dict[str, Any]]]:
        """Named lists of workloads a spec can ask for with `suite:`."""
        return {}

    def baselines(self, spec: JobSpec) -> list[dict[str, Any]]:
        """Reference candidates measured once per job beside the search (vendor
        libraries); `build`/`measure` receive them like any candidate and they are
        recorded with `extra.baseline`, never as the job's best."""
        return []

    @abstractmethod
    def space(self, spec: JobSpec) -> list[dict[str, Any]]:
        """Every candidate's parameters, in a fixed order."""

    @abstractmethod
    def build(self, spec: JobSpec, params: dict[str, Any]) -> Built:
        """Compile one candidate; raise a CandidateError subclass on failure."""

    @abstractmethod
    def measure(
        self, spec: JobSpec, params: dict[str, Any], built: Built, cache: dict[str, Any]
    ) -> Measurement:
        """Check and time one built candidate; raise WrongResult if its output is wrong."""


def canonical_json(value: Any) -> str:
    """Canonical JSON text of parameters or a workload (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


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
