"""Prior trials: what other workloads of the same kind measured, for a warm start.

A learning strategy (the `model` strategy) can start from every trial recorded for other
workloads of its kind on the same kind of target instead of from nothing. Absolute
costs differ from one workload to the next, so a prior trial carries its group (the job,
or sweep, that measured it): the model learns costs relative to each group's best. The
driver reads them from the database (`read_priors`: the newest `MAX_PRIORS`); a replay
takes them from other sweep files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, or_, select

from tunelab.platform.recorder import measured_quiet
from tunelab.schema.models import Job, Trial, TrialStatus

if TYPE_CHECKING:
    from tunelab.platform.kinds import JobKind

log = logging.getLogger(__name__)

MAX_PRIORS = 20_000


@dataclass(frozen=True)
class PriorTrial:
    """One measured candidate of another workload: its group (costs are compared within
    a group only), parameters, the kind's model features for its own spec, and the
    primary objective's value."""

    group: str
    params: dict[str, Any]
    features: dict[str, float] | None
    value: float


def target_family(label: str) -> str:
    """The kind of target of a job's target label (`cuda:sm_80` -> `cuda`)."""
    return label.split(":", 1)[0]


def read_priors(
    engine: Engine, job_id: int, kind: JobKind, *, limit: int = MAX_PRIORS
) -> list[PriorTrial]:
    """The newest `limit` successful, non-baseline trials not measured on a busy node, of
    jobs of this job's kind, target kind and primary objective that tuned another
    workload, with the kind's model features computed from each one's own spec. Jobs
    whose spec no longer parses, and trials the kind cannot describe, are skipped."""
    from tunelab.platform.spec import parse_spec

    with engine.connect() as conn:
        job = conn.execute(
            select(Job.kind, Job.workload_id, Job.target, Job.objective, Job.direction).where(
                Job.id == job_id
            )
        ).one()
        family = target_family(job.target)
        rows = conn.execute(
            select(Trial.job_id, Trial.params, Trial.value)
            .join(Job, Job.id == Trial.job_id)
            .where(
                Job.kind == job.kind,
                Job.workload_id != job.workload_id,
                Job.objective == job.objective,
                Job.direction == job.direction,
                or_(Job.target == family, Job.target.startswith(f"{family}:", autoescape=True)),
                Trial.status == TrialStatus.ok,
                Trial.baseline.is_(None),
                Trial.value > 0,
                measured_quiet(Trial.node_health),  # a busy node's numbers teach nothing
            )
            .order_by(Trial.id.desc())
            .limit(limit)
        ).all()
        ids = sorted({r.job_id for r in rows})
        specs = dict(conn.execute(select(Job.id, Job.spec).where(Job.id.in_(ids))).all())
    parsed: dict[int, Any] = {}
    for jid, data in specs.items():
        try:
            parsed[jid] = parse_spec(data, f"job {jid}")
        except Exception as exc:  # an old job the spec has outgrown: not a prior
            log.info("job %s is no prior: its spec no longer parses (%s)", jid, exc)
    out = []
    for r in reversed(rows):  # oldest first
        spec = parsed.get(r.job_id)
        if spec is None:
            continue
        try:
            features = kind.model_features(spec, r.params)
        except Exception:  # parameters the kind no longer knows
            continue
        out.append(PriorTrial(f"job {r.job_id}", r.params, features, float(r.value)))
    return out
