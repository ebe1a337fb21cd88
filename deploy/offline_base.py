"""Make the base image for machines that cannot reach an image registry, from Debian's
packages: `python deploy/offline_base.py` (as root; needs debootstrap and a Docker engine).

It runs debootstrap (minbase, bookworm) with Python 3.11 and its venv module, a C++
toolchain (TVM links its kernels with g++), procps and PostgreSQL 15, then `docker import`s
the tree as tunelab-base:bookworm. deploy/compose.offline.yml builds every service on it:
the tunelab image (deploy/Dockerfile) and PostgreSQL (deploy/Dockerfile.postgres). It
differs from the official images: Python 3.11 (not 3.12) and PostgreSQL 15 (not 16).

The image carries a label with a hash of the recipe below, so an up-to-date one is kept;
--tarball PATH keeps the root file system as a tar file and imports it from there next time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

TAG = "tunelab-base:bookworm"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-venv", "ca-certificates", "g++", "libc6-dev", "procps",
            "postgresql")  # fmt: skip
LABEL = "org.tunelab.base-key"
RECIPE_VERSION = 1  # bump when the steps below change what the image holds


def recipe_key(mirror: str = MIRROR) -> str:
    """A hash of what goes into the image: suite, mirror, packages, recipe version."""
    blob = json.dumps([SUITE, mirror, sorted(PACKAGES), RECIPE_VERSION]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def image_key(tag: str = TAG, docker: str = "docker") -> str | None:
    """The recipe hash recorded on the image `tag`, or None if there is no such image."""
    proc = subprocess.run(
        [docker, "image", "inspect", "--format", f'{{{{ index .Config.Labels "{LABEL}" }}}}', tag],
        capture_output=True, text=True,
    )  # fmt: skip
    return proc.stdout.strip() if proc.returncode == 0 else None


def build_rootfs(tarball: Path, mirror: str = MIRROR) -> Path:
    """debootstrap the tree into a scratch directory beside `tarball` and write it as a tar."""
    if os.geteuid() != 0:
        raise SystemExit("debootstrap needs root")
    if not shutil.which("debootstrap"):
        raise SystemExit("debootstrap is not installed (apt-get install debootstrap)")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix="rootfs-") as tmp:
        root = Path(tmp) / "root"
        try:
            _debootstrap(root, mirror, tarball)
        finally:
            _unmount_under(root)  # debootstrap mounts /proc and /sys; never delete through them
    return tarball


def _unmount_under(root: Path) -> None:
    """Lazily unmount whatever is still mounted below `root`, deepest first."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


def _debootstrap(root: Path, mirror: str, tarball: Path) -> None:
    """debootstrap into `root`, trim it, and write it to `tarball`."""
    # Two stages, so that dpkg can be told to skip its fsyncs in between: the tree is
    # thrown away if anything fails, and this halves the time.
    subprocess.run(
            ["debootstrap", "--foreign", "--variant=minbase", f"--include={','.join(PACKAGES)}",
             SUITE, str(root), mirror],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    unsafe = root / "etc/dpkg/dpkg.cfg.d/tunelab-unsafe-io"
    unsafe.write_text("force-unsafe-io\n")
    subprocess.run(
            ["chroot", str(root), "/debootstrap/debootstrap", "--second-stage"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    unsafe.unlink()
    # Package caches, and the cluster Debian's postgresql package creates: the
    # entrypoint makes its own in the data volume, as the official image does.
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "var/lib/postgresql/15",
                     "etc/postgresql/15"):  # fmt: skip
        shutil.rmtree(root / junk, ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)
    partial = tarball.with_suffix(".partial")
    subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True)
    partial.replace(tarball)


def import_image(tarball: Path, tag: str = TAG, key: str | None = None,
                 docker: str = "docker") -> None:  # fmt: skip
    """`docker import` the tree as `tag`, labelled with its recipe hash."""
    changes = [f"LABEL {LABEL}={key or recipe_key()}", "ENV LANG=C.UTF-8", 'CMD ["/bin/bash"]']
    cmd = [docker, "import", *[a for c in changes for a in ("--change", c)], str(tarball), tag]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def ensure(tag: str = TAG, *, tarball: Path | None = None, mirror: str = MIRROR,
           docker: str = "docker") -> str:  # fmt: skip
    """Make sure `tag` is the current recipe's image; returns what it did: 'present',
    'imported' (from `tarball`) or 'built' (debootstrap, then import)."""
    key = recipe_key(mirror)
    if image_key(tag, docker) == key:
        return "present"
    keyed = tarball.with_name(f"{tarball.stem}-{key}.tar") if tarball else None
    if keyed and keyed.exists():
        import_image(keyed, tag, key, docker)
        return "imported"
    with tempfile.TemporaryDirectory(prefix="tunelab-base-") as tmp:
        out = keyed or Path(tmp) / "rootfs.tar"
        build_rootfs(out, mirror)
        import_image(out, tag, key, docker)
    return "built"


def main() -> None:
    """Command line: see the module's docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", default=TAG)
    parser.add_argument("--mirror", default=MIRROR, help="a Debian mirror (default: %(default)s)")
    parser.add_argument(
        "--tarball", type=Path, help="keep the root file system here (NAME-HASH.tar) for next time"
    )
    args = parser.parse_args()
    done = ensure(args.tag, tarball=args.tarball, mirror=args.mirror)
    print(f"{args.tag}: {done}")


if __name__ == "__main__":
    main()
