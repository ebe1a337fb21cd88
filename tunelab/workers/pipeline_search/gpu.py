"""GPU measurement from a build artifact alone: no TVM, no compiler on the GPU node.

The artifact (see `build_cuda.build_cuda`) holds the cubin, kernel name, launch
configuration and argument description. The kernel is loaded with the CUDA driver API
(`cuda-bindings`), its arguments are torch tensors, and it is timed with CUDA events:
`warmup` untimed launches, then `repeats` timed ones, with the L2 cache flushed before
each (a write over a buffer twice the L2 size) so every repeat reads its operands from
DRAM, as in a real model. The output is checked against torch on the same device
before any timing: a wrong kernel is recorded `wrong_result` and never ranked.
`{"baseline": "cublas"}` times torch.matmul (cuBLAS) the same way.

Needs the `gpu` extra (`pip install 'tunelab[gpu]'`) and a GPU; nothing here is
exercised in CI, which has neither.
"""

from __future__ import annotations

from typing import Any

from tunelab.platform.kinds import Built, Measurement, RunError
from tunelab.platform.spec import JobSpec


def _check(result: Any, name: str) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RunError(f"{name} failed: CUDA error {int(err)}")
    return rest[0] if len(rest) == 1 else rest


def _context(cache: dict[str, Any]) -> Any:
    """torch owns the primary context; the driver API uses it through cuda-bindings."""
    if "cuda" not in cache:
        import torch

        try:
            from cuda.bindings import driver
        except ImportError:  # older cuda-python layout
            from cuda import cuda as driver  # type: ignore[no-redef]
        if not torch.cuda.is_available():
            raise RunError("no CUDA device is visible to this measurement worker")
        torch.cuda.init()
        _check(driver.cuInit(0), "cuInit")
        l2 = torch.cuda.get_device_properties(0).L2_cache_size or 64 * 2**20
        cache["cuda"] = {
            "driver": driver,
            "flush": torch.empty(2 * l2 // 4, dtype=torch.float32, device="cuda"),
            "modules": {},
        }
    return cache["cuda"]


def _inputs(spec: JobSpec, cache: dict[str, Any]) -> tuple[list[Any], Any]:
    """Seeded inputs on the GPU and torch's result (float32 accumulation), once per worker."""
    import torch

    from tunelab.workers.pipeline_search.reference import reference_data
    from tunelab.workers.pipeline_search.workloads import Conv2dWorkload, parse_workload

    key = ("gpu-ref", repr(sorted(spec.workload.items())))
    if key not in cache:
        wl = parse_workload(spec.workload)
        host, _ = reference_data(spec.workload, cache)
        inputs = [torch.from_numpy(x).cuda() for x in host]
        if isinstance(wl, Conv2dWorkload):
            x = inputs[0].permute(0, 3, 1, 2).float()  # NHWC -> NCHW
            w = inputs[1].permute(3, 2, 0, 1).float()  # RSCK -> KCRS
            ref = torch.nn.functional.conv2d(x, w, stride=wl.stride, padding=wl.pad)
            ref = ref.permute(0, 2, 3, 1).reshape(-1, wl.K)
        else:
            ref = torch.matmul(inputs[0].float(), inputs[1].float())
        cache[key] = (inputs, ref)
    return cache[key]


def _time(fn: Any, spec: JobSpec, flush: Any) -> list[float]:
    import torch

    m = spec.measure
    for _ in range(m.warmup):
        fn()
    out = []
    for _ in range(m.repeats):
        flush.zero_()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(m.number):
            fn()
        stop.record()
        stop.synchronize()
        out.append(start.elapsed_time(stop) / 1000 / m.number)
    return out


def measure_cuda(
    spec: JobSpec, params: dict[str, Any], built: Built, cache: dict[str, Any]
) -> Measurement:
    """Check, then time one candidate (or the cuBLAS baseline) on this worker's GPU."""
    import torch

    from tunelab.workers.pipeline_search.reference import check_output
    from tunelab.workers.pipeline_search.workloads import parse_workload

    ctx = _context(cache)
    inputs, ref = _inputs(spec, cache)
    dtype = parse_workload(spec.workload).dtype
    if "baseline" in params:
        out = torch.empty_like(ref, dtype=inputs[0].dtype)

        def run() -> None:
            torch.matmul(inputs[0], inputs[1], out=out)

        run()
        torch.cuda.synchronize()
        if spec.measure.check:
            check_output(out.float().cpu().numpy(), ref.double().cpu().numpy(), dtype)
        info = {"library": f"torch {torch.__version__} cuBLAS",
                "device": torch.cuda.get_device_name()}  # fmt: skip
        return Measurement(_time(run, spec, ctx["flush"]), info)

    driver = ctx["driver"]
    from tunelab.workers.pipeline_search.build_cuda import read_bundle

    bundle = read_bundle(built.artifact)
    module = _check(driver.cuModuleLoadData(bundle["cubin"]), "cuModuleLoadData")
    try:
        kernel = _check(
            driver.cuModuleGetFunction(module, bundle["kernel"].encode()), "cuModuleGetFunction"
        )
        smem = int(bundle["dynamic_smem_bytes"])
        if smem > 48 * 1024:
            attr = driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
            _check(driver.cuFuncSetAttribute(kernel, attr, smem), "cuFuncSetAttribute")
        out = torch.full(ref.shape, float("nan"), dtype=torch.float32, device="cuda")
        # TVM's kernels take their buffers in argument order as raw device pointers.
        import ctypes

        pointers = [ctypes.c_void_p(t.data_ptr()) for t in (*inputs, out)]
        arg_array = (ctypes.c_void_p * len(pointers))(*[ctypes.addressof(p) for p in pointers])
        stream = driver.CUstream(torch.cuda.current_stream().cuda_stream)
        (gx, gy, gz), (bx, by, bz) = bundle["grid"], bundle["block"]

        def run() -> None:
            _check(
                driver.cuLaunchKernel(
                    kernel, gx, gy, gz, bx, by, bz, smem, stream, ctypes.addressof(arg_array), 0
                ),
                "cuLaunchKernel",
            )

        run()
        torch.cuda.synchronize()
        if spec.measure.check:
            check_output(out.cpu().numpy(), ref.double().cpu().numpy(), dtype)
        latencies = _time(run, spec, ctx["flush"])
    finally:
        driver.cuModuleUnload(module)
    return Measurement(latencies, {"device": torch.cuda.get_device_name()})
