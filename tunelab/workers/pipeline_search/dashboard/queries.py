"""Speedups of pipeline-search jobs: the best latency pipelined, unpipelined and per
library baseline, per job and per workload (see PIPELINED)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, case, func, literal, or_, select

from tunelab.dashboard.queries.common import OK
from tunelab.schema.models import Environment, Job, Trial, Workload, trial_baseline

# The one definition, for code, captions and the README alike.
PIPELINED = "pipelined: `stages` or `reg_stages` above 1 (a missing one counts as 1)"


@dataclass(frozen=True)
class SpeedupRow:
    """The best latency of each variant of one workload on one device, over one job
    (`speedups`) or over every selected job of that workload (`by_workload`)."""

    job_id: int
    job: str
    workload: str
    device: str
    pipelined_s: float | None
    unpipelined_s: float | None
    baselines: dict[str, float]
    job_ids: tuple[int, ...] = ()

    @property
    def speedup(self) -> float | None:
        """Unpipelined / pipelined: how much faster pipelining made the best kernel."""
        if self.pipelined_s and self.unpipelined_s:
            return self.unpipelined_s / self.pipelined_s
        return None

    def vs_baseline(self, name: str) -> float | None:
        """Baseline / best tuned kernel (pipelined or not): > 1 means tunelab wins."""
        best = min(x for x in (self.pipelined_s, self.unpipelined_s, math.inf) if x)
        base = self.baselines.get(name)
        return base / best if base and best < math.inf else None


def variant_expr() -> Any:
    """`baseline:<name>` for trials with extra.baseline, else pipelined / unpipelined as
    PIPELINED says."""
    baseline = trial_baseline()
    stages = func.coalesce(Trial.params["stages"].as_integer(), 1)
    reg_stages = func.coalesce(Trial.params["reg_stages"].as_integer(), 1)
    return case(
        (baseline.is_not(None), literal("baseline:") + baseline),
        (or_(stages > 1, reg_stages > 1), literal("pipelined")),
        else_=literal("unpipelined"),
    )


def speedups(engine: Engine, job_ids: Sequence[int]) -> list[SpeedupRow]:
    """Per job: best ok latency pipelined, unpipelined and per baseline, with the
    workload and the device (GPU model, else CPU model, else target) it ran on."""
    if not job_ids:
        return []
    variant = variant_expr().label("variant")
    best = (
        select(Trial.job_id, variant, func.min(Trial.latency_median_s).label("best"))
        .where(Trial.job_id.in_(list(job_ids)), Trial.status == OK)
        .group_by(Trial.job_id, variant)
    )
    best_trial = Trial.__table__.alias("bt")
    device = func.coalesce(Environment.gpu_model, Environment.cpu_model, Job.target)
    meta = (
        select(Job.id, Job.name, Workload.description.label("workload"), device.label("device"))
        .join(Workload, Workload.id == Job.workload_id)
        .outerjoin(best_trial, best_trial.c.id == Job.best_trial_id)
        .outerjoin(Environment, Environment.id == best_trial.c.environment_id)
        .where(Job.id.in_(list(job_ids)))
    )
    with engine.connect() as conn:
        bests = conn.execute(best).all()
        jobs = {r.id: r for r in conn.execute(meta)}
    by_job: dict[int, dict[str, float]] = {}
    for job_id, var, lat in bests:
        if lat is not None:
            by_job.setdefault(job_id, {})[var] = lat
    out = []
    for job_id in job_ids:
        if job_id not in jobs or job_id not in by_job:
            continue
        v = by_job[job_id]
        job = jobs[job_id]
        out.append(
            SpeedupRow(
                job_id=job_id,
                job=job.name,
                job_ids=(job_id,),
                workload=job.workload,
                device=job.device or "-",
                pipelined_s=v.get("pipelined"),
                unpipelined_s=v.get("unpipelined"),
                baselines={
                    k.removeprefix("baseline:"): x
                    for k, x in v.items()
                    if k.startswith("baseline:")
                },
            )
        )
    return out


def by_workload(rows: Sequence[SpeedupRow]) -> list[SpeedupRow]:
    """One row per workload and device: the best of each variant over `rows` (jobs of
    that workload: a sweep replayed four times counts once), in the order each first
    appears; `job_ids` lists the jobs merged. Geometric means are taken over these."""
    merged: dict[tuple[str, str], SpeedupRow] = {}

    def low(a: float | None, b: float | None) -> float | None:
        return min(x for x in (a, b) if x is not None) if a is not None or b is not None else None

    for r in rows:
        key = (r.workload, r.device)
        m = merged.get(key)
        if m is None:
            merged[key] = r
            continue
        baselines = dict(m.baselines)
        for name, value in r.baselines.items():
            baselines[name] = min(value, baselines.get(name, math.inf))
        merged[key] = SpeedupRow(
            job_id=m.job_id, job=f"{m.job}, {r.job}", workload=m.workload, device=m.device,
            pipelined_s=low(m.pipelined_s, r.pipelined_s),
            unpipelined_s=low(m.unpipelined_s, r.unpipelined_s),
            baselines=baselines, job_ids=(*m.job_ids, *r.job_ids),
        )  # fmt: skip
    return list(merged.values())
