"""An evaluation context kept in memory: for calling a kind's `measure` directly in a
test, without Ray or a database. What the evaluation reported stays readable."""

from __future__ import annotations

import hashlib
from typing import Any

from tunelab.platform.kinds import EvalContext, canonical_json


class MemoryContext(EvalContext):
    """Steps, checkpoints, artifacts and kind data in dicts; `stop` makes should_stop()
    answer True."""

    def __init__(self, trial_key: str = "test", *, job_id: int = 0, attempt: int = 1) -> None:
        self.cache: dict[str, Any] = {}
        self.job_id = job_id
        self.trial_key = trial_key
        self.attempt = attempt
        self.deadline = None
        self.steps: dict[int, dict[str, Any]] = {}
        self.checkpoints: dict[int, bytes] = {}
        self.artifacts: dict[str, bytes] = {}
        self.data: dict[str, dict[str, Any]] = {}
        self.stop = False

    def report(self, step: int, metrics: dict[str, Any]) -> None:
        self.steps.setdefault(step, dict(metrics))  # the first report of a step wins

    def should_stop(self) -> bool:
        return self.stop

    def save_checkpoint(self, step: int, data: bytes) -> None:
        self.checkpoints[step] = data

    def load_checkpoint(self) -> tuple[int, bytes] | None:
        if not self.checkpoints:
            return None
        step = max(self.checkpoints)
        return step, self.checkpoints[step]

    def save_artifact(self, name: str, data: bytes, meta: dict[str, Any] | None = None) -> str:
        self.artifacts[name] = data
        return hashlib.sha256(data).hexdigest()

    def load_artifact(self, ref: str) -> bytes:
        return self.artifacts[ref.split(":", 1)[-1]]

    def kind_data(self, key: dict[str, Any]) -> dict[str, Any] | None:
        return self.data.get(canonical_json(key))

    def put_kind_data(self, key: dict[str, Any], value: dict[str, Any]) -> None:
        self.data.setdefault(canonical_json(key), value)
