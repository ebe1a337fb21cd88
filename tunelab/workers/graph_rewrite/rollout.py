"""Playing one episode on a rollout worker: with the policy (sampled while training,
deterministic when evaluated or applied) or uniformly at random."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tunelab.platform.kinds import EvalContext
from tunelab.platform.spec import JobSpec
from tunelab.workers.graph_rewrite.env import EDGE_DIMS, NODE_FEATURES, GraphRewriteEnv

OnStep = Callable[[int, dict[str, Any], float, str], None]


@dataclass
class Played:
    ret: float
    steps: int
    trajectory: Any = None  # agent.Trajectory of a policy's episode


def new_policy(config: Any) -> Any:
    """A policy network shaped for this environment's features."""
    from tunelab.workers.graph_rewrite.agent import GraphPolicy

    return GraphPolicy(NODE_FEATURES, EDGE_DIMS, config)


def initial_policy(spec: JobSpec) -> Any:
    """The untrained policy of a job: initialised as its learner is (from the job seed)."""
    from tunelab.workers.graph_rewrite.kind import derive_seed
    from tunelab.workers.graph_rewrite.strategies import ppo_options

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(spec.search.seed, "learner"))
        policy = new_policy(ppo_options(spec).network)
    return policy.eval()


def load_policy(spec: JobSpec, ref: str, ctx: EvalContext) -> Any:
    """The policy whose weights are the artifact `ref` (cached per worker)."""
    from tunelab.workers.graph_rewrite.agent import load_policy_weights
    from tunelab.workers.graph_rewrite.strategies import ppo_options

    key = ("policy", ref)
    if key not in ctx.cache:
        for k in [k for k in ctx.cache if isinstance(k, tuple) and k[0] == "policy"]:
            del ctx.cache[k]  # older versions: not played again
        policy = new_policy(ppo_options(spec).network)
        load_policy_weights(policy, ctx.load_artifact(ref))
        policy.eval()
        ctx.cache[key] = policy
    return ctx.cache[key]


def play(
    env: GraphRewriteEnv,
    policy: Any | None,
    generator: torch.Generator,
    *,
    seed: int,
    deterministic: bool = False,
    on_step: OnStep | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Played:
    """One episode from `env.reset(seed=seed)`: the policy's actions (recorded as a
    trajectory), or uniformly random ones among the candidates and STOP when `policy`
    is None. Stops early (as if truncated) when `should_stop()`."""
    from tunelab.workers.graph_rewrite.agent import TrajectoryRecorder, act, action_distribution

    obs, info = env.reset(seed=seed)
    recorder = TrajectoryRecorder() if policy is not None else None
    rng = np.random.default_rng(seed)
    ret, step, terminated = 0.0, 0, False
    while step < env.horizon and not should_stop():
        if policy is not None:
            action, logprob, value = act(policy, obs, generator, deterministic)
        else:
            valid = np.flatnonzero(obs["action_mask"])
            action, logprob, value = int(rng.choice(valid)), 0.0, 0.0
        rule = env.candidates[action].rule if action != env.stop_action else "STOP"
        nxt, reward, terminated, truncated, info = env.step(action)
        if recorder is not None:
            recorder.add(obs, action, logprob, value, float(reward))
        ret += float(reward)
        step += 1
        if on_step is not None and rule != "STOP":
            on_step(step, info, float(reward), rule)
        obs = nxt
        if terminated or truncated:
            break
    if recorder is None or step == 0:
        return Played(ret, step)
    bootstrap = 0.0 if terminated else action_distribution(policy, obs)[1]
    return Played(ret, step, recorder.finish(terminated, bootstrap))
