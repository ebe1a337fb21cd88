"""Steps: buffered idempotent writes, a failed flush losing nothing, streamed reads and
curves down-sampled in the database, on SQLite and PostgreSQL."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import IntegrityError

from tests.jobrows import make_job
from tunelab.platform.steps import (
    CurvePoint,
    StepWriter,
    curve,
    last_step,
    read_steps,
    trial_keys_with_steps,
)
from tunelab.schema.db import get_engine


@pytest.fixture
def engine(db_url: str):  # type: ignore[no-untyped-def]
    return get_engine(db_url)


def test_round_trip_and_validation(engine) -> None:  # type: ignore[no-untyped-def]
    job = make_job(engine)
    w = StepWriter(engine, job)
    w.add(0, {"loss": 1.5, "lr": 0.1, "phase": "warmup", "ok": True, "bad": float("nan")})
    w.add(1, {"loss": float("inf"), "n": 3})
    assert w.pending() == 2
    assert w.flush() == 2 and w.pending() == 0
    assert w.flush() == 0
    rows = list(read_steps(engine, job))
    assert [r["step"] for r in rows] == [0, 1]
    assert rows[0]["metrics"] == {
        "loss": 1.5,
        "lr": 0.1,
        "phase": "warmup",
        "ok": True,
        "bad": None,
    }
    assert rows[1]["metrics"] == {"loss": None, "n": 3}
    assert rows[0]["recorded_at"] is not None
    for bad_step in (-1, 1.0, "3", True, 2**63):
        with pytest.raises((TypeError, ValueError)):
            w.add(bad_step, {"loss": 1.0})  # type: ignore[arg-type]
    for bad_metrics in ({}, {"": 1.0}, {'a"b': 1.0}, {"x": [1, 2]}, {"x": {"y": 1}}, [("x", 1)]):
        with pytest.raises((TypeError, ValueError)):
            w.add(2, bad_metrics)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        w.add(2, {"loss": 1.0}, trial_key="k" * 65)
    assert w.pending() == 0


def test_a_step_reported_twice_keeps_its_first_record(engine) -> None:  # type: ignore[no-untyped-def]
    job = make_job(engine)
    w = StepWriter(engine, job)
    w.add(5, {"loss": 1.0})
    w.add(5, {"loss": 2.0})  # same buffer
    assert w.pending() == 1
    w.flush()
    w.add(5, {"loss": 3.0})  # already in the database
    w.add(6, {"loss": 4.0})
    w.add(5, {"loss": 5.0}, trial_key="t1")  # another trial: its own step 5
    w.flush()
    assert [(r["step"], r["metrics"]["loss"]) for r in read_steps(engine, job)] == [
        (5, 1.0),
        (6, 4.0),
    ]
    assert [r["metrics"]["loss"] for r in read_steps(engine, job, "t1")] == [5.0]


def test_a_failed_flush_keeps_its_buffer(engine) -> None:  # type: ignore[no-untyped-def]
    missing = 987_654  # no such job: the foreign key refuses the rows
    w = StepWriter(engine, missing)
    for step in range(10):
        w.add(step, {"loss": float(step)})
    with pytest.raises(IntegrityError):
        w.flush()
    assert w.pending() == 10
    # Reports made after the failure join the buffer; earlier reports of a step still win.
    w.add(3, {"loss": -1.0})
    w.add(10, {"loss": 10.0})
    assert w.pending() == 11
    with pytest.raises(IntegrityError):
        w.flush()
    assert w.pending() == 11
    make_job(engine, job_id=missing)
    assert w.flush() == 11 and w.pending() == 0
    rows = list(read_steps(engine, missing))
    assert [r["step"] for r in rows] == list(range(11))
    assert [r["metrics"]["loss"] for r in rows] == [float(s) for s in range(11)]


def test_a_flush_on_a_stopped_engine_keeps_its_buffer(db_url: str) -> None:
    engine = get_engine(db_url)
    job = make_job(engine)
    broken = create_engine(db_url.replace("trials.db", "missing/dir/x.db"))
    if broken.dialect.name == "postgresql":
        broken = create_engine(
            db_url.replace("127.0.0.1:5432", "127.0.0.1:1"), connect_args={"connect_timeout": 2}
        )
    w = StepWriter(broken, job)
    w.add(1, {"loss": 1.0})
    with pytest.raises(Exception):  # noqa: B017 - any connection error
        w.flush()
    assert w.pending() == 1
    w.engine = engine  # the database is back
    assert w.flush() == 1
    assert last_step(engine, job) == 1


def test_due(engine) -> None:  # type: ignore[no-untyped-def]
    job = make_job(engine)
    w = StepWriter(engine, job, max_rows=3, max_wait_s=3600)
    assert not w.due()
    w.add(0, {"a": 1})
    w.add(1, {"a": 1})
    assert not w.due()
    w.add(2, {"a": 1})
    assert w.due()
    w.flush()
    assert not w.due()
    w = StepWriter(engine, job, max_rows=1000, max_wait_s=0.0)
    w.add(3, {"a": 1})
    assert w.due()


def test_reads(engine) -> None:  # type: ignore[no-untyped-def]
    job, other = make_job(engine), make_job(engine)
    assert last_step(engine, job) is None
    assert trial_keys_with_steps(engine, job) == []
    with StepWriter(engine, job) as w:
        for step in range(0, 100, 2):
            w.add(step, {"v": step})
        w.add(7, {"v": 1}, trial_key="bbb")
        w.add(9, {"v": 1}, trial_key="aaa")
    with StepWriter(engine, other) as w:
        w.add(1000, {"v": 1})
    assert last_step(engine, job) == 98
    assert last_step(engine, job, "aaa") == 9
    assert trial_keys_with_steps(engine, job) == ["", "aaa", "bbb"]
    assert [r["step"] for r in read_steps(engine, job, start=10, stop=20)] == [10, 12, 14, 16, 18]
    assert [r["step"] for r in read_steps(engine, job, start=90, limit=3)] == [90, 92, 94]
    assert len(list(read_steps(engine, job))) == 50


def _write(engine, job: int, steps, metric=lambda s: {"m": s}) -> None:  # type: ignore[no-untyped-def]
    w = StepWriter(engine, job, max_rows=100_000)
    for s in steps:
        w.add(s, metric(s))
    w.flush()


def test_curve_downsamples_in_equal_buckets(engine) -> None:  # type: ignore[no-untyped-def]
    job = make_job(engine)
    _write(engine, job, range(10_000))
    points = curve(engine, job, "m", buckets=10)
    # Bucket b holds steps 1000b .. 1000b+999, and the metric equals the step.
    assert points == [
        CurvePoint(1000 * b, 1000 * b + 999, 1000 * b, 1000 * b + 999, 1000 * b + 499.5, 1000)
        for b in range(10)
    ]
    assert all(isinstance(p.mean, float) and isinstance(p.count, int) for p in points)


def test_curve_uneven_range(engine) -> None:  # type: ignore[no-untyped-def]
    job = make_job(engine)
    _write(engine, job, range(100, 125), lambda s: {"m": 2 * s})  # 25 steps, 10 buckets
    points = curve(engine, job, "m", buckets=10)
    # bucket = (step - 100) * 10 // 25: offsets 0-2, 3-4, 5-7, 8-9, 10-12, 13-14, ...
    ranges = [(0, 2), (3, 4), (5, 7), (8, 9), (10, 12), (13, 14), (15, 17), (18, 19), (20, 22),
              (23, 24)]  # fmt: skip
    assert [(p.first_step - 100, p.last_step - 100) for p in points] == ranges
    for p, (a, b) in zip(points, ranges, strict=True):
        assert p.count == b - a + 1
        assert (p.min, p.max) == (2 * (100 + a), 2 * (100 + b))
        assert math.isclose(p.mean, 2 * (100 + (a + b) / 2))


def test_curve_is_exact_with_fewer_steps_than_buckets(engine) -> None:  # type: ignore[no-untyped-def]
    job = make_job(engine)
    _write(engine, job, [3, 4, 8, 20, 21], lambda s: {"m": s / 2})
    assert curve(engine, job, "m", buckets=100) == [
        CurvePoint(s, s, s / 2, s / 2, s / 2, 1) for s in [3, 4, 8, 20, 21]
    ]
    # Sparse steps that would share a bucket still get one point each.
    sparse = make_job(engine)
    _write(engine, sparse, [0, 1, 2, 5_000, 1_000_000])
    assert [(p.first_step, p.count) for p in curve(engine, sparse, "m", buckets=10)] == [
        (0, 1),
        (1, 1),
        (2, 1),
        (5_000, 1),
        (1_000_000, 1),
    ]


def test_curve_skips_steps_without_the_metric(engine) -> None:  # type: ignore[no-untyped-def]
    job = make_job(engine)

    def metrics(s: int) -> dict:
        if s % 3 == 0:
            return {"other": 1.0}
        if s % 3 == 1:
            return {"m": s}
        return {"m": "not a number"} if s % 2 else {"m": None}

    _write(engine, job, range(30), metrics)
    points = curve(engine, job, "m", buckets=3)  # steps 0-9, 10-19, 20-29
    assert [(p.first_step, p.last_step, p.count) for p in points] == [
        (1, 7, 3),
        (10, 19, 4),
        (22, 28, 3),
    ]
    assert points[1].mean == (10 + 13 + 16 + 19) / 4
    assert curve(engine, job, "absent") == []
    assert curve(engine, job, "m", trial_key="nope") == []
    with pytest.raises(ValueError):
        curve(engine, job, "m", buckets=0)


def test_curve_skips_nulls_and_non_numbers(engine) -> None:  # type: ignore[no-untyped-def]
    # Nulls only (PostgreSQL's cheaper path), then a bool too (it checks JSON types).
    for odd in (None, True):
        job = make_job(engine)
        _write(engine, job, range(20), lambda s, odd=odd: {"m": s if s % 2 else odd, "x": 1})
        points = curve(engine, job, "m", buckets=2)  # steps 0-9, 10-19
        assert [(p.first_step, p.last_step, p.count, p.mean) for p in points] == [
            (1, 9, 5, 5.0),
            (11, 19, 5, 15.0),
        ]
