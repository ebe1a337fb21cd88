"""A database that fills its disk while a command records (`replay run --record` on a
SQLite file of a tiny, real file system): exit 3 with one line, no traceback, and no
job left pending for nothing to run (nothing of it was recorded: it is deleted)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.test_model_search import SWEEP
from tunelab.schema.db import get_engine
from tunelab.schema.models import Job, Trial


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (root only: skipped otherwise)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                          capture_output=True)  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {made.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path, leave: int) -> Path:
    """Fill the file system but `leave` bytes."""
    filler = mnt / "filler"
    free = shutil.disk_usage(mnt).free
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def test_replay_record_on_a_full_disk_exits_3_and_leaves_no_pending_job(tiny_fs: Path) -> None:
    url = f"sqlite:///{tiny_fs / 'trials.db'}"
    engine = get_engine(url)  # migrated while there is room
    engine.dispose()
    filler = _fill(tiny_fs, 64 * 1024)  # room for the job's row, not for 1152 trials
    ran = subprocess.run(
        [sys.executable, "-m", "tunelab.platform.cli", "replay", "run", str(SWEEP),
         "--strategy", "random", "--record", "--db", url],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    assert ran.returncode == 3, ran.stdout + ran.stderr
    assert "Traceback" not in ran.stderr
    errors = " ".join(ran.stderr.split())
    assert errors.count("error:") == 1 and "database or disk is full" in errors, ran.stderr
    filler.unlink()
    engine = get_engine(url)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Job)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(Trial)).scalar_one() == 0
