"""CUDA kernels are generated and compiled with nvcc, so CI catches what codegen cannot.

There is no GPU here: these tests build and compile only. Measuring on a GPU is not
faked; a cuda job that wants measurements on a cluster without GPUs is refused.
"""

from __future__ import annotations

import pytest

from tunelab.platform import jobs
from tunelab.platform.executor import JobError, run_job
from tunelab.platform.kinds import get_kind
from tunelab.platform.spec import parse_spec
from tunelab.schema.db import get_engine
from tunelab.schema.models import JobStatus
from tunelab.workers.pipeline_search.kind import find_nvcc

pytestmark = pytest.mark.skipif(find_nvcc() is None, reason="nvcc is not installed")

BASE = {
    "name": "cuda",
    "kind": "pipeline-search",
    "workload": {"M": 1024, "N": 1024, "K": 1024, "dtype": "float16"},
    "target": {"kind": "cuda", "arch": "sm_80"},
}
PIPELINED = {"block_m": 64, "block_n": 64, "block_k": 32, "thread_m": 4, "thread_n": 4,
             "vector": 8, "stages": 3}  # fmt: skip


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_pipelined_kernel_compiles_with_nvcc(arch: str) -> None:
    import pickle

    spec = parse_spec({**BASE, "target": {"kind": "cuda", "arch": arch}})
    built = get_kind("pipeline-search").build(spec, PIPELINED)
    bundle = pickle.loads(built.artifact)
    assert bundle["cubin"][:4] == b"\x7fELF"  # nvcc produced a real cubin
    source = bundle["source"]
    assert "cp.async" in source and "commit_group" in source and "wait_group" in source
    assert bundle["block"] == [16, 16, 1] and bundle["grid"] == [16, 16, 1]
    assert built.info["registers"] > 0 and built.info["cp_async"] > 0
    assert [b["stages"] for b in built.info["pipelined"]] == [3, 3]


def test_unpipelined_kernel_has_no_async_copies() -> None:
    spec = parse_spec(BASE)
    built = get_kind("pipeline-search").build(spec, {**PIPELINED, "stages": 1})
    assert built.info["cp_async"] == 0 and built.info["pipelined"] == []


@pytest.mark.slow
def test_build_only_job_records_compiled_and_rejected(sqlite_url: str, ray_cluster: str) -> None:
    spec = parse_spec({
        **BASE,
        "workload": {"M": 512, "N": 512, "K": 512, "dtype": "float32"},
        "space": {"block_m": [64, 128], "block_n": [128], "block_k": [32], "thread_m": [2, 8],
                  "thread_n": [4], "vector": [4], "stages": [2, 6]},
        "measure": {"build_only": True},
    })  # fmt: skip
    engine = get_engine(sqlite_url)
    job_id = jobs.create_job(engine, spec)
    assert run_job(engine, job_id) == JobStatus.completed
    trials = jobs.trials(engine, job_id)
    assert len(trials) == 8
    by_status: dict[str, set] = {}
    for t in trials:
        key = (t.params["block_m"], t.params["thread_m"], t.params["stages"])
        by_status.setdefault(t.status, set()).add(key)
        assert (t.status == "built") == (t.extra.get("registers", 0) > 0)  # nvcc ran on these
    # Over sm_80's limits, rejected before compiling: 128x128 tiles at 2x4 per thread are
    # 2048 threads; six fp32 stages of 128+128 rows x 32 need 192 KB of shared memory;
    # a 64x32 A tile cannot be split into 1024 threads x 4-wide copies.
    assert by_status["invalid"] == {(128, 2, 2), (128, 2, 6), (128, 8, 6), (64, 2, 2), (64, 2, 6)}
    assert by_status["built"] == {(64, 8, 2), (64, 8, 6), (128, 8, 2)}
    reasons = " ".join(t.error for t in trials if t.status == "invalid")
    assert "2048 threads" in reasons and "196608 bytes of shared memory" in reasons
    assert "does not split evenly" in reasons
    job = jobs.get_job(engine, job_id)
    assert (job.n_done, job.n_ok, job.n_failed) == (8, 3, 5)


@pytest.mark.slow
def test_measuring_cuda_without_gpus_is_refused(sqlite_url: str, ray_cluster: str) -> None:
    engine = get_engine(sqlite_url)
    job_id = jobs.create_job(engine, parse_spec(BASE))
    with pytest.raises(JobError, match="has none"):
        run_job(engine, job_id)
    job = jobs.get_job(engine, job_id)
    assert job.status == "failed" and "build_only" in job.error
    assert job.n_done == 0
