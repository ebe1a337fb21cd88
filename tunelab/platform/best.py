"""A job's best trial, and exporting it deployably through its kind (`tunelab best`).

The best is the job's recorded best: the noise-aware winner of its final rounds when
the job had them, else its best correct searched trial by the kind's primary objective
(as `tunelab trials --top 1` ranks them). A library baseline is never the best.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tunelab.platform import api
from tunelab.platform.kinds import ExportUnsupported, get_kind
from tunelab.platform.objectives import Objective
from tunelab.platform.outpaths import check_replaceable
from tunelab.platform.records import JobRecord, TrialRecord

PARAMS_FILE = "params.json"


class NoBestTrial(LookupError):
    """The job has no correct searched trial (yet)."""


class ExportConflict(FileExistsError):
    """Files the export would write exist already (and overwriting was not asked for)."""

    def __init__(self, out_dir: Path, names: list[str]) -> None:
        self.names = names
        super().__init__(
            f"{out_dir} already has {', '.join(names)}: nothing was written (--force replaces them)"
        )


@dataclass(frozen=True)
class Best:
    """A job's best trial, its primary objective, and what the final rounds said of it."""

    job: JobRecord
    trial: TrialRecord
    objective: Objective
    verdict: str | None  # the noise-aware winner's status; None without final rounds
    search_best: TrialRecord  # the best by the search's own measurements

    def as_json(self) -> dict[str, Any]:
        """What `params.json` records of it."""
        t, spec = self.trial, self.job.spec
        return {
            "job": self.job.id,
            "job_name": self.job.name,
            "trial": t.id,
            "kind": self.job.kind,
            "params": t.params,
            "workload": spec.get("workload"),
            "workload_label": self.job.workload,
            "target": spec.get("target"),
            "objective": {
                "name": self.objective.name,
                "direction": str(self.objective.direction),
                "unit": self.objective.unit,
                "value": t.value,
            },
            "objectives": t.objectives,
            "latency_s": _latency(t),
            "final_rounds": _final_rounds(self.job, t.id),
            "measured_on": t.worker_node,
            "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }


def _latency(t: TrialRecord) -> dict[str, Any] | None:
    """A timed trial's measured latency: statistics and every repeat, in seconds."""
    if t.latency_median_s is None:
        return None
    return {
        "median": t.latency_median_s, "mean": t.latency_mean_s, "stdev": t.latency_stdev_s,
        "min": t.latency_min_s, "repeats": t.latencies_s,
    }  # fmt: skip


def _final_rounds(job: JobRecord, trial_id: int) -> dict[str, Any] | None:
    v = job.verdict
    if not v or v.get("winner_trial_id") != trial_id:
        return None
    said = {
        "rounds": v["rounds"],
        "pooled_median_s": v["winner_median_s"],
        "tied_with": [c["trial_id"] for c in v["finalists"] if c["outcome"] == "tied"],
        "undecided_against": [c["trial_id"] for c in v["finalists"] if c["outcome"] == "undecided"],
    }
    if best := v.get("best"):  # final rounds against a reference: the winner's speedup
        said |= {"against": _reference(v), "speedup": best["value"], "speedup_ci": best["ci"],
                 "speedup_verdict": best["outcome"]}  # fmt: skip
    return said


def _reference(verdict: dict[str, Any]) -> str:
    return (verdict.get("reference") or {}).get("label") or "the reference"


def contenders(ids: list[int | None], verdict: dict[str, Any]) -> str:
    """`trial 3`, `trials 3, 4`, `trials 3, 4 and the original graph`: finalists of the
    final rounds by trial id, the reference (no trial: None) by its name."""
    trials = [str(i) for i in ids if i is not None]
    said = f"trial{'s' * (len(trials) > 1)} {', '.join(trials)}" if trials else ""
    if None in ids:
        said += (" and " if said else "") + _reference(verdict)
    return said


def verdict_status(job: JobRecord, trial_id: int) -> str | None:
    """What the final rounds said of trial `trial_id`, in words; None without them."""
    from tunelab.platform import intervals
    from tunelab.units import fmt_value

    v = job.verdict or {}
    if (v.get("best") or {}).get("reference"):
        return (
            f"{_reference(v)} won {v['rounds']} final rounds (paired, order shuffled each "
            f"round): no finalist is faster beyond the noise; the job's best is "
            f"{intervals.fmt(v['best']['value'], job.objective, intervals.of_job(v))}"
        )
    rounds = _final_rounds(job, trial_id)
    if rounds is None:
        return None
    if "speedup" in rounds:
        said = (
            f"winner of {rounds['rounds']} final rounds against {rounds['against']} (paired, "
            f"order shuffled each round): "
            f"{intervals.fmt(rounds['speedup'], job.objective, intervals.of_job(v))}"
        )
    else:
        said = (
            f"winner of {rounds['rounds']} final rounds (interleaved re-measurements, pooled "
            f"median {fmt_value(rounds['pooled_median_s'], job.objective)})"
        )
    if rounds["tied_with"]:
        said += f", tied with {contenders(rounds['tied_with'], v)}"
        said += " (within 1%, CI of the ratio holds 1)"
    elif rounds["undecided_against"]:
        said += f", not separated from {contenders(rounds['undecided_against'], v)} by the rounds"
    else:
        said += ", alone"
    return said


def _trial(job_id: int, trial_id: int, db: str | None) -> TrialRecord | None:
    from sqlalchemy import select

    from tunelab.schema.db import get_engine, session_scope
    from tunelab.schema.models import Trial

    with session_scope(get_engine(db, migrate=False)) as s:
        row = s.scalar(select(Trial).where(Trial.id == trial_id, Trial.job_id == job_id))
        return TrialRecord.of(row) if row is not None else None


def best_trial(job_id: int, *, db: str | None = None) -> Best:
    """Job `job_id`'s best trial (JobNotFound if no such job, NoBestTrial if it has no
    correct searched trial)."""
    job = api.get_job(job_id, db=db)
    top = api.trials(job_id, db=db, top=1)
    if not top:
        raise NoBestTrial(f"job {job_id} has no correct trial ({job.display_status})")
    trial = top[0]
    winner = (job.verdict or {}).get("winner_trial_id")
    if winner is not None and winner != trial.id:
        trial = _trial(job_id, winner, db) or trial
    kind = get_kind(job.kind)
    objective = next((o for o in kind.objectives if o.name == job.objective), kind.primary())
    return Best(job, trial, objective, verdict_status(job, trial.id), top[0])


def export_best(
    job_id: int, out_dir: str | Path, *, force: bool = False, db: str | None = None
) -> tuple[Best, list[Path]]:
    """Export job `job_id`'s best trial into `out_dir` through its kind, with
    `params.json`; returns it and the files written.

    The kind writes into a fresh directory inside `out_dir` (created if missing); the
    files are moved into `out_dir` only once all are written, and none is written if
    any of them exists there, unless `force` (ExportConflict). ExportUnsupported: the
    kind cannot export."""
    best = best_trial(job_id, db=db)
    kind = get_kind(best.job.kind)
    if not kind.can_export():  # refused before anything is made
        raise ExportUnsupported(f"kind {kind.name} cannot export its trials")
    from tunelab.platform.spec import parse_spec

    spec = parse_spec(best.job.spec, f"job {job_id}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} is not a directory")
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".tunelab-export-", dir=out_dir) as tmp:
            staging = Path(tmp)
            written = kind.export(spec, dict(best.trial.params), staging)
            params = staging / PARAMS_FILE
            params.write_text(json.dumps(best.as_json(), indent=2, default=str) + "\n")
            names = [str(p.relative_to(staging)) for p in (*written, params)]
            clash = [n for n in names if (out_dir / n).exists() or (out_dir / n).is_symlink()]
            if clash and not force:
                raise ExportConflict(out_dir, clash)
            for name in clash:  # only regular files are replaced: nothing written otherwise
                check_replaceable(out_dir / name)
            for name in names:
                (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / name, out_dir / name)
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return best, [out_dir / n for n in names]
