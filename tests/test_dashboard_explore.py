"""History & parameters: the history and parameter-sample queries on SQLite and
PostgreSQL (hand-computed, sampled and not, ids interleaved with another job's), fANOVA
importance against known answers and against optuna's evaluator, and the page through
Streamlit's AppTest for a latency job, a maximised objective, a job without an ok trial
and an empty database."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, update
from streamlit.testing.v1 import AppTest

from tests.seed_data import insert_trials, make_job, refresh_job, trial
from tests.test_dashboard import figures
from tunelab.dashboard import queries, registry
from tunelab.dashboard.db import clear_cache, open_readonly
from tunelab.dashboard.importance import encode, fanova, param_importance
from tunelab.dashboard.queries import explore as q
from tunelab.dashboard.views.explore import Objective, level_stats, parcoords_figure, refit_key
from tunelab.platform.jobs import create_job
from tunelab.platform.spec import parse_spec
from tunelab.schema.db import get_engine
from tunelab.schema.models import JobStatus, Trial

APP = Path(__file__).resolve().parent.parent / "tunelab" / "dashboard" / "app.py"
MS = 1e-3

# Job "alpha", trials in recording order (trial number = position + 1):
# (status, latency ms, stages, baseline). The torch baseline (trial 4) is faster than
# every searched trial: it must not count as a best, nor hide the later ones.
ALPHA = [
    ("build_error", None, 1, None),  # 1
    ("ok", 3.0, 1, None),  # 2: best 3.0
    ("ok", 2.0, 2, None),  # 3: best 2.0
    ("ok", 0.5, 1, "torch"),  # 4: a baseline
    ("timeout", None, 3, None),  # 5
    ("ok", 2.5, 1, None),  # 6
    ("ok", 1.0, 3, None),  # 7: best 1.0
    ("wrong_result", None, 2, None),  # 8
    ("ok", 1.005, 2, None),  # 9
    ("ok", 0.9, 3, None),  # 10: best 0.9
]
ALPHA_BEST = [(2, 3.0), (3, 2.0), (7, 1.0), (10, 0.9)]
REPEATS = [2.9e-3, 3.0e-3, 3.2e-3]  # trial 2's timed repeats


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    yield
    import streamlit as st

    st.cache_resource.clear()
    st.cache_data.clear()
    clear_cache()


def seed_alpha(engine: Engine) -> int:
    job = make_job(engine, "alpha", size=256, strategy="random")
    rows = []
    for i, (status, lat, stages, baseline) in enumerate(ALPHA):
        params = {"tile_k": 16 * (1 + i % 2), "stages": stages}
        rows.append(
            trial(job, i, params, status, lat * MS if lat else None,
                  extra={"baseline": baseline} if baseline else {},
                  error=None if status == "ok" else status)
        )  # fmt: skip
    insert_trials(engine, rows)
    with engine.begin() as conn:  # seed_data's bulk insert leaves latencies_s out
        conn.execute(
            update(Trial).where(Trial.job_id == job, Trial.candidate == "c1")
            .values(latencies_s=REPEATS)
        )  # fmt: skip
    refresh_job(engine, job)
    return job


def seed_speedups(engine: Engine) -> int:
    """A graph-rewrite job (its primary objective, speedup, is maximised): 6 episodes."""
    spec = parse_spec(
        {
            "name": "rewrite-bert",
            "kind": "graph-rewrite",
            "workload": {"model": "bert", "size": "test"},
            "search": {"strategy": "random", "seed": 0},
        }
    )
    job = create_job(engine, spec)
    rows = []
    for i, speedup in enumerate([1.0, 1.2, 1.1, 1.5, None, 1.4]):
        row = trial(job, i, {"search": "random", "episode": i, "horizon": 4 + 4 * (i % 2)},
                    "ok" if speedup else "wrong_result", None)  # fmt: skip
        row |= {"value": speedup, "objectives": {"speedup": speedup} if speedup else None}
        rows.append(row)
    insert_trials(engine, rows)
    refresh_job(engine, job)
    return job


# --------------------------------------------------------------------------- queries


def test_history_every_trial_and_the_exact_best(db_url: str) -> None:
    engine = get_engine(db_url)
    alpha = seed_alpha(engine)
    ro = open_readonly(db_url)

    h = q.history(ro, alpha)
    assert (h.n_trials, h.n_ok, h.n_sampled, h.sampled) == (10, 7, 10, False)
    assert [(p.n, round(p.value / MS, 3)) for p in h.points] == [
        (2, 3.0), (3, 2.0), (4, 0.5), (6, 2.5), (7, 1.0), (9, 1.005), (10, 0.9)
    ]  # fmt: skip
    assert [p.baseline for p in h.points] == [None, None, "torch", None, None, None, None]
    # seed_data's trial i starts at i s and ends 1 s later: trial n ends n s after the first.
    assert [p.elapsed_s for p in h.points] == [2, 3, 4, 6, 7, 9, 10]
    assert (h.points[0].low, h.points[0].high) == (2.9e-3, 3.2e-3)
    assert h.points[1].low is None  # no repeats recorded
    assert [(p.n, round(p.best / MS, 3)) for p in h.best] == ALPHA_BEST
    # The same curve as the Job page's (the baseline is no best there either).
    assert h.best == queries.best_so_far(ro, [alpha])[alpha]

    # Sampled: 10 trials with ids 1-10 in buckets of ceil(10 / 3) = 4 ids: {1-3}, {4-7},
    # {8-10}; their first trials are numbers 1, 4 and 8 (of which only 4 is ok). Every new
    # best is added; bucket {8-10}'s minimum (0.9) is above the baseline's (0.5), so it is
    # read only once bucket {4-7} turned out to hold a baseline: the curve stays exact.
    assert queries.trial_page(ro, queries.TrialFilter(job_id=alpha), page_size=20)[0]["id"] == 1
    s = q.history(ro, alpha, limit=3)
    assert (s.n_trials, s.n_sampled, s.sampled) == (10, 3, True)
    assert [(p.n, round(p.value / MS, 3), p.sampled) for p in s.points] == [
        (2, 3.0, False), (3, 2.0, False), (4, 0.5, True), (7, 1.0, False), (10, 0.9, False)
    ]  # fmt: skip
    assert s.best == h.best


def test_history_numbers_trials_exactly_when_jobs_interleave(db_url: str) -> None:
    """Two jobs recorded side by side: each one's ids alternate with the other's, yet its
    trial numbers and best-so-far curve are exact when sampled."""
    engine = get_engine(db_url)
    a, b = make_job(engine, "a", size=64), make_job(engine, "b", size=128)
    a_ms = [5.0, 4.0, 6.0, 3.0, 3.5, 2.0, 2.5, 1.5, 1.8]
    b_ms = [9.0, 8.0, 7.0, 8.5, 6.0, 6.5, 5.0, 7.5, 4.0]
    rows = []
    for i in range(9):
        rows.append(trial(a, i, {"stages": 1 + i % 3}, "ok", a_ms[i] * MS))
        rows.append(trial(b, i, {"stages": 1 + i % 3}, "ok", b_ms[i] * MS))
    insert_trials(engine, rows)
    refresh_job(engine, a)
    refresh_job(engine, b)
    ro = open_readonly(db_url)
    curves = {}
    for job, ms in ((a, a_ms), (b, b_ms)):
        full = q.history(ro, job)
        part = q.history(ro, job, limit=3)  # buckets of 3 ids: one or two of the job's trials
        assert [(p.n, round(p.value / MS, 3)) for p in full.points] == list(enumerate(ms, start=1))
        assert 3 <= part.n_sampled < 9
        assert all(round(p.value / MS, 3) == ms[p.n - 1] for p in part.points)
        assert part.best == full.best == queries.best_so_far(ro, [job])[job]
        curves[job] = [(p.n, round(p.best / MS, 3)) for p in full.best]
    assert curves[a] == [(1, 5.0), (2, 4.0), (4, 3.0), (6, 2.0), (8, 1.5), (9, 1.5)]
    assert curves[b] == [(1, 9.0), (2, 8.0), (3, 7.0), (5, 6.0), (7, 5.0), (9, 4.0)]


def test_history_of_a_maximised_objective(sqlite_url: str) -> None:
    engine = get_engine(sqlite_url)
    job = seed_speedups(engine)
    h = q.history(open_readonly(sqlite_url), job)
    assert h.maximize and (h.n_trials, h.n_ok) == (6, 5)
    assert [(p.n, p.best) for p in h.best] == [(1, 1.0), (2, 1.2), (4, 1.5), (6, 1.5)]
    assert h.best == queries.best_so_far(open_readonly(sqlite_url), [job])[job]
    assert q.history(open_readonly(sqlite_url), job, limit=2).best == h.best


def test_param_sample(db_url: str) -> None:
    engine = get_engine(db_url)
    alpha = seed_alpha(engine)
    ro = open_readonly(db_url)
    s = q.param_sample(ro, alpha)
    # Searched ok trials only (the baseline is left out), in recording order.
    assert (s.n_ok, s.n, s.step) == (7, 6, 1)
    assert [round(v / MS, 3) for v in s.values] == [3.0, 2.0, 2.5, 1.0, 1.005, 0.9]
    assert [p["stages"] for p in s.params] == [1, 2, 1, 3, 2, 3]
    # Buckets of ceil(7 ok / 2) = 4 ids: the first ok trial of {1-3}, {4-7}, {8-10} is
    # trial 2, the baseline (dropped) and trial 9.
    part = q.param_sample(ro, alpha, limit=2)
    assert [round(v / MS, 3) for v in part.values] == [3.0, 1.005]
    assert part.n_ok == 7 and part.step == 2
    empty = make_job(engine, "empty", size=64)
    assert q.param_sample(ro, empty).n == 0
    assert q.history(ro, empty).n_trials == 0


def test_level_stats_and_refit_key() -> None:
    params = [{"stages": s} for s in (1, 2, 1, 3, 2, 3, 1)] + [{"tile": 8}]
    values = [3.0, 2.0, 2.5, 1.0, 1.005, 0.9, 10.0, 7.0]
    stats = {b.level: b for b in level_stats(params, values, "stages", maximize=False)}
    assert list(stats) == ["1", "2", "3"]
    one = stats["1"]  # 2.5, 3.0, 10.0: quartiles 2.75, 3.0, 6.5; IQR 3.75 keeps 10.0
    assert (one.n, one.q1, one.median, one.q3, one.low, one.high, one.best) == (
        3, 2.75, 3.0, 6.5, 2.5, 10.0, 2.5
    )  # fmt: skip
    assert stats["3"].median == pytest.approx(0.95) and stats["3"].best == 0.9
    assert level_stats(params, values, "stages", maximize=True)[0].best == 10.0
    # A value beyond 1.5 IQR is outside the whiskers: 1, 1, 1, 1, 100 -> IQR 0.
    five = level_stats([{"x": 0}] * 5, [1.0, 1.0, 1.0, 1.0, 100.0], "x", maximize=False)
    assert (five[0].high, five[0].median) == (1.0, 1.0)
    assert [refit_key(n) for n in (0, 999, 1000, 1234, 612_345)] == [0, 999, 1000, 1200, 610_000]


def test_parallel_axes_show_levels_or_many_numbers() -> None:
    lrs = [0.001 * (k + 1) for k in range(20)]
    sample = q.ParamSample(
        job_id=1, n_ok=20, ids=list(range(20)),
        params=[{"lr": lr, "opt": "adam" if k % 2 else "sgd"} for k, lr in enumerate(lrs)],
        values=[1.0 + k for k in range(20)],
    )  # fmt: skip
    fig = parcoords_figure(sample, Objective("reward", "maximize", sample.values))
    lr, opt, reward = fig.data[0].dimensions
    assert lr.label == "lr" and list(lr.values) == lrs and lr.ticktext is None  # 20 numbers
    assert list(opt.ticktext) == ["adam", "sgd"] and list(opt.values) == [1, 0] * 10
    assert reward.label == "reward" and list(reward.values) == sample.values


# --------------------------------------------------------------------------- fANOVA


def test_encoding_levels_constants_and_absent_values() -> None:
    enc = encode(
        [
            {"tile": 64, "name": "b", "const": 1},
            {"tile": 16, "name": "a", "const": 1, "reg_stages": 2},
            {"tile": 32, "name": "b", "const": 1},
        ]
    )
    assert enc.names == ["name", "reg_stages", "tile"] and enc.constant == ["const"]
    assert enc.x.tolist() == [[1, 0, 2], [0, 1, 0], [1, 0, 1]]  # reg_stages absent: level 0
    assert enc.bounds.tolist() == [[-0.5, 1.5], [-0.5, 1.5], [-0.5, 2.5]]
    assert [str(v) for v in enc.levels[1]] == ["(absent)", "2"]


def test_fanova_known_answers() -> None:
    rng = random.Random(1)
    # y depends on x1 alone: x1 explains everything.
    params = [{"x1": rng.randint(0, 4), "x2": rng.randint(0, 4), "x3": rng.random()}
              for _ in range(300)]  # fmt: skip
    imp = param_importance(params, [p["x1"] ** 2 for p in params], n_trees=16)
    assert imp.importances["x1"] > 0.99
    assert imp.importances["x2"] < 0.005 and imp.importances["x3"] < 0.005
    assert sum(imp.importances.values()) == pytest.approx(1.0)
    assert next(iter(imp.importances)) == "x1" and imp.n == 300

    # Additive, every combination 20 times, no noise: y = 2*[a == 1] + 3*[b == 2] with a in
    # {0, 1} and b in {0, 1, 2} of equal weight. Var(2*[a == 1]) = 4 * 1/4 = 1,
    # Var(3*[b == 2]) = 9 * 2/9 = 2: shares 1/3 and 2/3, whatever the forest's randomness.
    grid = [{"a": a, "b": b} for a in (0, 1) for b in (0, 1, 2)] * 20
    y = [2.0 * (p["a"] == 1) + 3.0 * (p["b"] == 2) for p in grid]
    imp = param_importance(grid, y, seed=5, n_trees=16)
    assert imp.importances == pytest.approx({"b": 2 / 3, "a": 1 / 3}, abs=1e-9)

    # On log(latency): a factor of 2 between levels is the same effect at 1 ms or 1 s.
    lat = [1e-3 * 2.0 ** (p["b"] == 2) * 1.25 ** (p["a"] == 1) for p in grid]
    imp = param_importance(grid, lat, log=True, n_trees=16)
    share_b = math.log(2) ** 2 * 2 / 9
    share_a = math.log(1.25) ** 2 / 4
    assert imp.importances["b"] == pytest.approx(share_b / (share_a + share_b), abs=1e-9)
    assert imp.log

    # Nothing varies, or one trial: no importance to speak of.
    assert param_importance([{"a": 1}] * 5, [1.0] * 5).importances == {}
    assert param_importance([{"a": 1}, {"a": 2}], [1.0, 1.0]).importances == {
        "a": 0.0
    }  # y constant


def test_fanova_matches_optunas_evaluator() -> None:
    import optuna
    from optuna.distributions import FloatDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = random.Random(0)
    params, values = [], []
    for _ in range(400):  # pipelining matters most, micro_n some, tile_k nothing
        p = {"tile_k": rng.choice([16, 32, 64]), "micro_n": rng.choice([8, 16, 32]),
             "stages": rng.choice([1, 2, 3])}  # fmt: skip
        slow = (1 + 0.6 * (p["stages"] - 1)) * (1.2 if p["micro_n"] == 8 else 1.0)
        params.append(p)
        values.append(2e-3 * slow * math.exp(rng.gauss(0, 0.05)))
    mine = param_importance(params, values, log=True, seed=3).importances

    # optuna on the same encoded data and ranges, same forest settings and seed: the same
    # forest, so today the two agree to rounding (1e-16); the tolerance leaves room for
    # another optuna's forest settings.
    enc = encode(params)
    study = optuna.create_study()
    dists = {n: FloatDistribution(float(lo), float(hi)) for n, (lo, hi) in
             zip(enc.names, enc.bounds, strict=True)}  # fmt: skip
    for row, v in zip(enc.x, values, strict=True):
        study.add_trial(
            optuna.trial.create_trial(
                params={n: float(x) for n, x in zip(enc.names, row, strict=True)},
                distributions=dists,
                value=math.log(v),
            )
        )
    theirs = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=3), normalize=True
    )
    assert list(mine) == list(theirs) == ["stages", "micro_n", "tile_k"]
    for name in mine:
        assert mine[name] == pytest.approx(theirs[name], abs=0.01), name
    # Another forest (seed) changes the numbers only a little.
    other = fanova(enc.x, np.log(values), enc.bounds, seed=11)
    assert other == pytest.approx([mine[n] for n in enc.names], abs=0.02)


# --------------------------------------------------------------------------- the page


def app(url: str, monkeypatch: pytest.MonkeyPatch, tab: str | None = None, **query: Any):
    """The page through AppTest on `tab` (None: the first, History)."""
    monkeypatch.setenv("TUNELAB_DB_URL", url)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    for k, v in query.items():
        at.query_params[k] = str(v)
    at.switch_page("views/explore.py")
    if tab:
        at.session_state["explore_tab"] = tab
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("info", "warning", "caption", "markdown")
             for e in getattr(at, kind)]  # fmt: skip
    return "\n".join(str(p) for p in parts)


def test_page_is_listed_between_job_and_model() -> None:
    titles = [p.title for p in registry.discover()]
    assert titles.index("Job") < titles.index("History & parameters")
    assert titles.index("History & parameters") < titles.index("Performance model")


def test_page_for_a_latency_job(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = get_engine(db_url)
    alpha = seed_alpha(engine)

    at = app(db_url, monkeypatch, job=alpha)
    (fig,) = figures(at)
    by_name = {t["name"]: t for t in fig["data"]}
    dots = by_name[f"job {alpha} · random: trials"]
    assert dots["x"] == [2, 3, 6, 7, 9, 10]  # searched ok trials; the baseline apart
    assert dots["y"] == pytest.approx([3.0, 2.0, 2.5, 1.0, 1.005, 0.9])  # in ms
    torch = by_name[f"job {alpha} · random: torch"]  # a dotted level over the whole run
    assert torch["x"] == [1, 10] and torch["y"] == pytest.approx([0.5, 0.5])
    best = by_name[f"job {alpha} · random: best so far"]
    assert best["x"] == [2, 3, 7, 10] and best["line"]["shape"] == "hv"
    assert fig["layout"]["yaxis"]["type"] == "log"
    assert fig["layout"]["yaxis"]["title"]["text"] == "latency (ms, lower is better)"
    assert "10 trials, 7 ok, 3 failed" in texts(at)

    at.radio(key="explore_x").set_value("time since start").run()
    dots = next(t for t in figures(at)[0]["data"] if t["name"].endswith("trials"))
    assert dots["x"] == [2, 3, 6, 7, 9, 10]  # seconds since the first trial started
    at.toggle(key="explore_spread").set_value(True).run()
    dots = next(t for t in figures(at)[0]["data"] if t["name"].endswith("trials"))
    assert dots["error_y"]["array"][0] == pytest.approx(0.2)  # 3.2 - 3.0 ms
    assert dots["error_y"]["arrayminus"][0] == pytest.approx(0.1)

    at = app(db_url, monkeypatch, "Importance", job=alpha)
    (fig,) = figures(at)
    (bars,) = fig["data"]
    assert bars["type"] == "bar" and bars["orientation"] == "h"
    assert set(bars["y"]) == {"stages", "tile_k"} and sum(bars["x"]) == pytest.approx(1.0)
    assert "log(value)" in texts(at)

    at = app(db_url, monkeypatch, "Parallel coordinates", job=alpha)
    (pc,) = figures(at)[0]["data"]
    assert pc["type"] == "parcoords"
    labels = [d["label"] for d in pc["dimensions"]]
    assert labels == ["stages", "tile_k", "latency (ms)"]
    assert pc["dimensions"][0]["ticktext"] == ["1", "2", "3"]
    assert pc["dimensions"][2]["values"] == pytest.approx(
        [math.log10(v) for v in (3.0, 2.0, 2.5, 1.0, 1.005, 0.9)]
    )

    at = app(db_url, monkeypatch, "Slice", job=alpha)
    (fig,) = figures(at)
    box = next(t for t in fig["data"] if t["type"] == "box" and t["xaxis"] == "x")
    assert box["x"] == ["1", "2", "3"]  # stages first: 3.0 and 2.5 | 2.0, 1.005 | 1.0, 0.9
    assert box["median"] == pytest.approx([2.75, 1.5025, 0.95])
    diamonds = next(t for t in fig["data"] if t["type"] == "scatter" and t["xaxis"] == "x")
    assert diamonds["y"] == pytest.approx([2.5, 1.005, 0.9])
    assert fig["layout"]["yaxis"]["type"] == "log"


def test_page_for_a_maximised_objective(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = get_engine(sqlite_url)
    alpha = seed_alpha(engine)
    job = seed_speedups(engine)

    at = app(sqlite_url, monkeypatch, job=job)
    (fig,) = figures(at)
    best = next(t for t in fig["data"] if t["name"].endswith("best so far"))
    assert best["y"] == [1.0, 1.2, 1.5, 1.5]  # rising: higher is better
    assert fig["layout"]["yaxis"].get("type") != "log"
    assert fig["layout"]["yaxis"]["title"]["text"] == "speedup (higher is better)"

    at = app(sqlite_url, monkeypatch, "Parallel coordinates", job=job)
    (pc,) = figures(at)[0]["data"]
    assert [d["label"] for d in pc["dimensions"]] == ["episode", "horizon", "speedup"]
    assert pc["line"]["reversescale"] is False  # the highest speedup the brightest
    app(sqlite_url, monkeypatch, "Importance", job=job)
    at = app(sqlite_url, monkeypatch, "Slice", job=job)
    diamonds = next(t for t in figures(at)[0]["data"] if t["type"] == "scatter")
    assert diamonds["y"] == [1.0, 1.2, 1.1, 1.5, 1.4]  # episode 0-5 but 4 (wrong result)

    # Two jobs with different objectives: the charts follow the first one's.
    at = app(sqlite_url, monkeypatch, job=f"{job},{alpha}")
    assert f"left out: job {alpha} (latency_s)" in texts(at)


def test_page_for_a_job_without_an_ok_trial_and_an_empty_database(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = get_engine(sqlite_url)
    at = app(sqlite_url, monkeypatch)
    assert "No jobs yet" in texts(at)

    broken = make_job(engine, "broken", size=128, status=JobStatus.failed)
    insert_trials(engine, [trial(broken, n, {"stages": 1}, "build_error", None, error="boom")
                           for n in range(3)])  # fmt: skip
    refresh_job(engine, broken)
    fresh = make_job(engine, "fresh", size=64, status=JobStatus.pending)
    for tab in ("History", "Importance", "Parallel coordinates", "Slice"):
        at = app(sqlite_url, monkeypatch, tab, job=broken)
        assert not figures(at)
        assert "No ok trial" in texts(at) or "at least two ok trials" in texts(at), tab
    at = app(sqlite_url, monkeypatch, "Importance", job=fresh)
    assert "No trial recorded yet" in texts(at)
