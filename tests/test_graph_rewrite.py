"""The graph-rewrite kind: its gymnasium environment, its searches as real jobs (real
models through torch.export, real Ray, real databases, real timing), an RL job killed
and resumed, the same seed giving the same learning curve, a trained policy applied to
another model, and bad input refused with nothing written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from sqlalchemy import func, select

from tests.test_input import said, tunelab
from tunelab.platform import artifacts, jobs
from tunelab.platform import steps as steps_mod
from tunelab.platform.execution import run_job
from tunelab.platform.kinds import Built, WrongResult, get_kind
from tunelab.platform.spec import SpecError, parse_spec
from tunelab.schema.db import get_engine
from tunelab.schema.models import Job, JobStatus, Step, Trial
from tunelab.testing.context import MemoryContext
from tunelab.workers.graph_rewrite.env import GraphRewriteEnv

# A PPO job small enough for the suite: a 2-layer BERT of hidden 64, 4 rewrites per
# episode among at most 8 candidates, 3 updates of 2 episodes, a small network.
PPO_SPEC: dict[str, Any] = {
    "name": "ppo-bert-test",
    "kind": "graph-rewrite",
    "workload": {"model": "bert", "size": "test", "horizon": 4, "max_candidates": 8,
                 "workers": 1},
    "search": {"strategy": "ppo", "seed": 7, "ppo": {
        "episodes": 6, "episodes_per_update": 2, "eval_every": 2, "checkpoint_every": 1,
        "minibatch": 4, "epochs": 2, "network": {"hidden": 16, "message_passing_steps": 2},
    }},
    # busy_per_core: never 'busy', so the op costs the first job measures are cached for
    # the second one whatever else runs on this machine (a busy node's costs are not
    # cached, by design: tests/test_health.py) and the same seed gives the same rewards.
    "measure": {"threads": 1, "rounds": 3, "min_sample_ms": 0.5, "busy_per_core": 1000},
}  # fmt: skip


def _spec(**changes: Any) -> dict[str, Any]:
    spec = {k: dict(v) if isinstance(v, dict) else v for k, v in PPO_SPEC.items()}
    for path, value in changes.items():  # section__field = value, or section = value
        section, _, field = path.partition("__")
        if field:
            spec[section][field] = value
        else:
            spec[section] = value
    return spec


# -- the environment ---------------------------------------------------------------------


def _walk(env: GraphRewriteEnv, seed: int) -> list[tuple[Any, ...]]:
    """Take the first rewrite each step; what every step observed and earned."""
    obs, _ = env.reset(seed=seed)
    trace = []
    for _ in range(env.horizon):
        n = int(obs["action_mask"][:-1].sum())
        if n == 0:
            break
        obs, reward, terminated, truncated, info = env.step(n // 2)
        trace.append((reward, info["cost_s"], obs["graph"].nodes.tobytes(),
                      len(obs["candidates"])))  # fmt: skip
        if terminated or truncated:
            break
    return trace


def test_environment_passes_check_env_and_is_deterministic_for_a_seed() -> None:
    env = GraphRewriteEnv("bert", "test", horizon=3, max_candidates=4)
    check_env(env, skip_render_check=True)
    first = _walk(env, seed=11)
    assert len(first) == 3
    assert first == _walk(env, seed=11)
    obs, _ = env.reset(seed=11)
    assert obs["action_mask"][-1] == 1  # STOP is always allowed
    assert env.step(env.stop_action)[2] is True  # STOP ends the episode
    with pytest.raises(ValueError, match="masked"):
        env.reset(seed=1)
        env.step(env.max_candidates - 1 if len(env.candidates) < env.max_candidates - 1 else -1)


def test_environment_is_made_through_gymnasium_outside_tunelab() -> None:
    env = gymnasium.make("tunelab.workers.graph_rewrite.env:tunelab/GraphRewrite-v0",
                         model="resnext50", size="test", horizon=2, max_candidates=4)  # fmt: skip
    _, info = env.reset(seed=0)
    assert info["n_candidates"] > 0
    _, reward, *_ = env.step(0)
    assert np.isfinite(reward)
    assert env.unwrapped.validate() is None  # a verified rewrite keeps the outputs


def test_horizon_must_be_positive() -> None:
    with pytest.raises(ValueError, match="horizon"):
        GraphRewriteEnv("bert", "test", horizon=0)


# -- bad input: exit 2 at submit, nothing written ----------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"workload__model": "no_such_module_xyz:build"}, "does not import"),
        ({"workload__model": "tests.data.user_models:missing"}, "has no function 'missing'"),
        ({"workload__model": "nets"}, "neither a suite model"),
        ({"workload__rules": ["merge-linear-3", "no-such-rule"]}, "unknown rule 'no-such-rule'"),
        ({"workload__horizon": 0}, "horizon"),
        ({"search__ppo": {"lr": -1}}, "lr"),
        ({"search": {"strategy": "model"}}, "does not apply to graph-rewrite"),
    ],
)
def test_bad_input_is_refused_at_submit(
    change: dict[str, Any], message: str, tmp_path: Path, sqlite_url: str
) -> None:
    import yaml

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(_spec(**change)))
    ran = tunelab("submit", str(path), "--db", sqlite_url)
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert message in said(ran)
    with get_engine(sqlite_url).connect() as conn:
        assert conn.execute(select(func.count()).select_from(Job)).scalar_one() == 0


def test_applying_a_policy_needs_one() -> None:
    with pytest.raises(SpecError, match="give `policy`"):
        parse_spec(_spec(search__ppo={"episodes": 0}))


@pytest.mark.slow
def test_a_model_torch_export_cannot_trace_fails_the_job_clearly(
    sqlite_url: str, ray_cluster: str
) -> None:
    engine = get_engine(sqlite_url)
    spec = parse_spec({**_spec(workload__model="tests.data.user_models:untraceable"),
                       "search": {"strategy": "greedy"}})  # fmt: skip
    job_id = jobs.create_job(engine, spec)
    with pytest.raises(Exception, match="untraceable"):
        run_job(engine, job_id)
    job = jobs.get_job(engine, job_id)
    assert job.status == JobStatus.failed
    assert "torch.export" in (job.error or "") or "trace" in (job.error or "")
    assert jobs.trials(engine, job_id) == []


# -- a wrong rewrite is never a winner ---------------------------------------------------


def test_a_wrong_rule_makes_the_graph_a_wrong_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deliberately wrong rule (gelu(x) -> x: cheaper, and wrong) is the one greedy
    search takes; the final check turns the trial into wrong_result."""
    from tunelab.workers.graph_rewrite import rules
    from tunelab.workers.graph_rewrite.rules.core import Edit, Match, Rule

    class DropGelu(Rule):
        name = "drop-gelu-wrong"
        description = "gelu(x) -> x (wrong on purpose)"
        kind = "numeric-only"
        why_numeric_only = "a wrong rule for a test"
        root_ops = ("gelu",)

        def match_at(self, idx: Any, node: Any) -> Any:
            yield self._m([node])

        def rewrite(self, edit: Edit, match: Match) -> None:
            node = edit.graph.node(match.location[0])
            edit.replace(node.outputs[0], node.inputs[0])

    monkeypatch.setitem(rules.RULES, DropGelu.name, DropGelu())
    kind = get_kind("graph-rewrite")
    spec = parse_spec({**_spec(workload__rules=[DropGelu.name]), "search": {"strategy": "greedy"}})
    with pytest.raises(WrongResult, match="differs from the original"):
        kind.measure(spec, {"search": "greedy", "budget": 100}, Built(b""), MemoryContext())


# -- searches as real jobs ---------------------------------------------------------------


@pytest.mark.slow
def test_greedy_and_random_jobs_record_graphs_steps_and_speedups(
    sqlite_url: str, ray_cluster: str
) -> None:
    engine = get_engine(sqlite_url)
    for search in ({"strategy": "greedy"}, {"strategy": "random", "random": {"episodes": 2}}):
        spec = parse_spec({**_spec(), "search": search})
        job_id = jobs.create_job(engine, spec)
        assert run_job(engine, job_id) == JobStatus.completed
        trials = jobs.trials(engine, job_id)
        assert len(trials) == (1 if search["strategy"] == "greedy" else 2)
        for t in trials:
            assert t.status == "ok", t.error
            assert t.value == t.objectives["speedup"] > 0
            assert t.objectives["model_speedup"] > 0
            graph = artifacts.get_artifact(engine, t.extra["graph"])  # JOB:NAME
            assert graph.name.startswith("graph-")
        if search["strategy"] == "greedy":
            (t,) = trials
            assert t.objectives["model_speedup"] > 1.0  # greedy only ever lowers the cost
            assert t.extra["rewrites"], "greedy found no rewrite on BERT"
            explored = list(steps_mod.read_steps(engine, job_id, t.candidate))
            assert len(explored) == t.extra["explored"] > 0


def _ppo_curve(engine: Any, job_id: int) -> list[dict[str, Any]]:
    timing = {"wall_s", "update_s"}
    return [
        {k: v for k, v in s["metrics"].items() if k not in timing}
        for s in steps_mod.read_steps(engine, job_id)
    ]


@pytest.mark.slow
def test_ppo_job_trains_records_and_the_same_seed_gives_the_same_curve(
    sqlite_url: str, ray_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite here; the resume test below runs PPO on PostgreSQL.
    engine = get_engine(sqlite_url)
    spec = parse_spec(PPO_SPEC)
    first = jobs.create_job(engine, spec)
    assert run_job(engine, first) == JobStatus.completed
    trials = jobs.trials(engine, first)
    episodes = [t for t in trials if t.baseline is None]
    evals = [t for t in trials if t.baseline is not None]
    assert len(episodes) == 6 and all(t.status == "ok" for t in episodes)
    assert {t.params["version"] for t in episodes} == {0, 1, 2}  # the policy that played it
    # The untrained policy, then every 2 updates and at the end.
    assert sorted(t.params["version"] for t in evals) == [0, 2, 3]
    assert {t.baseline for t in evals} == {"eval:bert"}
    curve = _ppo_curve(engine, first)
    assert [c["policy_version"] for c in curve] == [1, 2, 3]
    for metric in ("mean_return", "policy_loss", "value_loss", "entropy", "approx_kl",
                   "clip_fraction", "env_steps", "episodes"):  # fmt: skip
        assert all(metric in c for c in curve), metric
    assert [s["step"] for s in steps_mod.read_steps(engine, first, "eval:bert")] == [0, 2, 3]
    names = {a.name for a in artifacts.list_artifacts(engine, first)}
    assert {"policy", "policy-v0", "policy-v3"} <= names
    assert artifacts.latest_checkpoint(engine, first) is not None
    # An evaluation run is never the best: the final rounds' winner is an episode, or the
    # original graph itself (no trial) when no episode's graph is faster.
    job = jobs.get_job(engine, first)
    original = {None} if job.verdict["best"]["reference"] else set()
    assert job.best_trial_id in {t.id for t in episodes} | original
    assert job.best_value == job.verdict["best"]["value"]

    # The same seed, one rollout worker: the same learning curve (rewards come from the
    # cost model, whose per-operator costs the first job cached for every later one).
    again = jobs.create_job(engine, spec)
    assert run_job(engine, again) == JobStatus.completed
    assert _ppo_curve(engine, again) == curve
    replay = {t.params["episode"]: t.extra["rewrites"] for t in episodes}
    for t in jobs.trials(engine, again):
        if t.baseline is None:
            assert t.extra["rewrites"] == replay[t.params["episode"]]

    # The trained policy applied to another model without training (X-RLflow's
    # generalisation): one deterministic episode on ViT.
    applied = parse_spec({**_spec(workload__model="vit"), "search": {
        "strategy": "ppo", "ppo": {**PPO_SPEC["search"]["ppo"], "episodes": 0,
                                   "policy": f"{first}:policy"}}})  # fmt: skip
    job = jobs.create_job(engine, applied)
    assert run_job(engine, job) == JobStatus.completed
    (t,) = jobs.trials(engine, job)
    assert t.status == "ok" and t.params["deterministic"] is True
    _dashboard_page_shows(sqlite_url, first, monkeypatch)


def _dashboard_page_shows(url: str, job_id: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kind's dashboard page on these jobs: speedups per search side by side, the
    best graph's rewrites, the learning curve and the evaluation curve."""
    from tests.test_dashboard import app, figures

    at = app(url, monkeypatch)
    at.switch_page("../workers/graph_rewrite/dashboard/page.py").run()
    assert not at.exception, [e.message for e in at.exception]
    bars, curve, evals = figures(at)
    assert {t["name"] for t in bars["data"]} == {"ppo", "ppo (eval)"}
    assert f"job {job_id}" in {t["name"] for t in curve["data"]}
    assert f"job {job_id} on bert" in {t["name"] for t in evals["data"]}
    assert any(s.value.startswith("Rewrites of the best graph") for s in at.subheader)


def _driver(job_id: int, db_url: str, ray: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tunelab.platform.cli", "run-driver", str(job_id),
         "--db", db_url, "--ray", ray],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.slow
def test_ppo_job_resumes_after_its_driver_is_killed(pg_url: str, ray_cluster: str) -> None:
    engine = get_engine(pg_url)
    spec = parse_spec(_spec(search__ppo={**PPO_SPEC["search"]["ppo"], "episodes": 8}))
    job_id = jobs.create_job(engine, spec)
    driver = _driver(job_id, pg_url, ray_cluster)
    deadline = time.monotonic() + 300
    # Past the first update's checkpoint, with episodes of the next batch recorded.
    while not (
        artifacts.latest_checkpoint(engine, job_id) is not None
        and sum(t.params.get("version") == 1 for t in jobs.trials(engine, job_id)) >= 1
    ):
        assert driver.poll() is None, "the driver ended before it was killed"
        assert time.monotonic() < deadline, "timed out waiting for a checkpoint"
        time.sleep(0.2)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    killed_at = artifacts.latest_checkpoint(engine, job_id).step

    resumed = tunelab("resume", str(job_id), "--wait", "--db", pg_url, "--ray", ray_cluster)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    job = jobs.get_job(engine, job_id)
    assert job.status == JobStatus.completed
    with engine.connect() as conn:
        rows = conn.execute(
            select(Step.trial_key, Step.step, func.count())
            .where(Step.job_id == job_id)
            .group_by(Step.trial_key, Step.step)
        ).all()
        n_trials = conn.execute(select(func.count()).where(Trial.job_id == job_id)).scalar_one()
    assert rows and all(n == 1 for *_, n in rows)  # no step recorded twice
    curve = [s["step"] for s in steps_mod.read_steps(engine, job_id)]
    assert curve == [1, 2, 3, 4]  # every update once, those after the checkpoint redone
    assert killed_at >= 1
    trials = jobs.trials(engine, job_id)
    assert n_trials == len({t.candidate for t in trials})  # no trial recorded twice
    assert sum(t.baseline is None and t.status == "ok" for t in trials) >= 8
    assert all(t.status != "running" for t in trials)
