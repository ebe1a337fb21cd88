"""`tunelab replay`: search strategies run offline against a recorded sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tunelab.platform.cli.common import EXIT_HELP, DbOpt, guard, out

app = typer.Typer(
    help="Compare search strategies offline against a recorded exhaustive sweep.",
    no_args_is_help=True,
)


@app.command("run", epilog=EXIT_HELP)
def replay_run(
    source: Annotated[str, typer.Argument(help="A sweep: job id, or a sweep file (.json.gz).")],
    strategy: Annotated[str, typer.Option(help="exhaustive, random or model.")] = "model",
    cost_model: Annotated[
        str, typer.Option(help="model strategy: combined, analytical or xgboost.")
    ] = "combined",
    seed: Annotated[int, typer.Option(help="Seed of random choices.")] = 0,
    batch: Annotated[int, typer.Option(help="Candidates per batch.")] = 8,
    budget: Annotated[int | None, typer.Option(help="Trials in all (default: all).")] = None,
    prior: Annotated[
        list[str] | None,
        typer.Option(help="Another workload's sweep to warm-start the model from (repeatable)."),
    ] = None,
    record: Annotated[
        bool, typer.Option("--record", help="Store the replay as a job (for the dashboard).")
    ] = False,
    db: DbOpt = None,
) -> None:
    """Run a strategy against recorded measurements: no device, same answers every time.

    Prints the trials it needed to reach 99% of the sweep's best and what it found. With
    `--prior`, the model strategy warm-starts from those sweeps (other workloads only).
    """
    from tunelab.platform.search.replay import load_sweep, record_replay, replay
    from tunelab.platform.spec import SearchSpec
    from tunelab.schema.db import get_engine
    from tunelab.units import fmt_seconds

    def go() -> None:
        by_id = source.isdigit() or any(p.isdigit() for p in prior or [])
        engine = get_engine(db) if (record or by_id) else None
        sweep = load_sweep(source, engine)
        search = SearchSpec.model_validate({
            "strategy": strategy, "cost_model": cost_model, "seed": seed,
            "batch_size": batch, "budget": budget, "warm_start": True if prior else None,
        })  # fmt: skip
        priors = [load_sweep(p, engine) for p in prior or []]
        out.print(f"{source}: {sweep.machine_note()}")
        result = replay(sweep, search, priors=priors)
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

    guard(go)


@app.command("save", epilog=EXIT_HELP)
def replay_save(
    job_id: Annotated[int, typer.Argument(help="A job that measured its whole space.")],
    path: Annotated[Path, typer.Argument(help="Sweep file to write (.json or .json.gz).")],
    db: DbOpt = None,
) -> None:
    """Write a recorded job as a sweep file that `replay run` (and the benches) read."""
    from tunelab.platform.search.replay import save_sweep
    from tunelab.schema.db import get_engine

    n = guard(lambda: save_sweep(get_engine(db), job_id, path))
    out.print(f"{n} trials written to {path}")
