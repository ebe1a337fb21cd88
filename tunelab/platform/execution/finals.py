"""The final rounds of a job: its finalists measured again, on one worker, in paired
rounds with a shuffled order, and decided by the noise-aware protocol
(`platform/noise.py`: ratio of medians, paired bootstrap interval, one verdict rule).

- A timed job (primary objective a latency): the finalists and the baselines are
  evaluated again round after round (`measure_many`, in a shuffled order); each round's
  value of a finalist is the median of that round's repeats, so sample r of every
  finalist comes from round r and `decide(paired=True)` reads them as pairs. The rounds
  stop early once the verdict is settled, but never before `MIN_ROUNDS`. The job's best
  is the winner, with its pooled median over every repeat of the rounds.
- A kind whose primary objective is a speedup over a reference (`JobKind.final_runs`,
  e.g. graph-rewrite against the original graph): the `final_top_k` distinct finalists
  (`JobKind.final_identity`) and the reference are timed on one worker
  (`MeasureWorker.time_rounds`) over `final_rounds` paired rounds. The reference is a
  contender: the winner is the lowest median; the job's best is its speedup over the
  reference with the paired interval (the reference itself, speedup 1.0 and no trial,
  when no finalist is faster), never the largest of single noisy measurements.

The re-measurements are recorded (`remeasurements`) and charged to no budget; the
verdict (winner, finalists with their intervals and outcomes, baselines) is kept on the
job.

Why at least 10 rounds: a round gives one paired sample per finalist; the bootstrap
interval of a median of n samples is drawn from its order statistics, and below about
ten samples its 95% interval is little more than the range of the samples, so nearly
every comparison would stay undecided however clear it is.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select, update

from tunelab.platform import jobs
from tunelab.platform.kinds import Finalist, JobKind
from tunelab.platform.noise import Verdict, decide, judge, paired_ratio
from tunelab.platform.objectives import LATENCY
from tunelab.platform.recorder import insert_remeasurements
from tunelab.platform.rounds import Rounds
from tunelab.schema.models import Job, Remeasurement, Trial, TrialStatus
from tunelab.workers.tasks import REFERENCE, EvalItem

if TYPE_CHECKING:
    from tunelab.platform.execution.driver import _LoopState

log = logging.getLogger(__name__)
GRACE_S = 5.0
MIN_ROUNDS = 10  # paired rounds before the rounds may stop early (see above)
SCAN = 5  # ranked trials read per distinct finalist wanted (duplicates are skipped)


def wanted(state: _LoopState) -> bool:
    """Whether this job gets final rounds: measured, asked for, and timed (a latency
    objective) or with final runs of its kind (a speedup over a reference)."""
    m = state.spec.measure
    if state.pool is None or m.final_top_k <= 0 or m.build_only:
        return False
    return state.kind.primary().name == LATENCY or state.kind.has_final_runs()


def run(state: _LoopState) -> Verdict | None:
    """Measure the finalists again and record the verdict; None if there was nothing to
    decide (or the rounds could not run: the search's own result then stands)."""
    if state.kind.primary().name != LATENCY:
        return _run_ratio(state)
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
    per_round: dict[str, list[float]] = {k: [] for k in keys}  # round r's median repeat
    pooled: dict[str, list[float]] = {k: [] for k in keys}  # every repeat
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
                    # Wrong or failing now: never a winner (and its rounds pair no more).
                    log.warning("job %s: finalist %s %s on re-measurement", job_id, key,
                                out.status)  # fmt: skip
                    keys.remove(key)
                    per_round.pop(key, None)
                    pooled.pop(key, None)
                    continue
                median = float(np.median(out.latencies_s))
                per_round[key].append(median)
                pooled[key] += out.latencies_s
                rows.append({
                    "job_id": job_id, "trial_id": items[key].id, "round": r,
                    "latencies_s": out.latencies_s, "worker_node": out.node,
                    "latency_median_s": median, "measured_at": datetime.now(UTC),
                    "node_health": out.health,
                })  # fmt: skip
            if rows:
                state.runner.outage.retry(insert_remeasurements, engine, rows)
            searched = {k: v for k, v in per_round.items() if k not in baselines and v}
            if not searched:
                return None
            base = {items[k].baseline or k: v for k, v in per_round.items() if k in baselines}
            verdict = decide(searched, base, rounds=r, seed=spec.search.seed, paired=True)
            if r >= MIN_ROUNDS and verdict.settled:
                break
    finally:
        state.pool.idle.append(worker)
    if verdict is not None:
        _record(state, items, verdict, float(np.median(pooled[verdict.winner])))
    return verdict


def _record(
    state: _LoopState, items: dict[str, Trial], verdict: Verdict, pooled_median_s: float
) -> None:
    """The verdict on the job: its winner becomes the job's best (its pooled median)."""
    data = verdict.as_json()
    data["paired"] = True  # samples are per-round medians, paired by round
    data["round_median_s"] = data["winner_median_s"]  # the median of its rounds' medians
    data["winner_median_s"] = pooled_median_s  # over every repeat of every round
    data["winner_trial_id"] = items[verdict.winner].id
    for c in data["finalists"]:
        c["trial_id"] = items[c["key"]].id
    _write(state, data, items[verdict.winner].id, pooled_median_s, pooled_median_s)
    tied = len(verdict.tied)
    log.info("job %s: winner trial %s after %d final rounds%s", state.runner.job_id,
             items[verdict.winner].id, verdict.rounds,
             f", tied with {tied}" if tied else "")  # fmt: skip


def _write(
    state: _LoopState, data: dict[str, Any], best_trial_id: int | None,
    best_value: float, best_latency_s: float | None,
) -> None:  # fmt: skip
    """Keep the verdict on the job and make its winner the job's best."""
    stmt = (
        update(Job)
        .where(Job.id == state.runner.job_id, Job.lease == state.runner.lease)
        .values(
            verdict=data,
            best_trial_id=best_trial_id,
            best_value=best_value,
            best_latency_s=best_latency_s,
        )
    )

    def write() -> None:
        with state.runner.engine.begin() as conn:
            conn.execute(stmt)

    state.runner.outage.retry(write)
    state.recorder.decided = True  # later flushes leave the verdict's best alone


# -- final rounds against a reference (JobKind.final_runs) ------------------------------


def distinct_finalists(kind: JobKind, ranked: list[Trial], k: int) -> list[Trial]:
    """The first `k` of `ranked` that are distinct by the kind's `final_identity` (the
    best-ranked trial of each identity stands for it)."""
    seen: set[str] = set()
    out = []
    for t in ranked:
        identity = kind.final_identity(t.params, t.extra or {})
        if identity not in seen:
            seen.add(identity)
            out.append(t)
        if len(out) == k:
            break
    return out


def _run_ratio(state: _LoopState) -> Verdict | None:
    engine, job_id, spec = state.runner.engine, state.runner.job_id, state.spec
    retry = state.runner.outage.retry
    state.recorder.drain()
    k = spec.measure.final_top_k
    ranked = retry(jobs.trials, engine, job_id, top=k * SCAN)
    finalists = distinct_finalists(state.kind, ranked, k)
    if not finalists:
        return None
    assert state.pool is not None
    try:
        state.pool.wait_ready()
        worker = state.pool.idle.popleft()  # one device for every round: a fair comparison
        try:
            sent = [Finalist(t.candidate, dict(t.params), dict(t.extra or {})) for t in finalists]
            ref = worker.actor.time_rounds.remote(
                state.kind_ref, state.spec_ref, state.job_ref, sent,
                rounds=spec.measure.final_rounds, seed=spec.search.seed,
            )  # fmt: skip
            timed, node = state.ray.get(ref, timeout=spec.measure.run_timeout_s + GRACE_S)
        finally:
            state.pool.idle.append(worker)
    except Exception as exc:  # a lost worker, a timeout: keep the search's own best
        log.warning("job %s: final rounds abandoned (%s: %s)", job_id, type(exc).__name__, exc)
        return None
    items = {t.candidate: t for t in finalists if t.candidate in timed.seconds}
    if not items:
        return None
    _insert_rounds(state, items, timed, node)
    verdict = decide_against_reference(timed, list(items), seed=spec.search.seed)
    ids = {k: t.id for k, t in items.items()}
    data = ratio_verdict_json(verdict, timed, ids, state.kind.primary().name,
                              label=state.kind.reference_label, seed=spec.search.seed)  # fmt: skip
    best = data["best"]
    _write(state, data, best["trial_id"], best["value"], None)
    log.info("job %s: %s won %d final rounds against %s: %s %.3fx %s", job_id,
             f"trial {best['trial_id']}" if best["trial_id"] else "the reference",
             verdict.rounds, state.kind.reference_label, data["objective"], best["value"],
             best["ci"] and f"(95% CI {best['ci'][0]:.3f}-{best['ci'][1]:.3f}, "
             f"{best['outcome']})")  # fmt: skip
    return verdict


def _insert_rounds(state: _LoopState, items: dict[str, Trial], timed: Rounds, node: str) -> None:
    """Each finalist's seconds per round as its re-measurements, with the round's node
    health (the reference, being no trial, is kept in the verdict)."""
    now = datetime.now(UTC)
    health = [*timed.notes, *[None] * len(timed.seconds[REFERENCE])]
    rows = [
        {"job_id": state.runner.job_id, "trial_id": t.id, "round": r + 1, "latencies_s": [s],
         "latency_median_s": s, "worker_node": node, "measured_at": now,
         "node_health": health[r]}
        for key, t in items.items()
        for r, s in enumerate(timed.seconds[key])
    ]  # fmt: skip
    if rows:
        state.runner.outage.retry(insert_remeasurements, state.runner.engine, rows)


def decide_against_reference(timed: Rounds, keys: list[str], *, seed: int = 0) -> Verdict:
    """The verdict over the finalists `keys` and the reference, all contenders, paired by
    round: the winner is the lowest median (the reference itself when no finalist is
    faster)."""
    samples = {k: timed.seconds[k] for k in [*keys, REFERENCE]}
    return decide(samples, rounds=len(timed.seconds[REFERENCE]), seed=seed, paired=True)


def ratio_verdict_json(
    verdict: Verdict, timed: Rounds, ids: dict[str, int], objective: str, *,
    label: str = "the reference", seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """The verdict as the job keeps it: every contender's speedup over the reference with
    its 95% interval and outcome (`faster`, `slower`, `tied`, `undecided`: the finalist
    against the reference), its comparison with the winner, and the job's best: the
    winner's speedup (1.0, no trial, when the reference won). `ids`: the finalists'
    trial ids by candidate key."""
    ref = timed.seconds[REFERENCE]

    def speedup(key: str, s: int) -> dict[str, Any]:
        if key == REFERENCE:
            return {"speedup": 1.0, "speedup_ci": [1.0, 1.0], "speedup_outcome": "tied"}
        ratio, ci = paired_ratio(timed.seconds[key], ref, seed=s)
        return {"speedup": 1.0 / ratio, "speedup_ci": [1.0 / ci[1], 1.0 / ci[0]],
                "speedup_outcome": judge(ratio, ci)}  # fmt: skip

    data = verdict.as_json()
    data["paired"] = True
    data["objective"] = objective
    data["reference"] = {
        "key": REFERENCE, "label": label, "median_s": float(np.median(ref)), "seconds": ref,
    }  # fmt: skip
    for i, c in enumerate(data["finalists"]):
        c["trial_id"] = ids.get(c["key"])
        c |= speedup(c["key"], seed + 1 + i)
    winner_id = ids.get(verdict.winner)
    data["winner_trial_id"] = winner_id
    if winner_id is None:  # the reference won: 1.0 by definition, no interval to show
        data["best"] = {"trial_id": None, "reference": True, "value": 1.0, "ci": None,
                        "outcome": None}  # fmt: skip
        return data
    won = speedup(verdict.winner, seed)
    data["best"] = {
        "trial_id": winner_id, "reference": False, "value": won["speedup"],
        "ci": won["speedup_ci"], "outcome": won["speedup_outcome"],
    }  # fmt: skip
    return data


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
