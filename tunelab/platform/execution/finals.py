"""The final rounds of a timed job: its finalists measured again, interleaved with the
baselines, on one worker, until the noise-aware verdict is settled (`platform/noise.py`).

The re-measurements are recorded (`remeasurements`) and charged to no budget; the job's
best becomes the verdict's winner, with its pooled median, and the verdict (ties,
confidence intervals, baseline ratios) is kept on the job.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select, update

from tunelab.platform import jobs
from tunelab.platform.noise import Verdict, decide
from tunelab.platform.objectives import LATENCY
from tunelab.schema.models import Job, Remeasurement, Trial, TrialStatus
from tunelab.workers.tasks import EvalItem

if TYPE_CHECKING:
    from tunelab.platform.execution.driver import _LoopState

log = logging.getLogger(__name__)
GRACE_S = 5.0


def wanted(state: _LoopState) -> bool:
    """Whether this job gets final rounds: timed, measured, and asked for."""
    m = state.spec.measure
    return (
        state.pool is not None
        and m.final_top_k > 0
        and state.kind.primary().name == LATENCY
        and not m.build_only
    )


def run(state: _LoopState) -> Verdict | None:
    """Measure the finalists again and record the verdict; None if there was nothing to
    decide (or the rounds could not run: the search's own result then stands)."""
    engine, job_id, spec = state.runner.engine, state.runner.job_id, state.spec
    retry = state.runner.outage.retry  # a database away: wait for it, as the driver does
    state.recorder.drain()
    finalists = retry(jobs.trials, engine, job_id, top=spec.measure.final_top_k)
    if not finalists:
        return None
    bases = [t for t in retry(jobs.baseline_trials, engine, job_id) if t.status == TrialStatus.ok]
    items = {t.candidate: t for t in [*finalists, *bases]}
    try:
        built = _rebuild(state, list(items.values()))
        return _rounds(state, items, built, {t.candidate for t in bases})
    except Exception as exc:  # a lost worker, a timeout: keep the search's own best
        log.warning("job %s: final rounds abandoned (%s: %s)", job_id, type(exc).__name__, exc)
        return None


def _rebuild(state: _LoopState, trials: list[Trial]) -> dict[str, Any]:
    """Build artifacts of the finalists again (builds are not kept after measuring)."""
    if not state.has_build:
        return {t.candidate: None for t in trials}
    ref = state.build_fn.remote(state.kind_ref, state.spec_ref, [t.params for t in trials])
    timeout = len(trials) * state.spec.measure.build_timeout_s + GRACE_S
    outcomes = state.ray.get(ref, timeout=timeout)
    return {
        t.candidate: o.built
        for t, o in zip(trials, outcomes, strict=True)
        if o.status == TrialStatus.built
    }


def _rounds(
    state: _LoopState, items: dict[str, Trial], built: dict[str, Any], baselines: set[str]
) -> Verdict | None:
    engine, job_id, spec = state.runner.engine, state.runner.job_id, state.spec
    assert state.pool is not None
    state.pool.wait_ready()
    worker = state.pool.idle.popleft()  # one device for every round: a fair comparison
    rng = np.random.default_rng(spec.search.seed)
    keys = [k for k in items if k in built]
    samples: dict[str, list[float]] = {k: [] for k in keys}
    verdict: Verdict | None = None
    try:
        for r in range(1, spec.measure.final_rounds + 1):
            order = [keys[i] for i in rng.permutation(len(keys))]
            evals = [EvalItem(k, items[k].params, built[k], 1) for k in order]
            ref = worker.actor.measure_many.remote(
                state.kind_ref, state.spec_ref, state.job_ref, evals
            )
            timeout = len(evals) * spec.measure.run_timeout_s + GRACE_S
            outcomes = state.ray.get(ref, timeout=timeout)
            rows = []
            for key, out in zip(order, outcomes, strict=True):
                if out.status != TrialStatus.ok or not out.latencies_s:
                    # Wrong or failing now: never a winner.
                    log.warning("job %s: finalist %s %s on re-measurement", job_id, key,
                                out.status)  # fmt: skip
                    keys.remove(key)
                    samples.pop(key, None)
                    continue
                samples[key] += out.latencies_s
                rows.append({
                    "job_id": job_id, "trial_id": items[key].id, "round": r,
                    "latencies_s": out.latencies_s, "worker_node": out.node,
                    "latency_median_s": float(np.median(out.latencies_s)),
                    "measured_at": datetime.now(UTC),
                })  # fmt: skip
            if rows:
                state.runner.outage.retry(_insert, engine, rows)
            searched = {k: v for k, v in samples.items() if k not in baselines and v}
            if not searched:
                return None
            base = {items[k].baseline or k: v for k, v in samples.items() if k in baselines}
            verdict = decide(searched, base, rounds=r, seed=spec.search.seed)
            if r >= 2 and verdict.settled:
                break
    finally:
        state.pool.idle.append(worker)
    if verdict is not None:
        _record(state, items, verdict)
    return verdict


def _insert(engine: Any, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(jobs.insert_ignore(engine, Remeasurement.__table__), rows)


def _record(state: _LoopState, items: dict[str, Trial], verdict: Verdict) -> None:
    """The verdict on the job: its winner becomes the job's best (pooled median)."""
    data = verdict.as_json()
    data["winner_trial_id"] = items[verdict.winner].id
    for c in data["finalists"]:
        c["trial_id"] = items[c["key"]].id
    stmt = (
        update(Job)
        .where(Job.id == state.runner.job_id, Job.lease == state.runner.lease)
        .values(
            verdict=data,
            best_trial_id=items[verdict.winner].id,
            best_value=verdict.winner_median_s,
            best_latency_s=verdict.winner_median_s,
        )
    )

    def write() -> None:
        with state.runner.engine.begin() as conn:
            conn.execute(stmt)

    state.runner.outage.retry(write)
    state.recorder.decided = True  # later flushes leave the verdict's best alone
    tied = len(verdict.tied)
    log.info("job %s: winner trial %s after %d final rounds%s", state.runner.job_id,
             items[verdict.winner].id, verdict.rounds,
             f", tied with {tied}" if tied else "")  # fmt: skip


def remeasurements(engine: Any, job_id: int) -> list[Remeasurement]:
    """A job's final-round measurements, by trial and round."""
    from tunelab.schema.db import session_scope

    stmt = (
        select(Remeasurement)
        .where(Remeasurement.job_id == job_id)
        .order_by(Remeasurement.trial_id, Remeasurement.round)
    )
    with session_scope(engine) as s:
        return list(s.scalars(stmt))
