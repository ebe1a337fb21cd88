"""TASO's cost-based searches over rewrites, run on a worker: greedy and backtracking.

Both compare graphs by the cost model (sum of per-operator runtimes) and explore
every candidate of a graph (no sub-sampling). `explored` counts candidate graphs whose
cost was computed; duplicates (same structure) are skipped.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from tunelab.workers.graph_rewrite.cost import OpCostModel
from tunelab.workers.graphs.ir import Graph

Explored = Callable[[int, float, str], None]  # (index, cost, rule) of each explored graph


@dataclass
class SearchResult:
    graph: Graph
    cost_s: float
    rewrites: list[tuple[str, list[str]]] = field(default_factory=list)
    explored: int = 0


def greedy(
    graph: Graph,
    rules: list,
    cost: OpCostModel,
    *,
    budget: int = 100_000,
    on_explored: Explored | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> SearchResult:
    """Apply the cheapest candidate while it is cheaper than the current graph."""
    from tunelab.workers.graph_rewrite.rules import find_candidates

    best = SearchResult(graph, cost.graph_cost(graph))
    while best.explored < budget and not should_stop():
        step = None
        for cand in find_candidates(best.graph, rules):
            if best.explored >= budget:
                break
            c = cost.graph_cost(cand.graph)
            best.explored += 1
            if on_explored:
                on_explored(best.explored, c, cand.rule)
            if c < best.cost_s and (step is None or c < step[0]):
                step = (c, cand)
        if step is None:
            break
        c, cand = step
        best = SearchResult(
            cand.graph, c, [*best.rewrites, (cand.rule, list(cand.location))], best.explored
        )
    return best


def backtracking(
    graph: Graph,
    rules: list,
    cost: OpCostModel,
    *,
    alpha: float = 1.05,
    budget: int = 1000,
    on_explored: Explored | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> SearchResult:
    """TASO's search: a priority queue of graphs by cost; a candidate is queued when its
    cost is below alpha x the best cost seen; the best graph is returned."""
    from tunelab.workers.graph_rewrite.rules import find_candidates

    start = cost.graph_cost(graph)
    best = SearchResult(graph, start)
    seen = {graph.structure_hash()}
    queue: list[tuple[float, int, Graph, list[tuple[str, list[str]]]]] = [(start, 0, graph, [])]
    tick = 1
    explored = 0
    while queue and explored < budget and not should_stop():
        _, _, g, seq = heapq.heappop(queue)
        for cand in find_candidates(g, rules):
            h = cand.graph.structure_hash()
            if h in seen:
                continue
            seen.add(h)
            c = cost.graph_cost(cand.graph)
            explored += 1
            if on_explored:
                on_explored(explored, c, cand.rule)
            path = [*seq, (cand.rule, list(cand.location))]
            if c < best.cost_s:
                best = SearchResult(cand.graph, c, path)
            if c < alpha * best.cost_s:
                heapq.heappush(queue, (c, tick, cand.graph, path))
                tick += 1
            if explored >= budget:
                break
    best.explored = explored
    return best
