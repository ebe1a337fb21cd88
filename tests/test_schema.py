"""The trial database on SQLite and PostgreSQL: migrations, idempotent recording, queries."""

from __future__ import annotations

import pytest
from sqlalchemy import func, inspect, select

from tunelab.platform import jobs
from tunelab.platform.recorder import Recorder
from tunelab.platform.spec import parse_spec
from tunelab.schema.db import (
    DatabaseError,
    current_revision,
    get_engine,
    head_revision,
    upgrade,
)
from tunelab.schema.models import Base, Environment, Job, Trial, TrialStatus, Workload

SPEC = {"name": "s", "kind": "pipeline-search", "workload": {"M": 64, "N": 64, "K": 64}}
ENV = {
    "fingerprint": "f" * 64, "host": "h", "cpu_model": "cpu", "gpu_model": None,
    "gpu_driver": None, "cuda_version": None, "tvm_version": "0.27", "torch_version": None,
    "python_version": "3.11", "details": {"cpu_count": 2},
}  # fmt: skip


def test_migrations_match_models(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = get_engine(db_url)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], diff
    names = {ix["name"] for ix in inspect(engine).get_indexes("trials")}
    assert "ix_trials_job_id_status_latency_median_s" in names


def test_upgrade_is_idempotent(db_url: str) -> None:
    engine = get_engine(db_url)
    upgrade(engine)  # already at head: nothing to do, nothing fails
    assert current_revision(engine) == head_revision()
    assert get_engine(db_url) is engine  # one engine per URL, checked once


def test_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(DatabaseError, match=r"cannot reach database .*127\.0\.0\.1:1"):
        get_engine("postgresql://postgres:secret@127.0.0.1:1/nothing")
    with pytest.raises(DatabaseError, match="malformed database URL"):
        get_engine("not a url")


def test_password_is_never_printed() -> None:
    with pytest.raises(DatabaseError) as err:
        get_engine("postgresql://postgres:hunter2@127.0.0.1:1/nothing")
    assert "hunter2" not in str(err.value)


def test_same_workload_is_one_row(db_url: str) -> None:
    engine = get_engine(db_url)
    a = jobs.create_job(engine, parse_spec(SPEC))
    b = jobs.create_job(engine, parse_spec({**SPEC, "name": "other"}))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Workload)).scalar_one() == 1
        wl = conn.execute(select(Job.workload_id).where(Job.id.in_([a, b]))).scalars().all()
    assert len(set(wl)) == 1


def _record(rec: Recorder, key: str, latency: float | None, status: TrialStatus) -> None:
    rec.add(
        candidate=key,
        params={"k": key},
        status=status,
        latencies_s=[latency, latency * 1.1, latency * 0.9] if latency else None,
        environment=ENV,
    )


def test_recording_is_idempotent_and_counts(db_url: str) -> None:
    engine = get_engine(db_url)
    job_id = jobs.create_job(engine, parse_spec(SPEC))
    rec = Recorder(engine, job_id)
    _record(rec, "a", 2e-3, TrialStatus.ok)
    _record(rec, "b", 1e-3, TrialStatus.ok)
    _record(rec, "c", None, TrialStatus.build_error)
    _record(rec, "d", 5e-4, TrialStatus.wrong_result)  # fastest, but wrong
    rec.flush()
    # Recording the same candidates again (a resumed driver, a retried flush) adds nothing.
    rec2 = Recorder(engine, job_id)
    _record(rec2, "a", 9e-9, TrialStatus.ok)
    _record(rec2, "c", 9e-9, TrialStatus.ok)
    rec2.flush()

    with engine.connect() as conn:
        rows = conn.execute(select(Trial.candidate, Trial.status).where(Trial.job_id == job_id))
        assert sorted(rows) == [("a", "ok"), ("b", "ok"), ("c", "build_error"),
                                ("d", "wrong_result")]  # fmt: skip
        assert conn.execute(select(func.count()).select_from(Environment)).scalar_one() == 1
    job = jobs.get_job(engine, job_id)
    assert (job.n_done, job.n_ok, job.n_failed) == (4, 2, 2)
    assert job.best_latency_s == pytest.approx(1e-3)  # b: the wrong kernel is never best
    top = jobs.trials(engine, job_id, top=2)
    assert [t.candidate for t in top] == ["b", "a"]
    assert top[0].latency_min_s == pytest.approx(0.9e-3)
    assert top[0].n_repeats == 3
    assert jobs.status_counts(engine, job_id) == {"ok": 2, "build_error": 1, "wrong_result": 1}
    # What a resumed driver skips and learns from: only `ok` trials carry a latency.
    assert {k: v for k, v, _ in jobs.recorded(engine, job_id)} == pytest.approx(
        {"a": 2e-3, "b": 1e-3, "c": None, "d": None}
    )


def test_jsonb_on_postgres(pg_url: str) -> None:
    engine = get_engine(pg_url)
    cols = {c["name"]: c["type"] for c in inspect(engine).get_columns("trials")}
    assert type(cols["params"]).__name__ == "JSONB"
    job_id = jobs.create_job(engine, parse_spec(SPEC))
    rec = Recorder(engine, job_id)
    for stages in (1, 2, 3):
        rec.add(candidate=str(stages), params={"stages": stages}, status=TrialStatus.ok,
                latencies_s=[1e-3 / stages])  # fmt: skip
    rec.flush()
    with engine.connect() as conn:
        q = select(Trial.candidate).where(Trial.params["stages"].as_integer() >= 2)
        assert sorted(conn.execute(q).scalars()) == ["2", "3"]
