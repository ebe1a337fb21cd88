"""The graph-rewriting environment, a gymnasium `Env` (the CompilerGym idea): usable
alone, `gymnasium.make("tunelab/GraphRewrite-v0", model="bert", size="test")` once this
module is imported (or `gymnasium.make("tunelab.workers.graph_rewrite.env:tunelab/
GraphRewrite-v0", ...)`, which imports it).

Observation (X-RLflow): the current graph and one graph per (rule, location) candidate,
each as a `GraphInstance` — nodes: op one-hot + the op's cost (ms, TASO's cost model);
edges: the tensor's dims (up to 4) / 4096, plus a self-edge per node — and an action
mask over `max_candidates` candidates + STOP (the last action). Candidates beyond
`max_candidates` are sub-sampled with the environment's seeded generator. Reward: 100 x
(previous cost - new cost) / initial cost per step. An episode ends on STOP, when no
rewrite applies (terminated) or after `horizon` rewrites (truncated).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from tunelab.workers.graph_rewrite.cost import OpCostModel
from tunelab.workers.graphs.ir import Graph
from tunelab.workers.graphs.ops import OP_NAMES

if TYPE_CHECKING:
    from tunelab.workers.graphs.frontend import Imported

ENV_ID = "tunelab/GraphRewrite-v0"
EDGE_DIMS = 4
NODE_FEATURES = len(OP_NAMES) + 1
_OP_INDEX = {op: i for i, op in enumerate(OP_NAMES)}


def check_equivalent(
    imported: Imported, graph: Graph, seed: int, *, rtol: float = 1e-3, atol: float = 1e-4
) -> str | None:
    """None if `graph` computes what the imported model's graph does on its example
    inputs and on random inputs drawn from `seed`, else what differs."""
    from tunelab.workers.graphs.execute import compare, random_inputs, run

    consts, example = imported.constants, imported.inputs
    for inputs in (example, random_inputs(imported.graph, seed, like=example)):
        want = run(imported.graph, consts, inputs)
        diff = compare(want, run(graph, consts, inputs), rtol=rtol, atol=atol)
        if diff is not None:
            return diff
    return None


def featurize(graph: Graph, costs: dict[str, float]) -> spaces.GraphInstance:
    """A graph as the agent sees it (X-RLflow's features)."""
    n = len(graph.nodes)
    nodes = np.zeros((n, NODE_FEATURES), dtype=np.float32)
    index = {}
    for i, node in enumerate(graph.nodes):
        nodes[i, _OP_INDEX[node.op]] = 1.0
        nodes[i, -1] = costs.get(node.name, 0.0) * 1e3
        index[node.name] = i
    producers = graph.producers()
    links, feats = [], []
    for i, node in enumerate(graph.nodes):
        links.append((i, i))
        feats.append((0.0,) * EDGE_DIMS)
        for v in dict.fromkeys(node.inputs):
            p = producers.get(v)
            if p is None:
                continue
            shape = graph.types[v].shape[-EDGE_DIMS:]
            dims = (0,) * (EDGE_DIMS - len(shape)) + tuple(shape)
            links.append((index[p.name], i))
            feats.append(tuple(d / 4096 for d in dims))
    return spaces.GraphInstance(
        nodes=nodes,
        edges=np.asarray(feats, dtype=np.float32).reshape(-1, EDGE_DIMS),
        edge_links=np.asarray(links, dtype=np.int64).reshape(-1, 2),
    )


@dataclass
class StepRecord:
    """One rewrite of an episode."""

    rule: str
    location: list[str]
    cost_s: float
    reward: float


@dataclass
class EpisodeState:
    graph: Graph
    cost_s: float
    steps: int = 0
    history: list[StepRecord] = field(default_factory=list)


class GraphRewriteEnv(gym.Env):
    """Rewrite a model's graph one verified substitution at a time."""

    metadata = {"render_modes": ["ansi"]}  # noqa: RUF012 - gymnasium's convention

    def __init__(
        self,
        model: str | Imported = "bert",
        size: str = "test",
        *,
        weights_seed: int = 0,
        rules: list[str] | None = None,
        horizon: int = 50,
        max_candidates: int = 64,
        cost_model: OpCostModel | None = None,
        render_mode: str | None = None,
    ) -> None:
        from tunelab.workers.graph_rewrite.rules import get_rules

        if horizon < 1:
            raise ValueError(f"horizon must be at least 1 (got {horizon})")
        if max_candidates < 1:
            raise ValueError(f"max_candidates must be at least 1 (got {max_candidates})")
        if isinstance(model, str):
            from tunelab.workers.graphs.frontend import import_model

            model = import_model(model, size, weights_seed)
        self.imported = model
        self.original = model.graph
        self.rules = get_rules(rules)
        self.horizon = horizon
        self.max_candidates = max_candidates
        self.cost_model = cost_model or OpCostModel()
        self.render_mode = render_mode
        graph_space = spaces.Graph(
            node_space=spaces.Box(-np.inf, np.inf, (NODE_FEATURES,), np.float32),
            edge_space=spaces.Box(-np.inf, np.inf, (EDGE_DIMS,), np.float32),
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
        self.initial_cost = self.cost_model.graph_cost(self.original)
        self.state = EpisodeState(self.original, self.initial_cost)
        self._candidates: list[Any] = []

    # -- gymnasium ---------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        self.state = EpisodeState(self.original, self.initial_cost)
        self._candidates = self._find()
        return self._observation(), self._info()

    def step(self, action: int) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        action = int(action)
        if action == self.stop_action:
            return self._observation(), 0.0, True, False, self._info(stopped=True)
        if not 0 <= action < len(self._candidates):
            raise ValueError(
                f"action {action} is masked: {len(self._candidates)} candidates "
                f"(0..{len(self._candidates) - 1}) and STOP ({self.stop_action})"
            )
        cand = self._candidates[action]
        cost = self.cost_model.graph_cost(cand.graph)
        reward = 100.0 * (self.state.cost_s - cost) / self.initial_cost
        self.state.history.append(StepRecord(cand.rule, list(cand.location), cost, reward))
        self.state.graph, self.state.cost_s = cand.graph, cost
        self.state.steps += 1
        self._candidates = self._find()
        terminated = not self._candidates
        truncated = self.state.steps >= self.horizon and not terminated
        return self._observation(), reward, terminated, truncated, self._info()

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        s = self.state
        return (
            f"step {s.steps}: cost {s.cost_s * 1e3:.3f} ms "
            f"({self.initial_cost / s.cost_s:.3f}x of the original), "
            f"{len(s.graph.nodes)} nodes, {len(self._candidates)} candidates"
        )

    # -- beyond gymnasium --------------------------------------------------------------

    @property
    def graph(self) -> Graph:
        return self.state.graph

    @property
    def candidates(self) -> list[Any]:
        """This step's candidates (rule, location, graph), in action order."""
        return list(self._candidates)

    def validate(self, seed: int = 0, rtol: float = 1e-3, atol: float = 1e-4) -> str | None:
        """Compare the current graph with the original on the model's example inputs
        and fresh random ones: None if they agree, else what differs."""
        return check_equivalent(self.imported, self.state.graph, seed, rtol=rtol, atol=atol)

    def _find(self) -> list[Any]:
        from tunelab.workers.graph_rewrite.rules import find_candidates

        found = find_candidates(self.state.graph, self.rules)
        if len(found) > self.max_candidates:  # a seeded sub-sample, in rule order
            keep = self.np_random.choice(len(found), self.max_candidates, replace=False)
            found = [found[i] for i in sorted(keep)]
        return found

    def _observation(self) -> dict[str, Any]:
        mask = np.zeros(self.max_candidates + 1, dtype=np.int8)
        mask[: len(self._candidates)] = 1
        mask[self.stop_action] = 1
        cm = self.cost_model
        return {
            "graph": featurize(self.state.graph, cm.node_costs(self.state.graph)),
            "candidates": tuple(
                featurize(c.graph, cm.node_costs(c.graph)) for c in self._candidates
            ),
            "action_mask": mask,
        }

    def _info(self, stopped: bool = False) -> dict[str, Any]:
        return {
            "cost_s": self.state.cost_s,
            "initial_cost_s": self.initial_cost,
            "steps": self.state.steps,
            "n_candidates": len(self._candidates),
            "stopped": stopped,
        }


def register() -> None:
    """Register `tunelab/GraphRewrite-v0` with gymnasium (idempotent)."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point=GraphRewriteEnv, disable_env_checker=False)


register()
