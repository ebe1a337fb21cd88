"""The graph-rewrite page's learning curves are down-sampled in the database: a curve of
3,000 updates is drawn as 1,000 points (each the mean of three updates, with a min-max
band) and the page says so; a short curve is drawn exactly."""

from __future__ import annotations

import pytest

from tests.seed_data import insert_trials, refresh_job, trial
from tests.test_dashboard import app, figures
from tunelab.platform.jobs import create_job
from tunelab.platform.spec import parse_spec
from tunelab.platform.steps import StepWriter
from tunelab.schema.db import get_engine
from tunelab.workers.graph_rewrite.dashboard import queries as gq


def rl_job(url: str, updates: int) -> int:
    """A graph-rewrite job whose step `s` has mean_return = s, and one ok episode."""
    engine = get_engine(url)
    job = create_job(engine, parse_spec({
        "name": "ppo", "kind": "graph-rewrite",
        "workload": {"model": "bert", "size": "test"}, "search": {"strategy": "ppo"},
    }))  # fmt: skip
    with StepWriter(engine, job, max_rows=updates) as writer:
        for s in range(updates):
            writer.add(s, {"mean_return": float(s), "entropy": 1.0})
    row = trial(job, 0, {"search": "ppo"}, "ok", None, extra={"model": "bert"})
    row |= {"objectives": {"speedup": 1.5}, "value": 1.5, "run_s": 1.0}
    insert_trials(engine, [row])
    refresh_job(engine, job)
    return job


def test_long_curve_is_bucketed_with_a_band(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    job = rl_job(db_url, 3000)
    points = gq.learning_curve(get_engine(db_url), job, "mean_return")
    assert len(points) == 1000 and sum(p.count for p in points) == 3000
    # bucket b holds steps 3b, 3b+1, 3b+2
    assert (points[0].min, points[0].mean, points[0].max) == (0.0, 1.0, 2.0)
    assert (points[-1].first_step, points[-1].last_step, points[-1].mean) == (2997, 2999, 2998.0)
    at = app(db_url, monkeypatch)
    at.switch_page("../workers/graph_rewrite/dashboard/page.py").run()
    assert not at.exception, [e.message for e in at.exception]
    _bars, curve = figures(at)
    line = next(t for t in curve["data"] if t["name"] == f"job {job}")
    band = next(t for t in curve["data"] if t["name"] == f"job {job} (min-max)")
    assert len(line["x"]) == 1000 and line["x"][0] == 1.0 and line["y"][0] == 1.0
    assert band["fill"] == "toself" and len(band["x"]) == 2000
    assert any("3,000 updates in 1000 points" in c.value for c in at.caption)


def test_short_curve_is_exact(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    job = rl_job(sqlite_url, 5)
    points = gq.learning_curve(get_engine(sqlite_url), job, "mean_return")
    assert [(p.first_step, p.mean, p.count) for p in points] == [(s, float(s), 1) for s in range(5)]
    at = app(sqlite_url, monkeypatch)
    at.switch_page("../workers/graph_rewrite/dashboard/page.py").run()
    _bars, curve = figures(at)
    assert [t["name"] for t in curve["data"]] == [f"job {job}"]  # no band
    assert curve["data"][0]["y"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert not any("Down-sampled" in c.value for c in at.caption)
