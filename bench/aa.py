"""A/A test of the measurement protocol: a thing timed against itself is not faster.

For each timed kind's thing (a TVM-built pipeline-search GEMM kernel, a graph-rewrite
graph executed as that kind executes it, NumPy's matmul, the CPU library baseline) the
same callable is timed under two keys with `platform/rounds.interleaved` at the settings
its kind uses (pipeline-search: its final rounds; graph-rewrite: `measure.rounds` and
`measure.min_sample_ms`), and `Rounds.ratio` gives the protocol's verdict. Any verdict of
`faster` or `slower` is a false positive (`tied` and `undecided` are both right). This is
repeated `--runs` times under each condition: quiet, one busy loop of our own
(`python -c "while True: pass"`) and one per core.

Each thing runs in its own process with the platform's thread policy applied before any
import (`workers/threads.apply`), as a measurement worker does.

    python bench/aa.py [--runs 40] [--threads N] [--things kernel graph numpy] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

THINGS = ("kernel", "graph", "numpy")
FALSE = ("faster", "slower")  # verdicts that are false positives between identical things
GEMM = 512  # M = N = K of the kernel and of NumPy's matmul
GRAPH_MODEL = ("transducer", "cpu")  # a suite model at the size CPU jobs use
# A candidate as the pipeline-search kind builds it (the CPU demo's winner).
KERNEL_PARAMS = {"tile_m": 256, "tile_n": 256, "tile_k": 64, "micro_m": 8, "micro_n": 32,
                 "stages": 1, "reg_stages": 1}  # fmt: skip


@dataclass(frozen=True)
class Protocol:
    """The rounds of one comparison and the shortest timed sample, as a kind sets them."""

    rounds: int
    min_sample_s: float


def protocol(thing: str) -> Protocol:
    """The settings the kind that times `thing` uses by default (its spec's defaults)."""
    if thing == "graph":
        from tunelab.workers.graph_rewrite.spec import GraphMeasureSpec

        m = GraphMeasureSpec()
        return Protocol(m.rounds, m.min_sample_ms / 1e3)
    from tunelab.platform.rounds import interleaved
    from tunelab.workers.pipeline_search.spec import TimingSpec

    # pipeline-search's final rounds time the finalists and the NumPy baseline alike.
    default_sample = interleaved.__kwdefaults__["min_sample_s"]
    return Protocol(TimingSpec().final_rounds, default_sample)


@dataclass(frozen=True)
class AA:
    """One A/A comparison: `noise.Ratio`'s fields, and whether the two keys' samples
    held different numbers of runs (`Rounds.inner`)."""

    ratio: float
    ci: tuple[float, float]
    rounds: int
    outcome: str
    unequal_samples: bool


@contextmanager
def busy_loops(n: int) -> Iterator[list[subprocess.Popen]]:
    """`n` processes spinning a core each while the block runs (killed afterwards)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.3 if n else 0)  # let them be scheduled before timing starts
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def aa_ratios(run: Callable[[], Any], proto: Protocol, runs: int, seed: int = 0) -> list[AA]:
    """`runs` A/A comparisons of `run` against itself."""
    from tunelab.platform.rounds import interleaved

    out = []
    for i in range(runs):
        timed = interleaved({"A": run, "A'": run}, rounds=proto.rounds,
                            min_sample_s=proto.min_sample_s, seed=seed + i)  # fmt: skip
        ratio = timed.ratio("A'", "A", seed=seed + i)
        out.append(AA(ratio.ratio, ratio.ci, ratio.rounds, ratio.outcome,
                      len(set(timed.inner.values())) > 1))  # fmt: skip
    return out


def false_positives(ratios: list[Any]) -> int:
    """Verdicts that call one of two identical things faster than the other."""
    return sum(r.outcome in FALSE for r in ratios)


def numpy_thing() -> Callable[[], Any]:
    """NumPy's matmul of two GEMM x GEMM float32 matrices (the library baseline's call)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = (rng.uniform(-1, 1, (GEMM, GEMM)).astype("float32") for _ in range(2))
    out = np.empty((GEMM, GEMM), "float32")
    return lambda: np.matmul(a, b, out=out)


def kernel_thing() -> Callable[[], Any]:
    """A pipeline-search candidate built and loaded as the kind builds and loads it."""
    import numpy as np
    import tvm

    from tunelab.platform.kinds import get_kind
    from tunelab.platform.spec import parse_spec
    from tunelab.workers.pipeline_search.build_llvm import llvm_host_cpu
    from tunelab.workers.pipeline_search.measure import load_llvm_module

    spec = parse_spec({
        "name": "aa", "kind": "pipeline-search",
        "workload": {"op": "gemm", "M": GEMM, "N": GEMM, "K": GEMM, "dtype": "float32"},
        "target": {"kind": "llvm", "mcpu": llvm_host_cpu()},
    })  # fmt: skip
    mod = load_llvm_module(get_kind("pipeline-search").build(spec, KERNEL_PARAMS).artifact)
    rng = np.random.default_rng(0)
    a, b = (rng.uniform(-1, 1, (GEMM, GEMM)).astype("float32") for _ in range(2))
    args = [tvm.runtime.tensor(a), tvm.runtime.tensor(b),
            tvm.runtime.tensor(np.zeros((GEMM, GEMM), "float32"))]  # fmt: skip
    main = mod["main"]
    main(*args)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    assert np.abs(args[2].numpy() - ref).max() / np.abs(ref).max() < 1e-5, "wrong kernel"
    return lambda: main(*args)


def graph_thing() -> Callable[[], Any]:
    """A suite model's graph run by the executor graph-rewrite times (its original)."""
    from tunelab.workers.graphs.execute import Executable
    from tunelab.workers.graphs.frontend import import_model

    imported = import_model(*GRAPH_MODEL)
    exe = Executable(imported.graph, imported.constants)
    inputs = imported.inputs
    return lambda: exe(inputs)


def child(thing: str, threads: int, runs: int, busy: list[int]) -> list[dict[str, Any]]:
    """Every condition for one thing, in this process (threads applied first)."""
    from tunelab.workers import threads as thread_policy

    thread_policy.apply(threads)
    run = {"kernel": kernel_thing, "graph": graph_thing, "numpy": numpy_thing}[thing]()
    thread_policy.apply(threads)  # libraries loaded since (torch) get the count too
    proto = protocol(thing)
    once = _once(run)
    rows = []
    for n in busy:
        load1 = os.getloadavg()[0]
        with busy_loops(n):
            t0 = time.perf_counter()
            ratios = aa_ratios(run, proto, runs, seed=1000 * n)
            wall = time.perf_counter() - t0
        rows.append({
            "thing": thing, "busy": n, "threads": threads, "rounds": proto.rounds,
            "min_sample_s": proto.min_sample_s, "once_s": once, "wall_s": wall,
            "ratios": [r.ratio for r in ratios], "cis": [list(r.ci) for r in ratios],
            "outcomes": [r.outcome for r in ratios],
            "unequal": sum(r.unequal_samples for r in ratios),
            "load1": [load1, os.getloadavg()[0]],
        })  # fmt: skip
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "cis"}), file=sys.stderr)
    return rows


def _once(run: Callable[[], Any]) -> float:
    """Seconds of one call (the fastest of 10, after 3 warm-ups)."""
    times = []
    for i in range(13):
        t0 = time.perf_counter()
        run()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return min(times)


def condition(busy: int, cores: int) -> str:
    if busy == 0:
        return "quiet"
    return f"{busy} busy loop{'s' if busy > 1 else ''} on {cores} cores"


def report(rows: list[dict[str, Any]], header: list[str]) -> list[str]:
    """One line per thing and condition: the false positives, then the ratios' spread."""
    import numpy as np

    from tunelab.platform.noise import TIE_TOLERANCE

    lines = [*header]
    cores = os.cpu_count() or 1
    for r in rows:
        x = np.asarray(r["ratios"])
        fp, m = sum(o in FALSE for o in r["outcomes"]), len(x)
        counts = {o: r["outcomes"].count(o) for o in ("tied", "undecided", "faster", "slower")}
        lines.append(
            f"A/A false positives: {fp}/{m} ({r['thing']}, {condition(r['busy'], cores)}, "
            f"{r['threads']} threads)"
        )
        lines.append(
            f"    {r['rounds']} rounds, samples >= {r['min_sample_s'] * 1e3:g} ms, one call "
            f"{r['once_s'] * 1e3:.3f} ms (fastest, quiet); ratio A'/A median {np.median(x):.4f}, "
            f"5-95% {np.percentile(x, 5):.4f}-{np.percentile(x, 95):.4f}, "
            f"range {x.min():.4f}-{x.max():.4f}; within {TIE_TOLERANCE:.0%}: "
            f"{int(np.sum(np.abs(x - 1) <= TIE_TOLERANCE))}/{m}; "
            + ", ".join(f"{k} {v}" for k, v in counts.items())
            + f"; unequal samples in {r.get('unequal', 0)}/{m}; {r['wall_s']:.0f} s, "
            f"1-min load {r['load1'][0]:.2f} before, {r['load1'][1]:.2f} after"
        )
    return lines


def machine() -> list[str]:
    """Header lines: the machine, and how loaded it is (other users included)."""
    model = "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(ln.split(":", 1)[1].strip() for ln in out.splitlines()
                     if ln.startswith("Model name"))  # fmt: skip
    except (OSError, StopIteration):
        pass
    return [f"# machine: {os.cpu_count()} cores (nproc), {model}"]


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="A/A comparisons per condition")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--things", nargs="*", default=list(THINGS), choices=THINGS)
    parser.add_argument(
        "--busy",
        type=int,
        nargs="*",
        default=None,
        help="busy loops per condition (default: 0, 1, one per core)",
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    busy = args.busy if args.busy is not None else sorted({0, 1, cores})
    if args.child:
        print(json.dumps(child(args.child, args.threads, args.runs, busy)))
        return
    from report import emit

    from tunelab.workers.threads import thread_env

    before, t0 = load(), time.time()
    rows: list[dict[str, Any]] = []
    for thing in args.things:
        env = {**os.environ, **thread_env(args.threads)}
        cmd = [sys.executable, __file__, "--child", thing, "--threads", str(args.threads),
               "--runs", str(args.runs), "--busy", *map(str, busy)]  # fmt: skip
        out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True)
        rows += json.loads(out.stdout.strip().splitlines()[-1])
    header = [
        *machine(),
        f"# threads per measurement: {args.threads} (workers/threads.apply: TVM, OpenMP, BLAS,"
        " torch); each thing in its own process",
        f"# {args.runs} A/A runs per thing and condition; a false positive is a verdict of "
        "faster or slower (noise.judge on Rounds.ratio)",
        f"# kernel: pipeline-search {GEMM}^3 float32 GEMM {KERNEL_PARAMS}; graph: "
        f"graph-rewrite's executor on {GRAPH_MODEL[0]} ({GRAPH_MODEL[1]} size); numpy: "
        f"matmul {GEMM}^3 float32",
        f"# load average (1, 5, 15 min) before: {before}; after: {load()} "
        f"({time.time() - t0:.0f} s)",
        "# 'quiet': no busy loop of ours. Other users of the machine were not stopped; the "
        "load averages say how busy it was (a busy loop adds 1)",
    ]
    emit(report(rows, header), args.out)


if __name__ == "__main__":
    main()
