"""`tunelab cluster`: a cluster on this machine without Docker."""

from __future__ import annotations

import shlex
from typing import Annotated, Any

import typer

from tunelab.platform.cli.common import Exit, err, fail, out

app = typer.Typer(
    help="A cluster on this machine without Docker (see docker-compose.yml for the real one), "
    "and the warm local Ray that drivers given no --ray start and share.",
    no_args_is_help=True,
)


@app.command("up")
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
    from tunelab.schema.db import DatabaseError

    def start() -> Any:
        with err.status("starting PostgreSQL, the Ray head and workers..."):
            return cluster.up(
                workers=workers, gpu_workers=gpu_workers, cpus_per_worker=cpus_per_worker,
                db_url=db, dashboard=dashboard,
            )  # fmt: skip

    try:
        state = start()
    except cluster.ClusterAlreadyUp as exc:
        fail(Exit.BAD_INPUT, str(exc))
    except cluster.ClusterError as exc:
        fail(Exit.JOB_FAILED, str(exc))
    except DatabaseError as exc:
        fail(Exit.DB_UNREACHABLE, str(exc))
    if state.simulated_gpus:
        err.print(
            f"[yellow]note:[/] this machine has no GPU: the {gpu_workers} GPU worker(s) are "
            "simulated (Ray schedules num_gpus=1 work there, resource `simulated_gpu`), "
            "so only build-only CUDA jobs make sense on them"
        )
    _print_cluster(cluster.status())


def _print_cluster(info: dict[str, Any] | None) -> None:
    from rich.table import Table

    from tunelab.schema.db import redact

    if info is None:
        out.print("no cluster is up (from this data directory)")
        return
    if info["idle_s"] is not None:
        out.print(f"Ray:       {info['ray_address']}  (the warm local Ray of this data directory)")
        out.print(
            f"drivers:   {info['drivers']} running; it stops itself after "
            f"{info['idle_s']:g} s unused (TUNELAB_RAY_IDLE_S), or on `tunelab cluster stop`"
        )
    else:
        out.print(f"Ray:       {info['ray_address']}  (dashboard {info['ray_dashboard']})")
    if info["tunelab_dashboard"]:
        out.print(f"dashboard: {info['tunelab_dashboard']}")
    if info["db_url"]:
        out.print(f"database:  {redact(info['db_url'])}")
    table = Table()
    for col in ("process", "pid", "running", "log"):
        table.add_column(col)
    for p in info["processes"]:
        table.add_row(p["role"], str(p["pid"] or "-"), "yes" if p["running"] else "[red]no[/]",
                      p["log"])  # fmt: skip
    out.print(table)
    if info["idle_s"] is None:  # drivers of this data directory use the warm one unasked
        out.print("submit to it:  eval $(tunelab cluster env) && tunelab submit SPEC --wait")


@app.command("status")
def cluster_status() -> None:
    """What `cluster up` started and whether each part still runs."""
    from tunelab.platform import cluster

    info = cluster.status()
    _print_cluster(info)
    if info is None or not all(p["running"] for p in info["processes"]):
        raise typer.Exit(int(Exit.NOT_FOUND))


@app.command("env")
def cluster_env() -> None:
    """Shell exports that point tunelab (and ray) at the running cluster."""
    from tunelab.platform import cluster

    state = cluster.load_state()
    if state is None:
        fail(Exit.NOT_FOUND, "no cluster is up: `tunelab cluster up` starts one")
    for key, value in state.env().items():
        out.print(f"export {key}={shlex.quote(value)}", highlight=False, soft_wrap=True)


@app.command("down")
def cluster_down() -> None:
    """Stop exactly the processes `cluster up` (or a driver, for the warm local Ray)
    started, and its PostgreSQL, if any."""
    from tunelab.platform import cluster

    with err.status("stopping..."):
        stopped = cluster.stop()
    out.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command("stop")
def cluster_stop() -> None:
    """The same as `down`: stop this data directory's cluster (the warm local Ray too)."""
    cluster_down()
