"""The GPU check (bench/gpu_build.py, bench/gpu_check.py) as far as it goes without a GPU.

The committed artifacts match their manifests (files, hashes, CUDA ELF for the named sm
with the kernel's symbol, PTX with its `.entry`, launch configuration consistent with the
generated source); a rebuild of one reproduces its manifest's launches (slow: TVM and
nvcc); the runner imports nothing of tunelab or TVM and, with no GPU, exits 2 with a
clear message and no traceback. The runner's timing loop and report run on fakes.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
ARTIFACTS = BENCH / "gpu_artifacts"


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_build = _load("gpu_build")
gpu_check = _load("gpu_check")


def _manifests() -> list[dict[str, Any]]:
    return gpu_check.load_manifests(ARTIFACTS)


def test_every_planned_artifact_is_committed_with_its_manifest() -> None:
    index = json.loads((ARTIFACTS / "index.json").read_text())
    assert index["artifacts"] == [item["name"] for item in gpu_build.plan()]
    kinds = {(m["kind"], m["variant"]) for m in _manifests()}
    assert kinds == {(k, v) for k in ("tc", "simt") for v in ("pipelined", "unpipelined")}


@pytest.mark.parametrize("manifest", _manifests(), ids=lambda m: m["name"])
def test_artifact_files_match_manifest(manifest: dict[str, Any]) -> None:
    assert gpu_build.verify(manifest, ARTIFACTS) == []
    names = [k["name"] for k in manifest["kernels"]]
    for arch, fname in manifest["files"]["cubin"].items():
        data = (ARTIFACTS / fname).read_bytes()
        assert gpu_build.elf_machine(data) == 190  # EM_CUDA
        e_flags = int.from_bytes(data[0x30:0x34], "little")
        assert (e_flags >> 8) & 0xFF == int(arch.removeprefix("sm_")), fname
        assert set(names) <= set(gpu_build.elf_symbols(data))
    for fname in manifest["files"]["ptx"].values():
        ptx = (ARTIFACTS / fname).read_text()
        assert set(names) <= set(gpu_build.ptx_entries(ptx))
        for name in names:  # one .param per buffer argument
            params = re.search(rf"\.entry\s+{name}\s*\((.*?)\)", ptx, re.S)
            assert params and params.group(1).count(".param") == len(manifest["args"])


@pytest.mark.parametrize("manifest", _manifests(), ids=lambda m: m["name"])
def test_launch_config_agrees_with_source_and_tiles(manifest: dict[str, Any]) -> None:
    source = (ARTIFACTS / manifest["files"]["source"]).read_text()
    w, tiles, p = manifest["workload"], manifest["tiles"], manifest["params"]
    (launch,) = manifest["kernels"]
    sig = re.search(
        rf"__global__ void __launch_bounds__\((\d+)\) {launch['name']}\(([^)]*)\)", source
    )
    assert sig, "kernel signature not found in the source"
    assert int(sig.group(1)) == math.prod(launch["block"])
    params = [a.split()[-1].removesuffix("_ptr") for a in sig.group(2).split(",")]
    assert params == launch["args"] == [a["name"] for a in manifest["args"]]
    assert launch["grid"] == [w["N"] // tiles["block_n"], w["M"] // tiles["block_m"], 1]
    if p["tensor_core"]:
        assert launch["block"] == [32, p["block_row_warps"], p["block_col_warps"]]
    else:
        assert launch["block"] == [p["block_col_warps"] * 8, p["block_row_warps"] * 4, 1]
    dynamic = "extern __shared__" in source
    assert (launch["dynamic_smem_bytes"] > 0) == dynamic
    if dynamic:
        assert launch["dynamic_smem_bytes"] == manifest["shared_bytes"]
    shapes = {a["name"]: a["shape"] for a in manifest["args"]}
    assert shapes == {"A": [w["M"], w["K"]], "B": [w["K"], w["N"]], "C": [w["M"], w["N"]]}
    for arg in manifest["args"]:
        assert arg["strides"] == [arg["shape"][1], 1]
    stages = p["stages"]
    assert (source.count("cp.async.commit_group") > 0) == (stages > 1)


def test_pick_binary_prefers_the_devices_cubin_then_ptx() -> None:
    m = _manifests()[0]
    assert gpu_check.pick_binary(m, (9, 0))[1].endswith(".sm_90.cubin")
    assert gpu_check.pick_binary(m, (8, 0))[1].endswith(".sm_80.cubin")
    assert gpu_check.pick_binary(m, (8, 6))[1].endswith(".sm_80.cubin")  # same major
    for cc in ((10, 0), (12, 0), (8, 9)):
        what, fname = gpu_check.pick_binary(m, cc)
        if cc == (8, 9):
            assert fname.endswith(".sm_80.cubin")
        else:
            assert fname.endswith(".ptx") and "JIT" in what
    assert gpu_check.pick_binary(m, (9, 0), force_ptx=True)[1].endswith(".ptx")


def test_runner_imports_only_stdlib_torch_and_cuda_bindings() -> None:
    tree = ast.parse((BENCH / "gpu_check.py").read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            roots.add((node.module or "").split(".")[0])
    assert not roots & {"tunelab", "tvm", "tvm_ffi", "report"}
    allowed = set(sys.stdlib_module_names) | {"torch", "numpy", "cuda", "cupy"}
    assert roots <= allowed, roots - allowed


def _run_runner(env_extra: dict[str, str], pre: str = "") -> subprocess.CompletedProcess:
    code = (
        f"import sys, runpy; {pre}sys.argv = ['gpu_check.py']; "
        f"runpy.run_path({str(BENCH / 'gpu_check.py')!r}, run_name='__main__')"
    )
    env = {**os.environ, **env_extra}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


def test_runner_without_a_gpu_exits_2_with_a_message() -> None:
    # This venv's torch is a CPU build; CUDA_VISIBLE_DEVICES hides any GPU all the same.
    proc = _run_runner({"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2, proc.stderr
    assert "no GPU to run on" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout


def test_runner_without_torch_exits_2_with_a_message(tmp_path: Path) -> None:
    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('no torch on this machine')\n")
    proc = _run_runner({}, pre=f"sys.path.insert(0, {str(tmp_path)!r}); ")
    assert proc.returncode == 2, proc.stderr
    assert "torch cannot be imported" in proc.stderr and "Traceback" not in proc.stderr


# --- the timing loop and the report, on fakes ---------------------------------------------


class _FakeEvent:
    clock = 0.0

    def __init__(self, enable_timing: bool = True) -> None:
        self.t = 0.0

    def record(self) -> None:
        self.t = _FakeEvent.clock

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, other: _FakeEvent) -> float:
        return other.t - self.t


def _fake_torch() -> Any:
    cuda = types.SimpleNamespace(Event=_FakeEvent, synchronize=lambda: None)
    return types.SimpleNamespace(cuda=cuda)


def _kernel(name: str, kind: str, variant: str, status: str = "ok") -> Any:
    k = gpu_check.Kernel({
        "name": name, "kind": kind, "variant": variant, "note": "test",
        "workload": {"M": 256, "N": 128, "K": 64, "dtype": "float16"},
        "flops": 2 * 256 * 128 * 64,
        "params": {"stages": 4 if variant == "pipelined" else 1,
                   "reg_stages": 2 if variant == "pipelined" else 1},
    })  # fmt: skip
    k.status = status
    return k


@pytest.mark.parametrize("mode", ["eager", "graph", "capture fails"])
def test_round_robin_timing_takes_every_round_of_every_variant(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    graphs = mode != "eager"
    if mode == "graph":  # a "graph" of n launches replays them; the fake torch has none
        monkeypatch.setattr(gpu_check, "capture", lambda torch, run, n: gpu_check._repeat(run, n))
    costs = {"a": 0.5, "b": 2.0}  # ms per launch on the fake clock
    order: list[str] = []

    def runner(name: str) -> Any:
        def run() -> None:
            _FakeEvent.clock += costs[name]
            order.append(name)

        return run

    flush = types.SimpleNamespace(zero_=lambda: order.append("|"))  # before each sample
    samples, modes = gpu_check.time_round_robin(
        _fake_torch(), {n: runner(n) for n in costs}, 5, 10.0, flush, math.inf, graphs
    )
    if mode == "capture fails":  # no CUDAGraph in the fake torch: launched one by one
        assert all(m.startswith("eager (AttributeError") for m in modes.values())
    else:
        assert modes == dict.fromkeys(costs, mode)
    assert {n: len(s) for n, s in samples.items()} == {"a": 5, "b": 5}
    assert all(s == pytest.approx([costs[n]] * 5) for n, s in samples.items())
    timed = "".join(order).split("|")[1:]  # one string of launches per sample
    assert [t[0] for t in timed] == list("abbaabbaab")  # the order rotates each round
    assert {len(t) for t in timed if t[0] == "a"} == {20}  # >= 10 ms of 0.5 ms launches


def test_report_never_counts_a_wrong_kernel() -> None:
    kernels = [
        _kernel("tc_p", "tc", "pipelined"),
        _kernel("tc_u", "tc", "unpipelined"),
        _kernel("simt_p", "simt", "pipelined", "FAILED (wrong result)"),
        _kernel("simt_u", "simt", "unpipelined"),
    ]
    samples = {"tc_p": [1.0, 1.1, 0.9], "tc_u": [2.0, 2.2, 1.8], "cublas_tc_256x128x64": [0.5] * 3,
               "simt_u": [3.0] * 3, "cublas_simt_256x128x64": [1.5] * 3}  # fmt: skip
    info = {"device": "Fake GPU", "compute_capability": "sm_90", "sms": 1, "memory_gib": 1,
            "l2_mib": 1, "driver": "1", "driver_cuda": "13.0", "torch": "x", "torch_cuda": "13",
            "backend": "fake", "python": "3", "clocks_before": {}, "clocks_after": {}}  # fmt: skip
    args = types.SimpleNamespace(rounds=3, min_ms=25.0)
    text = "\n".join(gpu_check.report(kernels, {"256x128x64": samples}, info, args))
    assert "tc: pipelined speedup over unpipelined 2.00x" in text
    assert "simt: speedup not counted: pipelined FAILED (wrong result)" in text
    summary = text[text.index("summary") :]
    simt_row = next(line for line in summary.splitlines() if " simt " in line).split()
    # shape kind pipelined unpipelined speedup cuBLAS vs-cuBLAS
    assert [simt_row[i] for i in (2, 4, 6)] == ["FAILED"] * 3
    assert "geometric mean tc   : speedup 2.00x, vs cuBLAS 0.50x" in text
    assert "verdict: 1 FAILED: simt_p" in text


@pytest.mark.slow
def test_rebuilding_an_artifact_reproduces_its_launch_configuration() -> None:
    name = "simt_pipelined_1024x768x768"  # dynamic shared memory: the hardest launch to get
    item = next(i for i in gpu_build.plan() if i["name"] == name)
    committed = json.loads((ARTIFACTS / f"{name}.json").read_text())
    rebuilt = gpu_build.build_one(item)
    manifest = rebuilt["manifest"]
    for key in ("kernels", "args", "params", "shared_bytes", "workload", "files"):
        assert manifest[key] == committed[key], key
    for arch, fname in manifest["files"]["cubin"].items():
        symbols = gpu_build.elf_symbols(rebuilt["files"][fname])
        assert {k["name"] for k in manifest["kernels"]} <= set(symbols), arch


# --- the whole check, on the CPU: fake device, fake binding, fake clock --------------------


class _FakeBackend:
    """Loads nothing; a 'launch' computes the GEMM on the CPU once (the correctness launch),
    then only advances the fake clock. The launcher numbered `wrong` gets a wrong result."""

    name, version = "fake", "0"
    wrong: int | None = None
    costs = (1.0, 2.0, 1.5, 3.0)  # ms: tc pipelined, tc unpipelined, simt ...

    def __init__(self, torch: Any) -> None:
        self.torch, self.count = torch, 0

    def driver_version(self) -> int:
        return 13000

    def load(self, data: bytes, is_ptx: bool) -> bytes:
        assert data.startswith(b"\x7fELF") and not is_ptx
        return data

    def kernel(self, module: bytes, name: str, dyn_smem: int) -> str:
        assert name.encode() in module
        return name

    def launcher(self, fn: str, grid: list, block: list, dyn_smem: int, tensors: list) -> Any:
        a, b, c = tensors
        index, self.count = self.count, self.count + 1
        calls = []

        def run() -> None:
            if not calls:
                self.torch.matmul(a.float(), b.float(), out=c)
                if index == self.wrong:
                    c[0, 0] += 1.0
            calls.append(1)
            _FakeEvent.clock += self.costs[index % 4]

        return run


@pytest.mark.parametrize("wrong", [None, 2])
def test_whole_check_on_fakes(
    wrong: int | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    props = types.SimpleNamespace(
        name="Fake GPU", multi_processor_count=1, total_memory=2**30, L2_cache_size=2**20
    )
    for attr, value in {
        "current_device": lambda: 0,
        "get_device_properties": lambda dev: props,
        "get_device_capability": lambda dev: (9, 0),
        "synchronize": lambda: None,
        "Event": _FakeEvent,
    }.items():
        monkeypatch.setattr(torch.cuda, attr, value)

    def cublas(torch: Any, kernel: Any) -> Any:
        def run() -> None:
            _FakeEvent.clock += 0.5

        return run

    monkeypatch.setattr(_FakeBackend, "wrong", wrong)
    monkeypatch.setattr(gpu_check, "DEVICE", "cpu")
    monkeypatch.setattr(gpu_check, "BACKENDS", {"fake": _FakeBackend})
    monkeypatch.setattr(gpu_check, "import_torch", lambda: torch)
    monkeypatch.setattr(gpu_check, "cublas_runner", cublas)
    monkeypatch.setattr(gpu_check, "nvidia_smi", dict)
    monkeypatch.setattr(gpu_check, "capture", lambda torch, run, n: gpu_check._repeat(run, n))
    rc = gpu_check.main(["--quick", "--only", "_1024x768x768", "--out-dir", str(tmp_path)])
    text = (tmp_path / "pipelining_gpu_fake-gpu.txt").read_text()
    raw = json.loads((tmp_path / "pipelining_gpu_fake-gpu.json").read_text())
    assert rc == (0 if wrong is None else 1)
    assert "tc: pipelined speedup over unpipelined 2.00x [2.00-2.00]" in text
    assert "tc: pipelined vs cuBLAS (cuBLAS time / kernel time) 0.50x" in text
    assert "(sm_90, 1 SMs" in text and "sm_90 cubin" in text
    assert len(raw["samples_ms"]["1024x768x768"]["tc_pipelined_1024x768x768"]) == 3
    if wrong is None:
        assert "simt: pipelined speedup over unpipelined 2.00x" in text
        assert "verdict: all kernels correct" in text
    else:
        assert re.search(r"simt_pipelined_1024x768x768\s+FAILED \(wrong result\)", text)
        assert "simt: speedup not counted" in text
        assert "simt_pipelined_1024x768x768" not in raw["samples_ms"]["1024x768x768"]
        assert "verdict: 1 FAILED: simt_pipelined_1024x768x768" in text
