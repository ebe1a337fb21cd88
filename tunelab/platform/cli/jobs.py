"""Jobs: submit, resume, cancel, list and show them, and the hidden commands that drive
one (a background driver, a job submitted through the Ray Jobs API)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tunelab.platform.cli.common import (
    EXIT_HELP,
    DbOpt,
    Exit,
    Format,
    JobArg,
    RayOpt,
    emit,
    err,
    exit_for,
    fail,
    guard,
    out,
    trials_table,
)
from tunelab.schema.statuses import JobStatus, TrialStatus

if TYPE_CHECKING:
    from tunelab.platform.execution import Progress as JobProgress
    from tunelab.platform.records import JobRecord

app = typer.Typer()


def _progress(done: int, planned: int) -> str:
    """`done/planned`, or just `done` for a job recorded without a plan (an old replay's
    "648/0"), as the dashboard shows it."""
    return f"{done}/{planned}" if planned else str(done)


def _run_with_progress(
    job_id: int, db: str | None, start: Callable[[Callable[[JobProgress], None]], Any]
) -> Any:
    """Call `start(on_progress)` under a progress bar on stderr. The bar starts from what
    the job has already recorded (a resumed job's earlier trials count)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from tunelab.platform import api
    from tunelab.units import fmt_value

    job = api.get_job(job_id, db=db)
    counts = api.status_counts(job_id, db=db)
    counts.pop(TrialStatus.running, None)  # evaluated again by this run
    # The driver's Progress counts every recorded trial, earlier runs' too.
    ok_before = counts.get(TrialStatus.ok, 0)
    top = api.trials(job_id, db=db, top=1)
    best_before = top[0].value if top else None

    def summary(ok: int, best: float | None) -> str:
        return f"ok {ok}  best {fmt_value(best, job.objective)}"

    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]trials"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[summary]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    ) as bar:
        done = sum(counts.values())
        task = bar.add_task(
            "trials", total=job.n_planned or None, completed=done,
            summary=summary(ok_before, best_before) if done else "starting Ray...",
        )  # fmt: skip

        started = False

        def update(p: JobProgress) -> None:
            nonlocal started
            started = True
            bar.update(task, completed=p.done, total=p.total, summary=summary(p.ok, p.best))

        try:
            return start(update)
        except Exception:
            if not started:  # e.g. no Ray to run on: its one-line error alone says so
                bar.update(task, visible=False)
            raise


def _summary(job_id: int, db: str | None, top: int = 5) -> None:
    from tunelab.config import resolve_db_url
    from tunelab.platform import api
    from tunelab.schema.db import redact

    job = api.get_job(job_id, db=db)
    _show_job(job, db)
    best = api.trials(job_id, db=db, top=top)
    if best:
        out.print(trials_table(f"Best {len(best)} trials", best, job.objective))
    else:
        out.print("[yellow]no trial produced a correct result[/]")
    _baselines(job, best, db)
    out.print(f"database: {redact(resolve_db_url(db))}")


def _baselines(job: JobRecord, best: list[Any], db: str | None) -> None:
    """Each baseline against the job's best: from the final rounds' verdict (interleaved,
    with a confidence interval) when there is one, else from the search's medians."""
    from tunelab.platform import api
    from tunelab.units import fmt_value

    judged = {b["key"]: b for b in (job.verdict or {}).get("baselines", [])}
    for t in api.baseline_trials(job.id, db=db):
        if t.status != "ok" or not t.value:
            continue
        n = (t.extra or {}).get("threads")  # the library's threads (pipeline-search: its own)
        name = f"{t.baseline} ({n} thread{'s' if n != 1 else ''})" if n else t.baseline
        if t.baseline in judged:
            b = judged[t.baseline]
            lo, hi = b["ci"]
            said = {
                "win": f"the best found is {b['ratio']:.2f}x faster",
                "loss": f"the best found is slower ({b['ratio']:.2f}x its speed)",
                "undecided": f"no faster beyond the noise ({b['ratio']:.2f}x)",
                "tied": f"tied with the best found ({b['ratio']:.2f}x, within 1%)",
            }[b["outcome"]]
            out.print(
                f"baseline {name}: {fmt_value(b['median_s'], job.objective)} — {said}, "
                f"95% CI {lo:.2f}-{hi:.2f} (final rounds, interleaved)"
            )
            continue
        line = f"baseline {name}: {fmt_value(t.value, job.objective)}"
        if best and best[0].value:
            minimise = job.direction == "minimize"
            ratio = t.value / best[0].value if minimise else best[0].value / t.value
            line += f" (best found: {ratio:.2f}x, one search measurement each, no interval)"
        out.print(line)


def no_success(job_id: int, db: str | None) -> str | None:
    """Why a completed job is no success, or None: not one of its searched trials (library
    baselines aside) produced a correct result (or, for a build-only job, built)."""
    from tunelab.platform import api

    counts = api.status_counts(job_id, db=db)
    for t in api.baseline_trials(job_id, db=db):
        counts[t.status] -= 1
    if counts.get(TrialStatus.ok, 0) > 0 or counts.get(TrialStatus.built, 0) > 0:
        return None
    failures = sorted(((n, s) for s, n in counts.items() if n > 0), key=lambda x: (-x[0], x[1]))
    listed = ", ".join(f"{n} {s}" for n, s in failures) or "no trial was recorded"
    return f"no trial produced a correct result: {listed}"


def _exit_after_run(job_id: int, db: str | None) -> None:
    """Exit with how a job this command ran ended: a completed job none of whose trials
    came out correct is a failure (exit 1), said why."""
    from tunelab.platform import api

    status = api.get_job(job_id, db=db).status
    if status == JobStatus.completed and (why := no_success(job_id, db)):
        fail(Exit.JOB_FAILED, f"job {job_id} completed, but {why}")
    exit_for(status)


def _started(job_id: int, db: str | None, what: str) -> None:
    """Say that a background driver took job `job_id`, and where its log is."""
    from tunelab.platform import api

    log = api.driver_log_path(job_id, db=db)
    err.print(
        f"job {job_id} {what} in the background; follow it with `tunelab show {job_id}`; "
        f"driver log: {log}",
        highlight=False,
        soft_wrap=True,
    )


@app.command(epilog=EXIT_HELP)
def submit(
    spec: Annotated[Path, typer.Argument(help="Job spec, YAML or JSON (see examples/).")],
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait",
            help="Run here with a progress bar and print the best trials; "
            "otherwise start a background driver and return at once.",
        ),
    ] = False,
    db: DbOpt = None,
    ray: RayOpt = None,
    jobs_api: Annotated[
        str | None,
        typer.Option(
            "--jobs-api",
            help="Submit to a cluster through its Ray Jobs API (the Ray dashboard URL, e.g. "
            "http://127.0.0.1:8265); the job then uses the cluster's database. Prints the "
            "Ray submission id.",
        ),
    ] = None,
) -> None:
    """Validate SPEC, record it as a job and run it; prints the job id.

    A spec that names a `suite:` (a kind's named list of workloads: `tunelab kinds` lists
    them) instead of a `workload:` runs one job per workload of the suite, one after
    another, and prints each id. An invalid spec is refused (exit 2) before anything is
    written.
    """
    from tunelab.platform import api

    job_specs = guard(lambda: api.as_specs(spec))
    if len(job_specs) > 1:
        for one in job_specs:
            err.print(f"[bold]{one.name}[/bold]")
            _submit_one(one, wait, db, ray, jobs_api)
        return
    _submit_one(job_specs[0], wait, db, ray, jobs_api)


def _submit_one(job_spec: Any, wait: bool, db: str | None, ray: str | None,
                jobs_api: str | None) -> None:  # fmt: skip
    from tunelab.platform import api

    if jobs_api:
        if db or ray:
            fail(Exit.BAD_INPUT, "--jobs-api runs the job in the cluster: drop --db and --ray")
        _submit_to_cluster(job_spec, jobs_api, wait)
        return
    if not wait:
        job_id = guard(lambda: api.submit(job_spec, wait=False, db=db, ray_address=ray))
        out.print(job_id)
        _started(job_id, db, "started")
        return
    job_id = guard(lambda: api.create(job_spec, db=db))
    out.print(job_id)
    guard(
        lambda: _run_with_progress(
            job_id, db, lambda cb: api.resume(job_id, db=db, ray_address=ray, on_progress=cb)
        )
    )
    _summary(job_id, db)
    status = api.get_job(job_id, db=db).status
    if status == JobStatus.completed and (why := no_success(job_id, db)):
        fail(Exit.JOB_FAILED, f"job {job_id} completed, but {why}")
    if status != JobStatus.completed:  # a suite's next job runs after a completed one
        exit_for(status)


def _submit_to_cluster(job_spec: Any, url: str, wait: bool) -> None:
    from tunelab.platform import api
    from tunelab.platform.spec import SpecError

    try:
        sid, state = api.submit_to_cluster(
            job_spec, url, wait=wait, echo=lambda text: err.out(text, end="", highlight=False)
        )
    except api.JobsApiUnreachable as exc:
        fail(Exit.DB_UNREACHABLE, str(exc))
    except (api.JobsApiAddressError, SpecError) as exc:
        fail(Exit.BAD_INPUT, str(exc))
    except Exception as exc:  # e.g. a rejected token or an error status: say what, no traceback
        fail(
            Exit.JOB_FAILED,
            f"submitting through the Jobs API at {url} failed: {type(exc).__name__}: {exc}",
        )
    out.print(sid)
    if not wait:
        err.print(f"submitted; follow it with `ray job logs --address {url} -f {sid}`")
        return
    code = {"SUCCEEDED": Exit.OK, "STOPPED": Exit.CANCELLED}.get(state, Exit.JOB_FAILED)
    err.print(f"Ray job {sid}: {state}")
    raise typer.Exit(int(code))


@app.command("run-spec", hidden=True)
def run_spec(ray: RayOpt = None) -> None:
    """Record and run the spec in TUNELAB_SPEC_JSON (what --jobs-api runs in the cluster)."""
    import os

    from tunelab.platform import api
    from tunelab.platform.spec import parse_spec

    raw = os.environ.get("TUNELAB_SPEC_JSON")
    if not raw:
        fail(Exit.BAD_INPUT, "TUNELAB_SPEC_JSON is not set")
    job_spec = guard(lambda: parse_spec(json.loads(raw), "TUNELAB_SPEC_JSON"))
    job_id = guard(lambda: api.create(job_spec))
    out.print(f"tunelab job {job_id}")
    guard(lambda: api.resume(job_id, ray_address=ray))
    _summary(job_id, None)
    _exit_after_run(job_id, None)


@app.command(epilog=EXIT_HELP)
def resume(
    job: JobArg,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Run here, or in background.")] = (
        False
    ),
    force: Annotated[
        bool,
        typer.Option(help="Take over a job whose driver still seems alive (it then stops)."),
    ] = False,
    retry_failed: Annotated[
        bool,
        typer.Option(help="Also run the job's lost (worker_lost) and timed-out trials again."),
    ] = False,
    db: DbOpt = None,
    ray: RayOpt = None,
) -> None:
    """Continue a job whose driver died, failed, was interrupted or cancelled.

    Recorded trials are kept; unfinished candidates run again; none is recorded twice.
    """
    from tunelab.platform import api

    if not wait:
        guard(lambda: api.resume(job, wait=False, db=db, ray_address=ray, force=force,
                                 retry_failed=retry_failed))  # fmt: skip
        _started(job, db, "resumed")
        return
    guard(
        lambda: _run_with_progress(
            job,
            db,
            lambda cb: api.resume(
                job, db=db, ray_address=ray, force=force, retry_failed=retry_failed, on_progress=cb
            ),
        )
    )
    _summary(job, db)
    _exit_after_run(job, db)


@app.command("run-driver", hidden=True)
def run_driver(
    job: JobArg, db: DbOpt = None, ray: RayOpt = None, force: bool = False,
    retry_failed: bool = False,
) -> None:  # fmt: skip
    """Run a job's driver in this process (what background submissions start)."""
    from tunelab.platform import api

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    status = guard(lambda: api.resume(job, db=db, ray_address=ray, force=force,
                                      retry_failed=retry_failed))  # fmt: skip
    exit_for(status)


@app.command()
def cancel(job: JobArg, db: DbOpt = None) -> None:
    """Cancel a job; a running driver stops within about a second. Recorded trials stay."""
    from tunelab.platform import api

    guard(lambda: api.cancel(job, db=db))
    out.print(f"job {job} cancelled")


@app.command("jobs")
def list_jobs(
    kind: Annotated[str | None, typer.Option(help="Only jobs of this kind.")] = None,
    status: Annotated[JobStatus | None, typer.Option(help="Only jobs in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    fmt: Annotated[Format, typer.Option("--format", help="table, csv or json.")] = Format.table,
    db: DbOpt = None,
) -> None:
    """List jobs, newest first, with progress and best result."""
    from tunelab.platform import api, intervals

    rows = guard(lambda: api.list_jobs(db=db, kind=kind, status=status, limit=limit))
    records = [
        {
            "id": j.id, "name": j.name, "kind": j.kind, "target": j.target,
            "status": j.display_status, "done": j.n_done, "planned": j.n_planned,
            "ok": j.n_ok, "failed": j.n_failed, "objective": j.objective,
            "direction": j.direction, "best_value": j.best_value,
            "best_ci": (iv := intervals.of_job(j.verdict)) and [iv.lo, iv.hi],
            "best_verdict": iv and iv.outcome,
            "best_latency_s": j.best_latency_s, "created_at": j.created_at.isoformat(),
        }
        for j in rows
    ]  # fmt: skip
    if fmt != Format.table:
        emit(records, fmt)
        return
    if not rows:
        out.print("no jobs yet: `tunelab submit SPEC` starts one")
        return
    out.print(_jobs_table(rows))


def _jobs_table(rows: list[JobRecord]) -> Any:
    """Jobs as a table that fits the terminal: names and statuses are never cut or
    wrapped; the other columns go, least useful first, until the table fits."""
    from rich.measure import Measurement
    from rich.table import Table

    from tunelab.units import fmt_age

    unbounded = out.options.update_width(10_000)  # the width the table wants, not gets
    columns: dict[str, list[str]] = {
        "id": [str(j.id) for j in rows],
        "name": [j.name for j in rows],
        "kind": [j.kind for j in rows],
        "target": [j.target for j in rows],
        "status": [j.display_status for j in rows],
        "progress": [_progress(j.n_done, j.n_planned) for j in rows],
        "failed": [str(j.n_failed) for j in rows],
        "best": [_best(j) for j in rows],
        "age": [fmt_age(j.created_at) for j in rows],
    }
    shown = list(columns)
    for drop in ("target", "kind", "age", "failed", "best", "progress", None):
        table = Table(box=None, pad_edge=False, header_style="bold")
        for col in shown:
            right = col in ("id", "failed")
            table.add_column(col, no_wrap=True, justify="right" if right else "left")
        for i in range(len(rows)):
            table.add_row(*(columns[col][i] for col in shown))
        if drop is None or Measurement.get(out, unbounded, table).maximum <= out.width:
            return table
        shown.remove(drop)
    raise AssertionError("unreachable")


def _best(j: JobRecord, trial_extra: dict[str, Any] | None = None) -> str:
    """The job's best value, named unless it is a latency; a ratio with its interval (the
    final rounds', else the best trial's when its `extra` is given)."""
    from tunelab.platform import intervals

    interval = intervals.of_job(j.verdict) or intervals.of_trial(trial_extra, j.objective)
    value = intervals.fmt(j.best_value, j.objective, interval)
    if j.objective == "latency_s" or j.best_value is None:
        return value
    return f"{j.objective} {value} ({j.direction[:3]})"


def _reference(v: dict[str, Any]) -> str:
    return (v.get("reference") or {}).get("label") or "the reference"


def _tie_note(j: JobRecord) -> str:
    """What the final rounds said of the best: the winner alone, or tied with others."""
    if not j.verdict:
        return ""
    v = j.verdict
    rounds = v["rounds"]
    if v.get("reference"):  # final rounds against a reference (a speedup)
        if (v.get("best") or {}).get("reference"):
            return (
                f": {_reference(v)} won {rounds} final rounds, no finalist is faster "
                "beyond the noise"
            )
        said = f", the winner of {rounds} final rounds against {_reference(v)}"
    else:
        said = f", the winner of {rounds} final rounds"
    tied = [c.get("trial_id") for c in v["finalists"] if c["outcome"] == "tied"]
    if not tied:
        return said
    from tunelab.platform.best import contenders

    return (
        f", tied with {len(tied)} ({contenders(tied, v)}: within 1%, CI of the ratio "
        f"contains 1) after {rounds} final rounds"
    )


def _finalists(j: JobRecord) -> list[str]:
    """Lines for the final rounds against a reference: each finalist's re-measured
    speedup with its interval and verdict, and how it compares with the winner."""
    from tunelab.platform import intervals

    v = j.verdict or {}
    if not v.get("reference"):
        return []
    best = v.get("best") or {}
    lines = [
        f"final rounds: {v['rounds']} paired rounds against {_reference(v)}, order shuffled "
        "each round, one worker"
    ]
    if best.get("trial_id") is not None:
        shown = intervals.fmt(best["value"], "speedup", intervals.of_job(v))
        lines.append(f"  trial {best['trial_id']}: {shown}, the winner")
    versus = {"tied": "tied with the winner", "slower": "slower than the winner",
              "undecided": "not separated from the winner"}  # fmt: skip
    for c in v["finalists"]:
        name = f"trial {c['trial_id']}" if c.get("trial_id") is not None else _reference(v)
        ci = c.get("speedup_ci")
        interval = intervals.Interval(ci[0], ci[1], c.get("speedup_outcome")) if ci else None
        if c.get("trial_id") is None:
            lines.append(f"  {name}: 1.00x, {versus.get(c['outcome'], c['outcome'])}")
            continue
        shown = intervals.fmt(c.get("speedup"), "speedup", interval)
        lines.append(f"  {name}: {shown}, {versus.get(c['outcome'], c['outcome'])}")
    if best.get("reference"):
        lines.append(f"  {_reference(v)}: 1.00x, the winner")
    if best.get("outcome") != "faster":
        lines.append(f"  no finalist is faster than {_reference(v)} beyond the noise")
    return lines


def _best_extra(j: JobRecord, db: str | None) -> dict[str, Any] | None:
    """The `extra` of the job's best trial, where an interval of its value may be."""
    from tunelab.platform import api

    if j.best_trial_id is None or j.objective == "latency_s":
        return None
    top = api.trials(j.id, db=db, top=1)
    return top[0].extra if top and top[0].id == j.best_trial_id else None


def _busy_lines(j: JobRecord, db: str | None) -> list[str]:
    """The job's mark when any of its measurements ran on a busy node (platform/health.py)."""
    if not (j.busy_trials or j.busy_rounds):
        return []
    from tunelab.platform import api

    r = api.busy_report(j.id, db=db)
    parts = [f"{j.busy_trials} of {j.n_done} trials"]
    if j.busy_rounds:
        parts.append(f"{j.busy_rounds} final round{'s' if j.busy_rounds > 1 else ''}")
    load = [f"load {r['load1']:.2f}" if r["load1"] is not None else "",
            f"{r['others']:.1f} runnable tasks not ours on {r['cores']} cores"
            if r["others"] is not None else ""]  # fmt: skip
    seen = f" ({', '.join(x for x in load if x)}, at worst)" if any(load) else ""
    return [
        f"[yellow]measured on a busy node: {', '.join(parts)}{seen}; kept from every cache, "
        "measure again on a quiet node to trust them[/]"
    ]


def _show_job(j: JobRecord, db: str | None) -> None:
    from tunelab.platform import api, jobs
    from tunelab.units import fmt_age

    counts = api.status_counts(j.id, db=db)
    lines = [
        f"[bold]job {j.id}[/] {j.name}  ({', '.join(x for x in (j.kind, j.target) if x)})",
        f"workload: {j.workload}",
        f"status: {j.display_status}   trials {_progress(j.n_done, j.n_planned)}",
        "by status: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"),
        f"best: {_best(j, _best_extra(j, db))}"
        + (f" (trial {j.best_trial_id})" if j.best_trial_id else "")
        + _tie_note(j),
        *_finalists(j),
        *_busy_lines(j, db),
        f"created {fmt_age(j.created_at)}; driver {j.driver_host or '-'} pid {j.driver_pid or '-'}",
    ]
    log = api.driver_log_path(j.id, db=db)
    if log.exists():
        lines.append(f"driver log: {log}")
    if j.error and j.display_status == jobs.WAITING:
        lines.append(f"[yellow]{j.error}[/]")
    elif j.error:
        lines.append(f"[red]error: {j.error}[/]")
    out.print("\n".join(lines), highlight=False, soft_wrap=True)


@app.command()
def show(job: JobArg, db: DbOpt = None) -> None:
    """A job's status, progress, counts by trial status, and its best trials."""
    from tunelab.platform import api

    j = guard(lambda: api.get_job(job, db=db))
    _show_job(j, db)
    best = api.trials(job, db=db, top=5)
    if best:
        out.print(trials_table("Best trials", best, j.objective))
    _baselines(j, best, db)
