"""A database of real jobs for the dashboard's end-to-end test and the README screenshots.

Every number comes from a real measurement: the committed exhaustive sweeps
(`bench/data/*.json.gz`, measured on this project's CPU machines) are recorded as jobs,
then replayed with each search strategy and cost model and recorded again (as
`tunelab replay run --record` does), so several jobs share a workload as a user's
database does. With `live=True`, a real pipeline-search job (TVM builds, timed on this
CPU, local Ray) and a real graph-rewrite job (a torch BERT, greedy search, timed) run
through `tunelab submit --wait` too.

    python -m tests.real_jobs sqlite:///real.db [--live]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select

from tunelab.platform.search.replay import load_sweep, record_replay, replay
from tunelab.platform.spec import SearchSpec
from tunelab.schema.db import get_engine
from tunelab.schema.models import Job

REPO = Path(__file__).resolve().parent.parent
SWEEPS = REPO / "bench" / "data"
# The smaller sweeps: every replay of them takes a few seconds at most.
DEFAULT_SWEEPS = ("conv2d-14x14x64-cpu.json.gz", "gemm-512-cpu.json.gz")
# (strategy, cost model) replayed on each sweep, with this budget.
REPLAYS = (("model", "combined"), ("model", "xgboost"), ("model", "analytical"), ("random", ""))
BUDGET = 64


@dataclass
class RealJobs:
    """Job ids by role: `sweeps` (exhaustive), `replays` by sweep file name, `live`."""

    sweeps: dict[str, int]
    replays: dict[str, list[int]]
    live: dict[str, int]

    def all(self) -> list[int]:
        """Every job id, oldest first."""
        ids = [*self.sweeps.values(), *(i for r in self.replays.values() for i in r)]
        return sorted(ids + list(self.live.values()))


def record_sweeps(engine: Engine, names: tuple[str, ...] = DEFAULT_SWEEPS) -> RealJobs:
    """Each sweep as an exhaustive job, and its replays with each strategy and model."""
    out = RealJobs({}, {}, {})
    for name in names:
        sweep = load_sweep(SWEEPS / name)
        full = SearchSpec.model_validate({"strategy": "exhaustive", "batch_size": 8})
        out.sweeps[name] = record_replay(engine, sweep, replay(sweep, full), full)
        out.replays[name] = []
        for strategy, cost_model in REPLAYS:
            search = SearchSpec.model_validate({
                "strategy": strategy, "cost_model": cost_model or "combined", "seed": 0,
                "batch_size": 8, "budget": BUDGET,
            })  # fmt: skip
            out.replays[name].append(record_replay(engine, sweep, replay(sweep, search), search))
    return out


LIVE_SPECS = {
    # A 24-candidate model-guided search of a small GEMM: about a minute on 2 cores.
    "pipeline-search": """
name: gemm-256-cpu-live
kind: pipeline-search
workload: {op: gemm, M: 256, N: 256, K: 256, dtype: float32}
target: {kind: llvm}
search: {strategy: model, budget: 24, batch_size: 8, seed: 0}
measure: {warmup: 1, repeats: 5, min_repeat_ms: 5, build_timeout_s: 60, run_timeout_s: 30}
""",
    "graph-rewrite": (REPO / "examples" / "bert-greedy-cpu.yaml").read_text(),
}


def run_live(url: str, workdir: Path) -> dict[str, int]:
    """Run the live jobs through the CLI (local Ray), their specs written to `workdir`;
    their ids by kind."""
    out = {}
    for kind, text in LIVE_SPECS.items():
        spec = workdir / f"{kind}.yaml"
        spec.write_text(text)
        proc = subprocess.run(
            [sys.executable, "-m", "tunelab.platform.cli", "submit", str(spec), "--wait",
             "--db", url],
            capture_output=True, text=True, timeout=900, cwd=workdir,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"live {kind} job failed ({proc.returncode}):\n{proc.stderr}")
        engine = get_engine(url)
        with engine.connect() as conn:
            out[kind] = conn.execute(
                select(Job.id).where(Job.kind == kind).order_by(Job.id.desc()).limit(1)
            ).scalar_one()
    return out


def build(url: str, *, live: bool = False, workdir: Path | None = None) -> RealJobs:
    """Fill the database at `url` (created and migrated if new) with real jobs."""
    engine = get_engine(url)
    jobs = record_sweeps(engine)
    if live:
        with tempfile.TemporaryDirectory(prefix="tunelab-real-jobs-") as tmp:
            jobs.live = run_live(url, workdir or Path(tmp))
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="database URL, e.g. sqlite:///real.db")
    parser.add_argument("--live", action="store_true", help="also run two live jobs")
    args = parser.parse_args()
    jobs = build(args.url, live=args.live)
    print(f"{len(jobs.all())} jobs: {jobs}")


if __name__ == "__main__":
    main()
