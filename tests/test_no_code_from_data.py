"""Nothing read back from the database or an artifact runs code: checkpoints, policies,
trajectories, build bundles and kind data are data (JSON, `datafile` documents, tensors
through `torch.load(weights_only=True)`, `np.load(allow_pickle=False)`). A planted pickle
as a PPO checkpoint or an episodic run's checkpoint is refused with a clear error and
never unpickled; the package never unpickles anything but its own pipes."""

from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path

import pytest

from tunelab.platform import artifacts, jobs
from tunelab.platform.datafile import DataFormatError, looks_pickled, pack, unpack
from tunelab.platform.execution import run_job
from tunelab.platform.execution.driver import DriverContext
from tunelab.platform.kinds import get_kind
from tunelab.platform.search.strategies import make_strategy
from tunelab.platform.spec import parse_spec
from tunelab.schema.db import get_engine
from tunelab.schema.models import JobStatus
from tunelab.testing.kinds import TrainingRun

PACKAGE = Path(__file__).resolve().parents[1] / "tunelab"

# Unpickling where the bytes never come from the database or an artifact, and why.
ALLOWED = {
    # The CPU library baseline's child process: requests and answers on its own pipes
    # between the worker and the child it started, never stored.
    "workers/pipeline_search/library.py": {"pickle.load(", "pickle.dump("},
}
FORBIDDEN = re.compile(
    r"\bpickle\.loads?\(|\bcloudpickle\b|\bdill\b|\bshelve\b|\bjoblib\.load\b|marshal\.loads?\("
    r"|weights_only\s*=\s*False|allow_pickle\s*=\s*True|yaml\.unsafe_load|yaml\.load\((?!.*Loader)"
    r"|torch\.load\((?!.*weights_only\s*=\s*True)"
)


class Planted:
    """What an attacker writes into the database: unpickled, it creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _planted(marker: Path) -> bytes:
    return pickle.dumps(Planted(marker))


def test_the_package_unpickles_nothing_it_reads_back() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for m in FORBIDDEN.finditer(code):
                if m.group(0) not in ALLOWED.get(rel, set()):
                    found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "unpickling stored bytes runs code:\n" + "\n".join(found)


def test_a_datafile_refuses_a_pickle_and_garbage(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    meta, sections = unpack("t", pack("t", {"a": [1, "x"]}, {"b": b"\x00\x01"}))
    assert meta == {"a": [1, "x"]} and sections == {"b": b"\x00\x01"}
    blob = _planted(marker)
    assert looks_pickled(blob)
    with pytest.raises(DataFormatError, match=r"a pickle .*refused"):
        unpack("t", blob, "the thing")
    for bad in (b"", b"junk", pack("other", {}), pack("t", {}, {"b": b"12"})[:-1]):
        with pytest.raises(DataFormatError):
            unpack("t", bad)
    with pytest.raises(DataFormatError, match="pickle"):
        TrainingRun.from_bytes(blob)
    assert not marker.exists()


def test_a_planted_ppo_checkpoint_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    from tests.test_graph_rewrite import PPO_SPEC

    engine = get_engine(sqlite_url)
    spec = parse_spec(PPO_SPEC)
    job_id = jobs.create_job(engine, spec)
    marker = tmp_path / "ran"
    artifacts.save_checkpoint(engine, job_id, 3, _planted(marker))
    kind = get_kind(spec.kind)
    with pytest.raises(ValueError, match=r"checkpoint at update 3 is a pickle .*refused") as exc:
        make_strategy(kind.space(spec), spec.search, kind=kind,
                      context=DriverContext(engine, job_id, 3))  # fmt: skip
    assert f"tunelab artifacts prune {job_id} --keep 0" in str(exc.value)
    assert not marker.exists()
    # A torch pickle in the learner's place is refused by weights_only, not run.
    import torch

    from tunelab.workers.graph_rewrite.strategies import CHECKPOINT_TAG

    learner = io.BytesIO()
    torch.save({"x": Planted(marker)}, learner)
    state = {"version": 4, "collected": 8, "next_episode": 8, "env_steps": 0, "train_s": 0.0,
             "weights_ref": f"{job_id}:policy-v4", "evals": []}  # fmt: skip
    artifacts.save_checkpoint(
        engine, job_id, 4, pack(CHECKPOINT_TAG, state, {"learner": learner.getvalue()})
    )
    with pytest.raises(ValueError, match="cannot be restored"):
        make_strategy(kind.space(spec), spec.search, kind=kind,
                      context=DriverContext(engine, job_id, 3))  # fmt: skip
    assert not marker.exists()


def test_a_planted_episodic_checkpoint_fails_its_trial_and_runs_nothing(
    sqlite_url: str, ray_cluster: str, tmp_path: Path
) -> None:
    engine = get_engine(sqlite_url)
    spec = parse_spec({"name": "planted", "kind": "testing-episodic",
                       "workload": {"runs": 2, "steps": 6, "step_s": 0.0}})  # fmt: skip
    job_id = jobs.create_job(engine, spec)
    kind = get_kind(spec.kind)
    from tunelab.platform.kinds import candidate_key

    first = candidate_key(kind.space(spec)[0])
    marker = tmp_path / "ran"
    artifacts.save_checkpoint(engine, job_id, 5, _planted(marker), trial_key=first)
    assert run_job(engine, job_id, ray_address=ray_cluster) == JobStatus.completed
    trials = {t.candidate: t for t in jobs.trials(engine, job_id)}
    assert trials[first].status == "run_error"
    assert "checkpoint at step 5 is a pickle" in trials[first].error
    assert "refused" in trials[first].error
    assert [t.status for k, t in trials.items() if k != first] == ["ok"]
    assert not marker.exists()
