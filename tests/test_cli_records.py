"""The command line over what platform v2 records: learning curves (`steps`), artifacts
(`artifacts` list/get/pin/prune) and installed kinds, with their exit codes; no Ray."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunelab.platform import api, artifacts, jobs
from tunelab.platform.cli import app
from tunelab.platform.recorder import Recorder
from tunelab.platform.spec import parse_spec
from tunelab.platform.steps import StepWriter
from tunelab.schema.db import get_engine
from tunelab.schema.models import TrialStatus
from tunelab.testing.kinds import Episodic

EPISODIC = {"name": "ep", "kind": "testing-episodic", "workload": {"runs": 2}}


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture
def recorded(sqlite_url: str) -> tuple[str, int, int]:
    """A finished episodic job: two trials, the first with 100 steps and 3 checkpoints."""
    engine = get_engine(sqlite_url)
    job_id = jobs.create_job(engine, parse_spec(EPISODIC))
    recorder = Recorder(engine, job_id, objective=Episodic.objectives[0])
    for seed, loss in ((0, 0.5), (1, 0.25)):
        values = {"final_loss": loss, "reward": -loss}
        recorder.add(candidate=f"{seed:064d}", params={"lr": 0.1, "seed": seed},
                     status=TrialStatus.ok, objectives=values)  # fmt: skip
    recorder.flush()
    first = api.trials(job_id, db=sqlite_url)[0]
    with StepWriter(engine, job_id) as steps:
        for step in range(100):
            steps.add(step, {"loss": 100.0 - step}, trial_key=first.candidate)
    for step in (30, 60, 90):
        artifacts.save_checkpoint(engine, job_id, step, b"state-%d" % step,
                                  trial_key=first.candidate, keep_last=5)  # fmt: skip
    return sqlite_url, job_id, first.id


def test_show_ranks_by_the_objective(recorded: tuple[str, int, int]) -> None:
    url, job_id, _ = recorded
    code, text = run("show", str(job_id), "--db", url)
    assert code == 0, text
    assert "best: final_loss 0.25 (min)" in text
    code, text = run("trials", str(job_id), "--top", "1", "--format", "json", "--db", url)
    assert code == 0 and '"objective_final_loss": 0.25' in text


def test_steps_and_curves(recorded: tuple[str, int, int]) -> None:
    url, job_id, trial_id = recorded
    code, text = run("steps", str(job_id), "--trial", str(trial_id), "--limit", "3",
                     "--format", "csv", "--db", url)  # fmt: skip
    assert code == 0, text
    assert text.splitlines()[:4] == ["step,loss,recorded_at", *text.splitlines()[1:4]]
    assert [line.split(",")[:2] for line in text.splitlines()[1:4]] == [
        ["0", "100.0"], ["1", "99.0"], ["2", "98.0"],
    ]  # fmt: skip
    code, text = run("steps", str(job_id), "--trial", str(trial_id), "--metric", "loss",
                     "--buckets", "10", "--db", url)  # fmt: skip
    assert code == 0, text
    assert "loss: steps 0..99, min 1, max 100, last 5.5" in text
    assert "█" in text and "▁" in text  # the sparkline: falling from the first bucket
    assert run("steps", str(job_id), "--trial", "999999", "--db", url)[0] == 4
    assert run("steps", "999999", "--db", url)[0] == 4


def test_artifacts_list_get_pin_prune(recorded: tuple[str, int, int], tmp_path: Path) -> None:
    url, job_id, _ = recorded
    code, text = run("artifacts", str(job_id), "--db", url)
    assert code == 0 and "3 artifacts of job" in text, text
    ckpts = api.artifacts(job_id, db=url)
    latest = ckpts[-1]
    out = tmp_path / "ckpt.bin"
    code, text = run("artifacts", "get", f"{job_id}:{latest.name}", "-o", str(out), "--db", url)
    assert code == 0, text
    assert out.read_bytes() == b"state-90"
    out.write_bytes(b"mine")
    code, text = run("artifacts", "get", str(latest.id), "-o", str(out), "--db", url)
    assert code == 2 and "exists" in text and out.read_bytes() == b"mine"  # never clobbered
    code, text = run("artifacts", "get", "999999", "-o", str(tmp_path / "x"), "--db", url)
    assert code == 4 and not (tmp_path / "x").exists()
    assert run("artifacts", "pin", str(ckpts[0].id), "--db", url)[0] == 0
    code, text = run("artifacts", "prune", str(job_id), "--keep", "1", "--db", url)
    assert code == 0 and "deleted 1 checkpoints" in text, text
    assert [a.step for a in api.artifacts(job_id, db=url)] == [30, 90]  # pinned + newest


def test_kinds_lists_kinds_and_strategies() -> None:
    code, text = run("kinds")
    assert code == 0, text
    for name in ("pipeline-search", "testing-episodic", "final_loss (min)", "testing-hill"):
        assert name in text


def test_dashboard_curves_follow_a_maximised_objective(sqlite_url: str) -> None:
    from tests.test_platform_v2 import Score
    from tunelab.dashboard import queries
    from tunelab.platform.kinds import register_kind

    register_kind(Score())
    engine = get_engine(sqlite_url)
    job_id = jobs.create_job(engine, parse_spec({"name": "s", "kind": "test-score",
                                                 "workload": {"n": 5}}))  # fmt: skip
    recorder = Recorder(engine, job_id, objective=Score.objectives[0])
    for i, score in enumerate([1.0, 3.0, 2.0, 5.0, 4.0]):
        recorder.add(candidate=f"{i:064d}", params={"i": i}, status=TrialStatus.ok,
                     objectives={"score": score})  # fmt: skip
    recorder.flush()
    curve = queries.best_so_far(engine, [job_id])[job_id]
    assert [(p.n, p.best) for p in curve] == [(1, 1.0), (2, 3.0), (4, 5.0), (5, 5.0)]
    assert queries.trials_to_reach(curve, fraction=0.5) == 2  # 3 >= 2.5
    assert queries.trials_to_reach(curve) == 4
    assert jobs.get_job(engine, job_id).best_value == 5.0


def test_a_job_recorded_without_a_plan_shows_its_count(recorded: tuple[str, int, int]) -> None:
    """A replay recorded before replays planned their trials has n_planned 0: the CLI
    shows how many it holds, not '2/0'."""
    from sqlalchemy import update

    from tunelab.schema.models import Job

    url, job_id, _ = recorded
    with get_engine(url).begin() as conn:
        conn.execute(update(Job).where(Job.id == job_id).values(n_planned=0))
    code, out = run("show", str(job_id), "--db", url)
    assert code == 0 and re.search(r"trials 2\b(?!/)", out) and "2/0" not in out
    code, out = run("jobs", "--db", url, "--format", "csv")
    assert code == 0 and "2/0" not in out
