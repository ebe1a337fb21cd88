"""The GPU check: `make gpu-check`. Runs the prebuilt kernels of bench/gpu_artifacts.

ALCOP-pipelined kernels built here by tunelab (`make gpu-artifacts`, bench/gpu_build.py)
against the same tiles unpipelined and against cuBLAS, for a few BERT dense GEMMs, on a
GPU machine that has neither tunelab nor TVM nor a compiler: this file imports only the
standard library, torch and cuda-python (`cuda.bindings`) or CuPy. For each artifact it
loads the cubin built for the device (else the PTX, JIT-compiled by the driver), launches
it with its manifest's grid, block and dynamic shared memory on torch tensors, and checks
the output against torch.matmul of the same inputs in float32 (TF32 off). Then it times
the correct kernels and cuBLAS (torch.matmul in the kernel's input dtype) with CUDA
events, round-robin over several rounds, each sample at least --min-ms of back-to-back
launches replayed from a CUDA graph (so Python's launch overhead is not timed), and
reports medians, spreads, TFLOP/s and the ratios. A kernel with a wrong
result is reported FAILED and never timed or counted.

    python3 bench/gpu_check.py [--quick] [--force-ptx] [--no-graphs] [--only NAME_PART]
                               [--backend auto|cuda-python|cupy]

Writes bench/results/pipelining_gpu_<device>.txt (and .json, every sample) and prints
the report. Exit codes: 0 all kernels correct, 1 a kernel was wrong or failed to load or
launch, 2 no GPU, driver, torch or driver bindings, 3 artifacts missing or unreadable.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE / "gpu_artifacts"
RESULTS = HERE / "results"
# Largest error allowed, relative to the largest |reference| value: both kernels
# accumulate in float32 as the reference does, so only the summation order differs.
TOLERANCE = {"float16": 1e-3, "float32": 1e-4}
STATIC_SMEM_LIMIT = 48 * 1024
DEVICE = "cuda"  # where tensors live (the tests run the whole check on the CPU with fakes)


class NoGpu(Exception):
    """No usable GPU, driver, torch or bindings: exit code 2."""


class LaunchError(Exception):
    """A kernel could not be loaded or launched (a CUDA error, not a wrong result)."""


# --- artifacts -------------------------------------------------------------------------


def load_manifests(folder: Path) -> list[dict[str, Any]]:
    """The manifests listed in folder/index.json, in its order."""
    index = json.loads((folder / "index.json").read_text())
    return [json.loads((folder / f"{name}.json").read_text()) for name in index["artifacts"]]


def pick_binary(
    manifest: dict[str, Any], cc: tuple[int, int], force_ptx: bool = False
) -> tuple[str, str]:
    """(what, file) to load on a device of compute capability `cc`: the cubin for exactly
    that sm, else one for the same major and a lower minor (cubins run there), else the
    PTX (JIT-compiled by the driver; needs cc >= the PTX's target)."""
    cubins = manifest["files"]["cubin"]
    if not force_ptx:
        exact = f"sm_{cc[0]}{cc[1]}"
        if exact in cubins:
            return f"{exact} cubin", cubins[exact]
        same_major = sorted(
            (a for a in cubins if re.fullmatch(rf"sm_{cc[0]}\d", a) and int(a[-1]) < cc[1]),
            reverse=True,
        )
        if same_major:
            return f"{same_major[0]} cubin", cubins[same_major[0]]
    arch, fname = next(iter(manifest["files"]["ptx"].items()))
    return f"{arch} PTX (JIT)", fname


def shape_label(m: dict[str, Any]) -> str:
    w = m["workload"]
    return f"{w['M']}x{w['N']}x{w['K']}"


# --- statistics and report -------------------------------------------------------------


def summarize(samples: list[float]) -> dict[str, float]:
    """Median, min, max and quartiles of per-launch times (ms)."""
    s = sorted(samples)
    q1, _, q3 = statistics.quantiles(s, n=4, method="inclusive") if len(s) > 1 else (s[0],) * 3
    return {
        "median": statistics.median(s),
        "min": s[0],
        "max": s[-1],
        "q1": q1,
        "q3": q3,
        "n": len(s),
    }


def paired_ratio(num: list[float], den: list[float]) -> dict[str, float]:
    """num/den per round (the samples of one round were taken side by side): median,
    min and max over rounds."""
    ratios = sorted(a / b for a, b in zip(num, den, strict=False) if b > 0)
    if not ratios:
        return {"median": math.nan, "min": math.nan, "max": math.nan}
    return {"median": statistics.median(ratios), "min": ratios[0], "max": ratios[-1]}


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def geomean(values: list[float]) -> float:
    good = [v for v in values if v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, good)) / len(good)) if good else math.nan


# --- device access -----------------------------------------------------------------------


def import_torch() -> Any:
    try:
        import torch
    except Exception as exc:  # ImportError, or a broken CUDA build
        raise NoGpu(f"torch cannot be imported ({type(exc).__name__}: {exc})") from None
    try:
        available = torch.cuda.is_available()
    except Exception as exc:
        raise NoGpu(f"torch cannot reach the CUDA driver ({exc})") from None
    if not available:
        why = "torch is a CPU-only build" if torch.version.cuda is None else "no CUDA device"
        raise NoGpu(f"{why}: torch {torch.__version__} sees no GPU")
    return torch


class DriverBackend:
    """cuda-python's driver API (cuda.bindings.driver) on torch's primary context."""

    name = "cuda-python"

    def __init__(self, torch: Any) -> None:
        try:
            from cuda.bindings import driver
        except ImportError:
            try:
                from cuda import cuda as driver  # type: ignore[no-redef]  # cuda-python < 12.6
            except ImportError:
                raise NoGpu("cuda-python (cuda.bindings) is not installed") from None
        self.torch, self.driver = torch, driver
        self._check(driver.cuInit(0), "cuInit")
        torch.zeros(1, device="cuda")  # torch creates and makes current the primary context
        ctx = self._check(driver.cuCtxGetCurrent(), "cuCtxGetCurrent")
        try:
            no_context = ctx is None or int(ctx) == 0
        except TypeError:  # a handle type without __int__: torch made one current anyway
            no_context = False
        if no_context:
            dev = self._check(driver.cuDeviceGet(torch.cuda.current_device()), "cuDeviceGet")
            ctx = self._check(driver.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
            self._check(driver.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
        self.version = getattr(sys.modules.get("cuda.bindings"), "__version__", "?")

    def _check(self, result: Any, what: str) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            _, name = self.driver.cuGetErrorName(err)
            raise LaunchError(f"{what}: {name.decode() if isinstance(name, bytes) else err}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def driver_version(self) -> int:
        return int(self._check(self.driver.cuDriverGetVersion(), "cuDriverGetVersion"))

    def load(self, data: bytes, is_ptx: bool) -> Any:
        if is_ptx and not data.endswith(b"\0"):
            data += b"\0"
        return self._check(self.driver.cuModuleLoadData(data), "cuModuleLoadData")

    def kernel(self, module: Any, name: str, dyn_smem: int) -> Any:
        get = self.driver.cuModuleGetFunction
        fn = self._check(get(module, name.encode()), "cuModuleGetFunction")
        if dyn_smem > STATIC_SMEM_LIMIT:
            attr = self.driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
            self._check(self.driver.cuFuncSetAttribute(fn, attr, dyn_smem), "cuFuncSetAttribute")
        return fn

    def launcher(
        self, fn: Any, grid: list[int], block: list[int], dyn_smem: int, tensors: list[Any]
    ) -> Any:
        """A no-argument function launching `fn` on torch's current stream (at the time
        of the call: a CUDA graph capture has its own): TVM's kernels take their buffers
        as raw device pointers, in argument order."""
        pointers = [ctypes.c_void_p(t.data_ptr()) for t in tensors]
        params = (ctypes.c_void_p * len(pointers))(*[ctypes.addressof(p) for p in pointers])
        launch, check, stream = self.driver.cuLaunchKernel, self._check, self.driver.CUstream
        current = self.torch.cuda.current_stream
        head, tail = (fn, *grid, *block, dyn_smem), (ctypes.addressof(params), 0)

        def run() -> None:
            check(launch(*head, stream(current().cuda_stream), *tail), "cuLaunchKernel")

        run.keep = (pointers, params)  # type: ignore[attr-defined]  # alive while run is
        return run


class CupyBackend:
    """CuPy's RawModule, launched on torch's current stream."""

    name = "cupy"

    def __init__(self, torch: Any) -> None:
        try:
            import cupy
        except ImportError:
            raise NoGpu("CuPy is not installed") from None
        self.torch, self.cupy = torch, cupy
        self.version = cupy.__version__

    def driver_version(self) -> int:
        return int(self.cupy.cuda.runtime.driverGetVersion())

    def load(self, data: bytes, is_ptx: bool) -> Any:
        import tempfile

        suffix = ".ptx" if is_ptx else ".cubin"
        with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as f:
            f.write(data)
        try:
            return self.cupy.RawModule(path=f.name)
        finally:
            os.unlink(f.name)

    def kernel(self, module: Any, name: str, dyn_smem: int) -> Any:
        fn = module.get_function(name)
        if dyn_smem > STATIC_SMEM_LIMIT:
            fn.max_dynamic_shared_size_bytes = dyn_smem
        return fn

    def launcher(
        self, fn: Any, grid: list[int], block: list[int], dyn_smem: int, tensors: list[Any]
    ) -> Any:
        arrays = tuple(self.cupy.asarray(t) for t in tensors)  # zero-copy views
        external, current = self.cupy.cuda.ExternalStream, self.torch.cuda.current_stream

        def run() -> None:
            stream = external(current().cuda_stream)
            fn(tuple(grid), tuple(block), arrays, shared_mem=dyn_smem, stream=stream)

        return run


BACKENDS = {"cuda-python": DriverBackend, "cupy": CupyBackend}


def open_backends(torch: Any, choice: str) -> list[Any]:
    """The backends to try in order (`auto`: cuda-python, then CuPy)."""
    names = list(BACKENDS) if choice == "auto" else [choice]
    out, why = [], []
    for name in names:
        try:
            out.append(BACKENDS[name](torch))
        except Exception as exc:  # not installed, or not the API this file expects
            why.append(f"{name}: {exc if isinstance(exc, NoGpu) else repr(exc)}")
    if not out:
        raise NoGpu("no way to load a cubin: " + "; ".join(why))
    return out


def context_alive(torch: Any) -> bool:
    try:
        torch.cuda.synchronize()
        return bool(torch.ones(1, device=DEVICE).sum().item() == 1)
    except Exception:
        return False


def nvidia_smi() -> dict[str, str]:
    """Driver version, clocks, temperature and power as nvidia-smi reports them ({} if
    it cannot be run)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    fields = [
        "driver_version",
        "clocks.sm",
        "clocks.max.sm",
        "clocks.mem",
        "clocks.max.mem",
        "temperature.gpu",
        "power.draw",
        "pstate",
    ]
    try:
        out = subprocess.run(
            [
                exe,
                f"--query-gpu={','.join(fields)}",
                "--format=csv,noheader",
                "-i",
                os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0],
            ],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    first = out.stdout.strip().splitlines()[:1]
    values = [v.strip() for v in first[0].split(",")] if first else []
    return dict(zip(fields, values, strict=False)) if len(values) == len(fields) else {}


def clocks_text(smi: dict[str, str]) -> str:
    if not smi:
        return "not readable (no nvidia-smi)"
    return (
        f"SM {smi['clocks.sm']} (max {smi['clocks.max.sm']}), memory {smi['clocks.mem']} "
        f"(max {smi['clocks.max.mem']}), {smi['temperature.gpu']} C, {smi['power.draw']}, "
        f"{smi['pstate']}"
    )


# --- the check -------------------------------------------------------------------------


class Kernel:
    """One artifact on the device: its launch, inputs, output and correctness."""

    def __init__(self, manifest: dict[str, Any]) -> None:
        self.m = manifest
        self.name: str = manifest["name"]
        self.status = "not run"  # ok | FAILED (wrong result) | FAILED (load/launch)
        self.detail = ""
        self.binary = ""
        self.backend = ""
        self.run: Any = None
        self.module: Any = None  # kept loaded while the kernel is used
        self.tensors: dict[str, Any] = {}


def make_inputs(torch: Any, manifest: dict[str, Any], seed: int) -> dict[str, Any]:
    """Random inputs (by the manifest's argument shapes and dtypes), a NaN-filled output
    and the float32 reference, all on the GPU."""
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    tensors = {}
    for arg in manifest["args"]:
        dtype = getattr(torch, arg["dtype"])
        shape = tuple(arg["shape"])
        if arg["role"] == "output":
            t = torch.full(shape, float("nan"), dtype=dtype, device=DEVICE)
        else:
            t = torch.randn(shape, generator=gen, device=DEVICE, dtype=torch.float32).to(dtype)
        expected = tuple(arg["strides"])
        if t.stride() != expected:
            raise LaunchError(f"{arg['name']}: strides {t.stride()} != manifest {expected}")
        tensors[arg["name"]] = t
    a, b = (tensors[arg["name"]] for arg in manifest["args"] if arg["role"] == "input")
    tensors["__ref__"] = torch.matmul(a.float(), b.float())
    return tensors


def check_kernel(
    torch: Any,
    kernel: Kernel,
    backends: list[Any],
    folder: Path,
    cc: tuple[int, int],
    force_ptx: bool,
    seed: int,
) -> None:
    """Load, launch once and compare with the reference; sets kernel.status/run."""
    m = kernel.m
    what, fname = pick_binary(m, cc, force_ptx)
    kernel.binary = what
    data = (folder / fname).read_bytes()
    tensors = make_inputs(torch, m, seed)
    errors = []
    for backend in backends:
        try:
            module = backend.load(data, is_ptx=fname.endswith(".ptx"))
            runs = []
            for launch in m["kernels"]:
                smem = int(launch["dynamic_smem_bytes"])
                fn = backend.kernel(module, launch["name"], smem)
                args = [tensors[a] for a in launch["args"]]
                runs.append(backend.launcher(fn, launch["grid"], launch["block"], smem, args))
            for r in runs:  # the first launch, inside the try: an API mismatch shows here
                r()
        except LaunchError as exc:  # a CUDA error code: another binding would get it too
            kernel.status, kernel.detail = "FAILED (load/launch)", f"{backend.name}: {exc}"
            return
        except Exception as exc:  # the binding is not what we expect: try the next one
            errors.append(f"{backend.name}: {type(exc).__name__}: {exc}")
            continue
        kernel.backend, kernel.module = backend.name, module
        break
    else:
        kernel.status, kernel.detail = "FAILED (load/launch)", "; ".join(errors)
        return
    try:
        torch.cuda.synchronize()
    except Exception as exc:  # an asynchronous fault (illegal address...)
        kernel.status, kernel.detail = "FAILED (load/launch)", f"{type(exc).__name__}: {exc}"
        return

    def run(runs: list[Any] = runs) -> None:
        for r in runs:
            r()

    out = next(tensors[a["name"]] for a in m["args"] if a["role"] == "output")
    ref = tensors["__ref__"]
    finite = bool(torch.isfinite(out).all().item())
    scale = float(ref.abs().max().item()) or 1.0
    err = float((out.float() - ref).abs().max().item()) / scale if finite else math.inf
    tol = TOLERANCE[m["workload"]["dtype"]]
    kernel.detail = f"max |err| / max |ref| = {err:.1e} (tolerance {tol:.0e})"
    if not finite:
        bad = int((~torch.isfinite(out)).sum().item())
        kernel.detail = f"{bad} outputs not finite (unwritten?)"
    if finite and err <= tol:
        kernel.status, kernel.run, kernel.tensors = "ok", run, tensors
    else:
        kernel.status = "FAILED (wrong result)"


def cublas_runner(torch: Any, kernel: Kernel) -> Any:
    a, b = (kernel.tensors[arg["name"]] for arg in kernel.m["args"] if arg["role"] == "input")
    out = torch.empty((a.shape[0], b.shape[1]), dtype=a.dtype, device=DEVICE)

    def run() -> None:
        torch.matmul(a, b, out=out)

    return run


def capture(torch: Any, run: Any, n: int) -> Any:
    """A function replaying `n` back-to-back calls of `run` as one CUDA graph: the GPU
    then runs them with no launch overhead of Python or torch in between."""
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up off the default stream (cuBLAS workspaces)
        run()
    torch.cuda.current_stream().wait_stream(side)
    with torch.cuda.graph(graph):
        for _ in range(n):
            run()
    return graph.replay  # holds the graph


def _elapsed_ms(torch: Any, fn: Any) -> float:
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop)


def _repeat(run: Any, n: int) -> Any:
    def batch() -> None:
        for _ in range(n):
            run()

    return batch


def time_round_robin(
    torch: Any,
    runs: dict[str, Any],
    rounds: int,
    min_ms: float,
    flush: Any,
    deadline: float,
    graphs: bool = True,
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Per-launch ms of each run, `rounds` samples each, taken round-robin (the order
    rotating each round); each sample is >= min_ms of back-to-back launches, replayed
    from a CUDA graph (else launched one by one: the mode of each run is returned too),
    with the L2 flushed before it. Stops early (>= 3 rounds kept) past `deadline`."""
    batches, modes = {}, {}
    for name, run in runs.items():  # warm up, then size each sample
        for _ in range(3):
            run()
        torch.cuda.synchronize()
        if graphs:
            try:
                per = max(_elapsed_ms(torch, capture(torch, run, 20)) / 20, 1e-4)
                reps = max(2, min(20_000, math.ceil(min_ms / per)))
                batches[name], modes[name] = (capture(torch, run, reps), reps), "graph"
            except Exception as exc:  # timed launch by launch instead
                modes[name] = f"eager ({type(exc).__name__}: {exc})"[:200]
                torch.cuda.synchronize()
        if name not in batches:
            per = max(_elapsed_ms(torch, _repeat(run, 5)) / 5, 1e-4)
            reps = max(2, min(100_000, math.ceil(min_ms / per)))
            batches[name] = (_repeat(run, reps), reps)
            modes.setdefault(name, "eager")
    samples: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        if r >= 3 and time.monotonic() > deadline:
            break
        order = names[r % len(names) :] + names[: r % len(names)]
        events = []
        for name in order:
            flush.zero_()
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            batch, reps = batches[name]
            start.record()
            batch()
            stop.record()
            events.append((name, start, stop, reps))
        torch.cuda.synchronize()
        for name, start, stop, reps in events:
            samples[name].append(start.elapsed_time(stop) / reps)
    return samples, modes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=ARTIFACTS)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="3 rounds of >= 5 ms samples")
    parser.add_argument("--rounds", type=int, default=None, help="default 7 (--quick 3)")
    parser.add_argument("--min-ms", type=float, default=None, help="default 25 (--quick 5)")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=150.0,
        help="stop adding rounds (keeping >= 3) past this many seconds",
    )
    parser.add_argument(
        "--no-graphs", action="store_true", help="time launches one by one, not CUDA graphs"
    )
    parser.add_argument("--force-ptx", action="store_true", help="load PTX even if a cubin fits")
    parser.add_argument("--backend", choices=["auto", *BACKENDS], default="auto")
    parser.add_argument("--only", default="", help="only artifacts whose name has this")
    parser.add_argument("--seed", type=int, default=0)
    # After a kernel broke the CUDA context the check starts again without it (NAME=REASON).
    parser.add_argument("--skip", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.min_ms = args.min_ms or (5.0 if args.quick else 25.0)
    return args


def main(argv: list[str] | None = None) -> int:
    t0 = time.monotonic()
    args = parse_args(argv)
    try:
        torch = import_torch()
        backends = open_backends(torch, args.backend)
    except NoGpu as exc:
        print(
            f"gpu_check: no GPU to run on: {exc}.\n"
            "Run it on a machine with an NVIDIA GPU, its driver, a CUDA build of torch and "
            "cuda-python or CuPy (make gpu-check there).",
            file=sys.stderr,
        )
        return 2
    try:
        manifests = [m for m in load_manifests(args.artifacts) if args.only in m["name"]]
    except (OSError, ValueError, KeyError) as exc:
        print(
            f"gpu_check: cannot read the artifacts in {args.artifacts} ({exc}); build them "
            "with `make gpu-artifacts` where tunelab is installed.",
            file=sys.stderr,
        )
        return 3
    torch.backends.cuda.matmul.allow_tf32 = False  # cuBLAS fp32 is fp32, as the reference
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False  # fp32 sums
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(dev)
    cc = torch.cuda.get_device_capability(dev)
    skipped = dict(s.split("=", 1) for s in args.skip)

    kernels = [Kernel(m) for m in manifests]
    print(f"checking {len(kernels)} kernels on {props.name} (sm_{cc[0]}{cc[1]})", flush=True)
    for k in kernels:
        if k.name in skipped:
            k.status, k.detail = "FAILED (load/launch)", skipped[k.name]
            continue
        check_kernel(torch, k, backends, args.artifacts, cc, args.force_ptx, args.seed)
        if k.backend and k.backend != backends[0].name:  # the one that worked goes first
            backends.sort(key=lambda b: b.name != k.backend)
        print(
            f"  {k.name:<34} {k.status:<22} {k.binary} via {k.backend or '-'}: {k.detail}",
            flush=True,
        )
        if k.status.startswith("FAILED") and not context_alive(torch):
            # A kernel that faults poisons the CUDA context for the whole process: start
            # again without it (its failure carried along), so the others are still checked.
            reason = f"broke the CUDA context: {k.detail}".replace("\n", " ")[:300]
            print(f"  {k.name} broke the CUDA context; restarting without it", flush=True)
            sys.stdout.flush()
            os.execv(
                sys.executable,
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    *(argv if argv is not None else sys.argv[1:]),
                    "--skip",
                    f"{k.name}={reason}",
                ],
            )

    smi_before = nvidia_smi()
    flush = torch.empty(
        max(2 * (getattr(props, "L2_cache_size", 0) or 64 * 2**20), 2**20) // 4,
        dtype=torch.float32,
        device=DEVICE,
    )
    deadline = t0 + args.max_seconds
    groups: dict[str, list[Kernel]] = {}
    for k in kernels:
        groups.setdefault(shape_label(k.m), []).append(k)
    results: dict[str, dict[str, list[float]]] = {}
    timing_errors: dict[str, str] = {}
    modes: dict[str, str] = {}
    for label, group in groups.items():
        runs: dict[str, Any] = {}
        for kind in ("tc", "simt"):
            ok = [k for k in group if k.m["kind"] == kind and k.status == "ok"]
            runs.update({k.name: k.run for k in ok})
            if ok:
                runs[f"cublas_{kind}_{label}"] = cublas_runner(torch, ok[0])
        if not runs:
            continue
        print(f"timing {label}: {len(runs)} variants x {args.rounds} rounds", flush=True)
        try:
            results[label], mode = time_round_robin(
                torch, runs, args.rounds, args.min_ms, flush, deadline, not args.no_graphs
            )
            modes.update(mode)
        except Exception as exc:  # reported; the other shapes are still timed
            timing_errors[label] = f"{type(exc).__name__}: {exc}"
            print(f"  timing {label} failed: {timing_errors[label]}", flush=True)
            if not context_alive(torch):
                break
    smi_after = nvidia_smi()

    info = {
        "device": props.name,
        "compute_capability": f"sm_{cc[0]}{cc[1]}",
        "sms": props.multi_processor_count,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "l2_mib": round((getattr(props, "L2_cache_size", 0) or 0) / 2**20, 1),
        "driver": smi_before.get("driver_version", "?"),
        "driver_cuda": _cuda_version(backends[0].driver_version()),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "backend": ", ".join(f"{b.name} {b.version}" for b in backends),
        "python": platform.python_version(),
        "clocks_before": smi_before,
        "clocks_after": smi_after,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / f"pipelining_gpu_{slug(props.name)}.txt"
    raw = {
        "info": info,
        "args": {k: str(v) for k, v in vars(args).items()},
        "kernels": {
            k.name: {"status": k.status, "detail": k.detail, "binary": k.binary,
                     "backend": k.backend, "params": k.m["params"]}
            for k in kernels
        },
        "samples_ms": results,
        "timing_modes": modes,
        "timing_errors": timing_errors,
    }  # fmt: skip
    path.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")  # first: it survives
    text = "\n".join(report(kernels, results, info, args, timing_errors, modes)) + "\n"
    print(text)
    path.write_text(text)
    print(f"written: {path} (and .json) in {time.monotonic() - t0:.0f} s")
    failed = any(k.status != "ok" for k in kernels) or timing_errors
    return 1 if failed else 0


def _x(v: float) -> str:
    return f"{v:.2f}x" if math.isfinite(v) else "-"


def _find(group: list[Kernel], kind: str, variant: str) -> Kernel | None:
    return next((k for k in group if (k.m["kind"], k.m["variant"]) == (kind, variant)), None)


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}" if v else "?"


def report(
    kernels: list[Kernel],
    results: dict[str, dict[str, list[float]]],
    info: dict[str, Any],
    args: argparse.Namespace,
    timing_errors: dict[str, str] | None = None,
    modes: dict[str, str] | None = None,
) -> list[str]:
    """The text report: environment, correctness, per-shape timings and ratios, summary."""
    by_name = {k.name: k for k in kernels}
    done = [len(s) for samples in results.values() for s in samples.values()]
    rounds = f"{min(done)}-{max(done)}" if done and min(done) != max(done) else args.rounds
    n_ok = sum(k.status == "ok" for k in kernels)
    lines = [
        "GPU check: ALCOP pipelining on TVM-built kernels (tunelab, bench/gpu_artifacts) "
        "vs the same tiles unpipelined and vs cuBLAS",
        f"device: {info['device']} ({info['compute_capability']}, {info['sms']} SMs, "
        f"{info['memory_gib']} GiB, L2 {info['l2_mib']} MiB); driver {info['driver']} "
        f"(CUDA {info['driver_cuda']}); torch {info['torch']} (CUDA {info['torch_cuda']}); "
        f"{info['backend']}; Python {info['python']}",
        f"clocks before timing: {clocks_text(info['clocks_before'])}",
        f"clocks after timing:  {clocks_text(info['clocks_after'])}",
        f"timing: CUDA events, {rounds} rounds round-robin (order rotated each round), "
        f"each sample >= {args.min_ms:g} ms of back-to-back launches replayed from a CUDA "
        "graph (no launch overhead; [eager] marks launches one by one) after an L2 flush; "
        "median [min-max] per launch over rounds; ratios are per-round paired",
        "cuBLAS = torch.matmul in the kernel's input dtype (fp16 out for tc, fp32 for simt; "
        "TF32 and fp16 reduced-precision reductions off); our kernels write fp32",
        "",
        f"correctness (vs torch.matmul of the inputs in float32): {n_ok}/{len(kernels)} ok",
    ]
    for k in kernels:
        lines.append(f"  {k.name:<34} {k.status:<22} {k.binary:<18} {k.detail}")
    summary = []
    for label, samples in results.items():
        group = [k for k in kernels if shape_label(k.m) == label]
        w = group[0].m["workload"]
        flops = group[0].m["flops"]
        lines += [
            "",
            f"GEMM M={w['M']} N={w['N']} K={w['K']} ({group[0].m['note']})",
            f"  {'variant':<44} {'median ms':>10} {'[min - max]':>21} {'IQR ms':>9} {'TFLOP/s':>8}",
        ]
        stats = {name: summarize(s) for name, s in samples.items() if s}
        for name, s in stats.items():
            k = by_name.get(name)
            if k is not None:
                p = k.m["params"]
                label_v = (
                    f"{k.m['kind']} {k.m['variant']} (stages {p['stages']}, "
                    f"reg_stages {p['reg_stages']})"
                )
            else:
                kind = name.split("_")[1]
                label_v = f"cuBLAS {'fp16' if kind == 'tc' else 'fp32'} ({kind} baseline)"
            if not (modes or {}).get(name, "graph").startswith("graph"):
                label_v += " [eager]"
            lines.append(
                f"  {label_v:<44} {s['median']:>10.4f} [{s['min']:>8.4f} - "
                f"{s['max']:>8.4f}] {s['q3'] - s['q1']:>9.4f} "
                f"{flops / s['median'] / 1e9:>8.1f}"
            )
        for kind in ("tc", "simt"):
            pip, unp = _find(group, kind, "pipelined"), _find(group, kind, "unpipelined")
            if pip is None or unp is None:
                continue
            cub = f"cublas_{kind}_{label}"
            row = {"shape": label, "kind": kind}
            if pip.status != "ok" or unp.status != "ok":
                bad = ", ".join(
                    f"{k.m['variant']} {k.status}" for k in (pip, unp) if k.status != "ok"
                )
                lines.append(f"  {kind}: speedup not counted: {bad}")
                row["speedup"] = None
            elif pip.name not in samples or unp.name not in samples:
                lines.append(f"  {kind}: speedup not counted: not timed")
                row["speedup"] = None
            else:
                sp = paired_ratio(samples[unp.name], samples[pip.name])
                row["speedup"] = sp["median"]
                lines.append(
                    f"  {kind}: pipelined speedup over unpipelined {sp['median']:.2f}x "
                    f"[{sp['min']:.2f}-{sp['max']:.2f}]"
                )
            for k in (pip, unp):
                if k.status == "ok" and cub in samples and k.name in samples:
                    vs = paired_ratio(samples[cub], samples[k.name])
                    row[f"vs_cublas_{k.m['variant']}"] = vs["median"]
                    lines.append(
                        f"  {kind}: {k.m['variant']} vs cuBLAS (cuBLAS time / kernel "
                        f"time) {vs['median']:.2f}x [{vs['min']:.2f}-{vs['max']:.2f}]"
                    )
            for v in ("pipelined", "unpipelined"):
                k = pip if v == "pipelined" else unp
                row[f"{v}_ms"] = stats[k.name]["median"] if k.name in stats else None
            row["cublas_ms"] = stats[cub]["median"] if cub in stats else None
            summary.append(row)
    lines += [
        "",
        "summary (median ms; speedup = unpipelined/pipelined; vs cuBLAS = cuBLAS/pipelined)",
        f"  {'shape':<16} {'kind':<5} {'pipelined':>10} {'unpipelined':>12} "
        f"{'speedup':>8} {'cuBLAS':>9} {'vs cuBLAS':>10}",
    ]

    def fmt(v: Any, spec: str, suffix: str = "") -> str:
        return "FAILED" if v is None else f"{v:{spec}}{suffix}"

    for row in summary:
        lines.append(
            f"  {row['shape']:<16} {row['kind']:<5} {fmt(row['pipelined_ms'], '10.4f'):>10} "
            f"{fmt(row['unpipelined_ms'], '12.4f'):>12} "
            f"{fmt(row['speedup'], '7.2f', 'x'):>8} {fmt(row['cublas_ms'], '9.4f'):>9} "
            f"{fmt(row.get('vs_cublas_pipelined'), '9.2f', 'x'):>10}"
        )
    for kind in ("tc", "simt"):
        rows = [r for r in summary if r["kind"] == kind]
        if rows:
            sp = geomean([r["speedup"] for r in rows if r["speedup"] is not None])
            vs = geomean([r.get("vs_cublas_pipelined") or math.nan for r in rows])
            lines.append(
                f"  geometric mean {kind:<5}: speedup {_x(sp)}, vs cuBLAS {_x(vs)} "
                f"(over the shapes whose kernels were correct)"
            )
    failed = [k.name for k in kernels if k.status != "ok"]
    verdict = f"{len(failed)} FAILED: {', '.join(failed)}" if failed else "all kernels correct"
    lines += ["", f"verdict: {verdict}"]
    for label, err in (timing_errors or {}).items():
        lines.append(f"timing of {label} failed: {err}")
    for name, mode in (modes or {}).items():
        if mode.startswith("eager ("):
            lines.append(f"{name}: no CUDA graph, timed eagerly: {mode}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
