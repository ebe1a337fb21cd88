"""Artifacts: content-hashed chunked blobs, named artifacts addressable across jobs, files
written atomically and verified, checkpoint retention and blob garbage collection, on
SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import io
import os
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from tests.jobrows import make_job
from tunelab.platform import artifacts as art
from tunelab.platform.artifacts import CHUNK, ArtifactNotFound, BlobCorrupt
from tunelab.schema.db import get_engine
from tunelab.schema.models import Artifact, Blob, BlobChunk


@pytest.fixture
def engine(db_url: str):  # type: ignore[no-untyped-def]
    return get_engine(db_url)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A directory for written files (tmp_path also holds the SQLite database)."""
    (tmp_path / "files").mkdir()
    return tmp_path / "files"


def _count(engine, model) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar_one()


def _payload(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 4096  # 128 KiB, not all zeros
    return (block * (size // len(block) + 1))[:size]


def test_blobs_are_deduplicated(engine, files: Path) -> None:  # type: ignore[no-untyped-def]
    data = _payload(3 * CHUNK // 2)
    expected = (hashlib.sha256(data).hexdigest(), len(data))
    assert art.put_blob(engine, data) == expected
    assert art.put_blob(engine, io.BytesIO(data)) == expected
    (files / "f.bin").write_bytes(data)
    assert art.put_blob(engine, files / "f.bin") == expected
    assert art.put_blob(engine, bytearray(data)) == expected
    assert _count(engine, Blob) == 1 and _count(engine, BlobChunk) == 2
    assert art.put_blob(engine, b"")[1] == 0
    assert art.read_blob(engine, hashlib.sha256(b"").hexdigest()) == b""
    with pytest.raises(TypeError):
        art.put_blob(engine, "some/file")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        art.put_blob(engine, io.StringIO("text"))  # type: ignore[arg-type]


def test_open_blob_streams_chunks(engine) -> None:  # type: ignore[no-untyped-def]
    data = _payload(2 * CHUNK + 123, seed=1)
    digest, _ = art.put_blob(engine, data)
    chunks = art.open_blob(engine, digest)
    assert not isinstance(chunks, bytes | list)
    sizes = [len(c) for c in chunks]
    assert sizes == [CHUNK, CHUNK, 123]
    assert art.read_blob(engine, digest) == data
    with pytest.raises(art.BlobNotFound):
        art.open_blob(engine, "0" * 64)  # raised at the call, not at the first chunk


def test_five_mib_round_trip(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    job = make_job(engine)
    data = _payload(5 * CHUNK, seed=2)
    info = art.save_artifact(engine, job, "model/weights.bin", data, meta={"epochs": 3})
    assert (info.job_id, info.name, info.size, info.meta) == (
        job,
        "model/weights.bin",
        len(data),
        {"epochs": 3},
    )
    assert info.hash == hashlib.sha256(data).hexdigest()
    assert not info.checkpoint and not info.pinned and info.step is None
    out = tmp_path / "out" / "weights.bin"
    assert art.write_artifact(engine, info.id, out) == info
    assert out.read_bytes() == data
    assert sorted(p.name for p in out.parent.iterdir()) == ["weights.bin"]  # no temp files


def test_write_artifact_never_clobbers(engine, files: Path) -> None:  # type: ignore[no-untyped-def]
    job = make_job(engine)
    art.save_artifact(engine, job, "a", b"new content")
    out = files / "file"
    out.write_bytes(b"precious")
    before = out.stat()
    # Unknown refs: the file is not touched, a missing one is not created.
    for ref in (999_999, f"{job}:nope", "deadbeef00", "not a ref"):
        with pytest.raises(ArtifactNotFound):
            art.write_artifact(engine, ref, out, overwrite=True)
        with pytest.raises(ArtifactNotFound):
            art.write_artifact(engine, ref, files / "absent")
    assert not (files / "absent").exists()
    with pytest.raises(FileExistsError):
        art.write_artifact(engine, f"{job}:a", out)
    assert out.read_bytes() == b"precious" and out.stat().st_mtime_ns == before.st_mtime_ns
    art.write_artifact(engine, f"{job}:a", out, overwrite=True)
    assert out.read_bytes() == b"new content"
    assert sorted(p.name for p in files.iterdir()) == ["file"]


def test_a_corrupt_blob_leaves_no_file(engine, files: Path) -> None:  # type: ignore[no-untyped-def]
    job = make_job(engine)
    info = art.save_artifact(engine, job, "a", _payload(CHUNK + 10, seed=3))
    with engine.begin() as conn:
        conn.execute(
            update(BlobChunk)
            .where(BlobChunk.blob_hash == info.hash, BlobChunk.seq == 1)
            .values(data=b"0123456789")  # same size, other bytes
        )
    out = files / "out"
    out.write_bytes(b"old")
    with pytest.raises(BlobCorrupt):
        art.write_artifact(engine, info.id, out, overwrite=True)
    assert out.read_bytes() == b"old"
    with pytest.raises(BlobCorrupt):
        art.write_artifact(engine, info.id, files / "new")
    assert sorted(p.name for p in files.iterdir()) == ["out"]


def test_artifacts_are_written_once(engine) -> None:  # type: ignore[no-untyped-def]
    job = make_job(engine)
    first = art.save_artifact(engine, job, "graph.json", b"v1", meta={"v": 1})
    # The same content again (a retried save): the artifact as it is, a pin added.
    again = art.save_artifact(engine, job, "graph.json", b"v1", meta={"v": 9}, pinned=True)
    assert again.id == first.id and again.meta == {"v": 1} and again.pinned
    # Other content under that name: refused, nothing written.
    with pytest.raises(art.ArtifactExists, match="written once"):
        art.save_artifact(engine, job, "graph.json", b"v2")
    assert art.read_blob(engine, art.get_artifact(engine, f"{job}:graph.json").hash) == b"v1"
    assert _count(engine, Artifact) == 1 and _count(engine, Blob) == 1
    # A re-created artifact is a new version; its first name keeps meaning v1.
    saved = art.save_new_version(lambda n: art.save_artifact(engine, job, n, b"v2"), "graph.json")
    assert saved[0] == "graph.json.2" and saved[1].hash != first.hash
    name, info = art.save_new_version(
        lambda n: art.save_artifact(engine, job, n, b"v2"), "graph.json"
    )
    assert (name, info.id) == ("graph.json.2", saved[1].id)  # the same content: that version
    name, _ = art.save_new_version(lambda n: art.save_artifact(engine, job, n, b"v3"), "graph.json")
    assert name == "graph.json.3"
    assert art.read_blob(engine, art.get_artifact(engine, f"{job}:graph.json").hash) == b"v1"


def test_names_and_arguments_are_checked(engine) -> None:  # type: ignore[no-untyped-def]
    job = make_job(engine)
    for bad in ("", "x" * 256, "a\nb", "tab\there", "del\x7f", "c1\x85"):
        with pytest.raises(ValueError):
            art.save_artifact(engine, job, bad, b"x")
    art.save_artifact(engine, job, "checkpoint/abc/000010", b"x")
    art.save_artifact(engine, job, "ünïcode name: ok", b"x")
    art.save_artifact(engine, job, "x" * 255, b"x")
    with pytest.raises(ValueError):
        art.save_artifact(engine, job, "m", b"x", meta={"v": float("nan")})
    with pytest.raises(ValueError):
        art.save_artifact(engine, job, "m", b"x", step=-1)
    assert len(art.list_artifacts(engine, job)) == 3


def test_addressable_by_id_job_name_and_hash_prefix(engine) -> None:  # type: ignore[no-untyped-def]
    a, b = make_job(engine), make_job(engine)
    x = art.save_artifact(engine, a, "x.bin", b"content x")
    y = art.save_artifact(engine, b, "y:with:colons", b"content y", trial_key="t1")
    art.save_artifact(engine, b, "x-copy", b"content x")
    assert art.get_artifact(engine, x.id) == x
    assert art.get_artifact(engine, str(y.id)) == y
    assert art.get_artifact(engine, f"{a}:x.bin") == x
    assert art.get_artifact(engine, f"{b}:y:with:colons") == y
    assert art.get_artifact(engine, y.hash[:8]) == y
    assert art.get_artifact(engine, y.hash.upper()) == y
    with pytest.raises(ArtifactNotFound, match="ambiguous"):
        art.get_artifact(engine, x.hash[:10])  # two artifacts share that content
    with pytest.raises(ArtifactNotFound):
        art.get_artifact(engine, f"{b}:x.bin")
    with pytest.raises(ArtifactNotFound, match="not an artifact reference"):
        art.get_artifact(engine, x.hash[:7] + "z")
    with pytest.raises(ArtifactNotFound):
        art.get_artifact(engine, True)  # type: ignore[arg-type]
    assert [i.name for i in art.list_artifacts(engine)] == ["x.bin", "x-copy", "y:with:colons"]
    assert [i.name for i in art.list_artifacts(engine, b, trial_key="t1")] == ["y:with:colons"]
    assert y.ref == f"{b}:y:with:colons"


def test_checkpoint_retention(engine) -> None:  # type: ignore[no-untyped-def]
    job = make_job(engine)
    assert art.latest_checkpoint(engine, job) is None
    shared = b"checkpoint 2 = the final model"
    art.save_artifact(engine, job, "final.bin", shared)
    saved = []
    for step in range(1, 7):
        content = shared if step == 2 else _payload(CHUNK + step, seed=step)
        saved.append(art.save_checkpoint(engine, job, step * 10, content, keep_last=3))
        if step == 1:
            art.pin(engine, saved[0].id)
    assert saved[0].name == "checkpoint/job/000000000010"
    remaining = art.list_artifacts(engine, job, checkpoints=True)
    assert [(c.step, c.pinned) for c in remaining] == [
        (10, True),
        (40, False),
        (50, False),
        (60, False),
    ]
    assert [c.name for c in art.list_artifacts(engine, job, checkpoints=False)] == ["final.bin"]
    assert art.latest_checkpoint(engine, job) == saved[-1]
    # Steps 20 and 30 were pruned: 30's blob collected, 20's kept (final.bin names it).
    assert art.read_blob(engine, saved[1].hash) == shared
    with pytest.raises(art.BlobNotFound):
        art.open_blob(engine, saved[2].hash)
    with engine.connect() as conn:
        hashes = set(conn.execute(select(Blob.hash)).scalars())
        chunk_hashes = set(conn.execute(select(BlobChunk.blob_hash)).scalars())
    assert hashes == {c.hash for c in remaining} | {saved[1].hash}
    assert chunk_hashes == hashes

    # A trial's checkpoints are kept apart from the job's.
    art.save_checkpoint(engine, job, 5, b"trial ckpt", trial_key="abc", keep_last=1)
    art.save_checkpoint(engine, job, 7, b"trial ckpt 2", trial_key="abc", keep_last=1)
    assert [c.step for c in art.list_artifacts(engine, job, trial_key="abc")] == [7]
    assert art.latest_checkpoint(engine, job, "abc").name == "checkpoint/abc/000000000007"
    assert len(art.list_artifacts(engine, job, checkpoints=True, trial_key="")) == 4


def test_prune(engine) -> None:  # type: ignore[no-untyped-def]
    a, b = make_job(engine), make_job(engine)
    for job in (a, b):
        for step in range(5):
            art.save_checkpoint(engine, job, step, f"{job}/{step}".encode(), keep_last=10)
        art.save_artifact(engine, job, "notes.txt", b"never pruned")
    art.pin(engine, f"{a}:{art.checkpoint_name(0)}")
    would = art.prune(engine, a, keep_last=2, dry_run=True)
    assert [(i.job_id, i.step) for i in would] == [(a, 2), (a, 1)]
    assert len(art.list_artifacts(engine, a)) == 6  # dry run: nothing deleted
    pruned = art.prune(engine, keep_last=2)  # every job
    assert sorted((i.job_id, i.step) for i in pruned) == [(a, 1), (a, 2), (b, 0), (b, 1), (b, 2)]
    assert [i.step for i in art.list_artifacts(engine, a, checkpoints=True)] == [0, 3, 4]
    assert [i.step for i in art.list_artifacts(engine, b, checkpoints=True)] == [3, 4]
    assert _count(engine, Blob) == 1 + 3 + 2  # the shared notes, then each kept checkpoint
    art.pin(engine, f"{a}:{art.checkpoint_name(0)}", pinned=False)
    assert [i.step for i in art.prune(engine, a, keep_last=0)] == [4, 3, 0]
    assert art.list_artifacts(engine, a, checkpoints=True) == []
    with pytest.raises(ValueError):
        art.prune(engine, keep_last=-1)


def test_delete_and_collect_garbage(engine) -> None:  # type: ignore[no-untyped-def]
    job = make_job(engine)
    info = art.save_artifact(engine, job, "a", b"aaa")
    orphan, _ = art.put_blob(engine, b"nobody names me")
    assert art.collect_garbage(engine) == []  # within the grace period
    assert art.collect_garbage(engine, older_than=timedelta(0), dry_run=True) == [orphan]
    assert art.collect_garbage(engine, older_than=timedelta(0)) == [orphan]
    assert _count(engine, Blob) == 1
    assert art.delete_artifact(engine, f"{job}:a") == info
    assert _count(engine, Blob) == 0 and _count(engine, BlobChunk) == 0


def test_file_mode_follows_umask(engine, files: Path) -> None:  # type: ignore[no-untyped-def]
    job = make_job(engine)
    art.save_artifact(engine, job, "a", b"x")
    old = os.umask(0o022)
    try:
        art.write_artifact(engine, f"{job}:a", files / "a")
    finally:
        os.umask(old)
    assert (files / "a").stat().st_mode & 0o777 == 0o644
