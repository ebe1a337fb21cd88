"""CUDA build jobs: kernels generated and compiled with nvcc on the cluster's CPUs.

(Codegen details per workload and level are in test_pipelining.py.)

There is no GPU here: these tests build and compile only. Measuring on a GPU is not
faked; a cuda job that wants measurements on a cluster without GPUs is refused.
"""

from __future__ import annotations

import pytest

from tunelab.platform import jobs
from tunelab.platform.execution import JobError, run_job
from tunelab.platform.spec import parse_spec
from tunelab.schema.db import get_engine
from tunelab.schema.models import JobStatus
from tunelab.workers.pipeline_search.nvcc import find_nvcc

pytestmark = pytest.mark.skipif(find_nvcc() is None, reason="nvcc is not installed")

BASE = {
    "name": "cuda",
    "kind": "pipeline-search",
    "workload": {"M": 1024, "N": 1024, "K": 1024, "dtype": "float16"},
    "target": {"kind": "cuda", "arch": "sm_80"},
}


@pytest.mark.slow
def test_build_only_job_records_compiled_and_rejected(sqlite_url: str, ray_cluster: str) -> None:
    spec = parse_spec({
        **BASE,
        "workload": {"M": 512, "N": 512, "K": 512, "dtype": "float32"},
        "space": {"block_row_warps": [4, 8], "block_col_warps": [8], "warp_row_tiles": [1],
                  "warp_col_tiles": [1], "chunk": [2, 4], "stages": [1, 6], "reg_stages": [1]},
        "measure": {"build_only": True},
    })  # fmt: skip
    engine = get_engine(sqlite_url)
    job_id = jobs.create_job(engine, spec)
    assert run_job(engine, job_id) == JobStatus.completed
    trials = jobs.trials(engine, job_id)
    assert len(trials) == 8
    by_status: dict[str, set] = {}
    for t in trials:
        key = (t.params["block_row_warps"], t.params["chunk"], t.params["stages"])
        by_status.setdefault(t.status, set()).add(key)
        assert (t.status == "built") == (t.extra.get("registers", 0) > 0)  # nvcc ran on these
    # Over sm_80's limits, rejected before compiling: 8x8 warps are 2048 threads; six fp32
    # stages of (64 + 128) rows x a 64-deep k-tile need 288 KB of shared memory.
    assert by_status["invalid"] == {(8, 2, 1), (8, 2, 6), (8, 4, 1), (8, 4, 6), (4, 4, 6)}
    assert by_status["built"] == {(4, 2, 1), (4, 2, 6), (4, 4, 1)}
    reasons = " ".join(t.error for t in trials if t.status == "invalid")
    assert "2048 threads" in reasons and "294912 bytes of shared memory" in reasons
    job = jobs.get_job(engine, job_id)
    assert (job.n_done, job.n_ok, job.n_failed) == (8, 0, 5)  # built is neither


@pytest.mark.slow
def test_measuring_cuda_without_gpus_is_refused(sqlite_url: str, ray_cluster: str) -> None:
    engine = get_engine(sqlite_url)
    job_id = jobs.create_job(engine, parse_spec(BASE))
    with pytest.raises(JobError, match="has none"):
        run_job(engine, job_id)
    job = jobs.get_job(engine, job_id)
    assert job.status == "failed" and "build_only" in job.error
    assert job.n_done == 0
