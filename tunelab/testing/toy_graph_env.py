"""A tiny graph-rewriting environment whose optimal policy is known, with the observation
format of the `graph-rewrite` kind's environment: "graph" and "candidates" as
`GraphInstance`s, "action_mask" int8[K + 1], STOP the last action. Numpy only.

Each state is a small chain graph (3-6 nodes, self-edges included). Its 2..K candidates
are copies with one extra node; exactly one candidate's extra node is marked (node
feature 3), at a shuffled position. An episode has a hidden budget of 1-3 good rewrites:
while some is left, the marked candidate earns +1 and uses one up, any other candidate
earns -1. Once the budget is used up, every node of the current graph (and of its
candidates) has its "done" feature (4) set, every candidate (marked or not) earns -1 and
STOP (0, ends the episode) is best. The optimal return is the budget; `info`'s
"optimal_action" names the best action of the observation returned with it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

NODE_FEATURES = 5  # op one-hot (3), marked, done
EDGE_FEATURES = 2
MARK, DONE = 3, 4


def _edge_features(links: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    feats = rng.choice([0.25, 0.5, 1.0], (len(links), EDGE_FEATURES)).astype(np.float32)
    feats[links[:, 0] == links[:, 1]] = 0.0  # self-edges carry no tensor
    return feats


class ToyRewriteEnv(gym.Env):
    """Pick the marked candidate while the budget lasts, then STOP (see the module)."""

    def __init__(self, max_candidates: int = 6, horizon: int = 5, max_budget: int = 3) -> None:
        if max_candidates < 2:
            raise ValueError("max_candidates must be at least 2")
        if not 1 <= max_budget < horizon:
            raise ValueError("max_budget must be in [1, horizon): the optimum must fit")
        self.max_candidates = max_candidates
        self.horizon = horizon
        self.max_budget = max_budget
        graph_space = spaces.Graph(
            node_space=spaces.Box(0.0, 1.0, (NODE_FEATURES,), np.float32),
            edge_space=spaces.Box(0.0, 1.0, (EDGE_FEATURES,), np.float32),
        )
        self.observation_space = spaces.Dict(
            {
                "graph": graph_space,
                "candidates": spaces.Sequence(graph_space, stack=False),
                "action_mask": spaces.MultiBinary(max_candidates + 1),
            }
        )
        self.action_space = spaces.Discrete(max_candidates + 1)
        self.stop_action = max_candidates
        self._budget = self._steps = self._good = self._n = 0
        self._obs: dict[str, Any] = {}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        self._budget = int(self.np_random.integers(1, self.max_budget + 1))
        self._steps = 0
        self._new_state()
        return self._obs, self._info()

    def step(self, action: int) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        action = int(action)
        if action == self.stop_action:
            return self._obs, 0.0, True, False, self._info()
        if not 0 <= action < self._n:
            raise ValueError(f"action {action} is masked ({self._n} candidates)")
        if self._budget > 0 and action == self._good:
            reward, self._budget = 1.0, self._budget - 1
        else:
            reward = -1.0
        self._steps += 1
        self._new_state()
        return self._obs, reward, False, self._steps >= self.horizon, self._info()

    def optimal_action(self) -> int:
        """The best action in the current state."""
        return self._good if self._budget > 0 else self.stop_action

    def _info(self) -> dict[str, Any]:
        return {"optimal_action": self.optimal_action(), "budget": self._budget}

    def _new_state(self) -> None:
        rng = self.np_random
        n = int(rng.integers(3, 7))
        nodes = np.zeros((n, NODE_FEATURES), np.float32)
        nodes[np.arange(n), rng.integers(0, 3, n)] = 1.0
        nodes[:, DONE] = float(self._budget == 0)
        links = np.array([(i, i) for i in range(n)] + [(i, i + 1) for i in range(n - 1)])
        edges = _edge_features(links, rng)
        self._n = int(rng.integers(2, self.max_candidates + 1))
        self._good = int(rng.integers(self._n))
        candidates = []
        for i in range(self._n):
            extra = np.zeros((1, NODE_FEATURES), np.float32)
            extra[0, rng.integers(0, 3)] = 1.0
            extra[0, MARK] = float(i == self._good)
            extra[0, DONE] = float(self._budget == 0)
            new_links = np.array([(n, n), (int(rng.integers(n)), n)])
            candidates.append(
                spaces.GraphInstance(
                    nodes=np.concatenate([nodes, extra]),
                    edges=np.concatenate([edges, _edge_features(new_links, rng)]),
                    edge_links=np.concatenate([links, new_links]),
                )
            )
        mask = np.zeros(self.max_candidates + 1, np.int8)
        mask[: self._n] = 1
        mask[self.stop_action] = 1
        self._obs = {
            "graph": spaces.GraphInstance(nodes=nodes, edges=edges, edge_links=links),
            "candidates": tuple(candidates),
            "action_mask": mask,
        }
