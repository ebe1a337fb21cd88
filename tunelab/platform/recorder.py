"""Recording trials in batches: idempotent inserts plus the job's progress (its heartbeat is
the driver's heartbeat thread's: execution/liveness.py)."""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, and_, bindparam, func, or_, select, update

from tunelab.platform.jobs import LostOwnership, insert_ignore
from tunelab.platform.objectives import (
    LATENCY_OBJECTIVE,
    Objective,
    best_first,
    objective_values,
    rankable,
)
from tunelab.platform.outage import Outage
from tunelab.schema.models import Environment, Job, Remeasurement, Trial, TrialStatus

# Results a recorder riding out an outage holds before it waits for the database.
MAX_BUFFER = 100_000

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
# Statuses of rows a final result may replace (see Recorder).
REPLACEABLE = (TrialStatus.running, TrialStatus.worker_lost, TrialStatus.timeout)
# Columns a final result writes over a `running` row of the same candidate.
FINAL_COLUMNS = (
    "params", "status", "value", "objectives", "latency_median_s", "latency_mean_s",
    "latency_stdev_s", "latency_min_s", "n_repeats", "latencies_s", "predicted_cost",
    "build_s", "run_s", "attempts", "attempt_errors", "error", "worker_node", "node_health",
    "environment_id", "baseline", "model", "model_version", "extra", "started_at",
    "finished_at", "heartbeat_at",
)  # fmt: skip


def latency_stats(latencies: list[float] | None) -> dict[str, Any]:
    if not latencies:
        return {}
    return {
        "latency_median_s": statistics.median(latencies),
        "latency_mean_s": statistics.fmean(latencies),
        "latency_stdev_s": statistics.stdev(latencies) if len(latencies) > 1 else 0.0,
        "latency_min_s": min(latencies),
        "n_repeats": len(latencies),
        "latencies_s": list(latencies),
    }


class Recorder:
    """Buffers finished trials of one job and writes them in batches.

    A flush inserts with ON CONFLICT DO NOTHING on (job, candidate), so recording the
    same candidate twice (a resumed job, a retried flush) keeps the first row; a final
    result replaces a `running` row of its candidate. The same transaction refreshes the
    job's counts and best trial, under the driver's lease. A flush that fails keeps its
    buffer, so the next one writes it: nothing measured is dropped while the database is
    away, nor when another driver took the job over (`hand_over`).

    With an `outage`, a flush while the database is unreachable or full does not raise:
    it returns False and later flushes retry (see `Outage`), so the caller goes on
    collecting results, up to `max_buffer` of them; `drain` waits the outage out.
    """

    def __init__(
        self,
        engine: Engine,
        job_id: int,
        *,
        objective: Objective = LATENCY_OBJECTIVE,
        lease: int | None = None,
        replace: set[str] | None = None,
        max_rows: int = 500,
        max_wait_s: float = 1.0,
        outage: Outage | None = None,
        max_buffer: int = MAX_BUFFER,
    ) -> None:
        self.engine = engine
        self.job_id = job_id
        self.objective = objective
        self.lease = lease
        # Set once the final rounds' verdict named the job's best (execution/finals.py);
        # a claim with --retry-failed clears an earlier verdict.
        self.decided = False
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.outage = outage
        self.max_buffer = max_buffer
        self._rows: list[dict[str, Any]] = []
        self._running: list[dict[str, Any]] = []
        # Candidates whose row a final result replaces: `running` ones, and lost or timed
        # out ones run again (`replace`, from `resume --retry-failed`).
        self._running_keys: set[str] = set(replace or ())
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
        objectives: dict[str, float] | None = None,
        build_s: float | None = None,
        run_s: float | None = None,
        attempts: int = 1,
        attempt_errors: list[str] | None = None,
        error: str | None = None,
        worker_node: str | None = None,
        node_health: dict[str, Any] | None = None,
        environment: dict[str, Any] | None = None,
        predicted_cost: float | None = None,
        model: str | None = None,
        model_version: int | None = None,
        baseline: str | None = None,
        extra: dict[str, Any] | None = None,
        started_at: datetime | None = None,
    ) -> None:
        """Buffer one final result."""
        values = objective_values(latencies_s, objectives)
        row: dict[str, Any] = {
            "job_id": self.job_id,
            "candidate": candidate,
            "params": params,
            "status": str(status),
            "value": values.get(self.objective.name),
            "objectives": values or None,
            "latency_median_s": None,
            "latency_mean_s": None,
            "latency_stdev_s": None,
            "latency_min_s": None,
            "n_repeats": None,
            "latencies_s": None,
            "predicted_cost": predicted_cost,
            "build_s": build_s,
            "run_s": run_s,
            "attempts": attempts,
            "attempt_errors": attempt_errors or None,
            "error": error,
            "worker_node": worker_node,
            "node_health": node_health,
            "environment_id": None,
            "baseline": baseline,
            "model": model,
            "model_version": model_version,
            "extra": extra or {},
            "started_at": started_at,
            "finished_at": datetime.now(UTC),
            "heartbeat_at": None,
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
        if len(self._rows) >= self.max_buffer:
            self.drain()  # memory is bounded: wait for the database rather than grow

    def add_running(
        self, *, candidate: str, params: dict[str, Any], attempts: int, baseline: str | None = None
    ) -> None:
        """Buffer a `running` row for an evaluation just started (long-running kinds)."""
        now = datetime.now(UTC)
        self._running.append(
            {
                "job_id": self.job_id, "candidate": candidate, "params": params,
                "status": str(TrialStatus.running), "attempts": attempts, "baseline": baseline,
                "extra": {}, "started_at": now, "finished_at": None, "heartbeat_at": now,
            }
        )  # fmt: skip
        self._running_keys.add(candidate)

    def pending(self) -> int:
        """Results buffered and not yet written."""
        return len(self._rows)

    def due(self) -> bool:
        return time.monotonic() - self._last_flush >= self.max_wait_s

    def flush(self) -> bool:
        """Write buffered trials (if any) and the job's counts; True once
        written. On a database error the buffer is kept and the error raised; with an
        `outage`, one that says the database is away returns False instead (and so does
        every flush until its backoff has passed), until the outage limit: DatabaseOutage."""
        if self.outage is None:
            self._write()
            return True
        if not self.outage.due():
            return False
        with self.outage.tolerate():
            self._write()
            return True
        return False

    def drain(self) -> None:
        """Flush, waiting out an outage (DatabaseOutage past its limit)."""
        if self.outage is None:
            self._write()
        else:
            self.outage.retry(self._write)

    def hand_over(self) -> int:
        """After a takeover (LostOwnership): write the buffered results without the lease,
        waiting out an outage; returns how many. Each is kept only if the job has no final
        result for its candidate yet (the first result recorded wins, whichever driver
        measured it), so the driver that took over never sees a result replaced; it counts
        them in its next flush. Placeholders of evaluations this driver gave up are not
        written."""
        n = len(self._rows)
        self._running.clear()
        if self.outage is None:
            self._write(hand_over=True)
        else:
            self.outage.retry(self._write, hand_over=True)
        return n

    def _write(self, *, hand_over: bool = False) -> None:
        rows = [dict(r) for r in self._rows]
        with self.engine.begin() as conn:
            env_ids = dict(self._env_ids)
            for fp, env in self._pending_envs.items():
                values = {k: env.get(k) for k in ENV_COLUMNS}
                values["details"] = values["details"] or {}
                values["created_at"] = datetime.now(UTC)
                conn.execute(insert_ignore(self.engine, Environment.__table__).values(**values))
                env_ids[fp] = conn.execute(
                    select(Environment.id).where(Environment.fingerprint == fp)
                ).scalar_one()
            for row in rows:
                fp = row.pop("_env", None)
                row["environment_id"] = env_ids.get(fp) if fp else None
            if self._running:
                conn.execute(insert_ignore(self.engine, Trial.__table__), self._running)
            finals = [r for r in rows if r["candidate"] in self._running_keys]
            if finals:
                conn.execute(
                    _replace_running(),
                    [
                        {"_job": self.job_id, "_key": r["candidate"]}
                        | {f"_{c}": r[c] for c in FINAL_COLUMNS}
                        for r in finals
                    ],
                )
            if rows:
                conn.execute(insert_ignore(self.engine, Trial.__table__), rows)
            # Counted again only when it may have changed: a busy trial, or a row replaced.
            recount = bool(finals) or any(is_busy(r["node_health"]) for r in rows)
            if not hand_over:
                refresh_job(conn, self.job_id, self.objective, lease=self.lease,
                            keep_best=self.decided, recount_busy=recount)  # fmt: skip
        # Committed: only now is the buffer let go.
        self._env_ids = env_ids
        self._pending_envs.clear()
        self._running_keys -= {r["candidate"] for r in rows}
        del self._rows[: len(rows)]
        self._running.clear()
        self._last_flush = time.monotonic()


def _replace_running() -> Any:
    """UPDATE a candidate's `running` row with its final result (executemany)."""
    return (
        update(Trial.__table__)
        .where(
            and_(
                Trial.__table__.c.job_id == bindparam("_job"),
                Trial.__table__.c.candidate == bindparam("_key"),
                # OR of equalities: an IN list would expand, which executemany refuses.
                or_(*(Trial.__table__.c.status == str(s) for s in REPLACEABLE)),
            )
        )
        .values({c: bindparam(f"_{c}") for c in FINAL_COLUMNS})
    )


def refresh_job(
    conn: Any,
    job_id: int,
    objective: Objective = LATENCY_OBJECTIVE,
    *,
    lease: int | None = None,
    keep_best: bool = False,
    recount_busy: bool = False,
) -> None:
    """Set a job's counts and best trial from its recorded trials (its best
    too, unless `keep_best`: a final-round verdict named it; its trials measured on a busy
    node with `recount_busy`). With `lease`, only while the job is still held under it:
    else LostOwnership (and the caller's transaction, with whatever it wrote, is rolled
    back)."""
    counts = dict(
        conn.execute(
            select(Trial.status, func.count()).where(Trial.job_id == job_id).group_by(Trial.status)
        ).all()
    )
    counts.pop(TrialStatus.running, None)
    best = None
    if not keep_best:
        best = conn.execute(
            select(Trial.id, Trial.value, Trial.latency_median_s)
            .where(Trial.job_id == job_id, rankable())
            .order_by(*best_first(objective.direction))
            .limit(1)
        ).first()
    n_done = sum(counts.values())
    # Built but not measured (build-only jobs) is neither ok nor failed.
    n_ok, n_built = counts.get(TrialStatus.ok, 0), counts.get(TrialStatus.built, 0)
    stmt = update(Job).where(Job.id == job_id)
    if lease is not None:
        stmt = stmt.where(Job.lease == lease)
    values: dict[str, Any] = {
        "n_done": n_done, "n_ok": n_ok, "n_failed": n_done - n_ok - n_built,
    }  # fmt: skip
    if recount_busy:
        values["busy_trials"] = conn.execute(
            select(func.count()).where(Trial.job_id == job_id, measured_busy(Trial.node_health))
        ).scalar_one()
    if not keep_best:
        values |= {
            "best_trial_id": best[0] if best else None,
            "best_value": best[1] if best else None,
            "best_latency_s": best[2] if best else None,
        }
    done = conn.execute(stmt.values(**values))
    if lease is not None and done.rowcount == 0:
        raise LostOwnership(
            f"job {job_id} was taken over by another driver (its lease is no longer "
            f"{lease}): this driver stops and records nothing more"
        )


# -- node health (platform/health.py) ----------------------------------------------------


def is_busy(node_health: dict[str, Any] | None) -> bool:
    """Whether a measurement's node-health record says it ran on a busy node."""
    return bool(node_health and node_health.get("busy"))


def measured_busy(column: Any) -> Any:
    """SQL: a node-health column says busy (NULL and JSON null are not)."""
    return column["busy"].as_boolean().is_(True)


def measured_quiet(column: Any) -> Any:
    """SQL: no busy mark (no record at all counts as quiet: rows from before the guard)."""
    return or_(column.is_(None), column["busy"].as_boolean().is_not(True))


def insert_remeasurements(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """Write final-round rows (each may carry `node_health`, the worker's `Outcome.health`)
    and, when one was measured busy, recount the job's `busy_rounds`: one transaction."""
    if not rows:
        return
    rows = [{"node_health": None, **r} for r in rows]
    with engine.begin() as conn:
        conn.execute(insert_ignore(engine, Remeasurement.__table__), rows)
        for job_id in {r["job_id"] for r in rows if is_busy(r["node_health"])}:
            busy = conn.execute(
                select(func.count()).where(
                    Remeasurement.job_id == job_id, measured_busy(Remeasurement.node_health)
                )
            ).scalar_one()
            conn.execute(update(Job).where(Job.id == job_id).values(busy_rounds=busy))
