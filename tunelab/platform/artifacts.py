"""Named artifacts of a job (checkpoints, rewritten graphs, kernels' sources), kept in the
database as content-addressed blobs, so a cluster needs no shared file system.

A blob is its SHA-256 and its bytes in `CHUNK`-sized rows of `blob_chunks`; bytes are
streamed in and out a chunk at a time, never loaded whole, and the same content is stored
once however many artifacts name it. An artifact is a (job, name) pointing at a blob;
checkpoints carry a step and are pruned to the newest few unless pinned, and blobs no
artifact names any more are deleted with them. Artifacts are immutable: a name is written
once (whatever names it keeps meaning the same bytes); a re-created artifact with other
content is a new version, NAME.2, NAME.3... (`save_new_version`).

Artifacts are addressable across jobs by id, by "JOB:NAME", or by a prefix (>= 8 hex
digits) of their content's hash.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
import re
import secrets
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from sqlalchemy import Connection, Engine, bindparam, delete, exists, insert, select, update
from sqlalchemy.exc import IntegrityError

from tunelab.platform.jobs import insert_ignore
from tunelab.schema.models import Artifact, Blob, BlobChunk

CHUNK = 1 << 20  # bytes per blob_chunks row
SPOOL_MAX = 8 * CHUNK  # sources up to this size are spooled in memory, larger ones on disk
NAME_LEN = 255
TRIAL_KEY_LEN = 64
IN_CHUNK = 500
MAX_STEP = 2**63 - 1
GC_RETRIES = 3

Source = bytes | bytearray | memoryview | BinaryIO | Path
T = TypeVar("T")


class ArtifactNotFound(LookupError):
    """No artifact (or blob) answers to the reference, or more than one does."""


class BlobNotFound(ArtifactNotFound):
    """No blob has this hash."""


class ArtifactExists(ValueError):
    """An artifact of that name exists with other content (artifacts are written once)."""


class BlobCorrupt(RuntimeError):
    """A blob's stored bytes do not match its hash or size."""


@dataclass(frozen=True)
class ArtifactInfo:
    """An artifact's row: where it belongs, and the hash and size of its content."""

    id: int
    job_id: int
    name: str
    trial_key: str
    checkpoint: bool
    step: int | None
    pinned: bool
    hash: str
    size: int
    meta: dict[str, Any]
    created_at: datetime

    @property
    def ref(self) -> str:
        """The "JOB:NAME" reference of this artifact."""
        return f"{self.job_id}:{self.name}"


_COLUMNS = (
    Artifact.id,
    Artifact.job_id,
    Artifact.name,
    Artifact.trial_key,
    Artifact.checkpoint,
    Artifact.step,
    Artifact.pinned,
    Artifact.blob_hash,
    Artifact.size,
    Artifact.meta,
    Artifact.created_at,
)


def _info(row: Any) -> ArtifactInfo:
    return ArtifactInfo(*row)


# --- validation ------------------------------------------------------------------------


def check_name(name: Any) -> str:
    """An artifact name: 1 to 255 characters, no control characters ('/' namespaces)."""
    if not isinstance(name, str) or not 1 <= len(name) <= NAME_LEN:
        raise ValueError(f"artifact names have 1 to {NAME_LEN} characters, got {name!r}")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise ValueError(f"artifact name {name!r} has a control character")
    return name


def _check_trial_key(trial_key: Any) -> str:
    if not isinstance(trial_key, str) or len(trial_key) > TRIAL_KEY_LEN:
        raise ValueError(f"trial_key must be a string of at most {TRIAL_KEY_LEN} characters")
    return trial_key


def _check_step(step: Any) -> int | None:
    if step is None:
        return None
    if isinstance(step, bool):
        raise TypeError("step must be an integer, not a bool")
    value = operator.index(step)
    if not 0 <= value <= MAX_STEP:
        raise ValueError(f"step must be in [0, 2**63), got {value}")
    return value


def _check_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta is not JSON-serialisable: {exc}") from None
    return dict(meta)


# --- blobs -----------------------------------------------------------------------------


class _Content:
    """A source's bytes, hashed, and readable again chunk by chunk (for each attempt)."""

    def __init__(self, data: memoryview | None, spool: Any, digest: str, size: int) -> None:
        self._data, self._spool = data, spool
        self.hash, self.size = digest, size

    @property
    def n_chunks(self) -> int:
        return -(-self.size // CHUNK)

    def chunks(self) -> Iterator[bytes]:
        if self._data is not None:
            for i in range(0, self.size, CHUNK):
                yield bytes(self._data[i : i + CHUNK])
            return
        self._spool.seek(0)
        while chunk := self._spool.read(CHUNK):
            yield chunk


def _read_into(stream: Any, spool: Any) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(CHUNK):
        if not isinstance(chunk, bytes | bytearray):
            raise TypeError("the source stream must be opened in binary mode")
        digest.update(chunk)
        spool.write(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


@contextmanager
def _content(source: Source) -> Iterator[_Content]:
    """The source hashed; streams and files are copied through a spooled temporary file
    (in memory up to SPOOL_MAX), so what is stored is exactly what was hashed."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = memoryview(source).cast("B")
        yield _Content(data, None, hashlib.sha256(data).hexdigest(), data.nbytes)
        return
    if isinstance(source, str):
        raise TypeError("pass file content as bytes, or a file name as a Path")
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX) as spool:
        if isinstance(source, os.PathLike):
            with open(source, "rb") as f:
                digest, size = _read_into(f, spool)
        elif hasattr(source, "read"):
            digest, size = _read_into(source, spool)
        else:
            raise TypeError(f"cannot store a {type(source).__name__}: give bytes, a file or a Path")
        yield _Content(None, spool, digest, size)


def _store(conn: Connection, engine: Engine, content: _Content) -> bool:
    """Insert the blob and its chunks unless stored; returns whether it was written."""
    if conn.execute(select(Blob.hash).where(Blob.hash == content.hash)).first():
        return False
    row = {"hash": content.hash, "size": content.size, "n_chunks": content.n_chunks,
           "created_at": datetime.now(UTC)}  # fmt: skip
    stmt = insert_ignore(engine, Blob.__table__).returning(Blob.hash)
    if conn.execute(stmt, row).first() is None:
        return False  # a concurrent writer stored it meanwhile
    chunk_insert = insert(BlobChunk.__table__)
    for seq, data in enumerate(content.chunks()):
        # One chunk per statement: executemany would hold every chunk in memory.
        conn.execute(chunk_insert, {"blob_hash": content.hash, "seq": seq, "data": data})
    return True


def put_blob(engine: Engine, source: Source) -> tuple[str, int]:
    """Store bytes, a binary stream or a file's content; returns (SHA-256 hex, size).
    Content already stored is not written again."""
    with _content(source) as content:
        with engine.begin() as conn:
            _store(conn, engine, content)
        return content.hash, content.size


def _chunks(engine: Engine, digest: str, n_chunks: int) -> Iterator[bytes]:
    stmt = select(BlobChunk.data).where(
        BlobChunk.blob_hash == digest, BlobChunk.seq == bindparam("seq")
    )
    for seq in range(n_chunks):
        # A short connection per chunk: a slow reader holds no connection between chunks.
        with engine.connect() as conn:
            data = conn.execute(stmt, {"seq": seq}).scalar()
        if data is None:
            raise BlobCorrupt(f"blob {digest} has lost chunk {seq} (deleted while read?)")
        yield bytes(data)


def open_blob(engine: Engine, digest: str) -> Iterator[bytes]:
    """The blob's chunks in order, one query each. Raises BlobNotFound at once."""
    with engine.connect() as conn:
        n_chunks = conn.execute(select(Blob.n_chunks).where(Blob.hash == digest)).scalar()
    if n_chunks is None:
        raise BlobNotFound(f"no blob {digest}")
    return _chunks(engine, digest, n_chunks)


def read_blob(engine: Engine, digest: str) -> bytes:
    """The blob's bytes, whole (for small blobs)."""
    return b"".join(open_blob(engine, digest))


def _collect(conn: Connection, hashes: Iterable[str]) -> list[str]:
    """Delete those of the blobs (and their chunks) that no artifact names."""
    candidates, orphans = sorted(set(hashes)), []
    unreferenced = ~exists().where(Artifact.blob_hash == Blob.hash)
    for i in range(0, len(candidates), IN_CHUNK):
        part = candidates[i : i + IN_CHUNK]
        found = list(
            conn.execute(select(Blob.hash).where(Blob.hash.in_(part), unreferenced)).scalars()
        )
        if found:
            # Chunks explicitly: SQLite connections opened without foreign_keys=ON
            # would not cascade.
            conn.execute(delete(BlobChunk).where(BlobChunk.blob_hash.in_(found)))
            conn.execute(delete(Blob).where(Blob.hash.in_(found), unreferenced))
            orphans += found
    return orphans


def collect_garbage(
    engine: Engine, *, older_than: timedelta = timedelta(hours=1), dry_run: bool = False
) -> list[str]:
    """Delete blobs that no artifact names and that were stored more than `older_than`
    ago (the grace period spares a blob put by `put_blob` whose artifact is about to be
    saved). Returns their hashes."""
    cutoff = datetime.now(UTC) - older_than
    stmt = select(Blob.hash).where(
        Blob.created_at < cutoff, ~exists().where(Artifact.blob_hash == Blob.hash)
    )
    for attempt in range(GC_RETRIES):
        try:
            with engine.begin() as conn:
                hashes = list(conn.execute(stmt).scalars())
                return hashes if dry_run else _collect(conn, hashes)
        except IntegrityError:  # a concurrent save named one of them: look again
            if attempt == GC_RETRIES - 1:
                raise
    raise AssertionError("unreachable")


# --- artifacts -------------------------------------------------------------------------


def save_artifact(
    engine: Engine,
    job_id: int,
    name: str,
    source: Source,
    *,
    trial_key: str = "",
    checkpoint: bool = False,
    step: int | None = None,
    meta: Mapping[str, Any] | None = None,
    pinned: bool = False,
) -> ArtifactInfo:
    """Store the source as the job's artifact `name`, in one transaction. Artifacts are
    immutable: a name is written once. Saving it again with the same content returns the
    artifact as it is (a retried save; a pin is added, nothing else changes); with other
    content it raises ArtifactExists and writes nothing (`save_new_version` picks the
    next free name instead)."""
    values = {
        "job_id": int(job_id),
        "name": check_name(name),
        "trial_key": _check_trial_key(trial_key),
        "checkpoint": bool(checkpoint),
        "step": _check_step(step),
        "pinned": bool(pinned),
        "meta": _check_meta(meta),
    }
    table = Artifact.__table__
    existing = select(*_COLUMNS).where(Artifact.job_id == values["job_id"], Artifact.name == name)
    with _content(source) as content:
        values |= {"blob_hash": content.hash, "size": content.size}
        for attempt in (1, 2):
            values["created_at"] = datetime.now(UTC)
            wrote = False
            try:
                with engine.begin() as conn:
                    row = conn.execute(existing).first()
                    if row is not None:
                        info = _info(row)
                        if info.hash != content.hash:
                            raise ArtifactExists(
                                f"artifact {info.ref} exists with other content (sha256 "
                                f"{info.hash[:12]}, not {content.hash[:12]}): artifacts are "
                                "written once"
                            )
                        if pinned and not info.pinned:
                            conn.execute(
                                update(Artifact).where(Artifact.id == info.id).values(pinned=True)
                            )
                            info = _info(conn.execute(existing).one())
                        return info
                    wrote = _store(conn, engine, content)
                    stmt = (
                        insert(table)
                        .values(**values)
                        .returning(*(table.c[c.key] for c in _COLUMNS))
                    )
                    return _info(conn.execute(stmt).one())
            except IntegrityError:
                # Content found stored may have been collected by a concurrent prune
                # before this artifact named it, or a concurrent save took the name:
                # look again, once.
                if wrote or attempt == 2:
                    raise
    raise AssertionError("unreachable")


def version_name(name: str, version: int) -> str:
    """The name of version `version` (from 1) of an artifact: NAME, then NAME.2, NAME.3..."""
    return name if version <= 1 else f"{name}.{version}"


def save_new_version(save: Callable[[str], T], name: str, limit: int = 1000) -> tuple[str, T]:
    """`save(NAME)`, or where NAME exists with other content, `save` of the first of NAME.2,
    NAME.3... that is free or holds the same content: (the name used, what `save` gave).
    `save` is any call that stores under a name and raises ArtifactExists on a conflict
    (a context's `save_artifact`, or `save_artifact` itself)."""
    for version in range(1, limit + 1):
        candidate = version_name(name, version)
        try:
            return candidate, save(candidate)
        except ArtifactExists:
            continue
    raise ArtifactExists(f"{limit} versions of artifact {name!r} exist")


def list_artifacts(
    engine: Engine,
    job_id: int | None = None,
    *,
    checkpoints: bool | None = None,
    trial_key: str | None = None,
) -> list[ArtifactInfo]:
    """Artifacts (of one job, or all), optionally only checkpoints (True), only others
    (False), or only those of one trial; ordered by job and name."""
    stmt = select(*_COLUMNS).order_by(Artifact.job_id, Artifact.name)
    if job_id is not None:
        stmt = stmt.where(Artifact.job_id == job_id)
    if checkpoints is not None:
        stmt = stmt.where(Artifact.checkpoint == checkpoints)
    if trial_key is not None:
        stmt = stmt.where(Artifact.trial_key == trial_key)
    with engine.connect() as conn:
        return [_info(row) for row in conn.execute(stmt)]


_JOB_NAME = re.compile(r"(\d+):(.+)", re.DOTALL)
_HASH_PREFIX = re.compile(r"[0-9a-fA-F]{8,64}")
_SHORT_ID = re.compile(r"\d{1,7}")


def get_artifact(engine: Engine, ref: int | str) -> ArtifactInfo:
    """The artifact that `ref` names: an int id, "JOB:NAME", or a unique prefix of at
    least 8 hex digits of its content's hash (a string of fewer than 8 digits is an id).
    Raises ArtifactNotFound when none or, for a prefix, more than one matches."""
    stmt = select(*_COLUMNS)
    prefix = None
    if isinstance(ref, int) and not isinstance(ref, bool):
        stmt = stmt.where(Artifact.id == ref)
    elif isinstance(ref, str) and _SHORT_ID.fullmatch(ref):
        stmt = stmt.where(Artifact.id == int(ref))
    elif isinstance(ref, str) and (m := _JOB_NAME.fullmatch(ref)):
        stmt = stmt.where(Artifact.job_id == int(m[1]), Artifact.name == m[2])
    elif isinstance(ref, str) and _HASH_PREFIX.fullmatch(ref):
        prefix = ref.lower()
        stmt = stmt.where(Artifact.blob_hash.startswith(prefix)).order_by(Artifact.id).limit(6)
    else:
        raise ArtifactNotFound(
            f"{ref!r} is not an artifact reference: give an id, JOB:NAME, or at least "
            "8 hex digits of its hash"
        )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    if not rows:
        raise ArtifactNotFound(f"no artifact {ref!r}")
    if len(rows) > 1:
        names = ", ".join(_info(r).ref for r in rows[:5]) + (", …" if len(rows) > 5 else "")
        raise ArtifactNotFound(
            f"hash prefix {prefix!r} is ambiguous: it matches {names}; give more digits, "
            "an id or JOB:NAME"
        )
    return _info(rows[0])


def write_artifact(
    engine: Engine, ref: int | str, path: Path | str, *, overwrite: bool = False
) -> ArtifactInfo:
    """Write the artifact's content to `path`: streamed to a temporary file beside it,
    its SHA-256 and size checked, then moved into place. An existing file is left alone
    (FileExistsError) unless `overwrite`, which replaces it atomically if it is a regular
    file (NotRegularFile for a device, directory, FIFO..., or a symlink to one); on any
    error no partial file remains."""
    from tunelab.platform.outpaths import check_replaceable

    info = get_artifact(engine, ref)
    path = Path(path)
    if not overwrite and (path.exists() or path.is_symlink()):
        raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
    check_replaceable(path)  # only a regular file is ever replaced (NotRegularFile)
    chunks = open_blob(engine, info.hash)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.part"
    # os.open with 0o666 so that the final file gets the usual umask-derived mode.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if digest.hexdigest() != info.hash or size != info.size:
            raise BlobCorrupt(
                f"artifact {info.ref}: read {size} bytes hashing to {digest.hexdigest()}, "
                f"expected {info.size} bytes hashing to {info.hash}"
            )
        if overwrite:
            check_replaceable(path)  # again: it may have changed meanwhile
            os.replace(tmp, path)
        else:
            _link_no_clobber(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return info


def _link_no_clobber(tmp: Path, path: Path) -> None:
    """Move tmp to path unless path exists, atomically where hard links work."""
    try:
        os.link(tmp, path)  # fails with FileExistsError if a file appeared meanwhile
    except FileExistsError:
        raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)") from None
    except OSError:  # a file system without hard links
        if path.exists():
            raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)") from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def checkpoint_name(step: int, trial_key: str = "") -> str:
    """The artifact name of a checkpoint: checkpoint/<trial_key or 'job'>/<step:012d>."""
    return f"checkpoint/{trial_key or 'job'}/{step:012d}"


def save_checkpoint(
    engine: Engine,
    job_id: int,
    step: int,
    source: Source,
    *,
    trial_key: str = "",
    meta: Mapping[str, Any] | None = None,
    keep_last: int = 3,
) -> ArtifactInfo:
    """Save a checkpoint of the job (or trial) at `step`, then prune that job's (or
    trial's) checkpoints to the newest `keep_last`, pinned ones kept besides."""
    if keep_last < 1:
        raise ValueError("keep_last must be at least 1 (the checkpoint just saved)")
    step_ = _check_step(step)
    assert step_ is not None
    info = save_artifact(
        engine,
        job_id,
        checkpoint_name(step_, trial_key),
        source,
        trial_key=trial_key,
        checkpoint=True,
        step=step_,
        meta=meta,
    )
    _prune(engine, job_id, trial_key, keep_last=keep_last, dry_run=False)
    return info


def latest_checkpoint(engine: Engine, job_id: int, trial_key: str = "") -> ArtifactInfo | None:
    """The job's (or trial's) checkpoint with the highest step, None if none."""
    stmt = (
        select(*_COLUMNS)
        .where(Artifact.job_id == job_id, Artifact.trial_key == trial_key, Artifact.checkpoint)
        .order_by(Artifact.step.desc().nulls_last(), Artifact.id.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        row = conn.execute(stmt).first()
    return _info(row) if row else None


def pin(engine: Engine, ref: int | str, pinned: bool = True) -> ArtifactInfo:
    """Pin the artifact (pruning keeps it) or, with pinned=False, unpin it."""
    info = get_artifact(engine, ref)
    stmt = (
        update(Artifact)
        .where(Artifact.id == info.id)
        .values(pinned=bool(pinned))
        .returning(*_COLUMNS)
    )
    with engine.begin() as conn:
        row = conn.execute(stmt).first()
    if row is None:
        raise ArtifactNotFound(f"artifact {info.ref} was deleted meanwhile")
    return _info(row)


def delete_artifact(engine: Engine, ref: int | str) -> ArtifactInfo:
    """Delete the artifact (pinned or not), and its content if nothing else names it."""
    info = get_artifact(engine, ref)
    with engine.begin() as conn:
        conn.execute(delete(Artifact).where(Artifact.id == info.id))
        _collect(conn, [info.hash])
    return info


def _prune(
    engine: Engine, job_id: int | None, trial_key: str | None, *, keep_last: int, dry_run: bool
) -> list[ArtifactInfo]:
    if keep_last < 0:
        raise ValueError("keep_last must be >= 0")
    stmt = (
        select(*_COLUMNS)
        .where(Artifact.checkpoint)
        .order_by(
            Artifact.job_id,
            Artifact.trial_key,
            Artifact.step.desc().nulls_last(),
            Artifact.id.desc(),
        )
    )
    if job_id is not None:
        stmt = stmt.where(Artifact.job_id == job_id)
    if trial_key is not None:
        stmt = stmt.where(Artifact.trial_key == trial_key)
    for attempt in range(GC_RETRIES):
        try:
            with engine.begin() as conn:
                victims, group, rank = [], None, 0
                for row in conn.execute(stmt):
                    info = _info(row)
                    if (info.job_id, info.trial_key) != group:
                        group, rank = (info.job_id, info.trial_key), 0
                    rank += 1
                    if rank > keep_last and not info.pinned:
                        victims.append(info)
                if dry_run or not victims:
                    return victims
                ids = [v.id for v in victims]
                for i in range(0, len(ids), IN_CHUNK):
                    conn.execute(delete(Artifact).where(Artifact.id.in_(ids[i : i + IN_CHUNK])))
                _collect(conn, (v.hash for v in victims))
                return victims
        except IntegrityError:  # a concurrent save named content being collected: again
            if attempt == GC_RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def prune(
    engine: Engine, job_id: int | None = None, *, keep_last: int = 3, dry_run: bool = False
) -> list[ArtifactInfo]:
    """Delete checkpoints beyond the newest `keep_last` of each (job, trial), pinned ones
    excepted (other artifacts are never pruned), and the blobs no artifact names any
    more, in one transaction. Returns what was (with dry_run: would be) deleted."""
    return _prune(engine, job_id, None, keep_last=keep_last, dry_run=dry_run)
