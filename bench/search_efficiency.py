"""Trials needed to reach 99% of the exhaustive best, per strategy, on replayed sweeps.

Each committed sweep (bench/data/*.json.gz: a job that measured its whole space) is
replayed: every strategy proposes candidates a batch at a time and is answered with the
recorded latencies. Exhaustive search must measure the whole space to know its best,
so the ratio printed is space size / median trials to 99% (the paper's 40x figure).
"Grid order" says when exhaustive enumeration happened to pass 99% on its way.

    python bench/search_efficiency.py [--seeds 10] [--batch 8] [--out FILE] [SWEEP ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tunelab.platform.kinds import get_kind
from tunelab.platform.search.replay import load_sweep, replay

DATA = Path(__file__).resolve().parent / "data"
STRATEGIES = [
    ("random", {"strategy": "random"}),
    ("analytical only", {"strategy": "model", "cost_model": "analytical"}),
    ("XGBoost only", {"strategy": "model", "cost_model": "xgboost"}),
    ("combined", {"strategy": "model", "cost_model": "combined"}),
]


def analytical_accuracy(sweep) -> tuple[float, int]:
    """Spearman rho of the analytical prediction vs measured latency over the sweep."""
    kind = get_kind(sweep.spec.kind)
    pred, meas = [], []
    for key, t in sweep.trials.items():
        seconds = sweep.latency(key)
        if seconds is None or "baseline" in t["params"]:
            continue
        f = kind.model_features(sweep.spec, t["params"])
        if f and np.isfinite(f["predicted_s"]):
            pred.append(f["predicted_s"])
            meas.append(seconds)
    return float(spearmanr(pred, meas).statistic), len(meas)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweeps", nargs="*", type=Path)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    paths = args.sweeps or sorted(DATA.glob("*.json.gz"))
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    say(f"# search efficiency: median over {args.seeds} seeds, batch {args.batch}")
    for path in paths:
        sweep = load_sweep(path)
        kind = get_kind(sweep.spec.kind)
        space = kind.space(sweep.spec)
        best = sweep.best()
        target = best / 0.99
        n = len(space)
        grid = replay(sweep, {"strategy": "exhaustive", "batch_size": args.batch})
        rho, n_rho = analytical_accuracy(sweep)
        say()
        say(f"## {path.name}: {kind.describe(sweep.spec.workload)}, {n} candidates, "
            f"best {best * 1e3:.3f} ms")  # fmt: skip
        say(f"analytical model vs measured over the sweep: Spearman {rho:.2f} (n={n_rho})")
        say(f"exhaustive: {n} trials to know the best (grid order passes 99% at trial "
            f"{grid.trials_to_reach(target)})")  # fmt: skip
        close = sum(1 for k in sweep.trials if (sweep.latency(k) or np.inf) <= target)
        say(
            f"candidates within 1% of the best: {close}; within 5%: "
            f"{sum(1 for k in sweep.trials if (sweep.latency(k) or np.inf) <= best / 0.95)}"
        )
        say(f"{'strategy':<16} {'to 99%: median':>14} {'p25':>5} {'p75':>5} {'max':>5} "
            f"{'fewer than exhaustive':>22} {'to 95%':>7} {'s/replay':>9}")  # fmt: skip
        for label, search in STRATEGIES:
            counts, counts95, t0 = [], [], time.perf_counter()
            for seed in range(args.seeds):
                result = replay(sweep, {**search, "seed": seed, "batch_size": args.batch})
                counts.append(result.trials_to_reach(target) or n)
                counts95.append(result.trials_to_reach(best / 0.95) or n)
            per = (time.perf_counter() - t0) / args.seeds
            med = statistics.median(counts)
            q = np.percentile(counts, [25, 75])
            say(f"{label:<16} {med:>14.1f} {q[0]:>5.0f} {q[1]:>5.0f} {max(counts):>5} "
                f"{n / med:>21.1f}x {statistics.median(counts95):>7.1f} {per:>9.2f}")  # fmt: skip
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
