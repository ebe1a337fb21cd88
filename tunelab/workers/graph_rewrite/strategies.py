"""The graph-rewrite kind's searches, as platform strategies (they run on the driver).

`greedy` and `backtracking` are one trial each (the search runs on a worker, every
explored graph a step of it); `random` is one trial per episode; `ppo` trains the agent:
rollout workers play episodes with the current policy (each episode a trial, its
trajectory handed back to the learner here, unrecorded), the learner updates once a
batch is in and broadcasts the new weights (an artifact `policy-vN` the workers load),
evaluates the deterministic policy every `eval_every` updates on the training model and
the held-out ones (trials marked as reference runs, `baseline` = `eval:MODEL`, never the
job's best; their returns are steps of `eval:MODEL`), and checkpoints every
`checkpoint_every` updates; the trained policy is also `policy` once training ends.

Everything stored is data: the checkpoint a `datafile` document (JSON and the learner's
tensors, read with `torch.load(weights_only=True)`), each training episode's trajectory
(`trajectory/KEY`, an .npz read without pickle) saved before its trial is recorded.

A resumed job continues from the last checkpoint without repeating anything: the
episodes an earlier run recorded for the updates after it are taken from their stored
trajectories (the same updates, the same policies), episodes it left running are run
again under the same keys (the driver does that), and an update's batch keeps its
episode indices. Artifacts are written once: a policy re-created with other weights (a
different thread count) is published as a new version, `policy-vN.2`, and only episodes
played by the very policy the learner holds join its batch.
`ppo` with `policy: REF` and `episodes: 0` applies a trained policy without training.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import signal
import time
from typing import Any, ClassVar

from pydantic import BaseModel, Field, model_validator

from tunelab.platform.artifacts import ArtifactNotFound, save_new_version, version_name
from tunelab.platform.datafile import DataFormatError, pack, unpack
from tunelab.platform.kinds import candidate_key
from tunelab.platform.search.strategies import SearchStrategy
from tunelab.platform.spec import JobSpec
from tunelab.workers.graph_rewrite.spec import BacktrackingOptions, GreedyOptions, RandomOptions

log = logging.getLogger(__name__)

CHECKPOINT_TAG = "ppo-checkpoint"
TRAJECTORY_TAG = "ppo-trajectory"
# Fault injection for tests (tests/test_ppo_resume.py): the driver SIGKILLs itself right
# after saving the artifact of this name, before anything else is recorded.
KILL_AFTER_SAVE = "TUNELAB_TEST_KILL_AFTER_SAVE"


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
        # Training episodes of earlier runs (a resumed job): key -> (params, "ok",
        # "failed" or "running"); those of the current policy join its batch.
        self.earlier: dict[str, tuple[dict[str, Any], str]] = {}
        self.redo: list[int] = []  # indices of this batch to play again (another policy's)
        self.entered = False
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

    def _want(self) -> int:
        """Episodes the current update needs."""
        return min(self.options.episodes_per_update, self.options.episodes - self.collected)

    def _context(self) -> Any:
        if self.context is None:
            raise RuntimeError("the ppo strategy needs the driver's context")
        return self.context

    def _save(self, name: str, data: bytes, meta: dict[str, Any] | None = None) -> str:
        """Store `data` as artifact `name`, or as its next version if `name` holds other
        content (artifacts are written once); the name used."""
        ctx = self._context()
        used, _ = save_new_version(lambda n: ctx.save_artifact(n, data, meta), name)
        if os.environ.get(KILL_AFTER_SAVE) == used:
            os.kill(os.getpid(), signal.SIGKILL)
        if used != name:
            log.warning("job %s: %s exists with other content: saved as %s", ctx.job_id,
                        name, used)  # fmt: skip
        return used

    def _publish(self) -> None:
        """Store the current weights for the rollout workers (an artifact per version)."""
        meta = {"version": self.version, "episodes": self.collected}
        name = self._save(f"policy-v{self.version}", self.learner.weights(), meta)
        # By name: two artifacts of one content (the trained policy is also `policy`)
        # make its hash an ambiguous reference.
        self.weights_ref = f"{self._context().job_id}:{name}"

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
        if not self.entered and o.episodes:
            self.entered = True
            self._enter()
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
            while len(out) < n and len(self.batch) + len(self.in_flight) < self._want():
                if self.redo:
                    i = self.redo.pop(0)
                else:
                    i, self.next_episode = self.next_episode, self.next_episode + 1
                self.in_flight.add(i)
                out.append(self._episode(i))
        keyed = []
        for p in out:
            k = candidate_key(p)
            if k in exclude or k in self.observed:
                if p.get("train") and p["version"] == self.version:
                    self.in_flight.discard(p["episode"])
                continue
            keyed.append((k, p))
        return keyed

    def waiting(self) -> bool:
        return self.options.episodes > 0 and (
            self.collected < self.options.episodes or bool(self.evals)
        )

    # -- results -----------------------------------------------------------------------

    def tell(self, key: str, value: float | None, params: dict[str, Any] | None = None) -> None:
        """A result an earlier run recorded (a resumed job): a training episode is kept
        for its update (`_enter`), an evaluation is not run again."""
        super().tell(key, value, params)
        if params is None or params.get("search") != "ppo":
            return
        if "episode" in params and params.get("train"):
            self.next_episode = max(self.next_episode, params["episode"] + 1)
            self.earlier[key] = (params, "ok" if value is not None else "failed")
        if "baseline" in params:
            self.evals = [p for p in self.evals if candidate_key(p) != key]

    def resumed(self, key: str, params: dict[str, Any]) -> None:
        """A trial an earlier run left running, which the driver runs again now."""
        if params.get("search") != "ppo":
            return
        if "episode" in params and params.get("train"):
            self.next_episode = max(self.next_episode, params["episode"] + 1)
            self.earlier[key] = (params, "running")
        if "baseline" in params:
            self.evals = [p for p in self.evals if candidate_key(p) != key]

    def _enter(self) -> None:
        """The current policy's episodes an earlier run played: recorded ones join the
        batch (from their stored trajectories), running ones are in flight (the driver
        runs them again), and the indices another policy played are played again."""
        mine: dict[int, tuple[str, str]] = {}
        others: set[int] = set()
        for key, (p, state) in self.earlier.items():
            if p.get("version") != self.version:
                continue
            if p.get("policy") == self.weights_ref:
                mine[p["episode"]] = (key, state)
            else:
                others.add(p["episode"])
        for i, (key, state) in sorted(mine.items()):
            if state == "ok" and i not in self.batch:
                self._adopt(key, i)
            elif state == "running":
                self.in_flight.add(i)
        self.redo = sorted(others - mine.keys() - self.batch.keys() - self.in_flight)
        want = self._want()
        if want > 0 and len(self.batch) >= want:
            self._update()

    def _adopt(self, key: str, i: int) -> None:
        """Episode `i` recorded by an earlier run: its stored trajectory joins the batch
        (if it cannot be read, a new episode replaces it)."""
        ctx, base, data = self._context(), f"trajectory/{key}", None
        for version in range(1, 1000):  # its newest version: the one its trial recorded
            try:
                data = ctx.load_artifact(f"{ctx.job_id}:{version_name(base, version)}")
            except ArtifactNotFound:
                break
        try:
            if data is None:
                raise DataFormatError("it was not stored")
            meta, sections = unpack(TRAJECTORY_TAG, data, f"trajectory of episode {i}")
            from tunelab.workers.graph_rewrite.agent import Trajectory

            trajectory = Trajectory.from_bytes(sections["npz"])
        except (DataFormatError, KeyError, ValueError, OSError) as exc:
            log.warning("job %s: episode %d's trajectory is lost (%s): a new episode "
                        "replaces it", ctx.job_id, i, exc)  # fmt: skip
            return
        self.batch[i] = trajectory
        self.returns[i] = float(meta.get("return", trajectory.episode_return))
        self.env_steps += int(meta.get("steps", len(trajectory)))

    def _store_trajectory(self, key: str, payload: Any, info: dict[str, Any]) -> None:
        meta = {"return": float(info.get("return", payload.episode_return)),
                "steps": int(info.get("steps", len(payload)))}  # fmt: skip
        self._save(f"trajectory/{key}", pack(TRAJECTORY_TAG, meta, {"npz": payload.to_bytes()}))

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
        current = params["version"] == self.version and params["policy"] == self.weights_ref
        if not current:
            # An earlier run's episode, run again on resume: kept for its update if that
            # is still to come (the same policy), else of no use any more.
            if params["version"] > self.version and value is not None and payload is not None:
                self._store_trajectory(key, payload, info)
                self.earlier[key] = (params, "ok")
            return
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
        if payload is None:
            return
        # Stored before its trial is recorded: a resumed job finds every recorded
        # episode's trajectory.
        self._store_trajectory(key, payload, info)
        self.batch[i] = payload
        self.returns[i] = float(info.get("return", 0.0))
        self.env_steps += int(info.get("steps", 0))
        if len(self.batch) >= self._want():
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
        self.redo.clear()
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
        if self.collected >= o.episodes:  # trained: the policy to apply elsewhere
            meta = {"version": self.version, "episodes": self.collected}
            self._save("policy", self.learner.weights(), meta)
        if self.context is not None and (
            self.version % o.checkpoint_every == 0 or self.collected >= o.episodes
        ):
            self.context.save_checkpoint(self.version, self._checkpoint())
        if self.collected < o.episodes:
            self._enter()

    # -- checkpoints -------------------------------------------------------------------

    def _checkpoint(self) -> bytes:
        """The strategy's state as data: JSON, and the learner's (torch.save of tensors)."""
        state = {
            "version": self.version,
            "collected": self.collected,
            "next_episode": self.next_episode,
            "env_steps": self.env_steps,
            "train_s": self.train_s,
            "weights_ref": self.weights_ref,
            "evals": self.evals,
        }
        return pack(CHECKPOINT_TAG, state, {"learner": self.learner.state()})

    def _restore(self) -> None:
        from tunelab.workers.graph_rewrite.ppo import Learner

        if self.context is None or (saved := self.context.load_checkpoint()) is None:
            return
        what = f"job {self.context.job_id}'s PPO checkpoint at update {saved[0]}"
        advice = (
            f"; to train afresh, delete it (`tunelab artifacts prune {self.context.job_id} "
            "--keep 0`) and resume"
        )
        try:
            state, sections = unpack(CHECKPOINT_TAG, saved[1], what)
        except DataFormatError as exc:
            raise ValueError(f"{exc}{advice}") from None
        try:
            learner = Learner.from_state(sections["learner"])
            version, collected = int(state["version"]), int(state["collected"])
            next_episode, env_steps = int(state["next_episode"]), int(state["env_steps"])
            train_s, weights_ref = float(state["train_s"]), str(state["weights_ref"])
            evals = [dict(e) for e in state["evals"]]
        except Exception as exc:  # weights_only refuses anything but tensors and plain data
            raise ValueError(
                f"{what} cannot be restored ({type(exc).__name__}: {exc}){advice}"
            ) from None
        self.learner, self.version, self.collected = learner, version, collected
        self.next_episode, self.env_steps = next_episode, env_steps
        self.train_s, self.weights_ref, self.evals = train_s, weights_ref, evals


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
