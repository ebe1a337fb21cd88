"""The performance-model part of the dashboard: one top-k recall with ties (the headline,
the windows and the Cost models page agree), windows of whole model versions with 32
trials or more, where predictions come from, trials to 99% of the best known for a
workload on the same target and device, maximised objectives, and the Performance model
and Cost models pages through Streamlit's AppTest. Values are computed by hand."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from tests.seed_data import CPU_ENV, environment_id, make_job, refresh_job, trial
from tests.test_dashboard import app as page
from tests.test_dashboard import figures, metrics, texts
from tunelab.dashboard import queries
from tunelab.dashboard.db import clear_cache, open_readonly
from tunelab.dashboard.queries import model as model_queries
from tunelab.platform import jobs as platform_jobs
from tunelab.platform.spec import parse_spec
from tunelab.schema.db import get_engine
from tunelab.schema.models import Trial

SWEEP = Path(__file__).resolve().parent.parent / "bench" / "data" / "gemm-512-cpu.json.gz"
MS = 1e-3
OTHER_CPU = {**CPU_ENV, "fingerprint": "o" * 64, "host": "node-2", "cpu_model": "Intel i9"}

# Five trials (measured ms, predicted ms) with ties on both sides.
#   measured ranks 1, 2.5, 2.5, 4, 5; predicted ranks 2, 1, 4, 4, 4
#   rho = 5.5 / sqrt(9.5 * 8); MAPE = (1 + 0.5 + 0.5 + 0 + 0.4) / 5 = 48%
# top-2: measured 1 ms is in, the two 2 ms share the 2nd place (1/2 each); predicted
# 1 ms and 2 ms are in, the 3 ms tie is out: hits 1 + 1/2 -> recall 0.75. Breaking the
# measured tie by trial id would give 1.0 or 0.5 depending on which was recorded first.
FIVE = [(1.0, 2.0), (2.0, 1.0), (2.0, 3.0), (3.0, 3.0), (5.0, 3.0)]
FIVE_RHO = 5.5 / math.sqrt(9.5 * 8)
FIVE_MAPE = 48.0
FIVE_RECALL = {1: 0.0, 2: 0.75, 3: 7 / 9, 4: 5 / 6, 5: None}
# A model-guided job: measured ranks 2, 3, 4, 1; predicted 2.5, 2.5, 4, 1 (a tie at 1 ms
# across the 2nd place) -> rho = 4.5 / sqrt(4.5 * 5); MAPE (0 + .5 + .375 + .125) / 4 =
# 25%; top-2: 0.8 ms in both, 1 ms measured in and predicted half in -> recall 0.75.
GUIDED = [(1.0, 1.0), (2.0, 1.0), (4.0, 2.5), (0.8, 0.9)]


@pytest.fixture(autouse=True)
def _fresh_engines() -> Iterator[None]:
    yield
    import streamlit as st

    st.cache_resource.clear()
    clear_cache()


def add_trials(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """Insert trial rows (with their `model` column, which seed_data's COPY leaves out)."""
    with engine.begin() as conn:
        conn.execute(insert(Trial.__table__), rows)


def predicted_job(
    engine: Engine,
    name: str,
    pairs: list[tuple[float, float]],
    *,
    strategy: str = "random",
    size: int = 256,
    model: str | None = "analytical",
    versions: list[int] | None = None,
    env: int | None = None,
) -> int:
    """A job whose ok trials have these (measured ms, predicted ms), in this order."""
    job = make_job(engine, name, size=size, strategy=strategy)
    rows = []
    for i, (meas, pred) in enumerate(pairs):
        row = trial(job, i, {"i": i}, "ok", meas * MS, predicted=pred * MS, environment_id=env)
        row["model"] = model
        row["model_version"] = versions[i] if versions else (0 if model else None)
        rows.append(row)
    add_trials(engine, rows)
    refresh_job(engine, job)
    return job


def spearman(a: list[float], b: list[float]) -> float:
    """Pearson's r of average ranks, in plain Python."""

    def ranks(xs: list[float]) -> list[float]:
        return [
            sum(y < x for y in xs) + (sum(y == x for y in xs) + 1) / 2 for x in xs
        ]  # 1-based average rank

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))


def recall_by_hand(pred: list[float], meas: list[float], k: int) -> float | None:
    """Expected top-k recall under random tie-breaking, by enumerating shares: a trial's
    share of a top k is the fraction of its tie group's places that fall within k."""
    if len(meas) <= k:
        return None

    def share(xs: list[float], x: float) -> float:
        better = sum(y < x for y in xs)
        tied = sum(y == x for y in xs)
        return max(0, min(tied, k - better)) / tied

    return sum(share(pred, p) * share(meas, m) for p, m in zip(pred, meas, strict=True)) / k


# --------------------------------------------------------------------------- definitions


def test_five_trials_by_hand(db_url: str) -> None:
    engine = get_engine(db_url)
    job = predicted_job(engine, "five", FIVE)
    ro = open_readonly(db_url)
    for k, recall in FIVE_RECALL.items():
        report = queries.model_report(ro, job, k=k)
        m = report.overall
        assert m is not None and m.n == 5
        assert m.spearman == pytest.approx(FIVE_RHO)
        assert m.mape_pct == pytest.approx(FIVE_MAPE)
        assert m.topk_recall == (pytest.approx(recall) if recall is not None else None), k
        # one window (5 < 32 trials), and it agrees with the headline: same definition
        (w,) = report.windows
        assert w.n == 5 and w.topk_recall == m.topk_recall and w.spearman == pytest.approx(FIVE_RHO)
        meas, pred = [p[0] for p in FIVE], [p[1] for p in FIVE]
        assert queries.topk_recall(pred, meas, k) == m.topk_recall
    # The same trials recorded in reverse order: ids change, ties do not, nor recall.
    backwards = predicted_job(engine, "five-backwards", FIVE[::-1])
    assert queries.model_report(ro, backwards, k=2).overall.topk_recall == pytest.approx(0.75)
    assert queries.tie_share(2, 1, 3) == 0.5 and queries.tie_share(3, 2, 5) == pytest.approx(1 / 3)
    assert queries.tie_share(2, 0, 2) == 1.0 and queries.tie_share(2, 2, 5) == 0.0


def test_headline_and_windows_agree_and_windows_merge_versions(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 trials with heavy ties, a model version per batch of 8: windows of whole
    versions, >= 32 trials each; every metric equals the reference on its trials."""
    engine = get_engine(db_url)
    rng = random.Random(5)
    meas = [rng.choice([1, 2, 3, 4, 5, 6]) for _ in range(200)]
    pred = [m * rng.choice([0.5, 1, 1.5]) for m in meas]
    job = predicted_job(engine, "versions", list(zip(meas, pred, strict=True)),
                        strategy="model", model="xgboost-combined",
                        versions=[i // 8 for i in range(200)])  # fmt: skip
    report = queries.model_report(open_readonly(db_url), job, k=10)
    assert report.by == "model version" and report.window_size == 32
    # 25 versions of 8, 200 // 32 = 6 windows of 33.3 trials or more: whole versions
    # make windows of 40 (5 versions), and the last holds what remains
    assert [w.label for w in report.windows] == [
        "v0-v4", "v5-v9", "v10-v14", "v15-v19", "v20-v24"
    ]  # fmt: skip
    assert [w.n for w in report.windows] == [40] * 5
    m = report.overall
    assert m is not None and m.topk_recall == pytest.approx(recall_by_hand(pred, meas, 10))
    assert m.spearman == pytest.approx(spearman(pred, meas))
    start = 0
    for w in report.windows:
        part = slice(start, start + w.n)
        start += w.n
        p, q = pred[part], meas[part]
        assert w.topk_recall == pytest.approx(recall_by_hand(p, q, 10))
        assert w.spearman == pytest.approx(spearman(p, q))
        assert w.mape_pct == pytest.approx(100 * sum(abs(a - b) / b for a, b in
                                                     zip(p, q, strict=True)) / w.n)  # fmt: skip
    (source,) = report.sources
    assert (source.model, source.n, source.first_version, source.last_version) == (
        "xgboost-combined", 200, 0, 24
    )  # fmt: skip
    # Many versions are counted 10 at a time (at most 20 groups for this 200-trial job):
    # windows are still whole versions, cut at those groups, the same metrics on each.
    monkeypatch.setattr(model_queries, "MAX_BUCKETS", 20)
    coarse = queries.model_report(open_readonly(db_url), job, k=10)
    assert [(w.label, w.n) for w in coarse.windows] == [
        ("v0-v9", 80), ("v10-v19", 80), ("v20-v24", 40)
    ]  # fmt: skip
    assert coarse.windows[2].spearman == pytest.approx(spearman(pred[160:], meas[160:]))
    assert coarse.overall == m and coarse.sources == report.sources


def test_windows_without_versions_and_at_most_ten(sqlite_url: str) -> None:
    engine = get_engine(sqlite_url)
    pairs = [(1.0 + i % 7, 1.0 + i % 5) for i in range(100)]
    job = predicted_job(engine, "plain", pairs, model=None)
    report = queries.model_report(engine, job)
    # no versions: 100 // 32 = 3 even runs in recording order (position * 3 // 100)
    assert report.by == "window" and [w.n for w in report.windows] == [34, 33, 33]
    assert [w.label for w in report.windows] == ["1/3", "2/3", "3/3"]
    big = predicted_job(engine, "big", [(1.0 + i % 13, 1.0 + i % 11) for i in range(1000)],
                        model=None)  # fmt: skip
    report = queries.model_report(engine, big)
    assert report.window_size == 100 and [w.n for w in report.windows] == [100] * 10
    # a long first version, then one-trial versions: whole versions, no window under 32
    uneven = predicted_job(engine, "uneven", pairs, versions=[0] * 60 + list(range(1, 41)))
    report = queries.model_report(engine, uneven)
    assert [(w.label, w.n) for w in report.windows] == [("v0", 60), ("v1-v40", 40)]


def test_version_cuts_keep_every_window_at_least_the_size() -> None:
    eight = [(1 + 8 * v, 8) for v in range(81)]  # a 648-trial model job: a version a batch
    assert queries.version_cuts(eight, 65) == [1 + 72 * w for w in range(1, 9)]  # 9 x 72
    # one big version first, then single-trial ones: [60, 40], not [60, 7, 33]
    uneven = [(1, 60)] + [(61 + i, 1) for i in range(40)]
    assert queries.version_cuts(uneven, 32) == [61]
    assert queries.version_cuts([(1, 20), (21, 10)], 32) == []  # fewer than 32: one window


def test_sampled_rho_and_windows_exact_headline(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above EXACT_LIMIT trials rho and windows use every step-th trial id; n, recall and
    MAPE stay exact (here the limit is lowered to 50 for 200 trials: step 4)."""
    engine = get_engine(sqlite_url)
    rng = random.Random(8)
    meas = [rng.choice(range(1, 30)) for _ in range(200)]
    pred = [m * rng.choice([0.7, 1, 1.3]) for m in meas]
    job = predicted_job(engine, "sampled", list(zip(meas, pred, strict=True)), model=None)
    monkeypatch.setattr(model_queries, "EXACT_LIMIT", 50)
    report = queries.model_report(engine, job, k=10)
    m = report.overall
    assert report.sample_step == 4 and m is not None and m.n == 200
    assert m.topk_recall == pytest.approx(recall_by_hand(pred, meas, 10))  # exact
    with engine.connect() as conn:
        ids = conn.execute(select(Trial.id).where(Trial.job_id == job).order_by(Trial.id)).all()
    kept = [i for i, (tid,) in enumerate(ids) if tid % 4 == 0]
    assert len(kept) == 50 and sum(w.n for w in report.windows) == 50
    assert m.spearman == pytest.approx(spearman([pred[i] for i in kept], [meas[i] for i in kept]))


# --------------------------------------------------------------------------- best known


def test_trials_to_reach_a_reference() -> None:
    cost = [queries.CurvePoint(1, n, v * MS) for n, v in ((2, 3.0), (3, 2.0), (6, 1.0), (8, 1.0))]
    assert queries.trials_to_reach(cost) == 6  # its own best
    assert queries.trials_to_reach(cost, 0.995 * MS) == 6  # 1.0 <= 0.995 / 0.99
    assert queries.trials_to_reach(cost, 0.98 * MS) is None  # never within 1% of 0.98
    assert queries.trials_to_reach(cost, 2.0 * MS, fraction=0.5) == 2  # 3.0 <= 2.0 / 0.5
    gain = [queries.CurvePoint(1, n, v, True) for n, v in ((1, 1.0), (4, 1.5), (9, 2.0))]
    assert queries.trials_to_reach(gain) == 9 and queries.trials_to_reach(gain, 1.5) == 4
    assert queries.trials_to_reach(gain, 2.0, fraction=0.5) == 1
    reward = [queries.CurvePoint(1, n, v, True) for n, v in ((1, -10.0), (3, -5.0), (5, -1.0))]
    assert queries.trials_to_reach(reward) == 5  # within 1% of |-1|: >= -1.01
    assert queries.trials_to_reach(reward, -4.96) == 3  # -5 >= -4.96 - 0.0496
    assert queries.trials_to_reach([]) is None
    assert queries.share_of(2.0, 1.0, False) == 0.5 and queries.share_of(1.5, 2.0, True) == 0.75
    assert queries.share_of(-1.0, 2.0, True) is None


def test_best_known_is_the_same_workload_target_and_device(db_url: str) -> None:
    engine = get_engine(db_url)
    cpu, other = environment_id(engine, CPU_ENV), environment_id(engine, OTHER_CPU)

    def job(name: str, values_ms: list[float | None], env: int | None, **kw: Any) -> int:
        j = make_job(engine, name, **kw)
        rows = [trial(j, i, {"i": i}, "ok" if v else "build_error", v * MS if v else None,
                      environment_id=env) for i, v in enumerate(values_ms)]  # fmt: skip
        add_trials(engine, rows)
        refresh_job(engine, j)
        return j

    mine = job("mine", [None, 3.0, 2.0, 2.5], cpu, size=256, strategy="random")
    sweep = job("sweep", [4.0, 1.5, 1.8, 1.6], cpu, size=256, strategy="exhaustive")
    add_trials(
        engine,
        [
            trial(
                sweep, 9, {"i": 9}, "ok", 1.0 * MS, environment_id=cpu, extra={"baseline": "torch"}
            )
        ],
    )  # a baseline is no search result
    refresh_job(engine, sweep)
    faster_elsewhere = job("elsewhere", [1.0], other, size=256, strategy="random")
    job("other-workload", [0.5], cpu, size=512, strategy="random")
    job("other-target", [0.4], cpu, size=256, target={"kind": "cuda", "arch": "sm_90"})
    unknown = job("unrecorded", [0.9], None, size=256)
    empty = make_job(engine, "empty", size=256)

    ro = open_readonly(db_url)
    ref = queries.best_reference(ro, mine)
    assert (ref.value, ref.job_id, ref.own, ref.device) == (
        pytest.approx(1.5 * MS), sweep, False, CPU_ENV["cpu_model"]
    )  # fmt: skip
    assert ref.label == (
        f"job {sweep}'s best (exhaustive, 5 trials): the best known for this workload on "
        f"llvm · {CPU_ENV['cpu_model']}"
    )
    assert queries.best_known(ro, mine) == (pytest.approx(1.5 * MS), ref.label)
    assert queries.best_known(ro, queries.get_job(ro, mine)) == queries.best_known(ro, mine)
    curve = queries.best_so_far(ro, [mine])[mine]
    assert queries.trials_to_reach(curve) == 3  # its own best, as the Job page says now
    assert queries.trials_to_reach(curve, ref.value) is None  # 2.0 ms never near 1.5 ms
    assert ref.own_value == pytest.approx(2.0 * MS) and not ref.maximize
    assert queries.share_of(ref.own_value, ref.value, False) == pytest.approx(0.75)
    # the same without the curve: an index walk near the best, then its trial number
    assert queries.reach_trial(ro, mine, ref.value) is None
    assert queries.reach_trial(ro, mine, ref.own_value) == 3  # the failed trial 1 counts
    assert queries.reach_trial(ro, mine, 3.0 * MS) == queries.trials_to_reach(curve, 3.0 * MS) == 2
    assert queries.reach_trial(ro, mine, None) is None

    own = queries.best_reference(ro, sweep)
    assert own.own and own.job_id == sweep and own.value == pytest.approx(1.5 * MS)
    assert own.label.endswith(
        f"the best of 2 jobs of this workload on llvm · {CPU_ENV['cpu_model']}"
    )
    alone = queries.best_reference(ro, faster_elsewhere)
    assert alone.own and alone.label == (
        "this job's own best: no other job of this workload on llvm · Intel i9"
    )
    assert "where its trials ran is not recorded" in queries.best_reference(ro, unknown).label
    assert queries.best_reference(ro, empty).value is None


@pytest.mark.slow
def test_replays_of_a_committed_sweep(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64-trial random replay and a model replay of gemm-512, with the exhaustive replay
    of the same sweep in the database: "99% of best" is the sweep's best, the random job's
    analytical predictions were recorded alongside, the model job's guided it."""
    from tunelab.platform.search.replay import load_sweep, record_replay, replay
    from tunelab.platform.spec import SearchSpec

    sweep = load_sweep(SWEEP)
    engine = get_engine(sqlite_url)
    ids, results = {}, {}
    for name, search in (
        ("exhaustive", SearchSpec(strategy="exhaustive", batch_size=64)),
        ("random", SearchSpec(strategy="random", seed=1, budget=64, batch_size=8)),
        ("model", SearchSpec(strategy="model", seed=0, budget=64, batch_size=8)),
    ):
        results[name] = replay(sweep, search)
        ids[name] = record_replay(engine, sweep, results[name], search)
    ro = open_readonly(sqlite_url)
    curves = queries.best_so_far(ro, list(ids.values()))
    for name in ("random", "model"):
        ref = queries.best_reference(ro, ids[name])
        assert ref.value == pytest.approx(sweep.best(), rel=1e-4)
        assert ref.device == "replayed from gemm-512-cpu.json.gz"
        if name == "random":
            assert ref.job_id == ids["exhaustive"] and not ref.own
            assert f"job {ids['exhaustive']}'s best (exhaustive, 1,152 trials)" in ref.label
        elif ref.own:  # the model replay found the sweep's best itself (a tie is its own)
            assert ref.label.startswith("this job's own best: the best of 3 jobs")
        else:
            assert ref.job_id == ids["exhaustive"]
        # the replay's own count of trials to 99% of the sweep's best agrees
        expected = results[name].trials_to_reach(sweep.best() / 0.99)
        assert queries.trials_to_reach(curves[ids[name]], ref.value) == expected
        assert queries.reach_trial(ro, ids[name], ref.value) == expected
    assert queries.trials_to_reach(curves[ids["random"]], sweep.best()) is None  # never
    assert queries.trials_to_reach(curves[ids["random"]]) is not None  # its own best: yes

    random_report = queries.model_report(ro, ids["random"])
    (src,) = random_report.sources
    assert (src.model, src.n, src.first_version) == ("analytical", 64, 0)
    assert queries.provenance("random", random_report.sources) == (
        "Predictions by `analytical` (64 trials, version 0), recorded alongside: the random "
        "strategy chose its candidates without them."
    )
    model_report = queries.model_report(ro, ids["model"])
    first, then = model_report.sources
    assert (first.model, first.n) == ("analytical", 8) and then.model == "xgboost-combined"
    assert then.n == 56 and "They guided the search" in queries.provenance(
        "model", model_report.sources
    )

    monkeypatch.setenv("TUNELAB_DB_URL", sqlite_url)
    at = page(sqlite_url, monkeypatch, "model", job=ids["random"])
    assert metrics(at)["trials to reach 99% of the best"] == "not reached in 64"
    assert "recorded alongside: the random strategy" in texts(at)
    assert f"job {ids['exhaustive']}'s best (exhaustive, 1,152 trials)" in texts(at)


# --------------------------------------------------------------------------- pages


def seed_pages(url: str) -> dict[str, int]:
    """One workload (256^3 on llvm, one CPU): a random job with FIVE's analytical
    predictions, a model-guided job and an exhaustive one without predictions; and a
    maximised (graph-rewrite) job."""
    engine = get_engine(url)
    env = environment_id(engine, CPU_ENV)
    ids = {"random": predicted_job(engine, "five", FIVE, env=env)}
    ids["model"] = predicted_job(
        engine, "guided", GUIDED, strategy="model",
        model="xgboost-combined", versions=[1, 1, 2, 2], env=env,
    )  # fmt: skip
    ids["exhaustive"] = make_job(engine, "plain", size=256, strategy="exhaustive")
    add_trials(engine, [trial(ids["exhaustive"], i, {"i": i}, "ok", v * MS, environment_id=env)
                        for i, v in enumerate([3.0, 0.9])])  # fmt: skip
    refresh_job(engine, ids["exhaustive"])
    spec = parse_spec({
        "name": "rewrite", "kind": "graph-rewrite",
        "workload": {"model": "bert", "size": "test", "horizon": 4, "max_candidates": 8,
                     "workers": 1},
        "search": {"strategy": "greedy"},
        "measure": {"threads": 1, "rounds": 3, "min_sample_ms": 0.5},
    })  # fmt: skip
    ids["rewrite"] = platform_jobs.create_job(engine, spec)
    rows = []
    for i, speedup in enumerate([1.1, 1.3, 1.25]):
        row = trial(ids["rewrite"], i, {"i": i}, "ok", None, environment_id=env)
        row |= {"value": speedup, "objectives": {"speedup": speedup}, "model": None}
        rows.append(row)
    add_trials(engine, rows)
    refresh_job(engine, ids["rewrite"])
    return ids


def test_model_page(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = seed_pages(db_url)
    at = page(db_url, monkeypatch, "model", job=ids["random"])
    at.number_input(key="k").set_value(2).run()
    m = metrics(at)
    assert m["trials with a prediction"] == "5" and m["top-2 recall"] == "0.75"
    assert m["Spearman \u03c1"] == f"{FIVE_RHO:.3f}" and m["MAPE"] == "48.0 %"
    # best 1.0 ms (trial 1); the model job's 0.8 ms on the same CPU is the best known
    assert m["trials to reach 99% of the best"] == "not reached in 5"
    assert f"job {ids['model']}'s best (model, 4 trials)" in texts(at)
    assert "is 80.0% of it" in texts(at)
    assert (
        "Predictions by `analytical` (5 trials, version 0), recorded alongside: the random "
        "strategy chose its candidates without them." in texts(at)
    )
    assert "ties broken at random" in texts(at)
    assert "One window: the model did not retrain (version 0 made every prediction)." in texts(at)
    table = at.dataframe[0].value
    assert list(table["n"]) == [5] and list(table["top-2 recall"]) == ["0.75"]
    scatter, windows = figures(at)
    assert sorted(scatter["data"][0]["x"]) == pytest.approx([1.0, 2.0, 2.0, 3.0, 5.0])
    assert scatter["layout"]["xaxis"]["type"] == "log"
    assert windows["data"][1]["y"] == [0.75]

    at.selectbox(key="job").set_value(ids["model"]).run()
    assert "They guided the search" in texts(at)
    assert "`xgboost-combined` (4 trials, versions 1-2)" in texts(at)
    assert "One window: fewer than 64 trials with a prediction." in texts(at)
    assert metrics(at)["trials to reach 99% of the best"] == "4 of 4"

    at.selectbox(key="job").set_value(ids["rewrite"]).run()
    assert not at.exception
    assert "Cost-model metrics: not applicable: this job maximises `speedup`" in texts(at)
    assert metrics(at)["trials to reach 99% of the best"] == "2 of 3"  # 1.3 is its best
    assert figures(at) == []


def test_cost_models_page(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = seed_pages(db_url)
    at = page(db_url, monkeypatch, "models", job=f"{ids['model']},{ids['random']}")
    assert at.title[0].value == "Cost models"
    at.number_input(key="k").set_value(2).run()
    df = at.dataframe[0].value
    rows = {r["job"]: r for r in df.to_dict("records")}
    guided, alongside = rows[ids["model"]], rows[ids["random"]]
    assert (guided["name"], alongside["name"]) == ("guided", "five")
    assert (alongside["cost model"], alongside["predictions"], alongside["strategy"]) == (
        "analytical", "recorded alongside", "random"
    )  # fmt: skip
    assert alongside["top-2 recall"] == "0.75" and alongside["MAPE (%)"] == "48"
    assert alongside["Spearman \u03c1"] == f"{FIVE_RHO:.3g}"
    assert alongside["trials to 99%"] == "not reached in 5"
    assert alongside["measured against"] == f"job {ids['model']}'s best"
    assert (guided["cost model"], guided["predictions"]) == ("xgboost-combined",
                                                            "guided the search")  # fmt: skip
    assert guided["MAPE (%)"] == "25" and guided["top-2 recall"] == "0.75"
    assert guided["Spearman \u03c1"] == f"{4.5 / math.sqrt(4.5 * 5):.3g}"
    assert guided["trials to 99%"] == "4 of 4" and guided["measured against"] == "own best"
    assert (
        f"Job {ids['model']}'s best (model, 4 trials): the best known for this workload on "
        f"llvm · {CPU_ENV['cpu_model']}: 800 µs." in texts(at)
    )
    charts = figures(at)
    assert [c["layout"]["title"]["text"] for c in charts] == [
        f"job {ids['model']} · xgboost-combined · model",
        f"job {ids['random']} · analytical · random",
    ]
    assert charts[0]["layout"]["xaxis"]["range"] == charts[1]["layout"]["xaxis"]["range"]

    key = next(w.key for w in at.multiselect if w.key.startswith("jobs-"))
    at.multiselect(key=key).set_value([ids["exhaustive"]]).run()
    assert "None of these jobs records a prediction" in texts(at)
    assert at.dataframe[0].value.iloc[0]["predictions"] == "none recorded"

    # the graph-rewrite workload: a maximised objective
    rewrite = next(o for o in at.selectbox(key="workload").options if "graph-rewrite" in o)
    at.selectbox(key="workload").set_value(
        next(w.workload_id for w in queries.workloads_with_jobs(open_readonly(db_url))
             if w.kind == "graph-rewrite")
    ).run()  # fmt: skip
    assert rewrite and not at.exception
    row = at.dataframe[0].value.iloc[0]
    assert row["cost model"] == "not applicable" and row["trials to 99%"] == "2 of 3"
    assert "not applicable to" in texts(at) and figures(at) == []


def test_cost_models_page_on_an_empty_database(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    get_engine(sqlite_url)
    at = page(sqlite_url, monkeypatch, "models")
    assert "No jobs yet" in texts(at)
