"""Kind data: a kind's rows keyed by a JSON key's hash, first writer wins, on SQLite and
PostgreSQL."""

from __future__ import annotations

import hashlib

import pytest

from tunelab.platform import kind_data
from tunelab.schema.db import get_engine

KEY = {"op": "conv2d", "attrs": {"stride": [1, 1], "pad": 1}, "shape": [1, 64, 56, 56]}


@pytest.fixture
def engine(db_url: str):  # type: ignore[no-untyped-def]
    return get_engine(db_url)


def test_key_hash_is_canonical() -> None:
    reordered = {"shape": [1, 64, 56, 56], "attrs": {"pad": 1, "stride": [1, 1]}, "op": "conv2d"}
    assert kind_data.key_hash(KEY) == kind_data.key_hash(reordered)
    text = '{"attrs":{"pad":1,"stride":[1,1]},"op":"conv2d","shape":[1,64,56,56]}'
    assert kind_data.key_hash(KEY) == hashlib.sha256(text.encode()).hexdigest()
    assert kind_data.key_hash(KEY) != kind_data.key_hash({**KEY, "op": "dense"})
    with pytest.raises(ValueError):
        kind_data.key_hash({"x": float("nan")})
    with pytest.raises(ValueError):
        kind_data.key_hash({"x": object()})


def test_get_put_first_writer_wins(engine) -> None:  # type: ignore[no-untyped-def]
    assert kind_data.get(engine, "opcost", KEY) is None
    assert kind_data.put(engine, "opcost", KEY, {"latency_s": 1e-3})
    assert not kind_data.put(engine, "opcost", dict(reversed(KEY.items())), {"latency_s": 2.0})
    assert kind_data.get(engine, "opcost", KEY) == {"latency_s": 1e-3}
    # Kinds are separate namespaces.
    assert kind_data.get(engine, "other", KEY) is None
    assert kind_data.put(engine, "other", KEY, {"x": "y"})
    assert kind_data.count(engine, "opcost") == 1 and kind_data.count(engine, "other") == 1
    with pytest.raises(ValueError):
        kind_data.put(engine, "opcost", {"a": 1}, {"v": float("inf")})
    with pytest.raises(TypeError):
        kind_data.put(engine, "opcost", {"a": 1}, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        kind_data.put(engine, "", {"a": 1}, {})
    assert kind_data.count(engine, "opcost") == 1


def test_many_and_delete(engine) -> None:  # type: ignore[no-untyped-def]
    keys = [{"op": "dense", "n": n} for n in range(1200)]  # more than one IN list
    kind_data.put(engine, "opcost", keys[0], {"v": -1})
    items = [(k, {"v": k["n"]}) for k in keys] + [(keys[5], {"v": -5})]  # key 5 twice
    kind_data.put_many(engine, "opcost", items)
    kind_data.put_many(engine, "opcost", [])
    assert kind_data.count(engine, "opcost") == 1200
    got = kind_data.get_many(engine, "opcost", [*keys, {"op": "absent"}])
    assert len(got) == 1200
    assert got[kind_data.key_hash(keys[0])] == {"v": -1}  # written before: kept
    assert got[kind_data.key_hash(keys[5])] == {"v": 5}  # first pair of the batch
    assert got[kind_data.key_hash(keys[1199])] == {"v": 1199}
    assert kind_data.get_many(engine, "opcost", []) == {}
    assert kind_data.delete(engine, "opcost", keys[0]) == 1
    assert kind_data.get(engine, "opcost", keys[0]) is None
    assert kind_data.delete(engine, "opcost", keys[0]) == 0
    kind_data.put(engine, "other", keys[0], {"v": 0})
    assert kind_data.delete(engine, "opcost") == 1199
    assert kind_data.count(engine, "opcost") == 0
    assert kind_data.count(engine, "other") == 1
