"""The statuses of jobs and trials and the directions of objectives: plain enums, no
SQLAlchemy, so the command line can offer them as choices without loading the models."""

from __future__ import annotations

import enum


class JobStatus(enum.StrEnum):
    """Lifecycle of a job. `interrupted` and `failed` jobs can be resumed."""

    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"
    interrupted = "interrupted"


TERMINAL_JOB_STATUSES = {JobStatus.completed, JobStatus.failed, JobStatus.cancelled}


class Direction(enum.StrEnum):
    """Which way an objective improves."""

    minimize = "minimize"
    maximize = "maximize"


class TrialStatus(enum.StrEnum):
    """Outcome of one evaluated candidate. Only `ok` trials can be a job's best.

    `running` is the one non-final status: a long evaluation under way, with a heartbeat;
    its row is replaced by the final result when the evaluation ends."""

    running = "running"
    ok = "ok"
    built = "built"  # compiled, not measured (build-only jobs, e.g. CUDA with no GPU)
    build_error = "build_error"
    run_error = "run_error"
    timeout = "timeout"
    wrong_result = "wrong_result"
    invalid = "invalid"  # rejected before building (resource limits, constraints)
    worker_lost = "worker_lost"  # the worker process died on every attempt
