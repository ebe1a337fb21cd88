"""The performance models, the `model` strategy, replay, suites and baselines.

Replays use the exhaustive CPU sweep committed under bench/data/ (real measurements of
every candidate); the end-to-end test runs a real model-guided job on local Ray.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tunelab.platform import api, jobs
from tunelab.platform.cli import app
from tunelab.platform.kinds import candidate_key, get_kind
from tunelab.platform.search.replay import (
    ReplayError,
    load_sweep,
    record_replay,
    replay,
    save_sweep,
)
from tunelab.platform.search.strategies import ModelStrategy
from tunelab.platform.spec import SearchSpec, SpecError, parse_spec
from tunelab.schema.db import get_engine
from tunelab.workers.pipeline_search.perf_model import cuda_features

SWEEP = Path(__file__).resolve().parent.parent / "bench" / "data" / "gemm-512-cpu.json.gz"
KIND = get_kind("pipeline-search")


@pytest.fixture(scope="module")
def sweep():
    return load_sweep(SWEEP)


def test_sweep_is_complete_and_replay_answers_with_its_measurements(sweep) -> None:
    space = KIND.space(sweep.spec)
    assert len(space) == 1152
    assert all(candidate_key(p) in sweep.trials for p in space)
    assert all(sweep.repeats(candidate_key(p)) for p in space)  # every timed repeat kept
    result = replay(sweep, {"strategy": "exhaustive", "batch_size": 16})
    assert result.keys == [candidate_key(p) for p in space]  # grid order: the kind's order
    assert min(result.best_so_far()) == pytest.approx(sweep.best())
    with pytest.raises(ReplayError, match="was not measured"):
        sweep.latency(candidate_key({**space[0], "tile_m": 999}))


def test_replay_is_deterministic_and_model_predictions_precede_measurements(sweep) -> None:
    first = replay(sweep, {"strategy": "model", "seed": 3, "batch_size": 8, "budget": 40})
    again = replay(sweep, {"strategy": "model", "seed": 3, "batch_size": 8, "budget": 40})
    assert first.keys == again.keys and len(first.keys) == 40
    models = [(p.model, p.version) for p in first.predictions]
    assert models[:8] == [("analytical", 0)] * 8  # nothing measured yet: analytical model
    assert all(m == "xgboost-combined" for m, _ in models[8:])
    assert [v for _, v in models[8:]] == sorted(v for _, v in models[8:])
    assert models[-1][1] >= 3  # refitted as measurements arrived
    other = replay(sweep, {"strategy": "model", "seed": 4, "batch_size": 8, "budget": 40})
    assert other.keys != first.keys  # exploration follows the seed


def test_analytical_only_ranks_by_the_analytical_model(sweep) -> None:
    result = replay(sweep, {"strategy": "model", "cost_model": "analytical", "explore": 0,
                            "batch_size": 8, "budget": 16})  # fmt: skip
    preds = [p.seconds for p in result.predictions]
    all_preds = sorted(
        KIND.model_features(sweep.spec, p)["predicted_s"] for p in KIND.space(sweep.spec)
    )
    assert sorted(preds) == pytest.approx(all_preds[:16])


def test_xgboost_only_starts_at_random_then_learns(sweep) -> None:
    result = replay(sweep, {"strategy": "model", "cost_model": "xgboost", "batch_size": 8,
                            "budget": 24})  # fmt: skip
    # Random picks carry only the kind's analytical prediction, labelled as such.
    assert all(p and p.model == "analytical" for p in result.predictions[:8])
    assert all(p and p.model == "xgboost-xgboost" for p in result.predictions[8:])


def test_model_strategy_needs_a_model_or_xgboost() -> None:
    space = [{"x": i} for i in range(10)]
    with pytest.raises(ValueError, match="no performance model"):
        ModelStrategy(space, SearchSpec(strategy="model"))
    s = ModelStrategy(space, SearchSpec(strategy="model", cost_model="xgboost", batch_size=4))
    assert len(s.ask(4, set())) == 4


def test_analytical_model_sees_occupancy_stages_and_waves(monkeypatch) -> None:
    from dataclasses import replace

    from tunelab.workers.pipeline_search import perf_model

    gemm = (1, 4096, 4096, 4096)
    big = {"block_row_warps": 4, "block_col_warps": 2, "warp_row_tiles": 4,
           "warp_col_tiles": 2, "chunk": 4, "reg_stages": 1}  # fmt: skip
    one, three = (cuda_features(gemm, {**big, "stages": s}, "float16", "sm_80") for s in (1, 3))
    assert three["smem_bytes"] == 3 * one["smem_bytes"]
    assert (one["occupancy"], three["occupancy"]) == (2, 1)  # 48 KB vs 144 KB per block
    assert one["waves"] == math.ceil(one["blocks"] / (108 * one["occupancy"]))
    h100 = cuda_features(gemm, {**big, "stages": 3}, "float16", "sm_90")
    assert h100["predicted_s"] < three["predicted_s"]
    # Where memory latency is long next to a k-step, each stage hides more of it.
    slow = replace(perf_model.GPUS["sm_80"], mem_latency_clk=200_000)
    monkeypatch.setitem(perf_model.GPUS, "sm_80", slow)
    runs = [cuda_features(gemm, {**big, "chunk": 2, "stages": s}, "float16", "sm_80")
            for s in (1, 2, 4)]  # fmt: skip
    assert len({f["occupancy"] for f in runs}) == 1  # same occupancy: only the stages differ
    assert runs[0]["exposed_clk"] > runs[1]["exposed_clk"] > runs[2]["exposed_clk"] > 0
    assert runs[0]["predicted_s"] > runs[1]["predicted_s"] > runs[2]["predicted_s"]


def test_a_suite_is_one_spec_per_workload() -> None:
    specs = api.as_specs({"name": "s", "kind": "pipeline-search", "suite": "bert-dense",
                          "target": {"kind": "cuda", "arch": "sm_80"}})  # fmt: skip
    assert len(specs) == 10
    assert {(s.workload["M"], s.workload["N"]) for s in specs} == {
        (t, h) for t in (512, 1024) for h in (768, 1024, 2304, 3072, 4096)}  # fmt: skip
    assert specs[0].name == "s/gemm 512x768x768 float16"
    convs = api.as_specs({"kind": "pipeline-search", "suite": "resnet50-conv2d", "name": "c",
                          "target": {"kind": "cuda", "arch": "sm_80"}})  # fmt: skip
    assert all(s.workload["op"] == "conv2d" and s.workload["batch"] == 64 for s in convs)
    with pytest.raises(SpecError, match="unknown suite 'nope'"):
        api.as_specs({"name": "x", "kind": "pipeline-search", "suite": "nope"})
    with pytest.raises(SpecError, match="either suite or workload"):
        api.as_specs({"name": "x", "kind": "pipeline-search", "suite": "square",
                      "workload": {"M": 1, "N": 1, "K": 1}})  # fmt: skip


def test_replay_cli_and_sweep_files_round_trip(sweep, sqlite_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["replay", "run", str(SWEEP), "--seed", "1", "--budget", "48",
                              "--record", "--db", sqlite_url])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "model/combined: 48 trials" in res.output and "recorded as job 1" in res.output
    engine = get_engine(sqlite_url)
    recorded = jobs.trials(engine, 1)
    assert len(recorded) == 48 and all(t.predicted_cost for t in recorded)
    # The recorded replay is itself a (partial) sweep: save it and read it back.
    n = save_sweep(engine, 1, tmp_path / "part.json.gz")
    part = load_sweep(tmp_path / "part.json.gz")
    assert n == 48 and set(part.trials) <= set(sweep.trials)
    key = next(iter(part.trials))
    assert part.latency(key) == pytest.approx(sweep.latency(key), rel=1e-5)
    bad = runner.invoke(app, ["replay", "run", str(tmp_path / "missing.json.gz")])
    assert bad.exit_code == 2 and "no such sweep file" in " ".join(bad.output.split())


def test_recorded_replay_feeds_the_model_accuracy_queries(sweep, sqlite_url: str) -> None:
    from tunelab.dashboard import queries

    search = SearchSpec(strategy="model", seed=0, batch_size=8, budget=64)
    result = replay(sweep, search)
    engine = get_engine(sqlite_url)
    job_id = record_replay(engine, sweep, result, search)
    report = queries.model_report(engine, job_id)
    assert report.overall is not None and report.overall.n == 64
    pred = np.array([p.seconds for p in result.predictions])
    meas = np.array(result.latencies)
    mape = float(np.mean(np.abs(pred - meas) / meas)) * 100
    assert report.overall.mape_pct == pytest.approx(mape, rel=1e-3)
    # 64 trials, one model version per batch of 8: windows of whole versions, >= 32 each
    assert report.by == "model version" and [w.n for w in report.windows] == [32, 32]


@pytest.mark.slow
def test_model_job_records_predictions_pipelines_and_the_library_baseline(
    sqlite_url: str, ray_cluster: str
) -> None:
    spec = parse_spec({
        "name": "model", "kind": "pipeline-search",
        "workload": {"M": 256, "N": 256, "K": 256}, "target": {"kind": "llvm"},
        "search": {"strategy": "model", "budget": 16, "batch_size": 4},
        "measure": {"repeats": 3, "min_repeat_ms": 5},
    })  # fmt: skip
    engine = get_engine(sqlite_url)
    job_id = jobs.create_job(engine, spec)
    from tunelab.platform.execution import run_job

    assert run_job(engine, job_id) == "completed"
    trials = jobs.trials(engine, job_id)
    base = [t for t in trials if "baseline" in t.params]
    searched = [t for t in trials if "baseline" not in t.params]
    assert [b.baseline for b in base] == ["numpy", "numpy@1t"]  # all threads, and one
    assert all(b.status == "ok" for b in base)
    assert len(searched) == 16 and all(t.status == "ok" for t in searched)
    assert all(t.predicted_cost and t.predicted_cost > 0 for t in searched)
    models = [(t.model, t.model_version) for t in searched]
    assert models[0] == ("analytical", 0) and models[-1][0] == "xgboost-combined"
    assert models[-1][1] >= 1
    for t in searched:  # what was pipelined, at which level, with how many stages
        levels = {(r["level"], r["stages"]) for r in t.extra["pipelined"]}
        want = {("global->local", t.params["stages"]), ("local->register", t.params["reg_stages"])}
        if t.params["tile_k"] == 256:  # one k-tile: no loop to pipeline the packed tiles in
            want = {w for w in want if w[0] != "global->local"}
        assert levels == {w for w in want if w[1] > 1}
    job = jobs.get_job(engine, job_id)
    # The best is the final rounds' winner among the 5 fastest searched (never the baseline).
    fastest = sorted(searched, key=lambda t: t.latency_median_s)[:5]
    assert job.best_trial_id == job.verdict["winner_trial_id"] in {t.id for t in fastest}
    assert job.best_latency_s == job.verdict["winner_median_s"]
