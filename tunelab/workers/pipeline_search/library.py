"""The CPU library baseline (NumPy's matmul, its BLAS) timed in a process of its own.

Timed inside the measurement worker, NumPy's BLAS threads shared the cores with TVM's
thread pool, whose workers keep spinning (yielding) for ~0.1 s after every kernel, and
each 'vs NumPy' figure came out flattering: right after the kernel, NumPy's 512^3 matmul
at 2 threads took 22.4 ms there against 1.09 ms alone (bench/results/library_baseline.txt;
1 thread: no difference). Setting TVM's spin count to 0 would cure NumPy (1.09x) but slow
the kernels ~30% (0.78 ms against 0.60 ms). So the baseline runs in a long-lived child
process of the worker, a fresh interpreter (no TVM imported there, nothing forked from
the worker) whose thread count is set before NumPy loads (`workers/threads.apply`:
environment variables and threadpoolctl), the same count as the candidates' unless a
baseline asks for another (`numpy@1t`). The worker keeps one child per thread count in
its cache; the child answers pickled requests on its stdin and stdout. Neither side's
idle threads spin into the other's timing: OpenBLAS's stop within ~2 ms (`BLAS_SPIN`),
and the child waits out TVM's (`wait_idle`: the worker's threads idle) before it times.

    python -m tunelab.workers.pipeline_search.library THREADS   (what the worker starts)
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import time
from typing import Any, BinaryIO

from tunelab.platform.kinds import RunError, WrongResult

# OpenBLAS's idle threads spin for 2^28 cycles (~0.1 s) after each call by default (about
# 80 ms of a core after one 512^3 matmul, measured): long enough to slow the candidate timed
# next in the worker. 2^22 cycles (~1.6 ms) still bridges back-to-back calls in a sample.
BLAS_SPIN = "22"
# TVM's pool threads in the worker spin (yielding) after its last kernel: ~110 ms of a
# core after 20 ms of 512^3 kernels at 2 threads, measured. Before it times, the child waits
# until the worker's threads have used under a tenth of a core for IDLE_S (at most WAIT_S).
IDLE_S = 0.005
WAIT_S = 1.0


class LibraryProcess:
    """A child process timing NumPy's matmul at `threads` threads."""

    def __init__(self, threads: int) -> None:
        from tunelab.workers.threads import thread_env

        self.threads = threads
        env = {**os.environ, **thread_env(threads), "OPENBLAS_THREAD_TIMEOUT": BLAS_SPIN}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__, str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request and wait for its answer (RunError if the child died)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            pickle.dump(request, self.proc.stdin)
            self.proc.stdin.flush()
            answer = pickle.load(self.proc.stdout)
        except (BrokenPipeError, EOFError, OSError) as exc:
            self.close()
            raise RunError(f"the library baseline's process died: {exc!r}") from None
        if "wrong" in answer:
            raise WrongResult(answer["wrong"])
        if "error" in answer:
            raise RunError(answer["error"])
        return answer

    def close(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait()


def library_process(cache: dict[Any, Any], threads: int) -> LibraryProcess:
    """The worker's child process at `threads` threads (started on first use, and again
    if it has died)."""
    key = ("library-process", threads)
    proc = cache.get(key)
    if proc is None or not proc.alive():
        proc = cache[key] = LibraryProcess(threads)
    return proc


def measure(request: dict[str, Any], cache: dict[Any, Any]) -> dict[str, Any]:
    """In the child: check NumPy's result on the workload's inputs, then time it."""
    import numpy as np

    from tunelab.workers.pipeline_search.reference import check_output, reference_data
    from tunelab.workers.pipeline_search.workloads import parse_workload

    wl = parse_workload(request["workload"])
    inputs, ref = reference_data(request["workload"], cache)
    a, b = (x.astype(wl.acc_dtype) for x in inputs)  # BLAS has no fp16 GEMM on the CPU
    out = np.matmul(a, b)
    if request["check"]:
        check_output(out, ref, wl.dtype)
    waited = wait_idle(os.getppid())
    for _ in range(request["warmup"]):
        np.matmul(a, b, out=out)
    latencies = []
    for _ in range(request["repeats"]):
        runs, t0 = 0, time.perf_counter()
        while True:
            for _ in range(request["number"]):
                np.matmul(a, b, out=out)
            runs += request["number"]
            elapsed = time.perf_counter() - t0
            if elapsed * 1000 >= request["min_repeat_ms"]:
                break
        latencies.append(elapsed / runs)
    return {"latencies_s": latencies, "waited_s": waited, **describe()}


def _cpu_ns(pid: int) -> int | None:
    """CPU time used so far by every thread of process `pid` (None where unreadable)."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        return total
    except (OSError, ValueError, IndexError):
        return None


def wait_idle(pid: int) -> float:
    """Wait until process `pid` (the worker) uses under a tenth of a core for IDLE_S, at
    most WAIT_S (a fixed IDLE_S where its threads cannot be read); seconds waited."""
    t0 = time.monotonic()
    before = _cpu_ns(pid)
    while True:
        time.sleep(IDLE_S)
        now = _cpu_ns(pid)
        if before is None or now is None or now - before < 0.1 * IDLE_S * 1e9:
            break
        if time.monotonic() - t0 > WAIT_S:
            break
        before = now
    return time.monotonic() - t0


def describe() -> dict[str, Any]:
    """In the child: what it is (for the trial's record and the tests)."""
    import numpy as np
    from threadpoolctl import threadpool_info

    blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    return {
        "library": "numpy " + np.__version__,
        "pid": os.getpid(),
        "blas_threads": [p.get("num_threads") for p in blas],
        "tvm_loaded": "tvm" in sys.modules,
        "cores": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "blas_spin": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
    }


def serve(threads: int, requests: BinaryIO, answers: BinaryIO) -> None:
    """The child's loop: one answer per request until its stdin closes."""
    from tunelab.workers import threads as thread_policy

    # Every core the node lets us use, whichever core the worker's thread was pinned to.
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    thread_policy.apply(threads)
    cache: dict[Any, Any] = {}
    while True:
        try:
            request = pickle.load(requests)
        except EOFError:
            return
        try:
            answer = describe() if request.get("op") == "describe" else measure(request, cache)
        except WrongResult as exc:
            answer = {"wrong": str(exc)}
        except Exception as exc:  # told to the worker, which fails the trial with it
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        pickle.dump(answer, answers)
        answers.flush()


if __name__ == "__main__":
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints go to stderr
    sys.stdout = sys.stderr
    serve(int(sys.argv[1]), sys.stdin.buffer, protocol)
