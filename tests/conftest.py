"""Shared fixtures: real SQLite and PostgreSQL databases, and one real local Ray per session.

PostgreSQL comes from TUNELAB_TEST_PG_URL (default: postgres@127.0.0.1:5432, as on the
development machines). Each test gets a fresh database there. Where no server answers,
the PostgreSQL variants are skipped with the reason printed in pytest's summary.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get(
    "TUNELAB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)

# A driver given no cluster starts the warm local Ray of its data directory (each test
# has its own): here it stops as soon as its last driver ends, so no test leaves one up.
os.environ.setdefault("TUNELAB_RAY_IDLE_S", "0")

# Ray workers import tests.faulty_kinds by name; they inherit this environment.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
)


_CORES = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None


@pytest.fixture(autouse=True)
def _all_cores() -> Iterator[None]:
    """TVM binds the thread that runs a kernel in this process to one core: every process
    a later test starts from here (a driver, a warm Ray, a baseline's process) would
    inherit that one core. Each test starts with the cores the session started with."""
    if _CORES is not None and os.sched_getaffinity(0) != _CORES:
        os.sched_setaffinity(0, _CORES)
    yield


@pytest.fixture(autouse=True)
def _data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's own data directory or database."""
    monkeypatch.setenv("TUNELAB_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    monkeypatch.delenv("TUNELAB_DB_URL", raising=False)


_pg_reason: str | None = None


def _pg_available() -> str | None:
    """None if PostgreSQL answers, else why not (checked once)."""
    global _pg_reason
    if _pg_reason is None:
        try:
            engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
            _pg_reason = ""
        except Exception as exc:
            _pg_reason = f"no PostgreSQL at {make_url(PG_ADMIN_URL).render_as_string()}: {exc}"
            print(f"\nSKIPPING PostgreSQL tests: {_pg_reason}", file=sys.stderr)
    return _pg_reason or None


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    reason = _pg_available()
    if reason:
        pytest.skip(reason)
    name = f"tunelab_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    from tunelab.schema.db import dispose_engines

    dispose_engines()  # close pooled connections so the database can be dropped
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'trials.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on SQLite and on PostgreSQL."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """One local Ray for the whole session; yields its address for other drivers."""
    import ray

    if ray.is_initialized():  # an earlier test's job connected this process to another Ray
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def faulty_kind() -> object:
    from tests.faulty_kinds import FaultyGemm
    from tunelab.platform.kinds import register_kind

    kind = FaultyGemm()
    register_kind(kind)
    return kind
