"""Detection and transformation of load/compute pipelines, on programs old and new.

The analysis runs on hand-written TIR it was not written for (tests/tir_programs.py)
and on every workload's schedules; pipelined programs are compiled and run on the CPU
and checked against NumPy, and CUDA code is generated and compiled with nvcc (no GPU
here: nothing CUDA is run).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm

from tests import tir_programs as programs
from tunelab.platform.kinds import InvalidCandidate, get_kind
from tunelab.platform.spec import parse_spec
from tunelab.testing.context import MemoryContext
from tunelab.workers.pipeline_search.build_cuda import read_bundle
from tunelab.workers.pipeline_search.detection import detect
from tunelab.workers.pipeline_search.nvcc import find_nvcc
from tunelab.workers.pipeline_search.schedules import compile_schedule
from tunelab.workers.pipeline_search.transform import apply_pipelining, pipeline_annotations

KIND = get_kind("pipeline-search")
CPU_P = {"tile_m": 32, "tile_n": 64, "tile_k": 32, "micro_m": 4, "micro_n": 16}
CUDA_P = {"block_row_warps": 2, "block_col_warps": 2, "warp_row_tiles": 2,
          "warp_col_tiles": 2, "chunk": 2}  # fmt: skip


def _run_llvm(func, inputs: list[np.ndarray], outputs: list[tuple]) -> list[np.ndarray]:
    ex = compile_schedule(func, tvm.target.Target({"kind": "llvm"}))
    args = [tvm.runtime.tensor(x) for x in inputs]
    args += [tvm.runtime.tensor(np.full(shape, np.nan, "float32")) for shape in outputs]
    ex["main"](*args)
    return [a.numpy() for a in args[len(inputs) :]]


def test_extra_operand_is_found_and_pipelined_correctly() -> None:
    found = detect(programs.extra_operand)
    assert [(p.buffer, p.source, p.level, p.loop, p.statement) for p in found] == [
        ("A_s", "A", "global->local", "ko", 0),
        ("E_s", "E", "global->local", "ko", 1),
        ("B_s", "B", "global->local", "ko", 2),
    ]
    assert {p.group for p in found} == {0}  # one consumer statement: one sync group
    sch = tvm.s_tir.Schedule(programs.extra_operand)
    records = apply_pipelining(sch, found, lambda p: 3, asynchronous=False)
    loop = sch.get(sch.get_loops(sch.get_sblock("load_a"))[1])
    assert list(loop.annotations["software_pipeline_stage"]) == [0, 0, 0, 2]
    assert [r["stages"] for r in records] == [3, 3, 3]
    rng = np.random.default_rng(1)
    a, e, b = (rng.standard_normal((64, 64)).astype("float32") for _ in range(3))
    (d,) = _run_llvm(sch, [a, e, b], [(64, 64)])
    np.testing.assert_allclose(d, (a + e) @ b, rtol=1e-4, atol=1e-4)


def test_buffer_read_twice_gets_its_own_sync_group() -> None:
    found = {p.buffer: p for p in detect(programs.read_twice)}
    assert set(found) == {"A_s", "B_s"}
    assert found["A_s"].consumers == ["matmul", "rowsum"]
    assert found["A_s"].consumer_statements == (2, 3)
    assert found["B_s"].consumer_statements == (2, 2)
    assert found["A_s"].group != found["B_s"].group
    # Different groups may run different depths: A three stages, B two.
    sch = tvm.s_tir.Schedule(programs.read_twice)
    stages = {"A_s": 3, "B_s": 2}
    apply_pipelining(sch, list(found.values()), lambda p: stages[p.buffer], asynchronous=False)
    loop = sch.get(sch.get_loops(sch.get_sblock("load_a"))[0])
    assert list(loop.annotations["software_pipeline_stage"]) == [0, 1, 2, 2]
    rng = np.random.default_rng(2)
    a, b = (rng.standard_normal((64, 64)).astype("float32") for _ in range(2))
    c, s = _run_llvm(sch, [a, b], [(64, 64), (64,)])
    np.testing.assert_allclose(c, a @ b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s, a.sum(axis=1), rtol=1e-4, atol=1e-4)


def test_sync_group_members_must_share_stage_counts() -> None:
    found = detect(programs.extra_operand)
    sch = tvm.s_tir.Schedule(programs.extra_operand)
    with pytest.raises(ValueError, match="sync group 0"):
        apply_pipelining(sch, found, lambda p: 2 if p.buffer == "A_s" else 3, asynchronous=False)


def test_no_reduction_loop_means_nothing_to_pipeline() -> None:
    assert detect(programs.no_reduction) == []


def test_annotation_lists_follow_the_loop_body() -> None:
    found = detect(programs.extra_operand)
    ann = pipeline_annotations(4, [(p, 4) for p in found], asynchronous=True)
    assert ann["software_pipeline_stage"] == [0, 0, 0, 3]
    assert ann["software_pipeline_order"] == [0, 1, 2, 3]
    assert "software_pipeline_async_stages" not in ann  # local copies cannot be cp.async


def _spec(workload: dict, target: dict | None = None) -> object:
    return parse_spec({"name": "t", "kind": "pipeline-search", "workload": workload,
                       "target": target or {"kind": "llvm"},
                       "measure": {"repeats": 1, "min_repeat_ms": 0}})  # fmt: skip


@pytest.mark.parametrize(
    "workload",
    [
        {"M": 128, "N": 128, "K": 128},
        {"batch": 3, "M": 64, "N": 128, "K": 96},
        {"op": "conv2d", "batch": 1, "H": 14, "W": 14, "C": 32, "K": 64, "pad": 1},
        {"op": "conv2d", "batch": 2, "H": 9, "W": 9, "C": 32, "K": 64, "stride": 2},
    ],
)
@pytest.mark.parametrize("stages", [(1, 1), (3, 1), (1, 4), (4, 2)])
@pytest.mark.slow  # builds, runs and checks 16 real kernels
def test_cpu_pipelines_are_correct_for_every_workload(workload: dict, stages: tuple) -> None:
    spec = _spec(workload)
    p = {**CPU_P, "stages": stages[0], "reg_stages": stages[1]}
    built = KIND.build(spec, p)
    levels = {(r["level"], r["stages"]) for r in built.info["pipelined"]}
    expected = set()
    if stages[0] > 1:
        expected.add(("global->local", stages[0]))
    if stages[1] > 1:
        expected.add(("local->register", stages[1]))
    assert levels == expected
    m = KIND.measure(spec, p, built, MemoryContext())  # WrongResult unless it matches NumPy
    assert m.latencies_s and all(x > 0 for x in m.latencies_s)


needs_nvcc = pytest.mark.skipif(find_nvcc() is None, reason="nvcc is not installed")
CUDA_WORKLOADS = [
    {"M": 1024, "N": 1024, "K": 1024, "dtype": "float16"},
    {"batch": 12, "M": 512, "N": 64, "K": 512, "dtype": "float16"},
    {"op": "conv2d", "batch": 64, "H": 56, "W": 56, "C": 64, "K": 64, "pad": 1,
     "dtype": "float16"},
]  # fmt: skip


def _build_cuda(workload: dict, arch: str, p: dict) -> tuple[object, dict, dict[str, int]]:
    """Build one CUDA candidate; check what every pipelined one must have: a cubin from
    nvcc, cp.async with commit/wait groups, one grid z per batch. Returns the build, its
    bundle and the sizes of the arrays the kernel declares."""
    built = KIND.build(_spec(workload, {"kind": "cuda", "arch": arch}), p)
    bundle = read_bundle(built.artifact)
    src = bundle["source"]
    assert bundle["cubin"][:4] == b"\x7fELF"  # nvcc compiled it for this arch
    assert "cp.async" in src and "cp.async.commit_group" in src and "cp.async.wait_group" in src
    batch = workload.get("batch", 1) if workload.get("op", "gemm") == "gemm" else 1
    assert bundle["grid"][2] == batch
    return built, bundle, {k: int(v) for k, v in re.findall(r"(\w+)_ptr\[(\d+)\]", src)}


@needs_nvcc
@pytest.mark.slow  # nvcc compiles six real kernels
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("workload", CUDA_WORKLOADS)
def test_cuda_two_level_pipeline_codegen_and_nvcc(workload: dict, arch: str) -> None:
    built, bundle, arrays = _build_cuda(workload, arch, {**CUDA_P, "stages": 4, "reg_stages": 2})
    # Block tile 64x64, k-tile 32: four stages make each shared buffer 4x its tile.
    assert arrays["A_shared"] == arrays["B_shared"] == 4 * 64 * 32
    # Register level: 2 stages of a thread's 8 A values and 4 B values.
    assert arrays["A_shared_local"] == 2 * 8 and arrays["B_shared_local"] == 2 * 4
    assert bundle["block"] == [16, 8, 1]  # SIMT: 8 x 4 threads per warp, 2 x 2 warps
    assert {(r["level"], r["stages"], r["async"]) for r in built.info["pipelined"]} == {
        ("global->shared", 4, True), ("shared->register", 2, False)}  # fmt: skip


@needs_nvcc
@pytest.mark.slow  # nvcc compiles two real kernels
def test_cuda_unpipelined_has_no_async_copies_and_large_pipelines_use_dynamic_smem() -> None:
    spec = _spec({"M": 1024, "N": 1024, "K": 1024, "dtype": "float16"},
                 {"kind": "cuda", "arch": "sm_90"})  # fmt: skip
    plain = KIND.build(spec, {**CUDA_P, "stages": 1, "reg_stages": 1})
    assert plain.info["cp_async"] == 0 and plain.info["pipelined"] == []
    big = {**CUDA_P, "warp_row_tiles": 4, "chunk": 4, "stages": 3, "reg_stages": 4}
    built = KIND.build(spec, big)
    bundle = read_bundle(built.artifact)
    assert "extern __shared__" in bundle["source"]  # 72 KB: past the 48 KB static limit
    assert bundle["dynamic_smem_bytes"] == 3 * (128 + 64) * 64 * 2


def test_cuda_configs_over_limits_are_rejected_with_reasons() -> None:
    spec = _spec({"M": 4096, "N": 4096, "K": 4096, "dtype": "float32"},
                 {"kind": "cuda", "arch": "sm_80"})  # fmt: skip
    huge = {"block_row_warps": 4, "block_col_warps": 4, "warp_row_tiles": 4,
            "warp_col_tiles": 2, "chunk": 4, "stages": 6, "reg_stages": 1}  # fmt: skip
    with pytest.raises(InvalidCandidate, match="bytes of shared memory > 166912 on sm_80"):
        KIND.build(spec, huge)
    many = {**huge, "block_row_warps": 8, "block_col_warps": 8, "stages": 1}
    with pytest.raises(InvalidCandidate, match="2048 threads per block > 1024"):
        KIND.build(spec, many)


def test_cuda_space_is_alcops() -> None:
    spec = _spec(
        {"M": 4096, "N": 4096, "K": 4096, "dtype": "float16"}, {"kind": "cuda", "arch": "sm_80"}
    )
    space = KIND.space(spec)
    pipelined = [p for p in space if p["stages"] > 1]
    assert len(pipelined) == 1620  # smem 2-6 x reg 1,2,4 x 3 x 3 x 3 x 2 x 2
    assert len(space) - len(pipelined) == 324  # the same space unpipelined (stages 1)


def test_outer_annotation_is_sized_to_the_body_with_the_inner_pipeline_expanded() -> None:
    from tunelab.workers.pipeline_search.detection import loop_body_size
    from tunelab.workers.pipeline_search.schedules import pipeline, schedule_cpu, schedule_cuda
    from tunelab.workers.pipeline_search.workloads import parse_workload

    wl = parse_workload({"M": 256, "N": 256, "K": 256, "dtype": "float16"})
    p = {**CUDA_P, "stages": 3, "reg_stages": 2}
    sch = schedule_cuda(wl, p)
    pipeline(sch, p, asynchronous=True)
    k0 = sch.get(sch.get_loops(sch.get_sblock("A_shared"))[4])
    assert str(k0.loop_var.name) == "k_0" and loop_body_size(k0) == 3  # copy, copy, k_1
    # ... but k_1's pipeline becomes prologue + loop + epilogue: five statements to stage.
    assert list(k0.annotations["software_pipeline_stage"]) == [0, 0, 2, 2, 2]
    assert list(k0.annotations["software_pipeline_order"]) == [0, 1, 2, 3, 4]
    assert list(k0.annotations["software_pipeline_async_stages"]) == [0]
    # On the CPU schedule k_1 sits under the micro-tile loops: k_0's body keeps 3.
    p = {**CPU_P, "stages": 3, "reg_stages": 2}
    sch = schedule_cpu(parse_workload({"M": 128, "N": 128, "K": 128}), p)
    pipeline(sch, p, asynchronous=False)
    k0 = sch.get(sch.get_loops(sch.get_sblock("A_local"))[1])
    assert list(k0.annotations["software_pipeline_stage"]) == [0, 0, 2]


@needs_nvcc
@pytest.mark.slow  # nvcc compiles six real tensor-core kernels (the first takes a minute)
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("workload", CUDA_WORKLOADS)
def test_tensor_core_pipelines_at_both_levels(workload: dict, arch: str) -> None:
    p = {**CUDA_P, "stages": 3, "reg_stages": 2, "tensor_core": 1}
    built, bundle, arrays = _build_cuda(workload, arch, p)
    assert "wmma::mma_sync" in bundle["source"]
    assert arrays["A_shared"] == arrays["B_shared"] == 3 * 64 * 32  # 3-fold tiles
    # Fragments: 2 register stages x 2 warp tiles of a 16x16 wmma fragment each.
    assert arrays["A_shared_wmma_matrix_a"] == arrays["B_shared_wmma_matrix_b"] == 4
    assert bundle["block"] == [32, 2, 2] and built.info["mma_sync"] > 0
    # The fragment loads are found by the same analysis, as register-level copies.
    assert {(r["buffer"], r["level"], r["stages"]) for r in built.info["pipelined"]} == {
        ("A_shared", "global->shared", 3), ("B_shared", "global->shared", 3),
        ("A_shared_wmma.matrix_a", "shared->register", 2),
        ("B_shared_wmma.matrix_b", "shared->register", 2),
    }  # fmt: skip


def test_tensor_cores_need_float16() -> None:
    spec = _spec({"M": 256, "N": 256, "K": 256}, {"kind": "cuda", "arch": "sm_80"})
    with pytest.raises(InvalidCandidate, match="need float16"):
        KIND.build(spec, {**CUDA_P, "stages": 2, "reg_stages": 1, "tensor_core": 1})
    assert {p["tensor_core"] for p in KIND.space(spec)} == {0}  # fp32 defaults to SIMT
