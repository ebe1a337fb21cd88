"""Graph rewriting: the graph found by each search (TASO's greedy and backtracking,
random episodes, the PPO agent), timed end to end against the original, side by side.

Every search runs as a real graph-rewrite job (local Ray, a SQLite file). Then, per
model, one "shoot-out" in this process with a pinned thread count: the original and
every found graph are timed in `--rounds` paired rounds (round r runs each of them once,
in an order shuffled each round: the platform's protocol, `platform/rounds.py`), so each
speedup is a ratio measured in one run (median of the original / median of the found
graph), with its 95% paired bootstrap interval. Which graph a search "found" is decided by that
search's own criterion, never by a noisy measurement: greedy's and backtracking's
result; random's cheapest episode by the cost model; PPO's graph is the trained
policy's deterministic episode (its last evaluation). Search wall time is the job's.

Also: rollout throughput (training episodes per second with 1, 2 and 4 rollout workers,
from the episodes' own start and end times), and generalisation (the policy trained on
the first model applied, untrained, to the others).

CPU sizes by default (2-layer models; see the suite); the paper's sizes run with
`--size full --horizon 100 --max-candidates 500 --episodes 1000` on a GPU cluster
(`--ray ADDRESS`).

    python bench/graph_rewrite.py [--models bert vit transducer resnext50] [--seeds 3]
        [--episodes 200] [--ppo-models bert transducer] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def run(engine: Any, spec: dict[str, Any]) -> tuple[int, float]:
    """Run a job to its end; (job id, wall seconds)."""
    from tunelab.platform import jobs
    from tunelab.platform.execution import run_job
    from tunelab.platform.spec import parse_spec

    job_id = jobs.create_job(engine, parse_spec(spec))
    t0 = time.perf_counter()
    status = run_job(engine, job_id)
    wall = time.perf_counter() - t0
    if status != "completed":
        raise RuntimeError(f"job {job_id} ({spec['name']}) ended {status}")
    return job_id, wall


def base_spec(args: argparse.Namespace, model: str, name: str, search: dict) -> dict:
    return {
        "name": name,
        "kind": "graph-rewrite",
        "workload": {"model": model, "size": args.size, "horizon": args.horizon,
                     "max_candidates": args.max_candidates, "workers": args.workers},
        "search": search,
        "measure": {"threads": args.threads, "rounds": 5},
    }  # fmt: skip


def ppo_search(args: argparse.Namespace, seed: int, **extra: Any) -> dict:
    return {"strategy": "ppo", "seed": seed, "ppo": {
        "episodes": args.episodes, "episodes_per_update": args.episodes_per_update,
        "eval_every": 10_000, "checkpoint_every": 5, "minibatch": 16, "epochs": 4, **extra,
    }}  # fmt: skip


def found_graph(engine: Any, job_id: int, how: str) -> tuple[str, dict[str, Any]]:
    """(graph artifact hash, trial) of the graph a job found, by the search's own
    criterion: `only` (one trial), `cheapest` (lowest model cost), `eval` (the last
    evaluation of the deterministic policy)."""
    from tunelab.platform import jobs

    ok = [t for t in jobs.trials(engine, job_id) if t.status == "ok"]
    if how == "eval":
        ok = [t for t in ok if t.baseline]
        t = max(ok, key=lambda t: t.params["version"])
    elif how == "cheapest":
        t = min((t for t in ok if not t.baseline), key=lambda t: t.objectives["model_cost_s"])
    else:
        (t,) = ok
    return t.extra["graph"], {"trial": t.id, "model_speedup": t.objectives["model_speedup"],
                              "rewrites": len(t.extra["rewrites"])}  # fmt: skip


Ratios = list[tuple[float, float, float]]


def shootout(
    engine: Any, model: str, args: argparse.Namespace, graphs: dict[str, list[str]]
) -> dict[str, Ratios]:
    """Every found graph timed against the original in paired rounds, order shuffled
    each round (the platform's protocol): per label, per seed, (speedup, 95% CI low,
    high) of the ratio of medians (paired bootstrap over rounds)."""
    import torch

    from tunelab.platform import artifacts
    from tunelab.platform.rounds import interleaved
    from tunelab.workers.graph_rewrite.timing import ORIGINAL, speedup_of
    from tunelab.workers.graphs.execute import Executable
    from tunelab.workers.graphs.frontend import import_model
    from tunelab.workers.graphs.ir import Graph

    torch.set_num_threads(args.threads)
    imp = import_model(model, args.size, 0)
    original = Executable(imp.graph, imp.constants)
    calls = {ORIGINAL: lambda: original(imp.inputs)}
    labels: list[tuple[str, str]] = []
    for label, hashes in graphs.items():
        for i, h in enumerate(hashes):
            g = Graph.loads(artifacts.read_blob(engine, artifacts.get_artifact(engine, h).hash))
            run = Executable(g, imp.constants)
            key = f"{label}/{i}"
            calls[key] = lambda r=run: r(imp.inputs)
            labels.append((label, key))
    timed = interleaved(calls, rounds=args.rounds, min_sample_s=5e-3)
    out: dict[str, Ratios] = {}
    for label, key in labels:
        s = speedup_of(timed, ORIGINAL, key)
        out.setdefault(label, []).append((s.value, *s.ci))
    return out


def throughput(engine: Any, args: argparse.Namespace, model: str) -> list[str]:
    """Training episodes per second with 1, 2 and 4 rollout workers (one update's batch,
    from the first episode's start to the last one's end)."""
    from tunelab.platform import jobs

    lines = []
    for w in args.throughput_workers:
        n = 4 * w
        spec = base_spec(args, model, f"throughput-{w}", ppo_search(
            args, 0, episodes=n, episodes_per_update=n))  # fmt: skip
        spec["workload"]["workers"] = w
        job_id, _ = run(engine, spec)
        eps = [t for t in jobs.trials(engine, job_id) if not t.baseline and t.status == "ok"]
        span = (max(t.finished_at for t in eps) - min(t.started_at for t in eps)).total_seconds()
        lines.append(f"  {w} worker(s): {len(eps)} episodes in {span:.1f} s = "
                     f"{len(eps) / span:.3f} episodes/s")  # fmt: skip
    return lines


def fmt(results: Ratios) -> str:
    s = [r[0] for r in results]
    mean = statistics.fmean(s)
    spread = (
        f"{min(s):.3f}-{max(s):.3f}" if len(s) > 1 else f"{results[0][1]:.3f}-{results[0][2]:.3f}"
    )
    return f"{mean:6.3f}x ({spread})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["bert", "vit", "transducer", "resnext50"])
    ap.add_argument(
        "--ppo-models",
        nargs="+",
        default=None,
        help="models the agent is trained on (default: --models)",
    )
    ap.add_argument("--size", default="cpu")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--episodes-per-update", type=int, default=10)
    ap.add_argument("--random-episodes", type=int, default=20)
    ap.add_argument("--horizon", type=int, default=20)
    ap.add_argument("--max-candidates", type=int, default=32)
    ap.add_argument("--budget", type=int, default=1000, help="backtracking: graphs explored")
    ap.add_argument("--alpha", type=float, default=1.05)
    ap.add_argument("--workers", type=int, default=1, help="rollout workers of each job")
    ap.add_argument("--threads", type=int, default=1, help="threads of every measurement")
    ap.add_argument("--rounds", type=int, default=30, help="paired rounds of a shoot-out")
    ap.add_argument("--throughput-workers", type=int, nargs="*", default=[1, 2, 4])
    ap.add_argument("--db", default=None, help="database URL (default: a new SQLite file)")
    ap.add_argument("--ray", default=None, help="Ray address (default: a local Ray)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    ppo_models = args.ppo_models or args.models

    from tunelab.platform.execution.pool import connect_ray
    from tunelab.schema.db import get_engine

    url = args.db or f"sqlite:///{tempfile.mkdtemp(prefix='gr-bench-')}/bench.db"
    engine = get_engine(url)  # creates and migrates the schema
    connect_ray(args.ray)
    started = time.perf_counter()
    lines = [
        f"graph_rewrite bench, {time.strftime('%Y-%m-%d')}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        f"size {args.size}, horizon {args.horizon}, candidates/step <= {args.max_candidates}, "
        f"PPO {args.episodes} episodes ({args.episodes_per_update}/update) x {args.seeds} seeds, "
        f"random {args.random_episodes} episodes x {args.seeds} seeds, backtracking alpha "
        f"{args.alpha} budget {args.budget}; {args.workers} rollout worker(s), "
        f"{args.threads} thread(s) per measurement; shoot-out {args.rounds} paired rounds",
        "speedup = original median / found graph median, measured in paired rounds in one run; "
        "mean over seeds (min-max over seeds; one seed: its 95% CI, paired bootstrap)",
        "",
    ]  # fmt: skip
    policies: list[int] = []
    for model in args.models:
        graphs: dict[str, list[str]] = {}
        info: dict[str, list[dict[str, Any]]] = {}
        walls: dict[str, list[float]] = {}

        def add(
            label: str, job_id: int, wall: float, how: str,
            graphs: dict = graphs, info: dict = info, walls: dict = walls,
        ) -> None:  # fmt: skip
            h, meta = found_graph(engine, job_id, how)
            graphs.setdefault(label, []).append(h)
            info.setdefault(label, []).append(meta)
            walls.setdefault(label, []).append(wall)

        job, wall = run(engine, base_spec(args, model, f"{model}-greedy", {"strategy": "greedy"}))
        add("greedy", job, wall, "only")
        bt = {
            "strategy": "backtracking",
            "backtracking": {"alpha": args.alpha, "budget": args.budget},
        }
        job, wall = run(engine, base_spec(args, model, f"{model}-backtracking", bt))
        add("backtracking", job, wall, "only")
        for seed in range(args.seeds):
            rnd = {"strategy": "random", "seed": seed, "random": {"episodes": args.random_episodes}}
            job, wall = run(engine, base_spec(args, model, f"{model}-random-{seed}", rnd))
            add("random", job, wall, "cheapest")
            if model in ppo_models:
                spec = base_spec(args, model, f"{model}-ppo-{seed}", ppo_search(args, seed))
                job, wall = run(engine, spec)
                add("ppo", job, wall, "eval")
                if model == ppo_models[0]:
                    policies.append(job)
            print(f"[{time.perf_counter() - started:.0f} s] {model} seed {seed} done", flush=True)
        if model != ppo_models[0] and policies:
            for seed, policy_job in enumerate(policies):
                search = ppo_search(args, seed, episodes=0, policy=f"{policy_job}:policy")
                job, wall = run(engine, base_spec(args, model, f"{model}-applied-{seed}", search))
                add(f"ppo trained on {ppo_models[0]}", job, wall, "only")
        speedups = shootout(engine, model, args, graphs)
        lines.append(f"{model} ({args.size})")
        for label, res in speedups.items():
            ms = statistics.fmean(m["model_speedup"] for m in info[label])
            rw = statistics.fmean(m["rewrites"] for m in info[label])
            wall = statistics.fmean(walls[label])
            lines.append(f"  {label:24s} measured {fmt(res)}   cost model {ms:.3f}x   "
                         f"{rw:4.1f} rewrites   search {wall:7.1f} s")  # fmt: skip
        if "ppo" in speedups and "greedy" in speedups:
            ppo = statistics.fmean(r[0] for r in speedups["ppo"])
            greedy = statistics.fmean(r[0] for r in speedups["greedy"])
            lines.append(f"  PPO vs greedy: {ppo / greedy:.3f}x (target: >= 1.10 on one "
                         "transformer, never below 1.00 on average)")  # fmt: skip
        lines.append("")
        print("\n".join(lines[-len(speedups) - 3 :]), flush=True)
    if args.throughput_workers:
        lines.append(f"rollout throughput ({args.models[0]}, {args.size}; a 2-core machine: "
                     "past 2 workers they share cores)")  # fmt: skip
        lines += throughput(engine, args, args.models[0])
    lines.append(f"\ntotal {time.perf_counter() - started:.0f} s; database {url}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
