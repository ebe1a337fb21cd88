"""The `pipeline-search` job kind: search tiling and two-level pipeline stages on TVM.

This module only wires the kind's parts; importing it (as listing kinds and validating
specs do) imports neither TVM nor torch: builds and measurements import them when run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunelab.platform.kinds import Built, EvalContext, JobKind, Measurement, Resources
from tunelab.platform.spec import JobSpec
from tunelab.workers.pipeline_search.space import (
    bytes_needed,
    candidates,
    parameters,
    size_problems,
    why_nothing_fits,
)
from tunelab.workers.pipeline_search.spec import (
    PipelineSpace,
    PipelineWorkload,
    TargetSpec,
    TimingSpec,
)


class PipelineSearch(JobKind):
    """GEMM-shaped tensor programs (GEMM, batched GEMM, conv2d as implicit GEMM) with
    two-level software pipelining, built with TVM for llvm or cuda."""

    name = "pipeline-search"
    workload_model = PipelineWorkload
    space_model = PipelineSpace
    target_model = TargetSpec
    measure_model = TimingSpec
    # What a sweep file keeps of each trial's extra (for replay and the dashboard).
    replay_keys = ("pipelined", "registers", "shared_bytes", "library")

    def resources(self, spec: JobSpec) -> Resources:
        """CPU kernels are timed holding a node alone; CUDA kernels one per GPU, built
        where nvcc is (nodes offering an `nvcc` resource) when the cluster has such."""
        if spec.target.kind == "cuda":
            return Resources(evaluate="gpu", build={"nvcc": 1})
        return Resources(evaluate="node")

    def describe_target(self, spec: JobSpec) -> str:
        return spec.target.label()

    def environment(self) -> dict[str, Any]:
        import os
        from importlib.metadata import PackageNotFoundError, version

        def installed(name: str) -> str | None:
            try:
                return version(name)
            except PackageNotFoundError:
                return None

        from tunelab.workers.pipeline_search.build_llvm import llvm_host_cpu

        return {
            "mcpu": llvm_host_cpu(),  # the LLVM CPU kernels are built for on this node
            "tvm_version": installed("apache-tvm"),
            "tvm_ffi_version": installed("apache-tvm-ffi"),
            "torch_version": installed("torch"),
            "tvm_num_threads": os.environ.get("TVM_NUM_THREADS"),
        }

    def validate_spec(self, spec: JobSpec) -> None:
        allowed = parameters(spec.target.kind)
        wrong = sorted(k for k, v in spec.space.items() if v is not None and k not in allowed)
        if wrong:
            raise ValueError(
                f"space: {', '.join(wrong)} do not apply to {spec.target.kind} targets "
                f"(its parameters: {', '.join(allowed)})"
            )
        wl = self.workload_model.model_validate(spec.workload)
        if problem := size_problems(wl):
            raise ValueError(problem)
        if not self.space(spec):
            raise ValueError(why_nothing_fits(spec, wl))

    def resolve_spec(self, spec: JobSpec, on_worker: Callable[[Callable[[], Any]], Any]) -> JobSpec:
        """Build for the CPU the measurements run on, not for whichever node builds, and
        carry that node's calibration (calibrate.py: clock, FLOP/cycle, caches, bandwidth,
        the threads its measurements use) in the target for the analytical model: measured
        there once per environment fingerprint and kept as kind data when `on_worker` is
        the driver's `WorkerAccess`. Refuse a workload that fits no memory of the
        measuring node before anything is built."""
        from tunelab.workers.pipeline_search.calibrate import cache_key, cached, watched

        wl = self.workload_model.model_validate(spec.workload)
        node = on_worker(measuring_node)
        need, have = bytes_needed(wl), node["memory"]
        if need > 0.8 * have:
            raise ValueError(
                f"workload {wl.describe()} needs {need / 2**30:.1f} GiB to measure but the "
                f"measuring node has {have / 2**30:.1f} GiB: shrink the workload"
            )
        target = spec.target
        if target.kind != "llvm" or (target.mcpu is not None and target.machine is not None):
            return spec
        update: dict[str, Any] = {"mcpu": target.mcpu or node["mcpu"]}
        if target.machine is None:
            m = spec.measure  # a calibration measured on a busy node is not kept
            calibrate = watched(m.quiet_wait_s, m.busy_per_core)
            update["machine"] = cached(
                cache_key(node["fingerprint"]), lambda: on_worker(calibrate),
                getattr(on_worker, "kind_data", None), getattr(on_worker, "put_kind_data", None),
            )  # fmt: skip
        return spec.model_copy(update={"target": target.model_copy(update=update)})

    def describe(self, workload: dict[str, Any]) -> str:
        return self.workload_model.model_validate(workload).describe()

    def space(self, spec: JobSpec) -> list[dict[str, Any]]:
        return candidates(spec, self.workload_model.model_validate(spec.workload))

    def suites(self) -> dict[str, list[dict[str, Any]]]:
        from tunelab.workers.pipeline_search.workloads import SUITES

        return SUITES

    def model_features(self, spec: JobSpec, params: dict[str, Any]) -> dict[str, float] | None:
        from tunelab.workers.pipeline_search.perf_model import features

        wl = self.workload_model.model_validate(spec.workload)
        return features(
            wl.gemm_shape(), params, wl.dtype, spec.target, threads=spec.measure.threads,
            im2col=wl.op == "conv2d",
        )  # fmt: skip

    def baselines(self, spec: JobSpec) -> list[dict[str, Any]]:
        """cuBLAS through torch.matmul on a GPU. NumPy's BLAS on the CPU, in a process of
        its own (`library.py`), at the candidates' thread count (`numpy`) and, unless the
        spec sets that to one, at one thread (`numpy@1t`; decided from the spec alone, so
        the same before and after the measuring node is known). conv2d has no GEMM library
        baseline here (its im2col would be measured, not the library's conv)."""
        wl = self.workload_model.model_validate(spec.workload)
        if spec.measure.build_only or wl.op != "gemm":
            return []
        if spec.target.kind == "cuda":
            return [{"baseline": "cublas"}]
        one = [] if spec.measure.threads == 1 else [{"baseline": "numpy@1t", "threads": 1}]
        return [{"baseline": "numpy"}, *one]

    # -- build (CPU task) ---------------------------------------------------------------

    def build(self, spec: JobSpec, params: dict[str, Any]) -> Built:
        if "baseline" in params:
            return Built(b"")
        wl = self.workload_model.model_validate(spec.workload)
        if spec.target.kind == "cuda":
            from tunelab.workers.pipeline_search.build_cuda import build_cuda

            return build_cuda(spec, wl, params)
        from tunelab.workers.pipeline_search.build_llvm import build_llvm

        return build_llvm(spec, wl, params)

    # -- export (`tunelab best --out`) ------------------------------------------------

    def export(self, spec: JobSpec, params: dict[str, Any], out_dir: Path) -> list[Path]:
        """Rebuild a candidate as its trial was built and write it out deployably: TIR,
        generated source, the compiled library or cubin, launch.json and a README."""
        from tunelab.workers.pipeline_search.export import export_candidate

        return export_candidate(spec, params, out_dir)

    # -- measure (measurement worker) ---------------------------------------------------

    def measure(
        self, spec: JobSpec, params: dict[str, Any], built: Built, ctx: EvalContext
    ) -> Measurement:
        cache = ctx.cache
        if spec.target.kind == "cuda":
            from tunelab.workers.pipeline_search.gpu import measure_cuda

            return measure_cuda(spec, params, built, cache)
        from tunelab.workers.pipeline_search.measure import measure_llvm, measure_numpy

        if "baseline" in params:
            return measure_numpy(spec, params, cache)
        return measure_llvm(spec, built, cache)


def measuring_node() -> dict[str, Any]:
    """Run on a measuring worker: its memory, its LLVM CPU, and its environment's
    fingerprint as the worker records it with each trial (same kind details, same
    thread settings)."""
    import os

    import psutil

    from tunelab.workers.tasks import worker_environment

    n = os.environ.get("TVM_NUM_THREADS")  # what the worker was started with
    env = worker_environment(PipelineSearch(), int(n) if n else None)
    return {
        "memory": psutil.virtual_memory().total,
        "mcpu": env["details"]["mcpu"],
        "fingerprint": env["fingerprint"],
    }
