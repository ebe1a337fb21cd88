"""How long the command line takes: `tunelab --help`, `tunelab jobs`, and a one-trial job
cold (no warm local Ray: each run starts one) and warm (the data directory's Ray already
up). Each is run several times in a data directory of its own; min/median/max wall times
and the machine's load are written to bench/results/runtime.txt.

    .venv/bin/python bench/runtime.py [--runs 5] [--out bench/results/runtime.txt]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
ONE_TRIAL = {"name": "one", "kind": "testing-trivial", "workload": {"n": 1}}


def _tunelab() -> list[str]:
    script = Path(sys.executable).with_name("tunelab")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tunelab.platform.cli"]


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return wall


def _row(name: str, walls: list[float]) -> str:
    return (
        f"{name:<28} n={len(walls):<2} min {min(walls):6.2f} s  "
        f"median {statistics.median(walls):6.2f} s  max {max(walls):6.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "runtime.txt")
    args = parser.parse_args()

    tl = _tunelab()
    rows: list[str] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-") as tmp:
        data = Path(tmp) / "data"
        spec = Path(tmp) / "one.yaml"
        spec.write_text(yaml.safe_dump(ONE_TRIAL))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNELAB_"))}
        env.update(TUNELAB_DATA_DIR=str(data), TUNELAB_RAY_IDLE_S="600")
        try:
            rows.append(_row("tunelab --help", [_timed([*tl, "--help"], env)
                                                for _ in range(args.runs)]))  # fmt: skip
            cold, warm = [], []
            for _ in range(args.runs):
                _timed([*tl, "cluster", "stop"], env)  # no warm Ray: this run starts one
                cold.append(_timed([*tl, "submit", str(spec), "--wait"], env))
                warm.append(_timed([*tl, "submit", str(spec), "--wait"], env))
            rows.append(_row("tunelab jobs", [_timed([*tl, "jobs"], env)
                                              for _ in range(args.runs)]))  # fmt: skip
            rows.append(_row("one-trial job, cold Ray", cold))
            rows.append(_row("one-trial job, warm Ray", warm))
        finally:
            subprocess.run([*tl, "cluster", "stop"], env=env, capture_output=True, check=False)
    load_after = os.getloadavg()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = "\n".join(
        [
            f"# bench/runtime.py, {time.strftime('%Y-%m-%d %H:%M')}, {cores} cores; load "
            f"average (1/5/15 min) {'/'.join(f'{x:.1f}' for x in load_before)} before, "
            f"{'/'.join(f'{x:.1f}' for x in load_after)} after (other users not stopped)",
            "# cold: `tunelab cluster stop` first, so the submit starts the data directory's "
            "Ray; warm: the next submit, joining it",
            *rows,
        ]
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
