"""What the graph-rewrite page shows, computed in SQL: each job's best measured speedup
per (model, search), its best trial's rewrite sequence, and the RL learning curves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select

from tunelab.platform import steps as steps_mod
from tunelab.schema.models import Job, Trial, TrialStatus

KIND = "graph-rewrite"
# Points of a drawn curve: past this many updates, each point summarises a range of them.
CURVE_POINTS = 1000


@dataclass(frozen=True)
class SearchBest:
    """The best ok trial of one search of one job: its measured speedup over the
    original graph, the cost model's, and how long the search took."""

    job_id: int
    model: str
    search: str
    speedup: float
    model_speedup: float | None
    trials: int
    search_s: float
    trial_id: int


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
            cur = best.get(key)
            n = (cur.trials if cur else 0) + 1
            if cur is None or s > cur.speedup:
                best[key] = SearchBest(
                    job.id,
                    model,
                    search,
                    float(s),
                    obj.get("model_speedup"),
                    n,
                    float(totals.get(job.id) or 0.0),
                    trial.id,
                )
            else:
                best[key] = SearchBest(**{**cur.__dict__, "trials": n})
    return sorted(best.values(), key=lambda b: (b.model, b.search, b.job_id))


def rewrite_sequence(engine: Engine, trial_id: int) -> list[dict[str, Any]]:
    """The rewrites a trial applied, in order: rule and the nodes it matched."""
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
