"""Recording trials in batches: idempotent inserts plus the job's progress and heartbeat."""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select, update

from tunelab.platform.jobs import insert_ignore
from tunelab.schema.models import Environment, Job, Trial, TrialStatus, trial_baseline

ENV_COLUMNS = (
    "fingerprint",
    "host",
    "cpu_model",
    "gpu_model",
    "gpu_driver",
    "cuda_version",
    "tvm_version",
    "torch_version",
    "python_version",
    "details",
)


def latency_stats(latencies: list[float] | None) -> dict[str, Any]:
    if not latencies:
        return {}
    return {
        "latency_median_s": statistics.median(latencies),
        "latency_mean_s": statistics.fmean(latencies),
        "latency_stdev_s": statistics.stdev(latencies) if len(latencies) > 1 else 0.0,
        "latency_min_s": min(latencies),
        "n_repeats": len(latencies),
    }


class Recorder:
    """Buffers finished trials of one job and writes them in batches.

    A flush inserts with ON CONFLICT DO NOTHING on (job, candidate), so recording the
    same candidate twice (a resumed job, a retried flush) keeps the first row. The same
    transaction refreshes the job's counts, best trial and heartbeat.
    """

    def __init__(
        self, engine: Engine, job_id: int, *, max_rows: int = 500, max_wait_s: float = 1.0
    ) -> None:
        self.engine = engine
        self.job_id = job_id
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self._rows: list[dict[str, Any]] = []
        self._env_ids: dict[str, int] = {}
        self._pending_envs: dict[str, dict[str, Any]] = {}
        self._last_flush = time.monotonic()

    def add(
        self,
        *,
        candidate: str,
        params: dict[str, Any],
        status: TrialStatus,
        latencies_s: list[float] | None = None,
        build_s: float | None = None,
        run_s: float | None = None,
        attempts: int = 1,
        error: str | None = None,
        worker_node: str | None = None,
        environment: dict[str, Any] | None = None,
        predicted_cost: float | None = None,
        extra: dict[str, Any] | None = None,
        started_at: datetime | None = None,
    ) -> None:
        row: dict[str, Any] = {
            "job_id": self.job_id,
            "candidate": candidate,
            "params": params,
            "status": str(status),
            "latency_median_s": None,
            "latency_mean_s": None,
            "latency_stdev_s": None,
            "latency_min_s": None,
            "n_repeats": None,
            "predicted_cost": predicted_cost,
            "build_s": build_s,
            "run_s": run_s,
            "attempts": attempts,
            "error": error,
            "worker_node": worker_node,
            "environment_id": None,
            "extra": extra or {},
            "started_at": started_at,
            "finished_at": datetime.now(UTC),
            **latency_stats(latencies_s),
        }
        if environment is not None:
            fp = environment["fingerprint"]
            row["_env"] = fp
            if fp not in self._env_ids:
                self._pending_envs[fp] = environment
        self._rows.append(row)
        if len(self._rows) >= self.max_rows:
            self.flush()

    def due(self) -> bool:
        return time.monotonic() - self._last_flush >= self.max_wait_s

    def flush(self) -> None:
        """Write buffered trials (if any), the job's counts and its heartbeat."""
        rows, self._rows = self._rows, []
        with self.engine.begin() as conn:
            for fp, env in list(self._pending_envs.items()):
                values = {k: env.get(k) for k in ENV_COLUMNS}
                values["details"] = values["details"] or {}
                values["created_at"] = datetime.now(UTC)
                conn.execute(insert_ignore(self.engine, Environment.__table__).values(**values))
                self._env_ids[fp] = conn.execute(
                    select(Environment.id).where(Environment.fingerprint == fp)
                ).scalar_one()
                del self._pending_envs[fp]
            for row in rows:
                fp = row.pop("_env", None)
                row["environment_id"] = self._env_ids.get(fp) if fp else None
            if rows:
                conn.execute(insert_ignore(self.engine, Trial.__table__), rows)
            refresh_job(conn, self.job_id)
        self._last_flush = time.monotonic()


def refresh_job(conn: Any, job_id: int) -> None:
    """Set a job's counts, best trial and heartbeat from its recorded trials."""
    counts = dict(
        conn.execute(
            select(Trial.status, func.count()).where(Trial.job_id == job_id).group_by(Trial.status)
        ).all()
    )
    best = conn.execute(
        select(Trial.id, Trial.latency_median_s)
        .where(
            Trial.job_id == job_id,
            Trial.status == TrialStatus.ok,
            trial_baseline().is_(None),  # a reference, not a result
        )
        .order_by(Trial.latency_median_s)
        .limit(1)
    ).first()
    n_done = sum(counts.values())
    n_ok = counts.get(TrialStatus.ok, 0) + counts.get(TrialStatus.built, 0)
    conn.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(
            n_done=n_done,
            n_ok=n_ok,
            n_failed=n_done - n_ok,
            best_trial_id=best[0] if best else None,
            best_latency_s=best[1] if best else None,
            heartbeat_at=datetime.now(UTC),
        )
    )
