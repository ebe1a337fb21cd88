"""Build the wheelhouse the images install tunelab from, so that no image build needs the
network: `python deploy/wheelhouse.py` (or `make wheelhouse`).

Layout (under --out, default deploy/wheelhouse, which the images' build context holds):

    deps/*.whl, deps/requirements.txt   every dependency, pinned (one image layer)
    tunelab/tunelab-*.whl               tunelab itself (its own layer: rebuilt on every change)

The dependencies are pinned to what this interpreter has installed (`pip freeze`), so an
image runs the versions the tests ran; torch is taken at its own pin (--torch), as `make
install` does. They are rebuilt only when their inputs change (a stamp in deps/). Wheels
are for one Python: this interpreter's (`pip wheel`) or, with --python-version, another
one's (`pip download --only-binary=:all:`, e.g. 3.12 for the official python:3.12-slim base).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "deploy" / "wheelhouse"
DEFAULT_TORCH = "torch==2.13.0"  # the Makefile's pin; here pip takes the CPU build on disk
# Wheel platforms accepted when downloading for another Python (x86-64 Linux, glibc >= 2.28).
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux2010_x86_64",
             "manylinux1_x86_64", "linux_x86_64"]  # fmt: skip
WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


def requirements(extras: list[str], torch: str) -> list[str]:
    """tunelab's dependencies from pyproject.toml (plus `extras`), torch at its own pin,
    and uv, which the images install them with."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [r for r in project["dependencies"] if not re.match(r"torch\s*[<>=!~;\[]", r)]
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return [*reqs, torch, "uv"]  # uv: the images install with it (in parallel, fast)


def pins(exclude: set[str]) -> list[str]:
    """This interpreter's installed versions (`pip freeze`), less the names in `exclude`."""
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    keep = []
    for line in frozen.splitlines():
        name = re.split(r"[=<>@ ]", line, maxsplit=1)[0].strip().lower().replace("_", "-")
        if "==" in line and name not in exclude:
            keep.append(line.strip())
    return keep


def pinned_list(deps: Path) -> list[str]:
    """`name==version` for every wheel in `deps`, from the file names."""
    out = []
    for wheel in sorted(deps.glob("*.whl")):
        m = WHEEL_NAME.match(wheel.name)
        if not m:
            raise SystemExit(f"not a wheel name: {wheel.name}")
        out.append(f"{m['name']}=={m['version']}")
    return out


def build(
    out: Path = DEFAULT_OUT,
    *,
    python_version: str | None = None,
    torch: str = DEFAULT_TORCH,
    extras: tuple[str, ...] = (),
    pip_args: tuple[str, ...] = (),
    use_pins: bool = True,
    quiet: bool = True,
) -> Path:
    """Write (or bring up to date) the wheelhouse at `out`; returns `out`."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    python_version = python_version or here
    reqs = requirements(list(extras), torch)
    constraints = pins({"torch", "tunelab"}) if use_pins else []
    stamp = hashlib.sha256(
        json.dumps([python_version, reqs, constraints, list(pip_args)]).encode()
    ).hexdigest()
    deps = out / "deps"
    q = ["-q"] if quiet else []
    if (deps / "STAMP").exists() and (deps / "STAMP").read_text().strip() == stamp:
        print(f"dependency wheels up to date in {deps}")
    else:
        if deps.exists():
            shutil.rmtree(deps)
        deps.mkdir(parents=True)
        (deps / "constraints.txt").write_text("".join(f"{c}\n" for c in constraints))
        (deps / "requested.txt").write_text("".join(f"{r}\n" for r in reqs))
        common = [*q, "-c", str(deps / "constraints.txt"), "-r", str(deps / "requested.txt")]
        if python_version == here:
            cmd = ["wheel", "-w", str(deps), *common]
        else:
            plats = [a for p in PLATFORMS for a in ("--platform", p)]
            cmd = ["download", "-d", str(deps), "--only-binary=:all:", "--implementation", "cp",
                   "--python-version", python_version, *plats, *common]  # fmt: skip
        subprocess.run([sys.executable, "-m", "pip", *cmd, *pip_args], check=True)
        (deps / "requirements.txt").write_text("".join(f"{p}\n" for p in pinned_list(deps)))
        (deps / "STAMP").write_text(stamp + "\n")
    own = out / "tunelab"
    if own.exists():
        shutil.rmtree(own)
    own.mkdir(parents=True)
    # tunelab is pure Python: one wheel serves every Python version. Built from a copy of
    # the sources so that setuptools' build/ scratch tree never lands in (or comes from) the
    # work tree.
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(REPO / name, src / name)
        shutil.copytree(REPO / "tunelab", src / "tunelab",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
        # A fixed SOURCE_DATE_EPOCH: the same sources give the same wheel, byte for byte,
        # so that an image build keeps its cached tunelab layer.
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", *q, "--no-deps", "--no-build-isolation",
             "-w", str(own), str(src)],
            check=True, env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"},
        )  # fmt: skip
    size = sum(f.stat().st_size for f in out.rglob("*.whl")) / 2**20
    print(f"wheelhouse for Python {python_version}: {out} ({size:,.0f} MiB)")
    return out


def main() -> None:
    """Command line: see the module's docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--python-version", help="the image's Python (default: this one's)")
    parser.add_argument("--torch", default=DEFAULT_TORCH, help="torch's requirement")
    parser.add_argument("--extra", action="append", default=[], help="an extra, e.g. gpu")
    parser.add_argument("--no-pins", action="store_true",
                        help="do not pin to this interpreter's installed versions")  # fmt: skip
    parser.add_argument(
        "pip_args", nargs="*", help="more pip options after --, e.g. -- --extra-index-url URL"
    )
    args = parser.parse_args()
    build(
        args.out, python_version=args.python_version, torch=args.torch,
        extras=tuple(args.extra), pip_args=tuple(args.pip_args), use_pins=not args.no_pins,
    )  # fmt: skip


if __name__ == "__main__":
    main()
