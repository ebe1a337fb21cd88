"""The graph-rewrite kind's searches, as platform strategies (they run on the driver).

`greedy` and `backtracking` are one trial each (the search runs on a worker, every
explored graph a step of it); `random` is one trial per episode; `ppo` trains the agent:
rollout workers play episodes with the current policy (each episode a trial, its
trajectory handed back to the learner here, unrecorded), the learner updates once a
batch is in and broadcasts the new weights (an artifact `policy-vN` the workers load),
evaluates the deterministic policy every `eval_every` updates on the training model and
the held-out ones (trials marked as reference runs, `baseline` = `eval:MODEL`, never the
job's best; their returns are steps of `eval:MODEL`), and checkpoints every
`checkpoint_every` updates. A resumed job continues from the last checkpoint.
`ppo` with `policy: REF` and `episodes: 0` applies a trained policy without training.
"""

from __future__ import annotations

import functools
import math
import pickle
import time
from typing import Any, ClassVar

from pydantic import BaseModel, Field, model_validator

from tunelab.platform.kinds import candidate_key
from tunelab.platform.search.strategies import SearchStrategy
from tunelab.platform.spec import JobSpec
from tunelab.workers.graph_rewrite.spec import BacktrackingOptions, GreedyOptions, RandomOptions


class _Planned(SearchStrategy):
    """The kind's space, in order: its planned trials."""

    def plan(self) -> list[dict[str, Any]]:
        return [self.space.params(i) for i in range(len(self.space))]

    @property
    def total(self) -> int:
        return len(self.plan())

    def ask(self, n: int, exclude: set[str]) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for p in self.plan():
            k = candidate_key(p)
            if k not in exclude and k not in self.observed:
                out.append((k, p))
            if len(out) >= n:
                break
        return out


class Greedy(_Planned):
    """TASO's greedy search (one trial)."""

    name = "greedy"
    options_model = GreedyOptions


class Backtracking(_Planned):
    """TASO's backtracking search (one trial)."""

    name = "backtracking"
    options_model = BacktrackingOptions


class RandomEpisodes(_Planned):
    """Episodes of uniformly random rewrites (one trial each)."""

    name = "random"
    options_model = RandomOptions


@functools.cache
def _ppo_model() -> type[BaseModel]:
    from tunelab.workers.graph_rewrite.agent import PolicyConfig
    from tunelab.workers.graph_rewrite.ppo import PPOOptions

    class PPOSearchOptions(PPOOptions):
        """PPO's hyper-parameters (X-RLflow's defaults) and the network's shape
        (`network`), plus how a trained policy is applied: `policy` (an artifact:
        JOB:policy, an id or a hash prefix) and `episodes: 0` plays it without training.
        The horizon and candidates per step are the environment's (`workload`)."""

        episodes: int = Field(1000, ge=0, description="training episodes (0: apply `policy`)")
        network: PolicyConfig = Field(PolicyConfig(), description="the network's shape")
        policy: str | None = Field(None, description="start from this policy artifact")  # type: ignore[assignment]
        apply_episodes: int = Field(
            1, ge=1, description="with episodes 0: the deterministic episode, then sampled ones"
        )
        horizon: int | None = Field(None, description="set workload.horizon instead")  # type: ignore[assignment]
        max_candidates: int | None = Field(  # type: ignore[assignment]
            None, description="set workload.max_candidates instead"
        )

        @model_validator(mode="after")
        def _consistent(self) -> PPOSearchOptions:
            for name in ("horizon", "max_candidates"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} is the environment's: set workload.{name}")
            if self.episodes == 0 and self.policy is None:
                raise ValueError("episodes: 0 applies a trained policy: give `policy`")
            if self.episodes and self.episodes_per_update > self.episodes:
                raise ValueError(
                    f"episodes_per_update ({self.episodes_per_update}) exceeds episodes "
                    f"({self.episodes}): not one update would run"
                )
            return self

    return PPOSearchOptions


class _LazyOptions:
    """PPO's options model, built on first use: it imports torch, which listing kinds
    or validating another strategy's spec never needs."""

    def __get__(self, obj: Any, owner: Any) -> type[BaseModel]:
        return _ppo_model()


def ppo_options(spec: JobSpec) -> Any:
    """The validated `search.ppo` section (ValueError naming the field)."""
    return spec.search.options_for("ppo", _ppo_model())


class PPO(SearchStrategy):
    """X-RLflow's agent trained with PPO over episodes played on the rollout workers."""

    name = "ppo"
    options_model: ClassVar[Any] = _LazyOptions()

    def __init__(self, space: Any, search: Any, featurize: Any = None, **kw: Any) -> None:
        super().__init__(space, search, featurize, **kw)
        o = self.options
        # The kind's space: the untrained policy's run on each model (the training one
        # first, then the held-out ones), with the environment's settings.
        envs = [self.space.params(i) for i in range(len(self.space))]
        self.models = [e["model"] for e in envs]
        self.held_out = self.models[1:]
        self.env_settings = {
            "horizon": envs[0]["horizon"],
            "max_candidates": envs[0]["max_candidates"],
        }
        self.learner = _learner(o, _seed(search.seed, "learner"), self.env_settings)
        self.version = 0
        self.next_episode = 0
        self.collected = 0  # training episodes used by updates so far
        self.batch: dict[int, Any] = {}  # episode index -> trajectory, this version's
        self.returns: dict[int, float] = {}
        self.in_flight: set[int] = set()
        self.failures = 0  # training episodes failed in a row
        self.env_steps = 0
        self.train_s = 0.0
        self.started = time.monotonic()
        # Evaluation trials not yet proposed: first the untrained policy's (the space).
        self.evals: list[dict[str, Any]] = envs if o.episodes else []
        self.weights_ref: str | None = None
        if o.policy is not None and self.context is not None:
            self.learner.load_weights(self.context.load_artifact(o.policy))
        self._restore()

    # -- planning ----------------------------------------------------------------------

    @property
    def n_updates(self) -> int:
        return math.ceil(self.options.episodes / self.options.episodes_per_update)

    def _eval_versions(self) -> list[int]:
        o, n = self.options, self.n_updates
        return sorted({v for v in range(1, n + 1) if v % o.eval_every == 0} | ({n} if n else set()))

    @property
    def total(self) -> int:
        if self.options.episodes == 0:
            return self.options.apply_episodes
        return self.options.episodes + (1 + len(self._eval_versions())) * len(self.models)

    def _publish(self) -> None:
        """Store the current weights for the rollout workers (an artifact per version,
        and `policy`, the latest, for applying it elsewhere)."""
        if self.context is None:
            raise RuntimeError("the ppo strategy needs the driver's context")
        data = self.learner.weights()
        meta = {"version": self.version, "episodes": self.collected}
        name = f"policy-v{self.version}"
        self.context.save_artifact(name, data, meta)
        self.context.save_artifact("policy", data, meta)
        # By name: two artifacts of one content (the latest policy is also `policy`) make
        # its hash an ambiguous reference.
        self.weights_ref = f"{self.context.job_id}:{name}"

    def _episode(self, i: int) -> dict[str, Any]:
        return {
            "search": "ppo",
            "episode": i,
            "version": self.version,
            "policy": self.weights_ref,
            "train": True,
        }

    def ask(self, n: int, exclude: set[str]) -> list[tuple[str, dict[str, Any]]]:
        o = self.options
        if self.weights_ref is None:
            self._publish()
        out: list[dict[str, Any]] = []
        if o.episodes == 0:  # apply a trained policy
            for i in range(o.apply_episodes):
                p = {
                    "search": "ppo",
                    "episode": i,
                    "version": 0,
                    "policy": self.weights_ref,
                    "deterministic": i == 0,
                }
                out.append(p)
        else:
            while self.evals and len(out) < n:
                out.append(self.evals.pop(0))
            want = min(o.episodes_per_update, o.episodes - self.collected)
            while len(out) < n and len(self.batch) + len(self.in_flight) < want:
                self.in_flight.add(self.next_episode)
                out.append(self._episode(self.next_episode))
                self.next_episode += 1
        keyed = [(candidate_key(p), p) for p in out]
        keyed = [(k, p) for k, p in keyed if k not in exclude and k not in self.observed]
        return keyed

    def waiting(self) -> bool:
        return self.options.episodes > 0 and (
            self.collected < self.options.episodes or bool(self.evals)
        )

    # -- results -----------------------------------------------------------------------

    def tell(self, key: str, value: float | None, params: dict[str, Any] | None = None) -> None:
        """A recorded result (a resumed job): its trajectory is gone; an episode of the
        current version is replaced by a new one, an evaluation is not run again."""
        super().tell(key, value, params)
        if params is None or params.get("search") != "ppo":
            return
        if "episode" in params and params.get("train"):
            self.next_episode = max(self.next_episode, params["episode"] + 1)
        if "baseline" in params:
            self.evals = [p for p in self.evals if candidate_key(p) != key]

    def tell_result(
        self,
        key: str,
        value: float | None,
        params: dict[str, Any] | None = None,
        *,
        info: dict[str, Any] | None = None,
        payload: Any = None,
    ) -> None:
        super().tell(key, value, params)
        assert params is not None
        info = info or {}
        if "baseline" in params:  # an evaluation of the deterministic policy
            if self.context is not None and value is not None:
                self.context.report(
                    params["version"],
                    {
                        "speedup": value,
                        "return": info.get("return"),
                        "model_speedup": info.get("model_speedup"),
                        "steps": info.get("steps"),
                    },
                    series=params["baseline"],
                )
            return
        if not params.get("train"):
            return
        i = params["episode"]
        self.in_flight.discard(i)
        if value is None:
            self.failures += 1
            if self.failures >= max(4, 2 * self.options.episodes_per_update):
                raise RuntimeError(
                    f"ppo: {self.failures} training episodes in a row failed (the last: "
                    f"episode {i}); see `tunelab trials JOB --status run_error`"
                )
            return  # a new episode replaces it
        self.failures = 0
        if params["version"] != self.version or payload is None:
            return  # played by an older policy (a resumed job): a new episode replaces it
        self.batch[i] = payload
        self.returns[i] = float(info.get("return", 0.0))
        self.env_steps += int(info.get("steps", 0))
        want = min(self.options.episodes_per_update, self.options.episodes - self.collected)
        if len(self.batch) >= want:
            self._update()

    def _update(self) -> None:
        o = self.options
        order = sorted(self.batch)  # by episode index: the same update whatever the order
        t0 = time.monotonic()
        metrics = self.learner.update([self.batch[i] for i in order])
        self.train_s += time.monotonic() - t0
        self.collected += len(order)
        returns = [self.returns[i] for i in order]
        self.batch.clear()
        self.returns.clear()
        self.version += 1
        self._publish()
        if self.context is not None:
            self.context.report(
                self.version,
                {
                    **{k: float(v) for k, v in metrics.items()},
                    "mean_return": sum(returns) / len(returns),
                    "max_return": max(returns),
                    "episodes": self.collected,
                    "env_steps": self.env_steps,
                    "update_s": self.train_s,
                    "wall_s": time.monotonic() - self.started,
                    "policy_version": self.version,
                },
            )
        if self.version in self._eval_versions():
            for m in self.models:
                self.evals.append(
                    {
                        "search": "ppo",
                        "version": self.version,
                        "model": m,
                        "policy": self.weights_ref,
                        "deterministic": True,
                        "baseline": f"eval:{m}",
                    }
                )
        if self.context is not None and (
            self.version % o.checkpoint_every == 0 or self.collected >= o.episodes
        ):
            self.context.save_checkpoint(self.version, pickle.dumps(self._state()))

    # -- checkpoints -------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "learner": self.learner.state(),
            "version": self.version,
            "collected": self.collected,
            "next_episode": self.next_episode,
            "env_steps": self.env_steps,
            "train_s": self.train_s,
            "weights_ref": self.weights_ref,
            "evals": self.evals,
        }

    def _restore(self) -> None:
        from tunelab.workers.graph_rewrite.ppo import Learner

        if self.context is None or (saved := self.context.load_checkpoint()) is None:
            return
        state = pickle.loads(saved[1])
        self.learner = Learner.from_state(state["learner"])
        self.version, self.collected = state["version"], state["collected"]
        self.next_episode, self.env_steps = state["next_episode"], state["env_steps"]
        self.train_s, self.weights_ref = state["train_s"], state["weights_ref"]
        self.evals = list(state["evals"])


def _learner(options: Any, seed: int, env: dict[str, int]) -> Any:
    """A learner with the PPO part of the options, shaped for the environment."""
    from tunelab.workers.graph_rewrite.env import EDGE_DIMS, NODE_FEATURES
    from tunelab.workers.graph_rewrite.ppo import Learner, PPOOptions

    fields = {k: getattr(options, k) for k in PPOOptions.model_fields}
    fields["episodes"] = max(1, fields["episodes"])  # applying a policy: no update runs
    fields["episodes_per_update"] = min(fields["episodes_per_update"], fields["episodes"])
    fields["policy"] = options.network
    fields.update(env)  # horizon and max_candidates: the environment's
    ppo = PPOOptions.model_validate(fields)
    return Learner(ppo, seed, node_features=NODE_FEATURES, edge_features=EDGE_DIMS)


def _seed(seed: int, *parts: Any) -> int:
    from tunelab.workers.graph_rewrite.kind import derive_seed

    return derive_seed(seed, *parts)
