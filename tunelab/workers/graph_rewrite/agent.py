"""X-RLflow's agent: a graph attention network that embeds the current graph and every
candidate graph, scores each candidate (and STOP) and estimates the state's value.

Observations are the environment's dicts: "graph" (a `GraphInstance`), "candidates" (a
tuple of `GraphInstance`, at most K) and "action_mask" (int8[K + 1], STOP last).

Candidates are near copies of the current graph, and consecutive steps' graphs near
copies of each other, so most nodes are computed many times over with the same result.
Collation (`make_batch`, numpy, no Python loop over nodes or edges) therefore hashes,
for each message-passing layer, every node's receptive field (its features, and the
multiset of (in-neighbour's previous class, edge features), Weisfeiler-Lehman style) and
each layer runs on one representative per class only: the same outputs, several times
cheaper. Node and edge features are rounded to float16 everywhere (when acting and when
learning), so a `Trajectory` stores them as float16 and the learner recomputes the
log-probabilities the rollout worker sampled with.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import gymnasium as gym
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch_geometric.nn import GATv2Conv
from torch_geometric.utils import scatter, softmax

Observation = Mapping[str, Any]

_F16_MAX = float(np.finfo(np.float16).max)


class PolicyConfig(BaseModel):
    """The network's shape (X-RLflow: 4 heads, hidden 32, 5 steps, MLPs [256, 64])."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gat_heads: int = Field(4, ge=1, le=64, description="attention heads of each GAT layer")
    hidden: int = Field(32, ge=1, le=4096, description="width of node embeddings")
    message_passing_steps: int = Field(
        5, ge=0, le=64, description="GAT layers (each a residual message-passing step)"
    )
    mlp: list[Annotated[int, Field(ge=1)]] = Field(
        [256, 64], description="hidden widths of the candidate, STOP and value MLPs"
    )


# -- hashing -------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_ODD = np.uint64(0xD6E8FEB86659FD93)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, element-wise (uint64 arithmetic wraps)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def row_keys(rows: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each float16 row [n, f] -> uint64 [n]: the row's bits, 64 at a
    time, absorbed into a splitmix64 state."""
    r = np.ascontiguousarray(rows, dtype=np.float16)
    if r.shape[1] % 4:
        r = np.pad(r, ((0, 0), (0, -r.shape[1] % 4)))
    words = r.view(np.uint64)
    key = np.full(len(r), _GOLDEN, np.uint64)
    for j in range(words.shape[1]):
        key = _mix(key + words[:, j])
    return key


def _classes(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(one representative index per distinct key, class of each element), classes in
    key order (as `np.unique`, at half its cost: no stable sort)."""
    if len(keys) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(keys)
    ordered = keys[order]
    starts = np.empty(len(keys), bool)
    starts[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    cls = np.empty(len(keys), np.int64)
    cls[order] = np.cumsum(starts) - 1
    return order[starts], cls


def _to_f16(a: Any, what: str) -> np.ndarray:
    out = np.asarray(a).astype(np.float16)
    if not np.isfinite(out).all():
        raise ValueError(
            f"{what} features must be finite and below {_F16_MAX:g} in magnitude "
            "(they are stored as float16)"
        )
    return out


# -- collation -----------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One message-passing layer on class representatives: class c at this layer is
    computed from class `prev[c]` at the previous one and its representative's in-edges."""

    prev: Tensor  # int64 [U_l]
    edge_index: Tensor  # int64 [2, E_l]: (source's class at l - 1, target's class at l)
    edge_row: Tensor  # int64 [E_l] each edge's row of `GraphBatch.edge_table`


@dataclass(frozen=True)
class Pooling:
    """A graph's nodes as (class, count) pairs: pooling sums count x embedding."""

    cls: Tensor  # int64 [P]
    graph: Tensor  # int64 [P]
    count: Tensor  # float32 [P, 1]


@dataclass(frozen=True)
class GraphBatch:
    """B steps' graphs (each step: its current graph, then its candidates) as one
    disjoint union, deduplicated per layer, plus where each step's graphs are."""

    x: Tensor  # float32 [U_0, F] features of each input class
    edge_table: Tensor  # float32 [S, D] distinct edge features
    layers: tuple[Layer, ...]
    input_pool: Pooling  # over input classes (rows of `x`)
    output_pool: Pooling  # over last-layer classes
    graph_nodes: Tensor  # float32 [G, 1] nodes per graph
    current: Tensor  # int64 [B] graph index of each step's current graph
    cand_graph: Tensor  # int64 [M] graph index of each candidate
    cand_step: Tensor  # int64 [M] step of each candidate
    cand_slot: Tensor  # int64 [M] action index of each candidate, in [0, K)
    action_mask: Tensor  # bool [B, K + 1]

    @property
    def num_graphs(self) -> int:
        return len(self.graph_nodes)


def concat_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """concatenate(arange(s, s + n) for s, n in zip(starts, lengths)), vectorised."""
    lengths = lengths.astype(np.int64)
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts.astype(np.int64) - offsets, lengths) + np.arange(lengths.sum())


def _t(a: np.ndarray, dtype: torch.dtype) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


def _pooling(node_graph: np.ndarray, cls: np.ndarray) -> Pooling:
    n_cls = int(cls.max()) + 1 if len(cls) else 1
    pairs, counts = np.unique(node_graph * n_cls + cls, return_counts=True)
    return Pooling(
        cls=_t(pairs % n_cls, torch.int64),
        graph=_t(pairs // n_cls, torch.int64),
        count=_t(counts[:, None], torch.float32),
    )


def make_batch(
    node_rows: np.ndarray,
    node_row: np.ndarray,
    edge_rows: np.ndarray,
    edge_row: np.ndarray,
    links: np.ndarray,
    node_counts: np.ndarray,
    edge_counts: np.ndarray,
    graphs_per_step: np.ndarray,
    action_mask: np.ndarray,
    layers: int,
    *,
    node_row_keys: np.ndarray | None = None,
    edge_row_keys: np.ndarray | None = None,
    share: bool = True,
) -> GraphBatch:
    """A `GraphBatch` from flat arrays: float16 feature tables (`node_rows`, `edge_rows`)
    and each node's/edge's row in them, edge links local to their graph, node/edge counts
    per graph, graphs per step (1 + candidates), the steps' action masks [B, K + 1] and
    the number of message-passing `layers`. `*_row_keys` are `row_keys` of the tables,
    computed when not given; an edge table given with its keys is taken as distinct rows,
    one without is deduplicated. `share=False` computes every node (for checks)."""
    n_graphs = len(node_counts)
    node_counts = node_counts.astype(np.int64)
    edge_counts = edge_counts.astype(np.int64)
    node_start = np.cumsum(node_counts) - node_counts
    src, dst = (links.astype(np.int64) + np.repeat(node_start, edge_counts)[:, None]).T
    n_nodes = int(node_counts.sum())
    node_graph = np.repeat(np.arange(n_graphs), node_counts)

    if share:
        nkeys = (row_keys(node_rows) if node_row_keys is None else node_row_keys)[node_row]
        first, cls = _classes(nkeys)
    else:
        first = cls = np.arange(n_nodes)
    if edge_row_keys is None:  # rows as they come: project each distinct one once
        edge_first, edge_cls = _classes(ekeys := row_keys(edge_rows[edge_row]))
        edge_table = edge_rows[edge_row[edge_first]]
    else:  # a table of distinct rows already
        ekeys, edge_cls, edge_table = edge_row_keys[edge_row], edge_row, edge_rows
    x = node_rows[node_row[first]]
    input_pool = _pooling(node_graph, cls)
    built: list[Layer] = []
    for _ in range(layers):
        if share:
            # The multiset of in-edges hashes to the sum of its elements' hashes.
            agg = np.zeros(n_nodes, np.uint64)
            np.add.at(agg, dst, _mix(nkeys[src] * _ODD + ekeys))
            nkeys = _mix(nkeys * _GOLDEN + agg)
            first, new_cls = _classes(nkeys)
            is_rep = np.zeros(n_nodes, bool)
            is_rep[first] = True
            sel = is_rep[dst]
        else:
            new_cls, sel = cls, np.ones(len(dst), bool)
        built.append(
            Layer(
                prev=_t(cls[first], torch.int64),
                edge_index=_t(np.stack([cls[src[sel]], new_cls[dst[sel]]]), torch.int64),
                edge_row=_t(edge_cls[sel], torch.int64),
            )
        )
        cls = new_cls

    n_steps, width = action_mask.shape
    k = width - 1
    graphs_per_step = graphs_per_step.astype(np.int64)
    n_cands = graphs_per_step - 1
    if (n_cands < 0).any() or (n_cands > k).any():
        raise ValueError(f"a step has {n_cands.max()} candidates but the mask allows {k}")
    current = np.cumsum(graphs_per_step) - graphs_per_step
    cand_step = np.repeat(np.arange(n_steps), n_cands)
    cand_slot = concat_ranges(np.zeros(n_steps, np.int64), n_cands)
    mask = action_mask.astype(bool)
    mask[:, :k] &= np.arange(k) < n_cands[:, None]  # a slot without a graph is invalid
    mask[:, k] = True  # STOP
    return GraphBatch(
        x=_t(x, torch.float32),
        edge_table=_t(edge_table, torch.float32),
        layers=tuple(built),
        input_pool=input_pool,
        output_pool=_pooling(node_graph, cls),
        graph_nodes=_t(node_counts[:, None], torch.float32),
        current=_t(current, torch.int64),
        cand_graph=_t(current[cand_step] + 1 + cand_slot, torch.int64),
        cand_step=_t(cand_step, torch.int64),
        cand_slot=_t(cand_slot, torch.int64),
        action_mask=_t(mask, torch.bool),
    )


def _step_graphs(obs: Observation) -> list[Any]:
    return [obs["graph"], *obs["candidates"]]


def collate(observations: Sequence[Observation], layers: int, share: bool = True) -> GraphBatch:
    """Observations as one `GraphBatch` for a policy of `layers` message-passing steps."""
    graphs = [g for obs in observations for g in _step_graphs(obs)]
    nodes = [np.asarray(g.nodes) for g in graphs]
    edges = [np.asarray(g.edges) for g in graphs]
    links = [np.asarray(g.edge_links).reshape(-1, 2) for g in graphs]
    x, e = _to_f16(np.concatenate(nodes), "node"), _to_f16(np.concatenate(edges), "edge")
    return make_batch(
        node_rows=x,
        node_row=np.arange(len(x)),
        edge_rows=e,
        edge_row=np.arange(len(e)),
        links=np.concatenate(links),
        node_counts=np.array([len(a) for a in nodes]),
        edge_counts=np.array([len(a) for a in links]),
        graphs_per_step=np.array([1 + len(obs["candidates"]) for obs in observations]),
        action_mask=np.stack([np.asarray(obs["action_mask"]) for obs in observations]),
        layers=layers,
        share=share,
    )


# -- the network ---------------------------------------------------------------------


def _mlp(inputs: int, hidden: Sequence[int], out_scale: float = 1.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(inputs, width), nn.ReLU()]
        inputs = width
    last = nn.Linear(inputs, 1)
    with torch.no_grad():
        last.weight.mul_(out_scale)
        last.bias.zero_()
    return nn.Sequential(*layers, last)


class _GATv2(GATv2Conv):
    """`GATv2Conv` taking its edge features already through `lin_edge` ([E, heads x
    out]): the policy projects each distinct edge row once. (The autograd of `lin_edge`
    over every edge, a [heads x out, E] x [E, D] product, was a sixth of a learning step.)"""

    def edge_update(
        self,
        x_j: Tensor,
        x_i: Tensor,
        edge_attr: Tensor,
        index: Tensor,
        ptr: Tensor | None,
        dim_size: int | None,
    ) -> Tensor:
        x = x_i + x_j + edge_attr.view(-1, self.heads, self.out_channels)
        x = nn.functional.leaky_relu(x, self.negative_slope)
        return softmax((x * self.att).sum(dim=-1), index, ptr, dim_size)


class GraphPolicy(nn.Module):
    """GATv2 encoder (residual layers, heads concatenated then projected back to
    `hidden`, layer norm) pooled to a graph embedding [mean, max] of node embeddings.

    A candidate's logit is an MLP of [its embedding, its embedding - the current graph's,
    its sum-pooled node embeddings - the current graph's, its summed input features - the
    current graph's]. The sum differences keep a local rewrite's signal at the same scale
    whatever the graph's size (a mean difference shrinks as 1/nodes); the input one is
    the change in op counts and in total op cost, i.e. the step's reward. STOP's logit and
    the value are MLPs of the current graph's embedding. Masked actions get -inf.

    Edges are directed (source -> target); the environment adds self-edges, no others are
    added here.
    """

    def __init__(self, node_features: int, edge_features: int, config: PolicyConfig) -> None:
        super().__init__()
        self.node_features = node_features
        self.edge_features = edge_features
        self.config = config
        h, heads, steps = config.hidden, config.gat_heads, config.message_passing_steps
        self.embed = nn.Linear(node_features, h)
        self.convs = nn.ModuleList(
            _GATv2(h, h, heads=heads, concat=True, edge_dim=edge_features, add_self_loops=False)
            for _ in range(steps)
        )
        self.projs = nn.ModuleList(nn.Linear(h * heads, h) for _ in range(steps))
        self.norms = nn.ModuleList(nn.LayerNorm(h) for _ in range(steps))
        # STOP starts near 0 (its last layer scaled down), the candidates at PyTorch's
        # default scale: a candidate head scaled down too learns to tell candidates apart
        # slower than STOP's bias grows, and the policy collapses to always-STOP.
        self.candidate_head = _mlp(5 * h + node_features, config.mlp)
        self.stop_head = _mlp(2 * h, config.mlp, out_scale=0.01)
        self.value_head = _mlp(2 * h, config.mlp)

    @property
    def layers(self) -> int:
        """Message-passing steps (what `collate` needs)."""
        return self.config.message_passing_steps

    def forward(self, batch: GraphBatch) -> tuple[Tensor, Tensor]:
        """(logits [B, K + 1] with -inf on masked actions, values [B])."""
        if len(batch.layers) != self.layers:
            raise ValueError(f"batch collated for {len(batch.layers)} layers, not {self.layers}")
        if batch.x.shape[1] != self.node_features:
            raise ValueError(f"{batch.x.shape[1]} node features, not {self.node_features}")
        if batch.edge_table.shape[1] != self.edge_features:
            raise ValueError(f"{batch.edge_table.shape[1]} edge features, not {self.edge_features}")
        h = self.embed(batch.x)
        for layer, conv, proj, norm in zip(
            batch.layers, self.convs, self.projs, self.norms, strict=True
        ):
            # GATv2's edge projection, once per distinct edge feature row.
            edges = conv.lin_edge(batch.edge_table).index_select(0, layer.edge_row)
            target = h.index_select(0, layer.prev)
            msg = conv((h, target), layer.edge_index, edges)
            h = norm(target + nn.functional.elu(proj(msg)))
        g = batch.num_graphs
        out, inp = batch.output_pool, batch.input_pool
        pooled = h.index_select(0, out.cls)
        total = scatter(pooled * out.count, out.graph, 0, dim_size=g, reduce="sum")
        biggest = scatter(pooled, out.graph, 0, dim_size=g, reduce="max")
        emb = torch.cat([total / batch.graph_nodes.clamp(min=1), biggest], dim=1)
        raw = scatter(batch.x[inp.cls] * inp.count, inp.graph, 0, dim_size=g, reduce="sum")

        cur = emb[batch.current]
        cand = emb[batch.cand_graph]
        cand_cur = batch.current[batch.cand_step]
        features = [
            cand,
            cand - emb[cand_cur],
            total[batch.cand_graph] - total[cand_cur],
            raw[batch.cand_graph] - raw[cand_cur],
        ]
        scores = self.candidate_head(torch.cat(features, dim=1)).squeeze(1)

        n_steps, width = batch.action_mask.shape
        cand_logits = torch.full((n_steps, width - 1), float("-inf"), dtype=scores.dtype)
        cand_logits = cand_logits.index_put((batch.cand_step, batch.cand_slot), scores)
        logits = torch.cat([cand_logits, self.stop_head(cur)], dim=1)
        logits = logits.masked_fill(~batch.action_mask, float("-inf"))
        return logits, self.value_head(cur).squeeze(1)


def masked_entropy(logits: Tensor) -> Tensor:
    """Entropy of each row's categorical, -inf logits (masked actions) contributing 0."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp.masked_fill(torch.isinf(logits), 0.0)).sum(-1)


def policy_weights(policy: GraphPolicy) -> bytes:
    """The policy's parameters, serialised (what rollout workers load)."""
    buf = io.BytesIO()
    torch.save(policy.state_dict(), buf)
    return buf.getvalue()


def load_policy_weights(policy: GraphPolicy, data: bytes) -> None:
    """Load parameters serialised by `policy_weights`."""
    policy.load_state_dict(torch.load(io.BytesIO(data), weights_only=True))


# -- acting --------------------------------------------------------------------------


@torch.no_grad()
def action_distribution(policy: GraphPolicy, obs: Observation) -> tuple[np.ndarray, float]:
    """(probabilities of the K + 1 actions, value) of one observation."""
    logits, values = policy(collate([obs], policy.layers))
    return torch.softmax(logits[0], dim=0).numpy(), float(values[0])


@torch.no_grad()
def act(
    policy: GraphPolicy,
    obs: Observation,
    generator: torch.Generator,
    deterministic: bool = False,
) -> tuple[int, float, float]:
    """(action, its log-probability, value): sampled from the masked categorical with
    `generator` (the most likely action if `deterministic`)."""
    logits, values = policy(collate([obs], policy.layers))
    logp = torch.log_softmax(logits[0], dim=0)
    if deterministic:
        action = int(torch.argmax(logp))
    else:
        action = int(torch.multinomial(logp.exp(), 1, generator=generator))
    return action, float(logp[action]), float(values[0])


# -- trajectories --------------------------------------------------------------------


def _small_ints(a: np.ndarray) -> np.ndarray:
    top = int(a.max()) if a.size else 0
    return a.astype(np.uint16 if top < 2**16 else np.int32)


def _dedup_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct rows, index of each row's distinct row)."""
    if len(rows) == 0:
        return rows, np.zeros(0, np.uint16)
    first, inverse = _classes(row_keys(rows))
    return rows[first], _small_ints(inverse)


_PACKED = ("node_row", "edge_row", "links")


@dataclass
class Trajectory:
    """One episode, compact and picklable: every graph of every step (the current one,
    then the candidates) with float16 features stored once per distinct row, plus the
    actions, their log-probabilities and values at sampling time, and rewards.

    Pickling deflates the per-node and per-edge index arrays (`zlib`, level 1): candidates
    are near copies of the current graph, so they compress many times over.
    """

    node_rows: np.ndarray  # float16 [R, F] distinct node feature rows
    node_row: np.ndarray  # uint16|int32 [N] row of each node
    edge_rows: np.ndarray  # float16 [S, D] distinct edge feature rows
    edge_row: np.ndarray  # uint16|int32 [E] row of each edge
    links: np.ndarray  # uint16|int32 [E, 2] (source, target), local to the graph
    node_counts: np.ndarray  # int32 [G]
    edge_counts: np.ndarray  # int32 [G]
    graphs_per_step: np.ndarray  # int32 [T] 1 + candidates
    action_mask: np.ndarray  # int8 [T, K + 1]
    actions: np.ndarray  # int64 [T]
    logprobs: np.ndarray  # float32 [T]
    values: np.ndarray  # float32 [T]
    rewards: np.ndarray  # float32 [T]
    terminated: bool  # False: cut by the horizon, bootstrapped with `bootstrap_value`
    bootstrap_value: float = 0.0

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def episode_return(self) -> float:
        """Undiscounted sum of rewards."""
        return float(self.rewards.sum())

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays in memory (the pickle is smaller)."""
        return sum(v.nbytes for v in vars(self).values() if isinstance(v, np.ndarray))

    def to_bytes(self) -> bytes:
        """The episode as data: a compressed .npz of its arrays (what is stored)."""
        arrays = {k: v for k, v in vars(self).items() if isinstance(v, np.ndarray)}
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            **arrays,
            terminated=np.array(bool(self.terminated)),
            bootstrap_value=np.array(float(self.bootstrap_value)),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Trajectory:
        """An episode stored by `to_bytes` (read with allow_pickle=False: never code)."""
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            fields = {k: z[k] for k in z.files}
        fields["terminated"] = bool(fields["terminated"])
        fields["bootstrap_value"] = float(fields["bootstrap_value"])
        return cls(**fields)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(vars(self))
        for name in _PACKED:
            a = state[name]
            state[name] = (a.dtype.str, a.shape, zlib.compress(a.tobytes(), 1))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name in _PACKED:
            dtype, shape, data = state[name]
            state[name] = np.frombuffer(zlib.decompress(data), dtype).reshape(shape).copy()
        vars(self).update(state)


class TrajectoryRecorder:
    """Collects an episode's steps; `finish` turns them into a `Trajectory`."""

    def __init__(self) -> None:
        self._nodes: list[np.ndarray] = []
        self._edges: list[np.ndarray] = []
        self._links: list[np.ndarray] = []
        self._graphs_per_step: list[int] = []
        self._masks: list[np.ndarray] = []
        self._steps: list[tuple[int, float, float, float]] = []

    def add(
        self, obs: Observation, action: int, logprob: float, value: float, reward: float
    ) -> None:
        """Record one step: the observation acted on, what was done, what it earned."""
        graphs = _step_graphs(obs)
        self._nodes += [_to_f16(g.nodes, "node") for g in graphs]
        self._edges += [_to_f16(g.edges, "edge") for g in graphs]
        self._links += [np.asarray(g.edge_links).reshape(-1, 2) for g in graphs]
        self._graphs_per_step.append(len(graphs))
        self._masks.append(np.asarray(obs["action_mask"], dtype=np.int8))
        self._steps.append((int(action), float(logprob), float(value), float(reward)))

    def finish(self, terminated: bool, bootstrap_value: float = 0.0) -> Trajectory:
        """The episode so far; `bootstrap_value` is the value of the observation after the
        last step when the episode was cut (not `terminated`)."""
        if not self._steps:
            raise ValueError("an episode needs at least one step")
        node_rows, node_row = _dedup_rows(np.concatenate(self._nodes))
        edge_rows, edge_row = _dedup_rows(np.concatenate(self._edges))
        actions, logprobs, values, rewards = zip(*self._steps, strict=True)
        return Trajectory(
            node_rows=node_rows,
            node_row=node_row,
            edge_rows=edge_rows,
            edge_row=edge_row,
            links=_small_ints(np.concatenate(self._links)),
            node_counts=np.array([len(a) for a in self._nodes], np.int32),
            edge_counts=np.array([len(a) for a in self._links], np.int32),
            graphs_per_step=np.array(self._graphs_per_step, np.int32),
            action_mask=np.stack(self._masks),
            actions=np.array(actions, np.int64),
            logprobs=np.array(logprobs, np.float32),
            values=np.array(values, np.float32),
            rewards=np.array(rewards, np.float32),
            terminated=bool(terminated),
            bootstrap_value=0.0 if terminated else float(bootstrap_value),
        )


def run_episode(
    env: gym.Env,
    policy: GraphPolicy,
    generator: torch.Generator,
    horizon: int,
    *,
    seed: int | None = None,
    deterministic: bool = False,
) -> Trajectory:
    """Play one episode of at most `horizon` steps (`env.reset(seed=seed)` first)."""
    obs, _ = env.reset(seed=seed)
    recorder = TrajectoryRecorder()
    for _ in range(horizon):
        action, logprob, value = act(policy, obs, generator, deterministic)
        obs_next, reward, terminated, truncated, _ = env.step(action)
        recorder.add(obs, action, logprob, value, float(reward))
        obs = obs_next
        if terminated:
            return recorder.finish(True)
        if truncated:
            break
    return recorder.finish(False, action_distribution(policy, obs)[1])
