"""Best pipelined vs best unpipelined kernel per workload, and vs the vendor library.

Two sources, one table (geometric mean last):
- committed sweeps (bench/data/*.json.gz): every candidate measured, so "best
  pipelined" and "best unpipelined" are exact over the space;
- `--suite NAME`: runs, per workload of the suite, a `model` search of the whole space
  (budget `--budget`) and an exhaustive search of the unpipelined subspace (stages 1,
  reg_stages 1; the vanilla-TVM baseline), both with the library baseline recorded,
  on the target of `--target` (llvm here; cuda on a GPU cluster).

    python bench/pipelining.py [--suite cpu-small --budget 32] [--out FILE]
    python bench/pipelining.py --suite bert-dense --target cuda --arch sm_80   # GPU cluster
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from report import emit

from tunelab.dashboard.queries import geomean
from tunelab.platform import api
from tunelab.platform.kinds import get_kind
from tunelab.platform.search.replay import Sweep, load_sweep
from tunelab.schema.db import get_engine

DATA = Path(__file__).resolve().parent / "data"


NOISY = 2.0  # a baseline whose recorded repeats spread wider than this is not compared
NOTES: list[str] = []  # what was left out, printed under the table


def best_by_variant(sweeps: list[Sweep]) -> dict[str, float]:
    """Best latency of pipelined, unpipelined and each baseline over one workload; a
    baseline measured under contention (repeats more than NOISY x apart) is left out."""
    best: dict[str, float] = {}
    for sweep in sweeps:
        for key, t in sweep.trials.items():
            seconds = sweep.latency(key)
            if seconds is None:
                continue
            p = t["params"]
            if "baseline" in p:
                repeats = t.get("latencies_s") or [seconds]
                if max(repeats) > NOISY * min(repeats):
                    lo, hi = min(repeats) * 1e3, max(repeats) * 1e3
                    NOTES.append(f"{Path(sweep.source).name}: {p['baseline']} baseline left "
                                 f"out, its repeats spread {lo:.3g}-{hi:.3g} ms")  # fmt: skip
                    continue
                variant = p["baseline"]
            elif p.get("stages", 1) > 1 or p.get("reg_stages", 1) > 1:
                variant = "pipelined"
            else:
                variant = "unpipelined"
            best[variant] = min(best.get(variant, math.inf), seconds)
    return best


def run_suite(suite: str, budget: int, target: dict, db: str) -> list[tuple[str, list[Sweep]]]:
    kind = get_kind("pipeline-search")
    engine = get_engine(db)
    out = []
    for workload in kind.suites()[suite]:
        label = kind.describe(workload)
        common = {"kind": "pipeline-search", "workload": workload, "target": target,
                  "measure": {"repeats": 5, "min_repeat_ms": 20}}  # fmt: skip
        searched = api.submit({**common, "name": f"pipelining {label}",
                               "search": {"strategy": "model", "budget": budget,
                                          "batch_size": 8}}, db=db)  # fmt: skip
        plain = api.submit({**common, "name": f"unpipelined {label}",
                            "space": {"stages": [1], "reg_stages": [1]},
                            "search": {"strategy": "exhaustive"}}, db=db)  # fmt: skip
        out.append((label, [load_sweep(searched, engine), load_sweep(plain, engine)]))
        print(f"{label}: jobs {searched} (model) and {plain} (unpipelined)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", help="run this suite live (else: committed sweeps only)")
    parser.add_argument("--budget", type=int, default=32)
    parser.add_argument("--target", default="llvm", choices=["llvm", "cuda"])
    parser.add_argument("--arch", default="sm_80", help="cuda: the GPUs' architecture")
    parser.add_argument("--db", default="sqlite:///bench-pipelining.db")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows: list[tuple[str, list[Sweep]]] = []
    for path in sorted(DATA.glob("*.json.gz")):
        sweep = load_sweep(path)
        rows.append((f"{get_kind(sweep.spec.kind).describe(sweep.spec.workload)} (sweep)", [sweep]))
    if args.suite:
        target = {"kind": args.target, **({"arch": args.arch} if args.target == "cuda" else {})}
        rows += run_suite(args.suite, args.budget, target, args.db)
    lines = [f"{'workload':<44} {'pipelined':>10} {'unpipelined':>11} {'speedup':>8} "
             f"{'library':>9} {'vs library':>10}"]  # fmt: skip
    speedups, vs_lib = [], []
    for label, sweeps in rows:
        best = best_by_variant(sweeps)
        pipe, plain = best.get("pipelined", math.inf), best.get("unpipelined", math.inf)
        lib = best.get("cublas", best.get("numpy", math.nan))
        s = plain / pipe
        v = lib / pipe
        speedups.append(s)
        if math.isfinite(v):
            vs_lib.append(v)
        lib_text = f"{lib * 1e3:>7.3f}ms {v:>9.2f}x" if math.isfinite(v) else f"{'-':>9} {'-':>10}"
        lines.append(f"{label:<44} {pipe * 1e3:>8.3f}ms {plain * 1e3:>9.3f}ms {s:>7.2f}x "
                     f"{lib_text}")  # fmt: skip

    geo_speedup, geo_lib = geomean(speedups) or math.nan, geomean(vs_lib) or math.nan
    lines.append(f"{'geometric mean':<44} {'':>10} {'':>11} {geo_speedup:>7.2f}x "
                 f"{'':>9} {geo_lib:>9.2f}x")  # fmt: skip
    emit(lines + NOTES, args.out)


if __name__ == "__main__":
    main()
