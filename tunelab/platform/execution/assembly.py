"""Turning what the workers reported for a candidate into one recorded trial."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tunelab.platform.objectives import objective_values
from tunelab.schema.models import TrialStatus

if TYPE_CHECKING:
    from tunelab.platform.search.strategies import Prediction
    from tunelab.workers.tasks import Outcome


@dataclass
class Pending:
    """A candidate between its proposal and its recorded trial."""

    key: str
    params: dict[str, Any]
    attempts: int = 0
    build: Outcome | None = None
    errors: list[str] = field(default_factory=list)
    solo: bool = False  # its chunk failed as a whole: evaluate it alone from now on

    @property
    def baseline(self) -> str | None:
        """The library this candidate measures as a baseline (kinds name it `baseline`)."""
        name = self.params.get("baseline")
        return str(name) if name is not None else None


@dataclass(frozen=True)
class Result:
    """The outcome of a candidate's last phase: its build, its evaluation, or neither
    (a timeout or a lost worker, when `error` says why)."""

    status: TrialStatus
    build: Outcome | None = None
    evaluation: Outcome | None = None
    error: str | None = None

    def value(self, objective: str) -> float | None:
        """The primary objective's value if the candidate is a correct, evaluated one."""
        if self.status != TrialStatus.ok or self.evaluation is None:
            return None
        return objective_values(self.evaluation.latencies_s, self.evaluation.objectives).get(
            objective
        )


def trial_fields(item: Pending, result: Result, prediction: Prediction | None) -> dict[str, Any]:
    """Keyword arguments of `Recorder.add` for one candidate's result."""
    build, evaluation = result.build, result.evaluation
    last = evaluation or build
    extra = dict(build.info) if build else {}
    if evaluation is not None:
        extra.update(evaluation.info)
    return {
        "candidate": item.key,
        "params": item.params,
        "status": result.status,
        "latencies_s": evaluation.latencies_s if evaluation else None,
        "objectives": evaluation.objectives if evaluation else None,
        "build_s": build.seconds if build else None,
        "run_s": evaluation.seconds if evaluation else None,
        "attempts": item.attempts,
        "attempt_errors": list(item.errors) or None,
        "error": result.error if result.error is not None else (last.error if last else None),
        "worker_node": last.node if last else None,
        "node_health": evaluation.health if evaluation else None,
        "environment": last.environment if last else None,
        "predicted_cost": prediction.seconds if prediction else None,
        "model": prediction.model if prediction else None,
        "model_version": prediction.version if prediction else None,
        "baseline": item.baseline,
        "extra": extra,
        "started_at": (build or evaluation).started_at if (build or evaluation) else None,
    }
