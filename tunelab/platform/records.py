"""What the API hands out: frozen records of jobs, trials and baselines, not ORM rows
(which would be tied to a database session and open to accidental writes)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from tunelab.schema.models import Job, Trial


@dataclass(frozen=True)
class JobRecord:
    """A job as recorded: its spec, status, progress and best result."""

    id: int
    name: str
    kind: str
    target: str
    workload: str  # the kind's short description of the workload
    spec: dict[str, Any]
    status: str
    display_status: str  # `running (driver lost)` when its driver stopped writing
    objective: str
    direction: str
    n_planned: int
    n_done: int
    n_ok: int
    n_failed: int
    best_value: float | None
    best_latency_s: float | None
    best_trial_id: int | None
    verdict: dict[str, Any] | None  # the final rounds' winner, ties and baseline ratios
    error: str | None
    driver_host: str | None
    driver_pid: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    busy_trials: int = 0  # trials measured on a busy node (platform/health.py)
    busy_rounds: int = 0  # final rounds measured on a busy node

    @classmethod
    def of(cls, job: Job) -> JobRecord:
        from tunelab.platform.jobs import display_status

        values = {f.name: getattr(job, f.name, None) for f in fields(cls)}
        values["workload"] = job.workload.description
        values["display_status"] = display_status(job)
        values["busy_trials"], values["busy_rounds"] = job.busy_trials or 0, job.busy_rounds or 0
        return cls(**values)


@dataclass(frozen=True)
class TrialRecord:
    """One evaluated candidate: parameters, status, objective values, latency statistics
    (timed kinds), where and when it ran, and the kind's own `extra`."""

    id: int
    job_id: int
    candidate: str
    params: dict[str, Any]
    status: str
    value: float | None
    objectives: dict[str, float] | None
    latency_median_s: float | None
    latency_mean_s: float | None
    latency_stdev_s: float | None
    latency_min_s: float | None
    n_repeats: int | None
    latencies_s: list[float] | None
    predicted_cost: float | None
    model: str | None
    model_version: int | None
    baseline: str | None
    build_s: float | None
    run_s: float | None
    attempts: int
    attempt_errors: list[str] | None
    error: str | None
    worker_node: str | None
    environment_id: int | None
    extra: dict[str, Any]
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    node_health: dict[str, Any] | None = None  # the node around its measurement (health.py)

    @property
    def busy(self) -> bool:
        """Measured on a busy node: its numbers are marked and kept from every cache."""
        return bool(self.node_health and self.node_health.get("busy"))

    @classmethod
    def of(cls, trial: Trial) -> TrialRecord:
        return cls(**{f.name: getattr(trial, f.name) for f in fields(cls)})
