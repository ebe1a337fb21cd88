"""`tunelab best`: a job's best trial shown, and exported deployably by its kind.

A real CPU pipeline-search job is run, its best kernel exported through the command line
and the exported `kernel.so` loaded and run against NumPy; a CUDA tensor-core candidate
is exported through the kind (compiled with nvcc; no GPU here, nothing CUDA runs).
"""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tunelab.platform import api, jobs
from tunelab.platform.kinds import ExportUnsupported, candidate_key, get_kind
from tunelab.platform.recorder import Recorder
from tunelab.platform.spec import parse_spec
from tunelab.schema.db import get_engine
from tunelab.schema.models import JobStatus, TrialStatus
from tunelab.workers.pipeline_search.nvcc import find_nvcc

CPU_SPEC = {
    "name": "export",
    "kind": "pipeline-search",
    "workload": {"M": 64, "N": 48, "K": 80},
    "space": {
        "tile_m": [16, 32],
        "tile_n": [16],
        "tile_k": [16],
        "micro_m": [2],
        "micro_n": [8],
        "stages": [1, 2],
        "reg_stages": [1],
    },
    "measure": {"repeats": 3, "final_rounds": 2},
}
QUADRATIC = {"name": "q", "kind": "testing-quadratic", "workload": {"axis": 10}}
LLVM_FILES = {"kernel.so", "kernel_tir.py", "kernel.ll", "kernel.s", "launch.json", "README.md"}


def tunelab(*args: str, check: int) -> subprocess.CompletedProcess[str]:
    """Run the command line as a program; assert its exit code."""
    proc = subprocess.run(
        [sys.executable, "-m", "tunelab.platform.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ.copy(),
    )
    assert proc.returncode == check, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def said(proc: subprocess.CompletedProcess[str]) -> str:
    """stdout and stderr with the line breaks rich adds undone."""
    return " ".join((proc.stdout + proc.stderr).split())


def _run_exported_kernel(out: Path) -> None:
    """Load the exported library as its README says, run it, compare with NumPy."""
    import tvm

    launch = json.loads((out / "launch.json").read_text())
    assert launch["entry"] == "main" and launch["library"] == "kernel.so"
    rng = np.random.default_rng(1)
    inputs = [
        rng.uniform(-1, 1, a["shape"]).astype(a["dtype"])
        for a in launch["args"]
        if a["role"] == "input"
    ]
    (c,) = (a for a in launch["args"] if a["role"] == "output")
    args = [tvm.runtime.tensor(x) for x in inputs]
    args.append(tvm.runtime.tensor(np.full(c["shape"], np.nan, c["dtype"])))
    tvm.runtime.load_module(str(out / "kernel.so"))[launch["entry"]](*args)
    np.testing.assert_allclose(args[-1].numpy(), inputs[0] @ inputs[1], rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # a real job on Ray, then three exports that compile the kernel again
def test_best_of_a_real_cpu_job_is_shown_exported_and_runs(
    tmp_path: Path, sqlite_url: str, ray_cluster: str
) -> None:
    job_id = api.submit(CPU_SPEC, db=sqlite_url, ray_address=ray_cluster)
    job = api.get_job(job_id, db=sqlite_url)
    assert job.status == JobStatus.completed and job.verdict  # final rounds ran
    best = next(t for t in api.trials(job_id, db=sqlite_url) if t.id == job.best_trial_id)
    assert best.baseline is None and "baseline" not in best.params
    baselines = [t.baseline for t in api.baseline_trials(job_id, db=sqlite_url)]
    assert baselines == ["numpy", "numpy@1t"]

    shown = said(tunelab("best", str(job_id), "--db", sqlite_url, check=0))
    assert f"best: trial {best.id} latency_s" in shown and "minimize" in shown
    assert f"tile_m={best.params['tile_m']}" in shown
    assert "noise-aware winner: winner of" in shown and "final rounds" in shown

    out = tmp_path / "deploy" / "gemm"  # created, parents too
    proc = tunelab("best", str(job_id), "--out", str(out), "--db", sqlite_url, check=0)
    assert f"exported trial {best.id} to {out}" in said(proc)
    assert {p.name for p in out.iterdir()} == {*LLVM_FILES, "params.json"}  # no leftovers
    _run_exported_kernel(out)
    params = json.loads((out / "params.json").read_text())
    assert params["trial"] == best.id and params["params"] == best.params
    assert params["workload"].items() >= CPU_SPEC["workload"].items()  # as validated
    assert params["kind"] == "pipeline-search" and params["target"]["kind"] == "llvm"
    assert params["latency_s"]["median"] == best.latency_median_s > 0
    assert params["objective"] == {
        "name": "latency_s", "direction": "minimize", "unit": "s", "value": best.value,
    }  # fmt: skip
    assert params["final_rounds"]["rounds"] == job.verdict["rounds"]
    readme = (out / "README.md").read_text()
    assert 'tvm.runtime.load_module("kernel.so")["main"](a, b, c)' in readme
    assert "define" in (out / "kernel.ll").read_text()  # LLVM IR
    assert re.search(r"^\s*\.text", (out / "kernel.s").read_text(), re.M)  # assembly
    module = runpy.run_path(str(out / "kernel_tir.py"))["Module"]
    assert "main" in [gv.name_hint for gv in module.get_global_vars()]

    # A file of the user's is never replaced without --force: nothing at all is written.
    (out / "README.md").write_text("my notes\n")
    library = (out / "kernel.so").read_bytes()
    (out / "kernel.so").unlink()
    proc = tunelab("best", str(job_id), "--out", str(out), "--db", sqlite_url, check=2)
    assert "already has" in said(proc) and "README.md" in said(proc) and "--force" in said(proc)
    assert (out / "README.md").read_text() == "my notes\n"
    assert not (out / "kernel.so").exists()  # not even the files that were not in the way
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    tunelab("best", str(job_id), "--out", str(out), "--force", "--db", sqlite_url, check=0)
    assert "load_module" in (out / "README.md").read_text()
    assert (out / "kernel.so").read_bytes()[:4] == library[:4] == b"\x7fELF"
    _run_exported_kernel(out)


def _recorded_job(engine: object, spec: dict, rows: list[dict]) -> int:
    """A completed job of `spec` whose trials are `rows` (Recorder.add keywords)."""
    job_id = jobs.create_job(engine, parse_spec(spec))
    recorder = Recorder(engine, job_id, objective=get_kind(spec["kind"]).primary())
    for row in rows:
        recorder.add(candidate=candidate_key(row["params"]), **row)
    recorder.flush()
    jobs.finish(engine, job_id, JobStatus.completed)
    return job_id


@pytest.mark.slow  # about 9 s: the CLI in subprocesses
def test_a_kind_that_cannot_export_refuses_and_baselines_are_never_best(
    tmp_path: Path, sqlite_url: str
) -> None:
    engine = get_engine(sqlite_url)
    ok = TrialStatus.ok
    job_id = _recorded_job(engine, QUADRATIC, [
        {"params": {"x": 1, "y": 2, "z": 3}, "status": ok, "objectives": {"loss": 7.5}},
        {"params": {"x": 4, "y": 4, "z": 4}, "status": ok, "objectives": {"loss": 2.25}},
        {"params": {"baseline": "lib"}, "status": ok, "objectives": {"loss": 1.0},
         "baseline": "lib"},
        {"params": {"x": 0, "y": 0, "z": 0}, "status": TrialStatus.run_error, "error": "boom"},
    ])  # fmt: skip
    best = api.trials(job_id, db=sqlite_url, top=1)[0]
    assert best.params == {"x": 4, "y": 4, "z": 4}
    shown = said(tunelab("best", str(job_id), "--db", sqlite_url, check=0))
    assert f"best: trial {best.id} loss 2.25 (minimize)" in shown and "x=4 y=4 z=4" in shown
    assert "noise-aware winner: none recorded" in shown

    out = tmp_path / "never"
    proc = tunelab("best", str(job_id), "--out", str(out), "--db", sqlite_url, check=4)
    assert "kind testing-quadratic cannot export its trials" in said(proc)
    assert not out.exists()
    trivial = parse_spec({"name": "t", "kind": "testing-trivial", "workload": {"n": 1}})
    with pytest.raises(ExportUnsupported, match="cannot export") as raised:
        get_kind("testing-trivial").export(trivial, {"i": 0}, out)
    assert isinstance(raised.value, NotImplementedError)
    assert get_kind("pipeline-search").can_export() and not get_kind("testing-trivial").can_export()

    failed = _recorded_job(engine, QUADRATIC, [
        {"params": {"x": 0, "y": 0, "z": 0}, "status": TrialStatus.run_error, "error": "boom"},
    ])  # fmt: skip
    proc = tunelab("best", str(failed), "--out", str(out), "--db", sqlite_url, check=4)
    assert f"job {failed} has no correct trial" in said(proc) and not out.exists()
    assert "no job 99" in said(tunelab("best", "99", "--db", sqlite_url, check=4))
    tunelab("best", str(job_id), "--force", "--db", sqlite_url, check=2)  # --force needs --out


@pytest.mark.slow  # about 8 s: compiles the kernel again with TVM
def test_a_recorded_cpu_trial_exports_without_ray_and_a_file_is_no_directory(
    tmp_path: Path, sqlite_url: str
) -> None:
    """The export rebuilds from the trial's parameters alone: no worker is needed."""
    engine = get_engine(sqlite_url)
    params = {"tile_m": 32, "tile_n": 16, "tile_k": 16, "micro_m": 2, "micro_n": 8,
              "stages": 2, "reg_stages": 1}  # fmt: skip
    job_id = _recorded_job(engine, CPU_SPEC, [
        {"params": params, "status": TrialStatus.ok, "latencies_s": [2e-5, 1e-5, 3e-5]},
    ])  # fmt: skip
    plain = tmp_path / "file"
    plain.write_text("x")
    proc = tunelab("best", str(job_id), "--out", str(plain), "--db", sqlite_url, check=2)
    assert "is not a directory" in said(proc) and plain.read_text() == "x"
    out = tmp_path / "out"
    tunelab("best", str(job_id), "--out", str(out), "--db", sqlite_url, check=0)
    assert {p.name for p in out.iterdir()} == {*LLVM_FILES, "params.json"}
    assert json.loads((out / "params.json").read_text())["latency_s"]["median"] == 2e-5
    _run_exported_kernel(out)


@pytest.mark.slow  # nvcc compiles a tensor-core kernel (about 40 s on 2 cores)
@pytest.mark.skipif(find_nvcc() is None, reason="nvcc is not installed: no CUDA export")
def test_cuda_tensor_core_candidate_exports_a_cubin_and_its_launch(tmp_path: Path) -> None:
    spec = parse_spec({
        "name": "cuda", "kind": "pipeline-search",
        "workload": {"M": 128, "N": 128, "K": 128, "dtype": "float16"},
        "target": {"kind": "cuda", "arch": "sm_80"},
    })  # fmt: skip
    params = {"block_row_warps": 2, "block_col_warps": 2, "warp_row_tiles": 2,
              "warp_col_tiles": 2, "chunk": 2, "stages": 2, "reg_stages": 2,
              "tensor_core": 1}  # fmt: skip
    written = get_kind("pipeline-search").export(spec, params, tmp_path)
    names = {p.name for p in written}
    assert names == {"kernel_tir.py", "kernel.cu", "kernel.cubin", "launch.json", "README.md"}
    assert all(p.parent == tmp_path and p.exists() for p in written)
    assert (tmp_path / "kernel.cubin").read_bytes()[:4] == b"\x7fELF"
    source = (tmp_path / "kernel.cu").read_text()
    launch = json.loads((tmp_path / "launch.json").read_text())
    assert re.search(rf"__global__ void (__launch_bounds__\(\d+\) )?{launch['kernel']}\(", source)
    assert "wmma::mma_sync" in source and "cp.async" in source
    # 64x64 block tiles over 128x128: 2x2 blocks of 2x2 warps of 32 lanes.
    assert launch["grid"] == [2, 2, 1] and launch["block"] == [32, 2, 2]
    assert launch["dynamic_smem_bytes"] == 0 and launch["arch"] == "sm_80"
    assert [(a["name"], a["shape"], a["dtype"]) for a in launch["args"]] == [
        ("A", [128, 128], "float16"), ("B", [128, 128], "float16"), ("C", [128, 128], "float32")
    ]  # fmt: skip
    readme = (tmp_path / "README.md").read_text()
    assert f'get_function("{launch["kernel"]}")' in readme and "cuModuleLoad" in readme
    assert "(2, 2, 1), (32, 2, 2)" in readme
