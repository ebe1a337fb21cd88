"""The CPU library baseline is timed fairly: NumPy's matmul in a process of its own (no
TVM loaded there, even when the worker has it), at the candidates' thread count or at
one thread (`numpy@1t`), BLAS pinned; the worker keeps the process and replaces a dead
one."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tunelab.platform.kinds import get_kind
from tunelab.platform.spec import parse_spec
from tunelab.workers.pipeline_search.library import LibraryProcess, library_process
from tunelab.workers.pipeline_search.measure import baseline_threads, measure_numpy


def gemm_spec(**measure: Any) -> Any:
    return parse_spec({
        "name": "baseline", "kind": "pipeline-search",
        "workload": {"op": "gemm", "M": 128, "N": 128, "K": 64, "dtype": "float32"},
        "target": {"kind": "llvm"}, "measure": {"repeats": 3, **measure},
    })  # fmt: skip


@pytest.fixture
def cache() -> Iterator[dict[Any, Any]]:
    """A worker's cache; its library processes are ended afterwards."""
    cache: dict[Any, Any] = {}
    yield cache
    for value in cache.values():
        if isinstance(value, LibraryProcess):
            value.close()


def test_baseline_runs_without_tvm_at_the_specs_threads(cache: dict[Any, Any]) -> None:
    import tvm  # the measurement worker has TVM (and its thread pool) loaded

    assert tvm.__version__
    spec = gemm_spec(threads=2)
    m = measure_numpy(spec, {"baseline": "numpy"}, cache)
    assert len(m.latencies_s) == 3 and all(x > 0 for x in m.latencies_s)
    assert m.info["threads"] == 2 and m.info["library"].startswith("numpy ")
    child = library_process(cache, 2).call({"op": "describe"})
    assert child["pid"] != os.getpid() and child["tvm_loaded"] is False
    assert child["blas_threads"] == [2]  # BLAS pinned to the spec's count
    assert child["blas_spin"] == "22"  # its idle threads stop spinning within ~2 ms

    one = measure_numpy(spec, {"baseline": "numpy@1t", "threads": 1}, cache)
    assert one.info["threads"] == 1
    child1 = library_process(cache, 1).call({"op": "describe"})
    assert child1["blas_threads"] == [1] and child1["pid"] not in (child["pid"], os.getpid())


def test_the_process_is_kept_and_replaced_when_dead(cache: dict[Any, Any]) -> None:
    first = library_process(cache, 1)
    assert library_process(cache, 1) is first  # one per worker and thread count
    pid = first.call({"op": "describe"})["pid"]
    first.proc.kill()
    first.proc.wait()
    again = library_process(cache, 1)
    assert again is not first and again.call({"op": "describe"})["pid"] != pid


def test_thread_counts_and_the_baselines_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    kind = get_kind("pipeline-search")
    assert kind.baselines(gemm_spec()) == [
        {"baseline": "numpy"}, {"baseline": "numpy@1t", "threads": 1}
    ]  # fmt: skip
    assert kind.baselines(gemm_spec(threads=1)) == [{"baseline": "numpy"}]
    monkeypatch.setenv("TVM_NUM_THREADS", "3")  # what the pool started the worker with
    assert baseline_threads(gemm_spec(), {"baseline": "numpy"}) == 3
    assert baseline_threads(gemm_spec(threads=2), {"baseline": "numpy"}) == 2
    assert baseline_threads(gemm_spec(threads=2), {"baseline": "numpy@1t", "threads": 1}) == 1


def test_the_process_uses_every_core_whatever_the_worker_was_pinned_to(
    cache: dict[Any, Any],
) -> None:
    """TVM pins its pool's threads to cores; a process started from such a thread would
    inherit one core for all of BLAS's threads."""
    every = os.sched_getaffinity(0)
    if len(every) < 2:
        pytest.skip("needs two cores")
    os.sched_setaffinity(0, {min(every)})
    try:
        proc = library_process(cache, 2)
        assert proc.call({"op": "describe"})["cores"] == sorted(every)
    finally:
        os.sched_setaffinity(0, every)


def test_the_baseline_waits_until_the_worker_stops_spinning(cache: dict[Any, Any]) -> None:
    """TVM's pool threads spin for ~0.1 s after a kernel: the child times only once the
    worker's threads are idle (here a thread of ours spins for 0.3 s)."""
    import threading

    spec = gemm_spec(threads=1)
    measure_numpy(spec, {"baseline": "numpy"}, cache)  # the process is started
    end = time.perf_counter() + 0.3

    def spin() -> None:
        while time.perf_counter() < end:
            pass

    spinner = threading.Thread(target=spin)
    spinner.start()
    m = measure_numpy(spec, {"baseline": "numpy"}, cache)
    spinner.join()
    assert 0.15 <= m.info["waited_s"] <= 1.0
    assert measure_numpy(spec, {"baseline": "numpy"}, cache).info["waited_s"] < 0.1  # idle now
