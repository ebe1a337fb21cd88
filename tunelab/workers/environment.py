"""Fingerprint of the machine a measurement runs on, recorded with every trial."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
from importlib.metadata import PackageNotFoundError, version
from typing import Any


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _nvidia_smi() -> dict[str, str]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return {}
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        header = subprocess.run([smi], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    info: dict[str, str] = {}
    if out:
        name, _, driver = out.splitlines()[0].partition(",")
        info["gpu_model"] = name.strip()
        info["gpu_driver"] = driver.strip()
    for token in header.split("|"):
        if "CUDA Version:" in token:
            info["cuda_version"] = token.split("CUDA Version:")[1].split()[0]
    return info


def fingerprint(kind_details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where this process runs: host, CPU/GPU model, driver, CUDA and library versions.

    A kind adds its own libraries' versions (`kind_details`, from `JobKind.environment`);
    `tvm_version`/`torch_version` columns are filled from them when present.
    `fingerprint` (the hash) covers everything that can change a measurement.
    """
    env: dict[str, Any] = {
        "host": socket.gethostname(),
        "cpu_model": _cpu_model(),
        "gpu_model": None,
        "gpu_driver": None,
        "cuda_version": None,
        "tvm_version": (kind_details or {}).get("tvm_version"),
        "torch_version": (kind_details or {}).get("torch_version"),
        "python_version": platform.python_version(),
    }
    env.update(_nvidia_smi())
    env["details"] = {
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "ray_version": _package_version("ray"),
        "numpy_version": _package_version("numpy"),
        **(kind_details or {}),
    }
    env["fingerprint"] = hashlib.sha256(
        json.dumps(env, sort_keys=True, default=str).encode()
    ).hexdigest()
    return env
