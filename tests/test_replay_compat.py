"""Replay of the committed sweeps proposes exactly the candidate sequences recorded before
the platform's strategies moved to ask/tell (tests/data/replay_sequences.json, captured
from the release before that change): same seed, same strategy, same sequence."""

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
    sweep = load_sweep(REPO / "bench/data" / sweep_file)
    for name, expected in EXPECTED.items():
        file, strategy, cost_model, seed = name.split("|")
        if file != sweep_file:
            continue
        search = {"strategy": strategy, "seed": int(seed), "batch_size": 8}
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
