"""A job's best trial: show it, or export it deployably through its kind."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tunelab.platform.cli.common import (
    EXIT_HELP,
    DbOpt,
    Exit,
    JobArg,
    err,
    fail,
    fmt_params,
    guard,
    out,
)

if TYPE_CHECKING:
    from tunelab.platform.best import Best

app = typer.Typer()


def _value(b: Best) -> str:
    """The best's primary objective with its unit, e.g. `latency_s 1.234 ms`; a ratio with
    its interval: `speedup 1.12x (95% CI 0.98-1.31, tied)`, re-measured by the final
    rounds where they chose it."""
    from tunelab.platform import intervals
    from tunelab.units import fmt_value

    o, t, v = b.objective, b.trial, b.job.verdict or {}
    won = (v.get("best") or {}).get("trial_id") == t.id and v.get("winner_trial_id") == t.id
    if won:
        text = intervals.fmt(v["best"]["value"], o.name, intervals.of_job(v))
    elif intervals.is_ratio(o.name) or intervals.of_trial(t.extra, o.name):
        text = intervals.fmt(t.value, o.name, intervals.of_trial(t.extra, o.name))
    else:
        text = fmt_value(t.value, o.name)
        if o.unit and not o.name.endswith("_s"):
            text += f" {o.unit}"
    how = [str(o.direction)]
    if won:
        how.append(f"re-measured in {v['rounds']} final rounds")
    elif t.n_repeats:
        how.append(f"median of {t.n_repeats} repeats")
    return f"{o.name} {text} ({'; '.join(how)})"


def _busy(b: Best, db: str | None) -> list[str]:
    """A line when the best or a finalist was measured on a busy node (platform/health.py)."""
    j = b.job
    if not (j.busy_trials or j.busy_rounds):
        return []
    from tunelab.platform import api

    finalists = [c.get("trial_id") for c in (j.verdict or {}).get("finalists", [])]
    ids = [b.trial.id, *(i for i in finalists if i is not None and i != b.trial.id)]
    marked = api.busy_report(j.id, db=db, trial_ids=ids)["marked"]
    if not marked:
        return []
    said = "; ".join(
        f"trial {tid}{' (the best)' if tid == b.trial.id else ''} in its "
        + where.replace("trial", "search measurement")
        for tid, where in marked.items()
    )
    return [f"[yellow]measured on a busy node: {said}; measure again on a quiet node[/]"]


def _print(b: Best, db: str | None = None) -> None:
    from tunelab.platform import intervals

    j, t, sb = b.job, b.trial, b.search_best
    lines = [
        f"[bold]job {j.id}[/] {j.name}  ({', '.join(x for x in (j.kind, j.target) if x)}): "
        f"{j.workload}",
        f"best: trial {t.id}  {_value(b)}",
        f"params: {fmt_params(t.params)}",
    ]
    if b.verdict:
        lines.append(f"noise-aware winner: {b.verdict}")
    else:
        lines.append("noise-aware winner: none recorded (no final rounds): best by the search")
    if b.search_best.id != t.id:
        lines.append(
            f"the search alone ranked trial {b.search_best.id} first "
            f"({intervals.fmt(sb.value, j.objective, intervals.of_trial(sb.extra, j.objective))}"
            "); the final rounds did not"
        )
    lines += _busy(b, db)
    out.print("\n".join(lines), highlight=False, soft_wrap=True)


@app.command(epilog=EXIT_HELP)
def best(
    job: JobArg,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Export the best candidate into this directory (created if missing): its "
            "compiled code, source, launch description, README and params.json.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="With --out: replace files already there.")
    ] = False,
    db: DbOpt = None,
) -> None:
    """A job's best trial (id, parameters, primary objective, noise-aware verdict); with
    --out, rebuilt by the job's kind and written out, ready to deploy.

    Files already in DIR are never replaced unless --force (exit 2, nothing written).

    A kind that cannot export exits 4, as does a job with no correct trial."""
    from tunelab.platform import best as best_mod

    if out_dir is None:
        if force:
            fail(Exit.BAD_INPUT, "--force applies to --out only")
        _print(guard(lambda: best_mod.best_trial(job, db=db)), db)
        return
    from tunelab.platform.kinds import CandidateError, ExportUnsupported
    from tunelab.platform.outpaths import NotRegularFile

    try:
        b, files = guard(lambda: best_mod.export_best(job, out_dir, force=force, db=db))
    except ExportUnsupported as exc:
        fail(Exit.NOT_FOUND, str(exc))
    except best_mod.ExportConflict as exc:
        fail(Exit.BAD_INPUT, str(exc))
    except (NotADirectoryError, NotRegularFile) as exc:
        fail(Exit.BAD_INPUT, str(exc))
    except CandidateError as exc:
        fail(Exit.JOB_FAILED, f"the best trial of job {job} did not build again: {exc}")
    except OSError as exc:  # no permission, disk full: what was there stays
        fail(Exit.JOB_FAILED, f"cannot write {out_dir}: {exc.strerror or exc}")
    _print(b, db)
    names = ", ".join(str(f.relative_to(out_dir)) for f in files)
    err.print(f"exported trial {b.trial.id} to {out_dir}: {names}", highlight=False, soft_wrap=True)
    if any(f.name == "README.md" for f in files):
        err.print(f"how to load and call it: {out_dir / 'README.md'}", highlight=False)
