"""Replay of the sweeps committed then proposes exactly the candidate sequences recorded
before the platform's strategies moved to ask/tell (tests/data/replay_sequences.json,
captured from the release before that change): same seed, same strategy, same sequence.
Those sweeps (648 and 432 candidates, the CPU space of the time) are kept under
tests/data/sweeps-v1/; bench/data/ holds sweeps of today's space.

Exhaustive and random plans are pure functions of the space and the seed (what resume
relies on) and are pinned as captured then. The model strategy's batches changed on
purpose since (exploitation around the best, exploration after a stall, 30 trees a fit):
its knob-only XGBoost sequences were captured again then; the analytical and combined
ones follow the kind's analytical model, which is recalibrated as the CPU space grows,
so for those the same seed must give the same sequence twice."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tunelab.platform.search.replay import load_sweep, replay

REPO = Path(__file__).resolve().parent.parent
EXPECTED = json.loads((REPO / "tests/data/replay_sequences.json").read_text())
SWEEPS = sorted({name.split("|")[0] for name in EXPECTED})


@pytest.mark.slow  # 10-40 s a sweep: every strategy and seed replayed in full
@pytest.mark.parametrize("sweep_file", SWEEPS)
def test_replay_sequences_unchanged(sweep_file: str) -> None:
    sweep = load_sweep(REPO / "tests/data/sweeps-v1" / sweep_file)
    for name, expected in EXPECTED.items():
        file, strategy, cost_model, seed = name.split("|")
        if file != sweep_file:
            continue
        search = {"strategy": strategy, "seed": int(seed), "batch_size": 8, "warm_start": False}
        if cost_model:
            search["cost_model"] = cost_model
        result = replay(sweep, search)
        seq = [
            json.dumps(sweep.trials[k]["params"], sort_keys=True, separators=(",", ":"))
            for k in result.keys
        ]
        assert seq[:12] == expected["first"], name
        assert len(seq) == expected["n"], name
        assert hashlib.sha256("\n".join(seq).encode()).hexdigest() == expected["sha256"], name


@pytest.mark.parametrize("cost_model", ["analytical", "combined"])
def test_model_replays_follow_the_seed(cost_model: str) -> None:
    sweep = load_sweep(REPO / "tests/data/sweeps-v1" / "conv2d-14x14x64-cpu.json.gz")
    search = {"strategy": "model", "cost_model": cost_model, "batch_size": 8, "budget": 48}
    runs = [replay(sweep, {**search, "seed": seed}).keys for seed in (0, 0, 1)]
    assert runs[0] == runs[1] and len(runs[0]) == 48
