"""Data a job kind keeps across jobs, so no kind needs tables of its own.

Rows are keyed by the kind and a JSON key (say an operator, its attributes, shapes,
device and environment); `key_hash` is the SHA-256 of the key's canonical JSON. Writes
are insert-or-ignore: the first writer of a key wins, as for a measurement taken once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy import delete as sql_delete

from tunelab.platform.jobs import insert_ignore
from tunelab.platform.kinds import canonical_json
from tunelab.schema.models import KindData

IN_CHUNK = 500  # keys per IN list
KIND_LEN = 64


def key_hash(key: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the key's canonical JSON."""
    if not isinstance(key, Mapping):
        raise TypeError(f"a kind data key is a dict, got {type(key).__name__}")
    return hashlib.sha256(canonical_json(key).encode()).hexdigest()


def _check_kind(kind: str) -> str:
    if not isinstance(kind, str) or not 1 <= len(kind) <= KIND_LEN:
        raise ValueError(f"kind must be a string of 1 to {KIND_LEN} characters, got {kind!r}")
    return kind


def _row(kind: str, key: Mapping[str, Any], value: Mapping[str, Any], now: datetime) -> dict:
    if not isinstance(value, Mapping):
        raise TypeError(f"a kind data value is a dict, got {type(value).__name__}")
    canonical_json(value)  # fail here, not in the database, on what JSON cannot hold
    return {"kind": kind, "key_hash": key_hash(key), "key": dict(key), "value": dict(value),
            "created_at": now}  # fmt: skip


def get(engine: Engine, kind: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
    """The value stored for the key, None if none."""
    stmt = select(KindData.value).where(
        KindData.kind == _check_kind(kind), KindData.key_hash == key_hash(key)
    )
    with engine.connect() as conn:
        return conn.execute(stmt).scalar()


def get_many(
    engine: Engine, kind: str, keys: Iterable[Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Values stored for the keys, by key hash (missing keys are absent)."""
    _check_kind(kind)
    hashes = sorted({key_hash(k) for k in keys})
    found: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        for i in range(0, len(hashes), IN_CHUNK):
            stmt = select(KindData.key_hash, KindData.value).where(
                KindData.kind == kind, KindData.key_hash.in_(hashes[i : i + IN_CHUNK])
            )
            found.update((h, v) for h, v in conn.execute(stmt))
    return found


def put(engine: Engine, kind: str, key: Mapping[str, Any], value: Mapping[str, Any]) -> bool:
    """Store the value unless the key has one already; returns whether it was written."""
    row = _row(_check_kind(kind), key, value, datetime.now(UTC))
    with engine.begin() as conn:
        # RETURNING gives a row only when inserted (rowcount is -1 on psycopg here).
        stmt = insert_ignore(engine, KindData.__table__).returning(KindData.id)
        return conn.execute(stmt, row).first() is not None


def put_many(
    engine: Engine, kind: str, items: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]]
) -> None:
    """Store (key, value) pairs in one statement; keys that have a value keep it (and
    of a key given twice, the first pair wins)."""
    _check_kind(kind)
    now = datetime.now(UTC)
    rows = [_row(kind, k, v, now) for k, v in items]
    if not rows:
        return
    with engine.begin() as conn:
        conn.execute(insert_ignore(engine, KindData.__table__), rows)


def count(engine: Engine, kind: str) -> int:
    """How many keys the kind has stored."""
    stmt = select(func.count()).select_from(KindData).where(KindData.kind == _check_kind(kind))
    with engine.connect() as conn:
        return conn.execute(stmt).scalar_one()


def delete(engine: Engine, kind: str, key: Mapping[str, Any] | None = None) -> int:
    """Delete one key's value, or (no key) all of the kind's data; returns rows deleted."""
    stmt = sql_delete(KindData).where(KindData.kind == _check_kind(kind))
    if key is not None:
        stmt = stmt.where(KindData.key_hash == key_hash(key))
    with engine.begin() as conn:
        return conn.execute(stmt).rowcount
