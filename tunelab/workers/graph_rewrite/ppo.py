"""PPO for the graph-rewrite agent (X-RLflow's learner): GAE, the clipped surrogate, a
value loss and an entropy bonus, minibatches of steps, epochs stopped early past a
target KL. Deterministic: the same seed and episodes give bit-identical weights (on the
CPU, at the same thread count), and a learner restored from `state()` continues exactly
as the original would have.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from tunelab.workers.graph_rewrite.agent import (
    GraphBatch,
    GraphPolicy,
    PolicyConfig,
    Trajectory,
    concat_ranges,
    load_policy_weights,
    make_batch,
    masked_entropy,
    policy_weights,
    row_keys,
)

_STATE_FORMAT = 1


class PPOOptions(BaseModel):
    """PPO's settings; the defaults are X-RLflow's."""

    model_config = ConfigDict(extra="forbid")

    episodes: int = Field(1000, ge=1, description="episodes to train on in all")
    horizon: int = Field(100, ge=1, description="steps per episode at most")
    episodes_per_update: int = Field(10, ge=1, description="episodes collected per update")
    minibatch: int = Field(16, ge=1, description="steps per gradient step")
    epochs: int = Field(4, ge=1, description="passes over an update's steps at most")
    lr: float = Field(5e-4, gt=0, le=1, description="Adam's learning rate")
    clip: float = Field(0.2, gt=0, lt=1, description="PPO's ratio clip range (1 +- clip)")
    gamma: float = Field(0.99, ge=0, le=1, description="discount factor")
    gae_lambda: float = Field(0.95, ge=0, le=1, description="GAE's lambda")
    target_kl: float | None = Field(
        0.05, gt=0, description="stop an update's epochs once an epoch's mean approximate KL "
        "exceeds this (None: always run every epoch)"
    )  # fmt: skip
    grad_norm: float = Field(0.5, gt=0, description="clip the gradient's global norm to this")
    value_coef: float = Field(0.5, ge=0, description="weight of the value loss")
    entropy_coef: float = Field(0.01, ge=0, description="weight of the entropy bonus")
    max_candidates: int = Field(64, ge=1, description="candidate actions per step (K)")
    eval_every: int = Field(5, ge=1, description="evaluate the policy every this many updates")
    checkpoint_every: int = Field(5, ge=1, description="checkpoint every this many updates")
    policy: PolicyConfig = Field(PolicyConfig(), description="the network's shape")


def gae(
    rewards: np.ndarray, values: np.ndarray, bootstrap: float, gamma: float, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """(advantages, returns) of one episode by generalised advantage estimation;
    `bootstrap` is the value after the last step (0 when the episode terminated)."""
    adv = np.zeros(len(rewards), np.float64)
    last, next_value = 0.0, float(bootstrap)
    for t in range(len(rewards) - 1, -1, -1):
        delta = float(rewards[t]) + gamma * next_value - float(values[t])
        last = delta + gamma * lam * last
        adv[t], next_value = last, float(values[t])
    return adv, adv + values.astype(np.float64)


class _Steps:
    """An update's episodes as flat arrays, any subset of steps collated on demand."""

    def __init__(self, episodes: Sequence[Trajectory], width: int) -> None:
        for i, e in enumerate(episodes):
            if e.action_mask.shape[1] != width:
                raise ValueError(
                    f"episode {i} has {e.action_mask.shape[1] - 1} candidate slots, the "
                    f"learner {width - 1} (max_candidates)"
                )

        def cat(name: str, dtype: Any) -> np.ndarray:
            return np.concatenate([getattr(e, name).astype(dtype) for e in episodes])

        def offsets(sizes: list[int]) -> list[int]:
            return [0, *np.cumsum(sizes)[:-1].tolist()]

        node_off = offsets([len(e.node_rows) for e in episodes])
        edge_off = offsets([len(e.edge_rows) for e in episodes])
        self.node_rows = np.concatenate([e.node_rows for e in episodes])
        self.edge_rows = np.concatenate([e.edge_rows for e in episodes])
        self.node_row_keys = row_keys(self.node_rows)
        self.edge_row_keys = row_keys(self.edge_rows)
        self.node_row = np.concatenate(
            [e.node_row.astype(np.int32) + o for e, o in zip(episodes, node_off, strict=True)]
        )
        self.edge_row = np.concatenate(
            [e.edge_row.astype(np.int32) + o for e, o in zip(episodes, edge_off, strict=True)]
        )
        self.links = cat("links", np.int32)
        self.node_counts = cat("node_counts", np.int64)
        self.edge_counts = cat("edge_counts", np.int64)
        self.graphs_per_step = cat("graphs_per_step", np.int64)
        self.node_start = np.cumsum(self.node_counts) - self.node_counts
        self.edge_start = np.cumsum(self.edge_counts) - self.edge_counts
        self.graph_start = np.cumsum(self.graphs_per_step) - self.graphs_per_step
        self.action_mask = np.concatenate([e.action_mask for e in episodes])

    def batch(self, steps: np.ndarray, layers: int) -> GraphBatch:
        gps = self.graphs_per_step[steps]
        graphs = concat_ranges(self.graph_start[steps], gps)
        nodes = concat_ranges(self.node_start[graphs], self.node_counts[graphs])
        edges = concat_ranges(self.edge_start[graphs], self.edge_counts[graphs])
        return make_batch(
            node_rows=self.node_rows,
            node_row=self.node_row[nodes],
            edge_rows=self.edge_rows,
            edge_row=self.edge_row[edges],
            links=self.links[edges],
            node_counts=self.node_counts[graphs],
            edge_counts=self.edge_counts[graphs],
            graphs_per_step=gps,
            action_mask=self.action_mask[steps],
            layers=layers,
            node_row_keys=self.node_row_keys,
            edge_row_keys=self.edge_row_keys,
        )


class Learner:
    """The policy, its Adam optimiser and PPO updates over episodes from rollout workers.

    `node_features`/`edge_features` are the environment's F and D (its observation
    arrays' widths)."""

    def __init__(
        self, options: PPOOptions, seed: int, *, node_features: int, edge_features: int
    ) -> None:
        self.options = options
        self.seed = seed
        self.node_features = node_features
        self.edge_features = edge_features
        with torch.random.fork_rng(devices=[]):  # initialise from `seed`, global RNG untouched
            torch.manual_seed(seed)
            self.policy = GraphPolicy(node_features, edge_features, options.policy)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=options.lr, eps=1e-5)
        self.generator = torch.Generator().manual_seed(seed)  # minibatch shuffling
        self.version = 0

    # -- weights and state -------------------------------------------------------------

    def weights(self) -> bytes:
        """The policy's parameters (what rollout workers load with `load_weights`)."""
        return policy_weights(self.policy)

    def load_weights(self, data: bytes) -> None:
        """Replace the policy's parameters (optimiser state and version unchanged)."""
        load_policy_weights(self.policy, data)

    def state(self) -> bytes:
        """Everything `from_state` needs to continue exactly as this learner would."""
        buf = io.BytesIO()
        torch.save(
            {
                "format": _STATE_FORMAT,
                "options": self.options.model_dump(mode="json"),
                "seed": self.seed,
                "node_features": self.node_features,
                "edge_features": self.edge_features,
                "policy": self.policy.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "version": self.version,
                "generator": self.generator.get_state(),
            },
            buf,
        )
        return buf.getvalue()

    @classmethod
    def from_state(cls, data: bytes) -> Learner:
        """A learner restored from `state()`."""
        s = torch.load(io.BytesIO(data), weights_only=True)
        if s.get("format") != _STATE_FORMAT:
            raise ValueError(f"learner state format {s.get('format')!r}, not {_STATE_FORMAT}")
        learner = cls(
            PPOOptions.model_validate(s["options"]),
            s["seed"],
            node_features=s["node_features"],
            edge_features=s["edge_features"],
        )
        learner.policy.load_state_dict(s["policy"])
        learner.optimizer.load_state_dict(s["optimizer"])
        learner.version = s["version"]
        learner.generator.set_state(s["generator"])
        return learner

    # -- learning ----------------------------------------------------------------------

    def update(self, episodes: Sequence[Trajectory]) -> dict[str, float]:
        """One PPO update on these episodes. Returns the means over its minibatches of
        policy_loss, value_loss, entropy, approx_kl, clip_fraction and grad_norm (before
        clipping); explained_variance (of the rollout values; 0 when the returns do not
        vary), mean_return (undiscounted, per episode), n_steps, epochs (run) and version
        (after the update)."""
        if not episodes:
            raise ValueError("an update needs at least one episode")
        o = self.options
        steps = _Steps(episodes, o.max_candidates + 1)
        advs, rets = zip(
            *(gae(e.rewards, e.values, e.bootstrap_value, o.gamma, o.gae_lambda) for e in episodes),
            strict=True,
        )
        adv, ret = np.concatenate(advs), np.concatenate(rets)
        n = len(adv)
        data = {
            "adv": torch.from_numpy((adv - adv.mean()) / (adv.std() + 1e-8)).float(),
            "ret": torch.from_numpy(ret).float(),
            "action": torch.from_numpy(np.concatenate([e.actions for e in episodes])).long(),
            "logp": torch.from_numpy(np.concatenate([e.logprobs for e in episodes])).float(),
        }
        totals: dict[str, float] = {}
        n_minibatches = epochs = 0
        for _ in range(o.epochs):
            epochs += 1
            epoch_kl = []
            order = torch.randperm(n, generator=self.generator)
            for start in range(0, n, o.minibatch):
                idx = order[start : start + o.minibatch]
                stats = self._minibatch(steps.batch(idx.numpy(), self.policy.layers),
                                        {k: v[idx] for k, v in data.items()})  # fmt: skip
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + value
                epoch_kl.append(stats["approx_kl"])
                n_minibatches += 1
            if o.target_kl is not None and float(np.mean(epoch_kl)) > o.target_kl:
                break
        self.version += 1
        old_values = np.concatenate([e.values for e in episodes]).astype(np.float64)
        var = float(np.var(ret))
        metrics = {k: v / n_minibatches for k, v in totals.items()}
        metrics.update(
            explained_variance=0.0 if var == 0 else float(1 - np.var(ret - old_values) / var),
            mean_return=float(np.mean([e.episode_return for e in episodes])),
            n_steps=float(n),
            epochs=float(epochs),
            version=float(self.version),
        )
        return metrics

    def _minibatch(self, batch: GraphBatch, d: dict[str, torch.Tensor]) -> dict[str, float]:
        """One gradient step on a minibatch: its statistics."""
        o = self.options
        logits, values = self.policy(batch)
        logp = torch.log_softmax(logits, dim=1).gather(1, d["action"][:, None]).squeeze(1)
        log_ratio = logp - d["logp"]
        ratio = log_ratio.exp()
        clipped = ratio.clamp(1 - o.clip, 1 + o.clip)
        policy_loss = -torch.min(ratio * d["adv"], clipped * d["adv"]).mean()
        value_loss = (values - d["ret"]).pow(2).mean()
        entropy = masked_entropy(logits).mean()
        loss = policy_loss + o.value_coef * value_loss - o.entropy_coef * entropy
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"PPO loss is {loss.item()} (policy {policy_loss.item()}, value "
                f"{value_loss.item()}, entropy {entropy.item()}) at update {self.version + 1}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), o.grad_norm)
        self.optimizer.step()
        with torch.no_grad():
            return {
                "policy_loss": policy_loss.item(),
                "value_loss": value_loss.item(),
                "entropy": entropy.item(),
                "approx_kl": ((ratio - 1) - log_ratio).mean().item(),
                "clip_fraction": ((ratio - 1).abs() > o.clip).float().mean().item(),
                "grad_norm": grad_norm.item(),
            }
