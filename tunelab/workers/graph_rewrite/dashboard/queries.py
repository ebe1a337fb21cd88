"""What the graph-rewrite page shows, computed in SQL: each job's best measured speedup
per (model, search) with its interval (the final rounds' winner where the job had them),
its best trial's rewrite sequence, and the RL learning curves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select

from tunelab.platform import intervals
from tunelab.platform import steps as steps_mod
from tunelab.schema.models import Job, Trial, TrialStatus

KIND = "graph-rewrite"
# Points of a drawn curve: past this many updates, each point summarises a range of them.
CURVE_POINTS = 1000


@dataclass(frozen=True)
class SearchBest:
    """The best of one search of one job: its measured speedup over the original graph
    with its 95% interval and verdict (`faster`, `slower`, `tied`, `undecided`), the cost
    model's, and how long the search took. `final`: the job's final rounds decided it
    (the speedup is the winner's re-timed one; `trial_id` None: the original won), else
    it is the best trial's own timing."""

    job_id: int
    model: str
    search: str
    speedup: float
    model_speedup: float | None
    trials: int
    search_s: float
    trial_id: int | None
    ci: tuple[float, float] | None = None
    verdict: str | None = None
    final: bool = False


def _model_of(job: Job, trial: Trial) -> str:
    wl = job.spec.get("workload", {})
    size = wl.get("size", "cpu")
    return f"{trial.extra.get('model') or wl.get('model')} ({size})"


def best_per_search(engine: Engine, job_ids: Sequence[int]) -> list[SearchBest]:
    """Per job and (model, search): the ok trial with the highest measured speedup.
    Evaluation runs of a policy count as the search `ppo (eval)`."""
    if not job_ids:
        return []
    stmt = (
        select(Trial, Job)
        .join(Job, Job.id == Trial.job_id)
        .where(Trial.job_id.in_(job_ids), Trial.status == TrialStatus.ok, Job.kind == KIND)
        .order_by(Trial.id)
    )
    best: dict[tuple[int, str, str], SearchBest] = {}
    key_of: dict[int, tuple[int, str, str]] = {}  # searched trials' keys, for the finals
    verdicts: dict[int, dict[str, Any]] = {}
    with engine.connect() as conn:
        totals = dict(
            conn.execute(
                select(Trial.job_id, func.sum(Trial.run_s))
                .where(Trial.job_id.in_(job_ids))
                .group_by(Trial.job_id)
            ).all()
        )
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        for trial, job in session.execute(stmt).all():
            search = trial.params.get("search", "?") + (" (eval)" if trial.baseline else "")
            model = _model_of(job, trial)
            key = (job.id, model, search)
            obj = trial.objectives or {}
            s = obj.get("speedup")
            if s is None:
                continue
            if not trial.baseline:
                key_of[trial.id] = key
            if job.verdict and (job.verdict.get("best") or {}):
                verdicts[job.id] = job.verdict
            cur = best.get(key)
            n = (cur.trials if cur else 0) + 1
            if cur is None or s > cur.speedup:
                iv = intervals.of_trial(trial.extra, "speedup")
                best[key] = SearchBest(
                    job.id,
                    model,
                    search,
                    float(s),
                    obj.get("model_speedup"),
                    n,
                    float(totals.get(job.id) or 0.0),
                    trial.id,
                    (iv.lo, iv.hi) if iv else None,
                    iv.outcome if iv else None,
                )
            else:
                best[key] = SearchBest(**{**cur.__dict__, "trials": n})
    for v in verdicts.values():
        _final(best, key_of, v)
    return sorted(best.values(), key=lambda b: (b.model, b.search, b.job_id))


def _final(
    best: dict[tuple[int, str, str], SearchBest],
    key_of: dict[int, tuple[int, str, str]],
    verdict: dict[str, Any],
) -> None:
    """A job's final rounds decide its search's best: the winner's re-timed speedup with
    its interval (the original itself, 1.0, when it won)."""
    won = verdict["best"]
    ids = [won.get("trial_id"), *(c.get("trial_id") for c in verdict.get("finalists", []))]
    key = next((key_of[i] for i in ids if i in key_of), None)
    if key is None:
        return
    ci = tuple(won["ci"]) if won.get("ci") else None
    best[key] = SearchBest(**{
        **best[key].__dict__, "speedup": float(won["value"]), "trial_id": won.get("trial_id"),
        "ci": ci, "verdict": won.get("outcome") or "the original won", "final": True,
    })  # fmt: skip


def rewrite_sequence(engine: Engine, trial_id: int | None) -> list[dict[str, Any]]:
    """The rewrites a trial applied, in order: rule and the nodes it matched (none for
    the original graph, `trial_id` None)."""
    if trial_id is None:
        return []
    with engine.connect() as conn:
        extra = conn.execute(select(Trial.extra).where(Trial.id == trial_id)).scalar()
    return [
        {"step": i + 1, "rule": rule, "location": ", ".join(loc)}
        for i, (rule, loc) in enumerate((extra or {}).get("rewrites", []))
    ]


def learning_curve(
    engine: Engine, job_id: int, metric: str, *, buckets: int = CURVE_POINTS
) -> list[steps_mod.CurvePoint]:
    """The job's per-update metric (mean return, a loss, entropy ...), down-sampled in
    the database to at most `buckets` points (each: its updates' min, mean and max), so
    a million-update curve reads as fast as a short one."""
    return steps_mod.curve(engine, job_id, metric, buckets=buckets)


def eval_curves(
    engine: Engine, job_id: int, metric: str = "speedup", *, buckets: int = CURVE_POINTS
) -> dict[str, list[steps_mod.CurvePoint]]:
    """Per evaluated model, the deterministic policy's `metric` by update (down-sampled)."""
    out = {}
    for key in steps_mod.trial_keys_with_steps(engine, job_id):
        if key.startswith("eval:"):
            points = steps_mod.curve(engine, job_id, metric, key, buckets=buckets)
            if points:
                out[key.removeprefix("eval:")] = points
    return out
