"""`tunelab`: submit tuning jobs, follow them, and query every trial they recorded."""

from __future__ import annotations

import enum
import json
import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from tunelab.config import resolve_db_url
from tunelab.platform import api
from tunelab.platform import jobs as jobs_mod
from tunelab.platform.executor import JobError
from tunelab.platform.executor import Progress as JobProgress
from tunelab.platform.jobs import JobNotFound, JobStateError, display_status
from tunelab.platform.replay import ReplayError
from tunelab.platform.rows import column_union, write_csv
from tunelab.platform.spec import SpecError
from tunelab.schema.db import DatabaseError, get_engine, redact
from tunelab.schema.models import Job, JobStatus, Trial
from tunelab.units import fmt_age, fmt_seconds


class Exit(enum.IntEnum):
    """Exit codes scripts can rely on."""

    OK = 0  # done; for --wait: the job completed
    JOB_FAILED = 1  # the job failed, or an unexpected error
    BAD_INPUT = 2  # invalid spec, options or arguments: nothing was written
    DB_UNREACHABLE = 3  # the database (or the --jobs-api) cannot be reached or migrated
    NOT_FOUND = 4  # no such job, or the job is in a state that refuses the action
    CANCELLED = 5  # the job was cancelled while we waited on it
    INTERRUPTED = 130  # Ctrl-C: the job is marked interrupted and can be resumed


EXIT_HELP = (
    "Exit codes: 0 done, 1 job failed, 2 invalid input (nothing written), "
    "3 database (or --jobs-api) unreachable, 4 no such job / wrong state, 5 cancelled, "
    "130 interrupted."
)

app = typer.Typer(
    help=(
        "Distributed autotuning of deep-learning compiler optimisations. Every trial is "
        "recorded in a database (TUNELAB_DB_URL or --db; default: a SQLite file in your "
        "data directory) and runs on Ray (RAY_ADDRESS or --ray; default: a local Ray).\n\n"
        + EXIT_HELP
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")
cluster_app = typer.Typer(
    help="A cluster on this machine without Docker (see docker-compose.yml for the real one).",
    no_args_is_help=True,
)
app.add_typer(cluster_app, name="cluster")
replay_app = typer.Typer(
    help="Compare search strategies offline against a recorded exhaustive sweep.",
    no_args_is_help=True,
)
app.add_typer(replay_app, name="replay")

out = Console()
err = Console(stderr=True)

DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="Database URL (default: TUNELAB_DB_URL, else the SQLite file)."),
]
RayOpt = Annotated[
    str | None,
    typer.Option("--ray", help="Ray cluster address (default: RAY_ADDRESS, else local Ray)."),
]
JobArg = Annotated[int, typer.Argument(help="Job id, as printed by submit and listed by jobs.")]


class Format(enum.StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


class ExportFormat(enum.StrEnum):
    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"


def _fail(code: Exit, message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(int(code))


def _guard(fn: Callable[[], Any]) -> Any:
    """Run `fn`, turning the errors users can act on into a message and an exit code."""
    try:
        return fn()
    except SpecError as exc:
        _fail(Exit.BAD_INPUT, str(exc))
    except DatabaseError as exc:
        _fail(Exit.DB_UNREACHABLE, str(exc))
    except (JobNotFound, JobStateError) as exc:
        _fail(Exit.NOT_FOUND, str(exc))
    except JobError as exc:
        _fail(Exit.JOB_FAILED, f"the job failed: {exc}")
    except ReplayError as exc:
        _fail(Exit.BAD_INPUT, str(exc))
    except KeyboardInterrupt:
        err.print("interrupted: the job is marked interrupted; `tunelab resume` continues it")
        raise typer.Exit(int(Exit.INTERRUPTED)) from None


def _run_with_progress(start: Callable[[Callable[[JobProgress], None]], Any]) -> Any:
    """Call `start(on_progress)` under a progress bar on stderr."""
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
        task = bar.add_task("trials", total=None, summary="starting Ray...")

        def update(p: JobProgress) -> None:
            summary = f"ok {p.ok}  best {fmt_seconds(p.best_s)}"
            bar.update(task, completed=p.done, total=p.total, summary=summary)

        return start(update)


def _trials_table(title: str, trials: list[Trial]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("trial", "status", "median", "min", "stdev"):
        table.add_column(col, no_wrap=True)
    table.add_column("params", ratio=1)
    table.add_column("node", overflow="ellipsis", max_width=24)
    for t in trials:
        params = ", ".join(f"{k}={v}" for k, v in t.params.items())
        table.add_row(
            str(t.id), t.status, fmt_seconds(t.latency_median_s), fmt_seconds(t.latency_min_s),
            fmt_seconds(t.latency_stdev_s), params, t.worker_node or "-",
        )  # fmt: skip
    return table


def _summary(job_id: int, db: str | None, top: int = 5) -> None:
    job = api.get_job(job_id, db=db)
    _show_job(job, db)
    best = api.trials(job_id, db=db, top=top)
    if best:
        out.print(_trials_table(f"Best {len(best)} trials", best))
    else:
        out.print("[yellow]no trial produced a correct, measured kernel[/]")
    for t in jobs_mod.baseline_trials(get_engine(db), job_id):
        if t.status == "ok" and t.latency_median_s:
            ratio = f"{t.latency_median_s / best[0].latency_median_s:.2f}x" if best else "-"
            out.print(
                f"baseline {t.params['baseline']}: {fmt_seconds(t.latency_median_s)} "
                f"(best found is {ratio} its speed)"
            )
    out.print(f"database: {redact(resolve_db_url(db))}")


def _exit_for(status: JobStatus | str) -> None:
    code = {
        JobStatus.completed: Exit.OK,
        JobStatus.cancelled: Exit.CANCELLED,
        JobStatus.interrupted: Exit.INTERRUPTED,
    }.get(JobStatus(status), Exit.JOB_FAILED)
    raise typer.Exit(int(code))


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

    A spec that names a `suite:` (e.g. bert-dense, square, resnet50-im2col, batch-matmul,
    resnet50-conv2d, cpu-small) instead of a `workload:` runs one job per workload of the
    suite, one after another, and prints each id. An invalid spec is refused (exit 2)
    before anything is written.
    """
    job_specs = _guard(lambda: api.as_specs(spec))
    if len(job_specs) > 1:
        for one in job_specs:
            err.print(f"[bold]{one.name}[/bold]")
            _submit_one(one, wait, db, ray, jobs_api)
        return
    _submit_one(job_specs[0], wait, db, ray, jobs_api)


def _submit_one(job_spec: Any, wait: bool, db: str | None, ray: str | None,
                jobs_api: str | None) -> None:  # fmt: skip
    if jobs_api:
        if db or ray:
            _fail(Exit.BAD_INPUT, "--jobs-api runs the job in the cluster: drop --db and --ray")
        _submit_to_cluster(job_spec, jobs_api, wait)
        return
    if not wait:
        job_id = _guard(lambda: api.submit(job_spec, wait=False, db=db, ray_address=ray))
        out.print(job_id)
        err.print(f"job {job_id} started in the background; follow it with `tunelab show {job_id}`")
        return
    engine = _guard(lambda: get_engine(db))
    from tunelab.platform.jobs import create_job

    job_id = _guard(lambda: create_job(engine, job_spec))
    out.print(job_id)
    _guard(
        lambda: _run_with_progress(
            lambda cb: api.resume(job_id, db=db, ray_address=ray, on_progress=cb)
        )
    )
    _summary(job_id, db)
    status = api.get_job(job_id, db=db).status
    if status != JobStatus.completed:
        _exit_for(status)


def _submit_to_cluster(job_spec: Any, url: str, wait: bool) -> None:
    try:
        sid, state = api.submit_to_cluster(
            job_spec, url, wait=wait, echo=lambda text: err.out(text, end="", highlight=False)
        )
    except api.JobsApiUnreachable as exc:
        _fail(Exit.DB_UNREACHABLE, str(exc))
    except (api.JobsApiAddressError, SpecError) as exc:
        _fail(Exit.BAD_INPUT, str(exc))
    except Exception as exc:  # e.g. a rejected token or an error status: say what, no traceback
        _fail(
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

    from tunelab.platform.jobs import create_job
    from tunelab.platform.spec import parse_spec

    raw = os.environ.get("TUNELAB_SPEC_JSON")
    if not raw:
        _fail(Exit.BAD_INPUT, "TUNELAB_SPEC_JSON is not set")
    job_spec = _guard(lambda: parse_spec(json.loads(raw), "TUNELAB_SPEC_JSON"))
    engine = _guard(lambda: get_engine(None))
    job_id = _guard(lambda: create_job(engine, job_spec))
    out.print(f"tunelab job {job_id}")
    _guard(lambda: api.resume(job_id, ray_address=ray))
    _summary(job_id, None)
    _exit_for(api.get_job(job_id).status)


@app.command(epilog=EXIT_HELP)
def resume(
    job: JobArg,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Run here, or in background.")] = (
        False
    ),
    force: Annotated[
        bool, typer.Option(help="Take over a job whose driver still seems alive.")
    ] = False,
    db: DbOpt = None,
    ray: RayOpt = None,
) -> None:
    """Continue a job whose driver died, failed or was interrupted.

    Recorded trials are kept; unfinished candidates run again; none is recorded twice.
    """
    if not wait:
        _guard(lambda: api.resume(job, wait=False, db=db, ray_address=ray, force=force))
        err.print(f"job {job} resumed in the background; follow it with `tunelab show {job}`")
        return
    _guard(
        lambda: _run_with_progress(
            lambda cb: api.resume(job, db=db, ray_address=ray, force=force, on_progress=cb)
        )
    )
    _summary(job, db)
    _exit_for(api.get_job(job, db=db).status)


@app.command("run-driver", hidden=True)
def run_driver(job: JobArg, db: DbOpt = None, ray: RayOpt = None, force: bool = False) -> None:
    """Run a job's driver in this process (what background submissions start)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    status = _guard(lambda: api.resume(job, db=db, ray_address=ray, force=force))
    _exit_for(status)


@app.command()
def cancel(job: JobArg, db: DbOpt = None) -> None:
    """Cancel a job; a running driver stops within about a second. Recorded trials stay."""
    _guard(lambda: api.cancel(job, db=db))
    out.print(f"job {job} cancelled")


@app.command("jobs")
def list_jobs(
    kind: Annotated[str | None, typer.Option(help="Only jobs of this kind.")] = None,
    status: Annotated[str | None, typer.Option(help="Only jobs in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    fmt: Annotated[Format, typer.Option("--format", help="table, csv or json.")] = Format.table,
    db: DbOpt = None,
) -> None:
    """List jobs, newest first, with progress and best result."""
    rows = _guard(lambda: api.list_jobs(db=db, kind=kind, status=status, limit=limit))
    records = [
        {
            "id": j.id, "name": j.name, "kind": j.kind, "target": j.target,
            "status": display_status(j), "done": j.n_done, "planned": j.n_planned,
            "ok": j.n_ok, "failed": j.n_failed, "best_latency_s": j.best_latency_s,
            "created_at": j.created_at.isoformat(),
        }
        for j in rows
    ]  # fmt: skip
    if fmt != Format.table:
        _emit(records, fmt)
        return
    table = Table()
    for col in ("id", "name", "kind", "target", "status", "progress", "best", "age"):
        table.add_column(col)
    for j in rows:
        table.add_row(
            str(j.id), j.name, j.kind, j.target, display_status(j),
            f"{j.n_done}/{j.n_planned} ({j.n_failed} failed)", fmt_seconds(j.best_latency_s),
            fmt_age(j.created_at),
        )  # fmt: skip
    out.print(table if rows else "no jobs yet: `tunelab submit SPEC` starts one")


def _show_job(j: Job, db: str | None) -> None:
    from tunelab.platform.jobs import status_counts

    counts = status_counts(get_engine(db), j.id)
    lines = [
        f"[bold]job {j.id}[/] {j.name}  ({j.kind}, {j.target})",
        f"workload: {j.workload.description}",
        f"status: {display_status(j)}   trials {j.n_done}/{j.n_planned}",
        "by status: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"),
        f"best: {fmt_seconds(j.best_latency_s)}"
        + (f" (trial {j.best_trial_id})" if j.best_trial_id else ""),
        f"created {fmt_age(j.created_at)}; driver {j.driver_host or '-'} pid {j.driver_pid or '-'}",
    ]
    if j.error:
        lines.append(f"[red]error: {j.error}[/]")
    out.print("\n".join(lines), highlight=False)


@app.command()
def show(job: JobArg, db: DbOpt = None) -> None:
    """A job's status, progress, counts by trial status, and its best trials."""
    j = _guard(lambda: api.get_job(job, db=db))
    _show_job(j, db)
    best = api.trials(job, db=db, top=5)
    if best:
        out.print(_trials_table("Best trials", best))


def _emit(records: list[dict[str, Any]], fmt: Format) -> None:
    if fmt == Format.json:
        sys.stdout.write(json.dumps(records, indent=2, default=str) + "\n")
        return
    if records:
        write_csv(sys.stdout, records)


@app.command("trials")
def list_trials(
    job: JobArg,
    top: Annotated[
        int | None, typer.Option(min=1, help="Only the N fastest correct (ok) trials.")
    ] = None,
    status: Annotated[
        str | None, typer.Option(help="Only trials with this status (ok, build_error, ...).")
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", help="table, csv or json.")] = Format.table,
    db: DbOpt = None,
) -> None:
    """A job's trials with parameters and latency statistics."""
    rows = _guard(lambda: api.trials(job, db=db, top=top, status=status))
    if fmt != Format.table:
        names = column_union(t.params for t in rows)
        _emit([api.trial_row(t, names) for t in rows], fmt)
        return
    out.print(_trials_table(f"job {job}: {len(rows)} trials", rows))


@app.command()
def export(
    job: JobArg,
    fmt: Annotated[ExportFormat, typer.Option("--format", help="csv, jsonl or parquet.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File (default: job-ID.FORMAT).")
    ] = None,
    db: DbOpt = None,
) -> None:
    """Write every trial of a job to a file, streaming from the database."""
    path = output or Path(f"job-{job}.{fmt.value}")
    n = _guard(lambda: api.export(job, path, fmt.value, db=db))  # type: ignore[arg-type]
    err.print(f"wrote {n} trials to {path}")


@cluster_app.command("up")
def cluster_up(
    workers: Annotated[int, typer.Option(min=0, help="CPU worker nodes.")] = 2,
    gpu_workers: Annotated[
        int, typer.Option(min=0, help="GPU worker nodes (simulated where there is no GPU).")
    ] = 0,
    cpus_per_worker: Annotated[int, typer.Option(min=2, help="CPUs each worker offers.")] = 2,
    db: Annotated[
        str | None,
        typer.Option("--db", help="Use this database instead of starting a PostgreSQL."),
    ] = None,
    dashboard: Annotated[
        bool, typer.Option(help="Start the tunelab dashboard too (when installed).")
    ] = True,
) -> None:
    """Start a cluster on this machine without Docker: PostgreSQL (unless --db), a Ray head
    with no work scheduled on it, and worker nodes. `tunelab cluster env` prints the
    variables that point tunelab at it; `tunelab cluster down` stops all of it."""
    from tunelab.platform import cluster

    def start() -> Any:
        with err.status("starting PostgreSQL, the Ray head and workers..."):
            return cluster.up(
                workers=workers, gpu_workers=gpu_workers, cpus_per_worker=cpus_per_worker,
                db_url=db, dashboard=dashboard,
            )  # fmt: skip

    try:
        state = start()
    except cluster.ClusterAlreadyUp as exc:
        _fail(Exit.BAD_INPUT, str(exc))
    except cluster.ClusterError as exc:
        _fail(Exit.JOB_FAILED, str(exc))
    except DatabaseError as exc:
        _fail(Exit.DB_UNREACHABLE, str(exc))
    if state.simulated_gpus:
        err.print(
            f"[yellow]note:[/] this machine has no GPU: the {gpu_workers} GPU worker(s) are "
            "simulated (Ray schedules num_gpus=1 work there, resource `simulated_gpu`), "
            "so only build-only CUDA jobs make sense on them"
        )
    _print_cluster(cluster.status())


def _print_cluster(info: dict[str, Any] | None) -> None:
    if info is None:
        out.print("no cluster is up (from this data directory)")
        return
    out.print(f"Ray:       {info['ray_address']}  (dashboard {info['ray_dashboard']})")
    if info["tunelab_dashboard"]:
        out.print(f"dashboard: {info['tunelab_dashboard']}")
    out.print(f"database:  {redact(info['db_url'])}")
    table = Table()
    for col in ("process", "pid", "running", "log"):
        table.add_column(col)
    for p in info["processes"]:
        table.add_row(p["role"], str(p["pid"] or "-"), "yes" if p["running"] else "[red]no[/]",
                      p["log"])  # fmt: skip
    out.print(table)
    out.print("submit to it:  eval $(tunelab cluster env) && tunelab submit SPEC --wait")


@cluster_app.command("status")
def cluster_status() -> None:
    """What `cluster up` started and whether each part still runs."""
    from tunelab.platform import cluster

    info = cluster.status()
    _print_cluster(info)
    if info is None or not all(p["running"] for p in info["processes"]):
        raise typer.Exit(int(Exit.NOT_FOUND))


@cluster_app.command("env")
def cluster_env() -> None:
    """Shell exports that point tunelab (and ray) at the running cluster."""
    from tunelab.platform import cluster

    state = cluster.load_state()
    if state is None:
        _fail(Exit.NOT_FOUND, "no cluster is up: `tunelab cluster up` starts one")
    for key, value in state.env().items():
        out.print(f"export {key}={shlex.quote(value)}", highlight=False, soft_wrap=True)


@cluster_app.command("down")
def cluster_down() -> None:
    """Stop exactly the processes `cluster up` started (and its PostgreSQL, if any)."""
    from tunelab.platform import cluster

    with err.status("stopping..."):
        stopped = cluster.down()
    out.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command(epilog=EXIT_HELP)
def dashboard(
    db: DbOpt = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to serve on.")] = 8501,
    address: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 to serve other machines.")
    ] = "127.0.0.1",
) -> None:
    """Start the web dashboard (Streamlit): jobs, trials, model accuracy and speedups.

    It only reads (a read-only connection; nothing is migrated). Exits 3 at once if the
    database cannot be reached or holds no tunelab tables.
    """
    import os

    from tunelab.config import ENV_DB_URL
    from tunelab.dashboard.db import open_readonly

    url = resolve_db_url(db)
    _guard(lambda: open_readonly(url))
    app_path = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(app_path),
        "--server.port", str(port), "--server.address", address,
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    err.print(
        f"dashboard: http://{address}:{port}  (database {redact(url)}, read-only; Ctrl-C stops)",
        highlight=False,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, cmd, {**os.environ, ENV_DB_URL: url})


@db_app.command("upgrade")
def db_upgrade(db: DbOpt = None) -> None:
    """Create the tables or migrate them to the current schema."""
    from tunelab.schema.db import current_revision

    engine = _guard(lambda: get_engine(db, migrate=True))
    out.print(f"{redact(str(engine.url))} is at revision {current_revision(engine)}")


@db_app.command("url")
def db_url(db: DbOpt = None) -> None:
    """Print the database URL in use (password hidden)."""
    out.print(redact(resolve_db_url(db)))


@replay_app.command("run", epilog=EXIT_HELP)
def replay_run(
    source: Annotated[str, typer.Argument(help="A sweep: job id, or a sweep file (.json.gz).")],
    strategy: Annotated[str, typer.Option(help="exhaustive, random or model.")] = "model",
    cost_model: Annotated[
        str, typer.Option(help="model strategy: combined, analytical or xgboost.")
    ] = "combined",
    seed: Annotated[int, typer.Option(help="Seed of random choices.")] = 0,
    batch: Annotated[int, typer.Option(help="Candidates per batch.")] = 8,
    budget: Annotated[int | None, typer.Option(help="Trials in all (default: all).")] = None,
    record: Annotated[
        bool, typer.Option("--record", help="Store the replay as a job (for the dashboard).")
    ] = False,
    db: DbOpt = None,
) -> None:
    """Run a strategy against recorded measurements: no device, same answers every time.

    Prints the trials it needed to reach 99% of the sweep's best and what it found.
    """
    from tunelab.platform.replay import load_sweep, record_replay, replay
    from tunelab.platform.spec import SearchSpec

    def go() -> None:
        engine = get_engine(db) if (record or source.isdigit()) else None
        sweep = load_sweep(source, engine)
        search = SearchSpec.model_validate({
            "strategy": strategy, "cost_model": cost_model, "seed": seed,
            "batch_size": batch, "budget": budget,
        })  # fmt: skip
        result = replay(sweep, search)
        best = sweep.best()
        found = min(result.best_so_far(), default=float("inf"))
        reach = result.trials_to_reach(best / 0.99)
        out.print(
            f"{result.strategy}: {len(result.keys)} trials, best {fmt_seconds(found)} "
            f"(sweep best {fmt_seconds(best)}); 99% of the best reached at trial "
            f"{reach if reach else 'never'} of a {len(sweep.trials)}-trial sweep"
        )
        if record and engine is not None:
            out.print(f"recorded as job {record_replay(engine, sweep, result, search)}")

    _guard(go)


@replay_app.command("save", epilog=EXIT_HELP)
def replay_save(
    job_id: Annotated[int, typer.Argument(help="A job that measured its whole space.")],
    path: Annotated[Path, typer.Argument(help="Sweep file to write (.json or .json.gz).")],
    db: DbOpt = None,
) -> None:
    """Write a recorded job as a sweep file that `replay run` (and the benches) read."""
    from tunelab.platform.replay import save_sweep

    n = _guard(lambda: save_sweep(get_engine(db), job_id, path))
    out.print(f"{n} trials written to {path}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
