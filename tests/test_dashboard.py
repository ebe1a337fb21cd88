"""The dashboard on SQLite and PostgreSQL: its queries' numbers, every page through
Streamlit's AppTest, the messages for empty, failed-only and unreachable databases, and
read-only access (a SELECT-only PostgreSQL role; SQLite opened mode=ro)."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from streamlit.testing.v1 import AppTest

from tests.conftest import PG_ADMIN_URL
from tests.seed_data import (
    CPU_ENV,
    environment_id,
    insert_trials,
    make_job,
    refresh_job,
    trial,
)
from tunelab.dashboard import queries, registry
from tunelab.dashboard.db import SchemaMissing, clear_cache, open_readonly
from tunelab.schema.db import DatabaseError, get_engine
from tunelab.schema.models import Job, JobStatus
from tunelab.workers.pipeline_search.dashboard import queries as speedup_queries

APP = Path(__file__).resolve().parent.parent / "tunelab" / "dashboard" / "app.py"
MS = 1e-3
PIPE = {"pipelined": [{"buffer": "A", "level": "global->local", "stages": 2}]}

# Job "alpha" (random search), trials in recording order:
# (status, latency_ms, stages, predicted_ms)
ALPHA = [
    ("build_error", None, 1, None),
    ("ok", 3.0, 1, 3.0),
    ("ok", 2.0, 2, 2.5),
    ("timeout", None, 3, None),
    ("ok", 2.5, 1, 2.0),
    ("ok", 1.0, 3, 1.0),
    ("wrong_result", None, 2, None),
    ("ok", 1.005, 2, 1.1),
]
# Spearman: measured ranks 5,3,4,1,2 vs predicted 5,4,3,1,2 -> sum d^2 = 2 -> 1 - 12/120.
ALPHA_RHO = 0.9
ALPHA_MAPE = (0 + 0.5 / 2.0 + 0.5 / 2.5 + 0 + 0.095 / 1.005) / 5 * 100


@pytest.fixture(autouse=True)
def _fresh_engines() -> Iterator[None]:
    yield
    import streamlit as st

    st.cache_resource.clear()
    clear_cache()


def seed(url: str) -> dict[str, int]:
    """Four jobs with hand-made trials whose numbers the tests check."""
    engine = get_engine(url)
    env = environment_id(engine, CPU_ENV)
    ids: dict[str, int] = {}
    ids["alpha"] = make_job(engine, "alpha", size=256, strategy="random")
    rows = []
    for n, (status, lat, stages, pred) in enumerate(ALPHA):
        rows.append(
            trial(ids["alpha"], n, {"tile_m": 16 * (1 + n % 2), "stages": stages}, status,
                  lat * MS if lat else None, predicted=pred * MS if pred else None,
                  extra=PIPE if stages > 1 else {}, environment_id=env,
                  error=None if status == "ok" else f"{status} in trial {n}")
        )  # fmt: skip
    insert_trials(engine, rows)
    refresh_job(engine, ids["alpha"])
    ids["beta"] = make_job(engine, "beta", size=256, strategy="exhaustive")
    insert_trials(
        engine,
        [
            trial(ids["beta"], 0, {"stages": 1}, "ok", 4.0 * MS, environment_id=env),
            trial(ids["beta"], 1, {"stages": 2}, "ok", 2.0 * MS, extra=PIPE, environment_id=env),
            trial(ids["beta"], 2, {"stages": 1}, "ok", 1.6 * MS, extra={"baseline": "torch"},
                  environment_id=env),
        ],
    )  # fmt: skip
    refresh_job(engine, ids["beta"])
    ids["broken"] = make_job(engine, "broken", size=128, status=JobStatus.failed)
    insert_trials(
        engine,
        [
            trial(ids["broken"], n, {"stages": 1}, s, None, error=f"{s}: boom")
            for n, s in enumerate(["build_error", "build_error", "timeout"])
        ],
    )
    refresh_job(engine, ids["broken"])
    ids["fresh"] = make_job(engine, "fresh", size=64, status=JobStatus.pending)
    return ids


# Pages that kinds bring, by their paths relative to the app.
PLUGIN_PAGES = {"speedups": "../workers/pipeline_search/dashboard/speedups.py"}


def app(url: str, monkeypatch: pytest.MonkeyPatch, page: str | None = None, **query: Any):
    """The dashboard as AppTest, run on `page` (None: the default, Jobs)."""
    monkeypatch.setenv("TUNELAB_DB_URL", url)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    for k, v in query.items():
        at.query_params[k] = str(v)
    if page:
        at.switch_page(PLUGIN_PAGES.get(page, f"views/{page}.py")).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def figures(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("info", "warning", "error", "caption", "markdown")
             for e in getattr(at, kind)]  # fmt: skip
    return "\n".join(str(p) for p in parts)


# --------------------------------------------------------------------------- queries


def test_queries_compute_the_numbers(db_url: str) -> None:
    ids = seed(db_url)
    engine = open_readonly(db_url)
    alpha, beta = ids["alpha"], ids["beta"]

    curves = queries.best_so_far(engine, [alpha, beta, ids["broken"]])
    assert [(p.n, round(p.best / MS, 3)) for p in curves[alpha]] == [
        (2, 3.0), (3, 2.0), (6, 1.0), (8, 1.0)
    ]  # fmt: skip
    assert curves[ids["broken"]] == []
    assert queries.trials_to_reach(curves[alpha]) == 6  # 1.005 is within 1% too, but later
    assert queries.trials_to_reach(curves[alpha], fraction=0.5) == 3  # <= 2.0 ms
    assert queries.status_counts(engine, alpha) == {
        "ok": 5, "build_error": 1, "timeout": 1, "wrong_result": 1
    }  # fmt: skip

    report = queries.model_report(engine, alpha, k=3)
    assert report.overall is not None and report.overall.n == 5
    assert report.overall.spearman == pytest.approx(ALPHA_RHO)
    assert report.overall.topk_recall == pytest.approx(2 / 3)
    assert report.overall.mape_pct == pytest.approx(ALPHA_MAPE)
    assert sum(w.n for w in report.windows) == 5 and report.by == "window"
    assert queries.model_report(engine, beta).overall is None  # no predictions
    assert len(queries.prediction_sample(engine, alpha)) == 5
    assert len(queries.prediction_sample(engine, alpha, limit=2)) == 2  # 1st and 4th of 5

    rows = {r.job_id: r for r in speedup_queries.speedups(engine, [alpha, beta, ids["broken"]])}
    assert set(rows) == {alpha, beta}
    assert rows[alpha].pipelined_s == pytest.approx(1.0 * MS)
    assert rows[alpha].unpipelined_s == pytest.approx(2.5 * MS)
    assert rows[alpha].speedup == pytest.approx(2.5)
    assert rows[beta].baselines == {"torch": pytest.approx(1.6 * MS)}
    assert rows[beta].unpipelined_s == pytest.approx(4.0 * MS)  # the baseline is not a variant
    assert rows[beta].vs_baseline("torch") == pytest.approx(0.8)
    assert rows[alpha].device == CPU_ENV["cpu_model"]
    # alpha and beta tune the same workload: one row, the best of each variant of both.
    (one,) = speedup_queries.by_workload(list(rows.values()))
    assert one.job_ids == (alpha, beta)
    assert one.pipelined_s == pytest.approx(1.0 * MS)  # alpha's
    assert one.unpipelined_s == pytest.approx(2.5 * MS)  # alpha's (beta: 4.0)
    assert one.speedup == pytest.approx(2.5)
    assert one.vs_baseline("torch") == pytest.approx(1.6)  # beta's 1.6 ms / alpha's 1.0

    flt = queries.TrialFilter(job_id=alpha, params=(("stages", "2"),), order="latency")
    assert queries.count_trials(engine, flt) == 3
    page = queries.trial_page(engine, flt)
    assert [r["status"] for r in page] == ["ok", "ok", "wrong_result"]  # fastest, NULL last
    assert page[0]["latency_median_s"] == pytest.approx(1.005 * MS) and page[0]["p.stages"] == 2
    assert len(queries.trial_page(engine, queries.TrialFilter(), page=1, page_size=10)) == 4
    csv_text = "".join(queries.iter_trials_csv(engine, queries.TrialFilter(job_id=alpha), 3))
    lines = csv_text.strip().splitlines()
    assert len(lines) == 1 + len(ALPHA) and lines[0].startswith("id,job_id,status")
    assert "p.stages" in lines[0]
    detail = queries.trial_detail(engine, page[0]["id"])
    assert detail is not None and detail["extra"] == PIPE and detail["host"] == "node-1"
    assert queries.common_errors(engine, ids["broken"])[0] == {
        "status": "build_error", "error": "build_error: boom", "trials": 2
    }  # fmt: skip


def _avg_ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _spearman(a: list[float], b: list[float]) -> float:
    ra, rb = _avg_ranks(a), _avg_ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))


def test_speedup_geomeans_are_over_workloads_not_jobs(sqlite_url: str) -> None:
    """Two workloads, each tuned by two jobs: the geometric mean is over the two
    workloads (each the best of its jobs), however often a workload was tuned."""
    ids = seed(sqlite_url)
    engine = get_engine(sqlite_url)
    env = environment_id(engine, CPU_ENV)
    small = []
    for name, (plain_ms, piped_ms) in (("gamma", (3.0, 1.0)), ("delta", (2.0, 1.5))):
        job = make_job(engine, name, size=128)
        insert_trials(engine, [
            trial(job, 0, {"stages": 1}, "ok", plain_ms * MS, environment_id=env),
            trial(job, 1, {"stages": 1, "reg_stages": 2}, "ok", piped_ms * MS, extra=PIPE,
                  environment_id=env),
        ])  # fmt: skip
        refresh_job(engine, job)
        small.append(job)
    per_job = speedup_queries.speedups(engine, [ids["alpha"], ids["beta"], *small])
    # per job: 2.5, 2.0, 3.0, 1.333 (the mean over jobs would be their geomean, 2.09)
    assert [r.speedup for r in per_job] == pytest.approx([2.5, 2.0, 3.0, 2.0 / 1.5])
    rows = speedup_queries.by_workload(per_job)
    assert [r.job_ids for r in rows] == [(ids["alpha"], ids["beta"]), tuple(small)]
    # 256^3: 2.5 ms / 1.0 ms; 128^3: 2.0 ms (delta) / 1.0 ms (gamma; reg_stages 2 pipelines)
    assert [r.speedup for r in rows] == pytest.approx([2.5, 2.0])
    assert queries.geomean([r.speedup for r in rows]) == pytest.approx(math.sqrt(5))


def test_model_metrics_match_a_reference_with_ties_and_versions(sqlite_url: str) -> None:
    engine = get_engine(sqlite_url)
    job = make_job(engine, "model", size=64)
    rng = random.Random(3)
    meas = [rng.choice([1, 2, 3, 4, 5, 6]) * MS for _ in range(120)]  # many ties
    pred = [m * rng.choice([0.5, 1, 1.5]) for m in meas]
    # versions of 40 trials: each is a window of its own (windows hold >= 32 trials)
    rows = [
        trial(job, i, {"stages": 1}, "ok", m, predicted=p, extra={"model_version": i // 40})
        for i, (m, p) in enumerate(zip(meas, pred, strict=True))
    ]
    insert_trials(engine, rows)
    report = queries.model_report(open_readonly(sqlite_url), job, k=5)
    assert report.overall is not None
    assert report.overall.spearman == pytest.approx(_spearman(pred, meas))
    assert report.by == "model version" and [w.label for w in report.windows] == ["v0", "v1", "v2"]
    for v, w in enumerate(report.windows):
        assert w.n == 40 and w.last_trial - w.first_trial == 39  # type: ignore[operator]
        part = slice(40 * v, 40 * v + 40)
        assert w.spearman == pytest.approx(_spearman(pred[part], meas[part]))
        mape = sum(abs(p - m) / m for p, m in zip(pred[part], meas[part], strict=True)) / 40
        assert w.mape_pct == pytest.approx(mape * 100)


# --------------------------------------------------------------------------- pages


def test_registry_lists_pages_in_order_and_by_kind() -> None:
    pages = registry.discover()
    assert [p.title for p in pages] == [
        "Jobs", "Job", "History & parameters", "Performance model", "Cost models", "Speedups",
        "Graph rewriting", "Trials",
    ]  # fmt: skip
    assert all(p.path.is_file() for p in pages) and pages[0].default
    speed = next(p for p in pages if p.title == "Speedups")
    assert speed.applies_to(["pipeline-search"]) and not speed.applies_to(["graph-rewrite"])
    graphs = next(p for p in pages if p.title == "Graph rewriting")
    assert graphs.applies_to(["graph-rewrite"]) and not graphs.applies_to(["pipeline-search"])
    assert pages[0].applies_to([])  # kind-independent pages always show


def test_jobs_page(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = seed(db_url)
    at = app(db_url, monkeypatch)
    assert at.title[0].value == "Jobs"
    df = at.dataframe[0].value
    assert list(df["id"]) == [ids["fresh"], ids["broken"], ids["beta"], ids["alpha"]]
    alpha = df[df["id"] == ids["alpha"]].iloc[0]
    assert alpha["trials"] == "8/8" and alpha["ok"] == 5 and alpha["failed"] == 3
    assert alpha["best"] == "1 ms" and alpha["progress"] == 1.0
    assert alpha["strategy"] == "random" and set(alpha["best params"].split(", ")) == {
        "tile_m=32",
        "stages=3",
    }
    assert df[df["id"] == ids["broken"]].iloc[0]["best"] == ""  # blank, not None/NaN
    assert "refreshing every" in texts(at)  # a pending job: the table refreshes
    at.multiselect(key="status").set_value(["failed"]).run()
    assert list(at.dataframe[0].value["id"]) == [ids["broken"]]
    at.multiselect(key="status").set_value(["completed"]).run()
    assert sorted(at.dataframe[0].value["id"]) == [ids["alpha"], ids["beta"]]
    assert "refreshing" not in texts(at)


def test_job_page(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = seed(db_url)
    at = app(db_url, monkeypatch, "job", job=ids["alpha"])
    m = metrics(at)
    assert m["trials"] == "8/8" and m["ok"] == "5" and m["best"] == "1 ms"
    assert m["trials to 99% of best known"] == "6" and m["failed"] == "3"
    assert "counted against the best known, 1 ms: " in texts(at)
    # beta's best (2 ms) never came within 1% of alpha's 1 ms on the same workload and CPU
    beta = app(db_url, monkeypatch, "job", job=ids["beta"])
    assert metrics(beta)["trials to 99% of best known"] == "not in 3"
    assert f"counted against the best known, 1 ms: job {ids['alpha']}" in texts(beta)
    assert "**completed**" in texts(at)
    curve, statuses = figures(at)
    (line,) = curve["data"]
    assert line["x"] == [2, 3, 6, 8] and line["y"] == pytest.approx([3.0, 2.0, 1.0, 1.0])
    assert line["name"] == f"job {ids['alpha']} · random"
    bars = statuses["data"][0]  # horizontal: statuses along y, counts along x
    assert bars["orientation"] == "h"
    assert dict(zip(bars["y"], bars["x"], strict=True)) == {
        "ok": 5, "build_error": 1, "timeout": 1, "wrong_result": 1
    }  # fmt: skip
    env = at.dataframe[1].value.iloc[0]
    assert env["trials"] == 8 and env["CPU"] == CPU_ENV["cpu_model"]

    at.multiselect(key="compare").set_value([ids["beta"]]).run()
    curve = figures(at)[0]
    assert [t["name"] for t in curve["data"]] == [
        f"job {ids['alpha']} · random", f"job {ids['beta']} · exhaustive"
    ]  # fmt: skip

    at.selectbox(key="job").set_value(ids["broken"]).run()
    assert not at.exception
    assert "all 3 trials failed" in texts(at)
    assert len(figures(at)) == 1  # no curve, only the status bars
    errors = at.dataframe[-1].value
    assert list(errors["error"]) == ["build_error: boom", "timeout: boom"]


def test_model_page(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = seed(db_url)
    at = app(db_url, monkeypatch, "model", job=ids["alpha"])
    m = metrics(at)
    assert m["trials with a prediction"] == "5"
    assert m["Spearman \u03c1"] == f"{ALPHA_RHO:.3f}"
    assert m["top-10 recall"] == "n/a (n ≤ k)"  # k above n: every trial is in both top 10s
    assert m["MAPE"] == f"{ALPHA_MAPE:.1f} %"
    assert m["trials to reach 99% of the best"] == "6 of 8"
    scatter, _ = figures(at)
    points, ideal = scatter["data"]
    assert sorted(points["x"]) == pytest.approx([1.0, 1.005, 2.0, 2.5, 3.0])
    assert scatter["layout"]["xaxis"]["type"] == "log" and ideal["x"] == ideal["y"]
    at.number_input(key="k").set_value(3).run()
    assert metrics(at)["top-3 recall"] == "0.67"

    at.selectbox(key="job").set_value(ids["beta"]).run()
    assert "No predictions recorded yet" in texts(at)
    # beta (2.0 ms) never came within 1% of alpha's 1.0 ms: same workload, target, CPU
    assert metrics(at)["trials to reach 99% of the best"] == "not reached in 3"
    assert f"job {ids['alpha']}'s best (random, 8 trials)" in texts(at)
    assert "is 50.0% of it" in texts(at)
    assert figures(at) == []


def test_speedups_page(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = seed(db_url)
    at = app(db_url, monkeypatch, "speedups")
    m = metrics(at)
    # One workload (alpha and beta both tune 256^3): pipelined 1.0 ms (alpha), unpipelined
    # 2.5 ms (alpha), torch 1.6 ms (beta); not a geomean over the two jobs (sqrt(5)).
    assert m["geomean speedup, pipelined vs unpipelined"] == "2.500x"
    assert m["geomean speedup vs torch"] == "1.600x"
    (bars,) = figures(at)
    by_name = {t["name"]: t for t in bars["data"]}
    assert set(by_name) == {"unpipelined", "pipelined", "torch"}
    assert by_name["pipelined"]["y"] == pytest.approx([0.4])
    df = at.dataframe[0].value
    assert list(df["jobs"]) == [f"{ids['beta']}, {ids['alpha']}"]  # newest first
    assert df.iloc[0]["torch"] == "1.6 ms" and df.iloc[0]["speed-up"] == "2.5x"
    assert df.iloc[0]["pipelined"] == "1 ms" and df.iloc[0]["unpipelined"] == "2.5 ms"
    at.multiselect(key="jobs").set_value([ids["alpha"]]).run()
    assert metrics(at) == {"geomean speedup, pipelined vs unpipelined": "2.500x"}
    at.multiselect(key="jobs").set_value([ids["broken"]]).run()
    assert "nothing to compare" in texts(at)


def test_trials_page(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = seed(db_url)
    at = app(db_url, monkeypatch, "trials", job=ids["alpha"])
    assert "8 trials match" in texts(at)
    df = at.dataframe[0].value
    assert len(df) == 8 and list(df["status"])[:2] == ["build_error", "ok"]
    at.multiselect(key="status").set_value(["ok"]).run()
    at.text_input(key="params").input("stages=2").run()
    at.selectbox(key="sort").set_value("latency_median_s").run()
    df = at.dataframe[0].value
    assert list(df["median"]) == ["1.005 ms", "2 ms"]
    assert "2 trials match" in texts(at)
    select_row(at, 0)
    assert metrics(at)["median"] == "1.005 ms"
    pipelined = next(d for d in at.dataframe if "buffer" in d.value.columns).value
    assert pipelined.iloc[0].to_dict() == {"buffer": "A", "level": "global->local", "stages": 2}
    assert any(json.loads(c.value) == {"tile_m": 32, "stages": 2} for c in at.code)

    at.multiselect(key="status").set_value(["timeout"]).run()
    at.text_input(key="params").input("").run()
    assert "1 trials match" in texts(at)
    select_row(at, 0)
    assert any("timeout in trial 3" in c.value for c in at.code)  # the error text
    at.selectbox(key="job").set_value(0).run()  # all jobs
    assert "2 trials match" in texts(at)  # alpha's and broken's timeouts


def select_row(at: AppTest, row: int, table: int = 0) -> None:
    """Click row `row` (0-based) of the page's `table`-th dataframe, as a user would."""
    key = at.dataframe[table].key
    at.session_state[key] = {"selection": {"rows": [row], "columns": [], "cells": []}}
    at.run()
    assert not at.exception, [e.message for e in at.exception]


def test_empty_database(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    get_engine(db_url)  # tables, no jobs
    for page in (None, "job", "model", "trials"):
        at = app(db_url, monkeypatch, page)
        assert "No jobs yet" in texts(at), page
    assert "Speedups" not in [p.title for p in registry.discover() if p.applies_to([])]


def test_unreachable_database_is_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    at = app("postgresql://postgres:hunter2@127.0.0.1:1/nothing", monkeypatch)
    assert "cannot be reached" in at.error[0].value and "127.0.0.1:1" in at.error[0].value
    assert "hunter2" not in texts(at)


def test_missing_file_and_missing_schema_are_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app(f"sqlite:///{tmp_path / 'none.db'}", monkeypatch)
    assert "no database at" in at.error[0].value
    empty = tmp_path / "empty.db"
    create_engine(f"sqlite:///{empty}").connect().close()
    with pytest.raises(SchemaMissing):
        open_readonly(f"sqlite:///{empty}")
    at = app(f"sqlite:///{empty}", monkeypatch)
    assert "no tunelab tables" in at.warning[0].value


def test_cli_refuses_an_unusable_database_with_exit_3(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tunelab.platform.cli", "dashboard", "--db",
         "postgresql://postgres@127.0.0.1:1/x", "--port", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 3 and "cannot reach database" in proc.stderr


def test_sqlite_connection_is_read_only(sqlite_url: str) -> None:
    ids = seed(sqlite_url)
    engine = open_readonly(sqlite_url)
    with pytest.raises(DBAPIError, match=r"readonly|read-only"), engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == ids["alpha"]).values(name="x"))


@pytest.mark.postgres
def test_postgres_select_only_role(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's read-only role: the dashboard works through it; writes are refused."""
    ids = seed(pg_url)
    role = f"tunelab_reader_{uuid.uuid4().hex[:8]}"
    database = make_url(pg_url).database
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for stmt in (
            f"CREATE ROLE {role} LOGIN",
            f'GRANT CONNECT ON DATABASE "{database}" TO {role}',
            f"GRANT USAGE ON SCHEMA public TO {role}",
            f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}",
        ):
            conn.execute(text(stmt))
    reader_url = make_url(pg_url).set(username=role).render_as_string(hide_password=False)
    try:
        at = app(reader_url, monkeypatch, "job", job=ids["alpha"])
        assert metrics(at)["best"] == "1 ms"
        direct = create_engine(reader_url)
        with pytest.raises(DBAPIError, match="permission denied"), direct.begin() as conn:
            conn.execute(update(Job).values(name="x"))
        direct.dispose()
        # Even as a role that may write, the dashboard's own connection refuses to.
        ro = open_readonly(pg_url)
        with pytest.raises(DBAPIError, match="read-only transaction"), ro.begin() as conn:
            conn.execute(update(Job).values(name="x"))
    finally:
        import streamlit as st

        st.cache_resource.clear()
        clear_cache()
        with admin.connect() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
        admin.dispose()
        with create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text(f"DROP ROLE IF EXISTS {role}"))


def test_unreachable_raises_database_error() -> None:
    with pytest.raises(DatabaseError, match=r"cannot reach database .*127\.0\.0\.1:1"):
        open_readonly("postgresql://postgres@127.0.0.1:1/x")
