"""nvcc on the build worker: CUDA C source to a cubin, with ptxas' resource usage."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

from tunelab.platform.kinds import BuildError

_PTXAS_REGISTERS = re.compile(r"Used (\d+) registers")
_PTXAS_SMEM = re.compile(r"(\d+) bytes smem")


def find_nvcc() -> str | None:
    """Path of an executable nvcc (PATH first, then $CUDA_HOME/bin), or None."""
    for candidate in (
        shutil.which("nvcc"),
        os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _nvcc(source: str, arch: str, timeout_s: float, flags: list[str]) -> tuple[bytes, str]:
    """Run nvcc with `flags` on CUDA source: its one output file's bytes and stderr."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise BuildError("nvcc not found on this build worker (set CUDA_HOME or PATH)")
    with tempfile.TemporaryDirectory(prefix="tunelab-nvcc-") as tmp:
        src, out = os.path.join(tmp, "kernel.cu"), os.path.join(tmp, "kernel.out")
        with open(src, "w") as f:
            f.write(source)
        cmd = [nvcc, *flags, f"-arch={arch}", "-O3", "-w", "-o", out, src]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise BuildError(f"nvcc took longer than {timeout_s:.0f} s") from None
        if proc.returncode != 0:
            raise BuildError(f"nvcc failed ({proc.returncode}):\n{proc.stderr.strip()[-4000:]}")
        with open(out, "rb") as f:
            return f.read(), proc.stderr


def nvcc_ptx(source: str, arch: str, timeout_s: float) -> str:
    """Compile CUDA source to PTX for virtual architecture `arch` (e.g. compute_80)."""
    return _nvcc(source, arch, timeout_s, ["-ptx"])[0].decode()


def nvcc_compile(source: str, arch: str, timeout_s: float) -> tuple[bytes, dict[str, int]]:
    """Compile CUDA source to a cubin; returns it with ptxas' register/smem usage."""
    cubin, stderr = _nvcc(source, arch, timeout_s, ["--cubin", "-Xptxas", "-v"])
    usage: dict[str, int] = {}
    if match := _PTXAS_REGISTERS.search(stderr):
        usage["registers"] = int(match.group(1))
    if match := _PTXAS_SMEM.search(stderr):
        usage["static_smem_bytes"] = int(match.group(1))
    return cubin, usage
