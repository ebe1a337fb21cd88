"""`--overwrite`/`--force` replace regular files only: a device, a directory, a FIFO or a
symlink to one is refused with one line (exit 2), nothing written, nothing replaced."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.test_input import said, tunelab
from tunelab.platform import api, jobs
from tunelab.platform import artifacts as art
from tunelab.platform.outpaths import NotRegularFile, check_replaceable
from tunelab.platform.spec import parse_spec
from tunelab.schema.db import get_engine

SPEC = {"name": "out", "kind": "testing-trivial", "workload": {"n": 1}}


def _targets(tmp_path: Path) -> dict[str, Path]:
    """Things that are not regular files, each under a name an output could be given."""
    fifo, folder = tmp_path / "fifo", tmp_path / "folder"
    os.mkfifo(fifo)
    folder.mkdir()
    links = {}
    for name, target in (("to-fifo", fifo), ("to-folder", folder), ("to-dev-full", "/dev/full")):
        links[name] = tmp_path / name
        links[name].symlink_to(target)
    return {"fifo": fifo, "folder": folder, **links}


def test_check_replaceable(tmp_path: Path) -> None:
    regular = tmp_path / "file"
    regular.write_text("x")
    (tmp_path / "to-file").symlink_to(regular)
    (tmp_path / "dangling").symlink_to(tmp_path / "nothing")
    for ok in (regular, tmp_path / "to-file", tmp_path / "dangling", tmp_path / "new"):
        check_replaceable(ok)
    for name, path in _targets(tmp_path).items():
        with pytest.raises(NotRegularFile, match="only a regular file is replaced"):
            check_replaceable(path)
        assert name.startswith("to-") == path.is_symlink()
    with pytest.raises(NotRegularFile, match="a character device"):
        check_replaceable("/dev/full")


def test_artifacts_get_overwrite_refuses_what_is_not_a_regular_file(
    sqlite_url: str, tmp_path: Path
) -> None:
    engine = get_engine(sqlite_url)
    job = jobs.create_job(engine, parse_spec(SPEC))
    info = art.save_artifact(engine, job, "a.bin", b"content")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    targets = _targets(out_dir)
    for name, path in targets.items():
        ran = tunelab("artifacts", "get", info.ref, "-o", str(path), "--overwrite",
                      "--db", sqlite_url)  # fmt: skip
        assert ran.returncode == 2, (name, ran.stdout, ran.stderr)
        assert said(ran).count("error:") == 1 and "Traceback" not in ran.stderr, ran.stderr
        assert "regular file" in said(ran) or "is a directory" in said(ran), said(ran)
        assert path.is_symlink() == name.startswith("to-")  # left as it was
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(targets)  # no stray temp file
    assert os.path.exists("/dev/full") and not os.path.isfile("/dev/full")
    # A regular file (and a symlink to one: the link is replaced) is replaced as asked.
    regular = out_dir / "file"
    regular.write_bytes(b"old")
    ran = tunelab("artifacts", "get", info.ref, "-o", str(regular), "--overwrite",
                  "--db", sqlite_url)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert regular.read_bytes() == b"content"


def test_trials_export_refuses_a_fifo(sqlite_url: str, tmp_path: Path) -> None:
    engine = get_engine(sqlite_url)
    job = jobs.create_job(engine, parse_spec(SPEC))
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    ran = tunelab("export", str(job), "--format", "csv", "-o", str(fifo),
                  "--db", sqlite_url)  # fmt: skip
    assert ran.returncode == 2 and "FIFO" in said(ran), ran.stderr
    with pytest.raises(NotRegularFile):
        api.check_output_path(tmp_path / "fifo.csv")
