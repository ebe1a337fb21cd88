"""Dashboard v2 on the Jobs, Job, Trials, Speedups and Graph rewriting pages, on SQLite
and PostgreSQL: parameter range filters and sorting done in SQL over every matching
trial, a clear message for an unknown parameter, row clicks, library baselines with the
verdict's own confidence interval, what-won-first column order, human units and blank
cells, horizontal bars for many rows, and replayed jobs' real trial counts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, update
from streamlit.testing.v1 import AppTest

from tests.seed_data import CPU_ENV, environment_id, insert_trials, make_job, refresh_job, trial
from tests.test_dashboard import app, figures, metrics, select_row, texts
from tunelab.dashboard import common, queries
from tunelab.dashboard.db import clear_cache, open_readonly
from tunelab.dashboard.queries import jobs as job_queries
from tunelab.dashboard.queries import trials as tq
from tunelab.platform import noise
from tunelab.platform.jobs import create_job
from tunelab.platform.kinds import candidate_key
from tunelab.platform.search.replay import ReplayResult, Sweep, record_replay
from tunelab.platform.spec import SearchSpec, parse_spec
from tunelab.schema.db import get_engine
from tunelab.schema.models import Job, JobStatus, Trial
from tunelab.units import fmt_seconds
from tunelab.workers.pipeline_search.dashboard import speedups as speedups_page

MS = 1e-3


@pytest.fixture(autouse=True)
def _fresh_engines() -> Iterator[None]:
    yield
    import streamlit as st

    st.cache_resource.clear()
    clear_cache()


# Six trials of one job: (tile_m, stages, layout, status, median ms). Trial 5's tile_m
# is text: a range leaves it out (and PostgreSQL's cast does not fail on it).
SIX: list[tuple[Any, int, str, str, float | None]] = [
    (16, 1, "NHWC", "ok", 3.0),
    (64, 2, "NCHW", "ok", 1.5),
    (128, 3, "NHWC", "timeout", None),
    (64, 1, "NHWC", "ok", 2.0),
    (256, 2, "NCHW", "ok", 1.0),
    ("auto", 2, "NHWC", "ok", 2.5),
]
BEST_REPEATS = [1.0 * MS, 1.1 * MS, 0.9 * MS, 1.05 * MS, 0.95 * MS]  # median 1.0 ms
NUMPY_REPEATS = [2.0 * MS, 2.1 * MS, 1.9 * MS, 2.2 * MS, 1.8 * MS]  # median 2.0 ms


def seed_six(
    url: str, *, status: JobStatus = JobStatus.completed, others: int = 0
) -> tuple[int, list[int]]:
    """A job with the SIX trials and a numpy baseline (trial 6); trial 4, the best, and
    the baseline keep five repeats each; after a job of `others` trials. Returns the
    job's id and the trials' ids."""
    engine = get_engine(url)
    env = environment_id(engine, CPU_ENV)
    if others:
        other = make_job(engine, "other", size=64)
        insert_trials(engine, [trial(other, n, {"tile_m": 64}, "ok", 1e-4) for n in range(others)])
        refresh_job(engine, other)
    job = make_job(engine, "six", size=128, status=status)
    rows = [
        trial(job, n, {"tile_m": tm, "stages": st, "layout": lay}, status_,
              lat * MS if lat else None, environment_id=env, predicted=lat * MS if lat else None,
              error=None if lat else "run exceeded run_timeout_s=30")
        for n, (tm, st, lay, status_, lat) in enumerate(SIX)
    ]  # fmt: skip
    rows.append(trial(job, 6, {"baseline": "numpy"}, "ok", 2.0 * MS, extra={"baseline": "numpy"},
                      environment_id=env))  # fmt: skip
    insert_trials(engine, rows)
    with engine.begin() as conn:
        conn.execute(
            update(Trial).where(Trial.job_id == job, Trial.candidate == "c4")
            .values(latencies_s=BEST_REPEATS)
        )  # fmt: skip
        conn.execute(
            update(Trial).where(Trial.job_id == job, Trial.candidate == "c6")
            .values(latencies_s=NUMPY_REPEATS)
        )  # fmt: skip
    refresh_job(engine, job)
    with engine.connect() as conn:
        stmt = select(Trial.candidate, Trial.id).where(Trial.job_id == job)
        by_candidate = {candidate: id_ for candidate, id_ in conn.execute(stmt)}
    return job, [by_candidate[f"c{n}"] for n in range(len(SIX) + 1)]


def page_ids(engine: Any, flt: tq.TrialFilter, size: int = 2) -> list[list[int]]:
    """Every page of `flt`'s trials (ids), `size` to a page."""
    pages = []
    for p in range(10):
        rows = tq.trial_page(engine, flt, page=p, page_size=size)
        if not rows:
            return pages
        pages.append([r["id"] for r in rows])
    raise AssertionError("more pages than expected")


# --------------------------------------------------------------------------- queries


@pytest.mark.parametrize("others", [0, 50])
def test_range_filters_and_sorting_span_pages(db_url: str, others: int) -> None:
    """The same answers whether SQLite reads the job through its index (a small job
    among others) or in one scan of the table (a job holding much of it)."""
    job, t = seed_six(db_url, others=others)
    engine = open_readonly(db_url)
    with engine.connect() as conn:
        scan = tq.scan_whole_table(conn, job)
    assert scan == (engine.dialect.name == "sqlite" and others == 0)
    searched = {"statuses": (), "job_id": job}

    def flt(text: str, order: str = "id", descending: bool = False) -> tq.TrialFilter:
        conditions, problems = tq.parse_conditions(text)
        assert problems == []
        return tq.TrialFilter(params=conditions, order=order, descending=descending, **searched)

    # tile_m >= 64: trials 1, 2, 3, 4 (trial 5's "auto" is no number; the baseline has none)
    by_tile = flt("tile_m>=64", order="p.tile_m")
    assert tq.count_trials(engine, by_tile) == 4
    assert page_ids(engine, by_tile) == [[t[1], t[3]], [t[2], t[4]]]  # 64, 64 (by id), 128, 256
    down = flt("tile_m>=64", order="p.tile_m", descending=True)
    assert page_ids(engine, down) == [[t[4], t[2]], [t[1], t[3]]]
    # By median latency across pages; the timed-out trial (no latency) last.
    assert page_ids(engine, flt("tile_m>=64", order="latency_median_s")) == [
        [t[4], t[1]], [t[3], t[2]]
    ]  # fmt: skip
    assert page_ids(engine, flt("tile_m >= 64", order="latency_median_s", descending=True)) == [
        [t[3], t[1]], [t[4], t[2]]
    ]  # fmt: skip
    # Every operator.
    assert page_ids(engine, flt("tile_m<64"), 10) == [[t[0]]]
    assert page_ids(engine, flt("tile_m>16, tile_m<=128"), 10) == [[t[1], t[2], t[3]]]
    assert page_ids(engine, flt("tile_m=64"), 10) == page_ids(engine, flt("tile_m==64"), 10)
    assert page_ids(engine, flt("tile_m=64"), 10) == [[t[1], t[3]]]
    assert page_ids(engine, flt("stages!=1, layout=NHWC"), 10) == [[t[2], t[5]]]
    assert page_ids(engine, flt("layout!=NHWC"), 10) == [[t[1], t[4]]]
    assert page_ids(engine, flt("tile_m=auto"), 10) == [[t[5]]]
    # A parameter over all trials: numbers by value, then text; the baseline (none) last.
    assert page_ids(engine, flt("", order="p.tile_m")) == [
        [t[0], t[1]], [t[3], t[2]], [t[4], t[5]], [t[6]]
    ]  # fmt: skip
    assert page_ids(engine, flt("stages>=1", order="p.layout"), 10) == [
        [t[1], t[4], t[0], t[2], t[3], t[5]]
    ]  # fmt: skip
    # The old (name, value) pairs still mean equality.
    pairs = tq.TrialFilter(job_id=job, params=(("stages", "2"),), order="latency")
    assert [r["id"] for r in tq.trial_page(engine, pairs)] == [t[4], t[1], t[5]]


def test_parsing_and_unknown_parameters(db_url: str) -> None:
    job, _ = seed_six(db_url)
    engine = open_readonly(db_url)
    conditions, problems = tq.parse_conditions("tile_m>=64, stages != 1,, x, tile_m>=abc")
    assert [str(c) for c in conditions] == ["tile_m>=64", "stages!=1"]
    assert len(problems) == 2 and "`x`" in problems[0] and ">= needs a number" in problems[1]
    # (PostgreSQL's JSONB keeps keys in its own order: compared as sets)
    assert set(tq.known_params(engine, job)) == {"tile_m", "stages", "layout", "baseline"}
    flt = tq.TrialFilter(job_id=job, params=tq.parse_conditions("tile_n>=64, stages=2")[0])
    assert tq.unknown_params(engine, flt) == ["tile_n"]
    # A name outside the sampled trials is still looked for in every trial.
    assert tq.unknown_params(engine, tq.TrialFilter(job_id=job, params=(("baseline", "x"),))) == []
    assert tq.unknown_params(engine, tq.TrialFilter(job_id=None, params=(("layout", "x"),))) == []


def test_baseline_ratio_and_interval_are_the_verdicts(db_url: str) -> None:
    job, _ = seed_six(db_url)
    engine = open_readonly(db_url)
    (b,) = job_queries.baselines(engine, job)
    want = noise.decide({"best": BEST_REPEATS}, {"numpy": NUMPY_REPEATS}, rounds=0).baselines[0]
    assert b.name == "numpy" and b.median_s == pytest.approx(2.0 * MS)
    assert b.best_s == pytest.approx(1.0 * MS)
    assert b.ratio == pytest.approx(2.0) and b.ci == want.ci and b.outcome == "win"
    assert b.ci[0] > 1.0 and b.ci[0] <= 2.0 <= b.ci[1]
    assert "5 repeats of the baseline, 5 of the best" in b.source
    # With final rounds, their verdict is what the page shows.
    verdict = noise.decide(
        {"c4": [x * 1.01 for x in BEST_REPEATS]}, {"numpy": NUMPY_REPEATS}, rounds=3
    ).as_json()
    with get_engine(db_url).begin() as conn:
        conn.execute(update(Job).where(Job.id == job).values(verdict=verdict))
    (b,) = job_queries.baselines(engine, job)
    assert b.ci == tuple(verdict["baselines"][0]["ci"]) and b.ratio == pytest.approx(2.0 / 1.01)
    assert b.best_s == pytest.approx(1.01 * MS) and b.source.startswith("final rounds: 3 rounds")


def test_units() -> None:
    assert [fmt_seconds(x) for x in (None, 5e-7, 1.23456e-5, 6.291e-3, 0.110581, 1.0, 12345.6)] == [
        "-", "0.5 µs", "12.35 µs", "6.291 ms", "110.6 ms", "1 s", "12,346 s"
    ]  # fmt: skip
    assert common.fmt_objective(None) == "" and common.fmt_objective(1.005e-3) == "1.005 ms"
    assert common.fmt_objective(0.123456, "speedup") == "0.1235"
    assert common.fmt_ratio(2.0) == "2x" and common.fmt_interval((1.5, 2.25)) == "1.5x-2.25x"
    assert common.log_axis([1e-3, 3.9e-3]) is False and common.log_axis([1e-3, 4e-3, None])


# --------------------------------------------------------------------------- pages


def column_config(at: AppTest, table: int = 0) -> dict[str, Any]:
    return json.loads(at.dataframe[table].proto.columns)


def test_job_page_has_one_best_after_final_rounds(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The final rounds' figure (1.2 ms) and the search's (1 ms, the curve's end) are both
    shown, each said to be what it is: never two unexplained bests."""
    job, t = seed_six(db_url)
    verdict = noise.decide({"c4": [1.2 * MS] * 10}, rounds=10, paired=True).as_json()
    with get_engine(db_url).begin() as conn:
        conn.execute(
            update(Job).where(Job.id == job)
            .values(verdict=verdict, best_value=1.2 * MS, best_latency_s=1.2 * MS)
        )  # fmt: skip
    final = queries.final_best(open_readonly(db_url), job)
    assert final == queries.FinalBest(t[4], pytest.approx(1.2 * MS), 10, pytest.approx(MS))
    at = app(db_url, monkeypatch, "job", job=job)
    m = metrics(at)
    assert "best" not in m and m["best (final rounds)"] == "1.2 ms"
    line, star = figures(at)[0]["data"]
    assert line["y"][-1] == pytest.approx(1.0) and star["y"] == [pytest.approx(1.2)]
    assert star["x"] == [line["x"][-1]] and star["name"] == f"job {job} · final rounds' winner"
    said = texts(at)
    assert "Best-so-far latency, as the search measured it" in said
    assert f"The star: trial {t[4]}, the winner of 10 final rounds, at 1.2 ms" in said
    assert "(the search measured it at 1 ms)" in said
    # A job compared beside it without final rounds keeps a plain line.
    assert queries.final_best(open_readonly(db_url), job + 1000) is None


def test_jobs_page_shows_what_won_first(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    job, _ = seed_six(db_url)
    fresh = make_job(get_engine(db_url), "fresh", size=64, status=JobStatus.pending)
    at = app(db_url, monkeypatch)
    df = at.dataframe[0].value
    assert list(df.columns)[:4] == ["status", "best", "best params", "open"]
    config = column_config(at)
    assert sum(config[c]["width"] for c in list(df.columns)[:6]) <= 1400
    six = df[df["id"] == job].iloc[0]
    assert six["best"] == "1 ms" and six["open"] == f"job?job={job}"
    assert set(six["best params"].split(", ")) == {"tile_m=256", "stages=2", "layout=NCHW"}
    new = df[df["id"] == fresh].iloc[0]
    assert (new["best"], new["best params"], new["trials"]) == ("", "", "0")  # blank, no None
    assert "refreshing every 5 s" in texts(at)


def test_job_page_shows_the_library_baseline(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    job, t = seed_six(db_url)
    at = app(db_url, monkeypatch, "job", job=job)
    ci = noise.decide({"best": BEST_REPEATS}, {"numpy": NUMPY_REPEATS}, rounds=0).baselines[0].ci
    m = metrics(at)
    assert m["baseline numpy"] == "2 ms" and m["speed-up over numpy"] == "2x"
    assert m["95% CI"] == common.fmt_interval(ci) == f"{ci[0]:.4g}x-{ci[1]:.4g}x"
    table = next(d.value for d in at.dataframe if "baseline" in d.value.columns)
    assert table.iloc[0]["verdict"] == "best is faster" and table.iloc[0]["best latency"] == "1 ms"
    said = texts(at)
    assert "bootstrap interval of the ratio of medians" in said and "2,000 resamples" in said
    assert f"trials?job={job}&trial={t[4]}" in said  # the best trial, one click away
    curve = figures(at)[0]
    assert curve["layout"]["yaxis"]["title"]["text"] == "best-so-far search median (ms)"
    assert "best" in metrics(at) and len(curve["data"]) == 1  # no final rounds: one best
    assert curve["layout"]["yaxis"].get("type") != "log"  # 3 ms to 1 ms: linear reads better
    assert curve["layout"]["legend"]["y"] > 1  # above the plot, not over the data
    assert "refreshing" not in said


def test_trials_page_range_filter_sort_and_row_click(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, t = seed_six(db_url, status=JobStatus.running)
    at = app(db_url, monkeypatch, "trials", job=job)
    df = at.dataframe[0].value
    assert list(df.columns)[:3] == ["trial", "status", "median"]
    assert set(list(df.columns)[3:6]) == {"tile_m", "stages", "layout"}  # then parameters
    assert df.iloc[2]["median"] == "" and df.iloc[0]["median"] == "3 ms"  # blank, not None
    assert "Refreshing every 5 s" in texts(at)  # the job runs
    at.text_input(key="params").input("tile_m>=64").run()
    at.selectbox(key="sort").set_value("p.tile_m").run()
    at.toggle(key="descending").set_value(True).run()
    df = at.dataframe[0].value
    assert list(df["trial"]) == [t[4], t[2], t[1], t[3]]
    assert "4 trials match" in texts(at) and "sorted by tile_m (descending)" in texts(at)
    select_row(at, 0)  # trial 4: its repeats beside the numpy baseline's
    assert metrics(at)["median"] == "1 ms"
    (box,) = figures(at)
    assert [d["name"] for d in box["data"]] == [f"best {t[4]}", f"baseline numpy {t[6]}"]
    assert box["data"][0]["x"] == pytest.approx([x / MS for x in BEST_REPEATS])
    assert box["layout"]["xaxis"]["title"]["text"] == "latency per repeat (ms)"
    measured = next(d.value for d in at.dataframe if "field" in d.value.columns)
    assert dict(zip(measured["field"], measured["value"], strict=True))["median"] == "1 ms"

    at.text_input(key="params").input("tile_n>=64, stages=2").run()
    error = at.error[0].value
    assert "No trial of job" in error and "`tile_n`" in error
    known = error.partition("Known parameters: ")[2].rstrip(".").split(", ")
    assert sorted(known) == ["`baseline`", "`layout`", "`stages`", "`tile_m`"]
    at.text_input(key="params").input("tile_m>=big").run()
    assert ">= needs a number" in at.warning[0].value
    assert "7 trials match" in texts(at)  # the unreadable part is left out, said so


def test_trials_page_opens_a_linked_trial(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    job, t = seed_six(sqlite_url)
    at = app(sqlite_url, monkeypatch, "trials", job=job, trial=t[2])
    assert f"Trial {t[2]}" in texts(at)
    assert any("run exceeded run_timeout_s=30" in c.value for c in at.code)


def test_speedups_page_turns_bars_horizontal(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = get_engine(sqlite_url)
    env = environment_id(engine, CPU_ENV)
    sizes = (64, 128, 256, 512, 1024)
    for size in sizes:
        job = make_job(engine, f"gemm-{size}", size=size)
        insert_trials(engine, [
            trial(job, 0, {"stages": 1}, "ok", 2.0 * MS * size / 64, environment_id=env),
            trial(job, 1, {"stages": 2}, "ok", 1.0 * MS * size / 64, environment_id=env),
        ])  # fmt: skip
        refresh_job(engine, job)
    at = app(sqlite_url, monkeypatch, "speedups")
    (bars,) = figures(at)
    assert len(sizes) > speedups_page.MAX_VERTICAL
    assert {d["orientation"] for d in bars["data"]} == {"h"}
    pipelined = next(d for d in bars["data"] if d["name"] == "pipelined")
    assert pipelined["x"] == pytest.approx([0.5] * 5)
    assert pipelined["text"][0] == "16 ms"  # newest first: 1024^3, 1 ms x 16
    df = at.dataframe[0].value
    assert list(df["speed-up"]) == ["2x"] * 5 and df.iloc[0]["pipelined"] == "16 ms"
    assert metrics(at)["geomean speedup, pipelined vs unpipelined"] == "2.000x"


def test_graph_rewriting_page_style(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = get_engine(sqlite_url)
    job = create_job(engine, parse_spec({
        "name": "greedy", "kind": "graph-rewrite",
        "workload": {"model": "bert", "size": "test"}, "search": {"strategy": "greedy"},
    }))  # fmt: skip
    models = ("bert", "vit", "resnext", "tt", "mlp")
    rows = []
    for n, (model, speedup) in enumerate(zip(models, (1.25, 1.5, 1.125, 2.0, 1.0), strict=True)):
        row = trial(job, n, {"search": "greedy"}, "ok", None,
                    extra={"model": model, "rewrites": [["fuse_matmul", ["a", "b"]]]})  # fmt: skip
        row |= {"objectives": {"speedup": speedup, "model_speedup": speedup * 1.1},
                "value": speedup, "run_s": 2.5}  # fmt: skip
        rows.append(row)
    insert_trials(engine, rows)
    refresh_job(engine, job)
    at = app(sqlite_url, monkeypatch)
    at.switch_page("../workers/graph_rewrite/dashboard/page.py").run()
    assert not at.exception, [e.message for e in at.exception]
    (bars,) = figures(at)
    assert bars["data"][0]["orientation"] == "h" and bars["data"][0]["text"][0] == "1.25x"
    df = at.dataframe[0].value
    assert list(df.columns)[:4] == ["model", "search", "speed-up", "model speed-up"]
    assert df.iloc[0]["model speed-up"] == "1.375x" and df.iloc[0]["search time"] == "12.5 s"
    assert any(s.value.startswith("Rewrites of the best graph (greedy, tt (test), 2x)")
               for s in at.subheader)  # fmt: skip


def test_replayed_jobs_count_their_real_trials(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = parse_spec({
        "name": "tiny-sweep", "kind": "pipeline-search",
        "workload": {"M": 64, "N": 64, "K": 64}, "target": {"kind": "llvm"},
        "search": {"strategy": "exhaustive"},
    })  # fmt: skip
    params = [
        {"tile_m": m, "tile_n": 64, "tile_k": 32, "micro_m": 4, "micro_n": 16, "stages": s,
         "reg_stages": 1}
        for m in (32, 64) for s in (1, 2, 3)
    ]  # fmt: skip
    trials = {
        candidate_key(p): {"params": p, "status": "ok", "latency_s": (i + 1) * MS,
                           "latencies_s": [(i + 1) * MS, (i + 1.2) * MS, (i + 0.8) * MS],
                           "extra": {}}
        for i, p in enumerate(params)
    }  # fmt: skip
    sweep = Sweep(spec, trials, "tiny sweep")
    search = SearchSpec(strategy="exhaustive", batch_size=4)
    engine = get_engine(sqlite_url)
    # What `replay(sweep, search)` returns for an exhaustive search (without the cost
    # model's features, whose CPU calibration takes seconds).
    keys = [candidate_key(p) for p in sweep.candidates()]
    result = ReplayResult("exhaustive", 0, keys, [sweep.latency(k) for k in keys], [None] * 6)
    job_id = record_replay(engine, sweep, result, search)
    with engine.connect() as conn:
        counts = conn.execute(
            select(Job.n_planned, Job.n_done, Job.n_ok).where(Job.id == job_id)
        ).one()
        repeats = (
            conn.execute(
                select(Trial.latencies_s).where(Trial.job_id == job_id).order_by(Trial.value)
            )
            .scalars()
            .first()
        )
    assert tuple(counts) == (6, 6, 6)
    assert repeats == pytest.approx([1.0 * MS, 1.2 * MS, 0.8 * MS])  # every repeat kept
    at = app(sqlite_url, monkeypatch)
    assert at.dataframe[0].value.iloc[0]["trials"] == "6/6"
    # A row recorded before the fix (n_planned 0): its count, not "6/0".
    with engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == job_id).values(n_planned=0))
    row = queries.get_job(open_readonly(sqlite_url), job_id)
    assert row is not None and row.trials_text == "6" and row.progress == 1.0
    at.run()
    assert at.dataframe[0].value.iloc[0]["trials"] == "6"
    at.switch_page("views/job.py").run()
    assert metrics(at)["trials"] == "6"
