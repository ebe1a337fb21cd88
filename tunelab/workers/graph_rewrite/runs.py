"""What a graph-rewrite trial does on its worker: the model set up once per worker
process, then a cost-model search (greedy, backtracking) or one episode (random, PPO).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from typing import Any

from tunelab.platform.kinds import EvalContext, Finalist, FinalRuns, RunError
from tunelab.platform.spec import JobSpec
from tunelab.workers.graph_rewrite import timing
from tunelab.workers.graph_rewrite.cost import OpCostModel
from tunelab.workers.graphs.ir import Graph


@dataclass
class Setup:
    """A model imported and ready on this worker: its graph, constants, inputs, the
    cost model and the runnable original."""

    imported: Any
    cost: OpCostModel
    initial_cost: float
    threads: int
    rules: list[Any]
    original_run: Any = None

    tolerance: tuple[float, float] = (1e-3, 1e-4)

    def env_validate(self, graph: Graph, seed: int) -> str | None:
        """None if `graph` computes what the original does (example + random inputs)."""
        from tunelab.workers.graph_rewrite.env import check_equivalent

        rtol, atol = self.tolerance
        return check_equivalent(self.imported, graph, seed, rtol=rtol, atol=atol)

    def original(self) -> Any:
        """The original graph, runnable (made once)."""
        from tunelab.workers.graphs.execute import Executable

        if self.original_run is None:
            imp = self.imported
            self.original_run = Executable(imp.graph, imp.constants)
        return self.original_run

    def runner(self, graph: Graph) -> Any:
        """A callable that runs `graph` once on the model's example inputs."""
        from tunelab.workers.graphs.execute import Executable

        found, inputs = Executable(graph, self.imported.constants), self.imported.inputs
        return lambda: found(inputs)

    def compare(
        self, graph: Graph, *, rounds: int, min_sample_s: float, seed: int = 0
    ) -> timing.Speedup:
        """The original and `graph` timed end to end in paired, shuffled rounds."""
        original, inputs = self.original(), self.imported.inputs
        return timing.compare(
            lambda: original(inputs),
            self.runner(graph),
            rounds=rounds,
            min_sample_s=min_sample_s,
            seed=seed,
        )


@dataclass
class Outcome:
    """The graph a trial ends with and how it got there."""

    graph: Graph
    cost_s: float
    rewrites: list[tuple[str, list[str]]]
    ret: float = 0.0
    explored: int = 0
    trajectory: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def _environment() -> dict[str, Any]:
    import torch

    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }


def setup(spec: JobSpec, model: str, ctx: EvalContext) -> Setup:
    """The model `model` ready on this worker (imported once per worker process)."""
    import torch

    from tunelab.workers.graph_rewrite.rules import get_rules
    from tunelab.workers.graphs.frontend import FrontendError, import_model

    wl, m = spec.workload, spec.measure
    key = ("graph-rewrite", model, wl.get("size", "cpu"), wl.get("weights_seed", 0))
    if key not in ctx.cache:
        try:
            imported = import_model(model, wl.get("size", "cpu"), wl.get("weights_seed", 0))
        except (FrontendError, ValueError) as exc:
            raise RunError(f"model {model!r}: {exc}") from None
        store = (ctx.kind_data, ctx.put_kind_data)
        # Op costs timed on a busy node serve this worker only, never the shared store.
        watch = m.busy_per_core if m.quiet_wait_s is not None else None
        cost = OpCostModel("cpu", _environment(), store, repeats=m.op_repeats, busy_per_core=watch)
        s = Setup(
            imported,
            cost,
            cost.graph_cost(imported.graph),
            torch.get_num_threads(),
            get_rules(wl.get("rules")),
        )
        s.tolerance = (m.rtol, m.atol)
        ctx.cache[key] = s
    return ctx.cache[key]


def cost_search(spec: JobSpec, params: dict[str, Any], s: Setup, ctx: EvalContext) -> Outcome:
    """Greedy or backtracking over the cost model; each explored graph is a step."""
    from tunelab.workers.graph_rewrite.search import backtracking, greedy

    def explored(i: int, cost_s: float, rule: str) -> None:
        ctx.report(
            i, {"cost_ms": cost_s * 1e3, "rule": rule, "model_speedup": s.initial_cost / cost_s}
        )

    g = s.imported.graph
    if params["search"] == "greedy":
        res = greedy(
            g,
            s.rules,
            s.cost,
            budget=params["budget"],
            on_explored=explored,
            should_stop=ctx.should_stop,
        )
    else:
        res = backtracking(
            g,
            s.rules,
            s.cost,
            alpha=params["alpha"],
            budget=params["budget"],
            on_explored=explored,
            should_stop=ctx.should_stop,
        )
    ret = 100.0 * (s.initial_cost - res.cost_s) / s.initial_cost
    return Outcome(res.graph, res.cost_s, res.rewrites, ret=ret, explored=res.explored)


def make_env(spec: JobSpec, s: Setup) -> Any:
    from tunelab.workers.graph_rewrite.env import GraphRewriteEnv

    wl = spec.workload
    return GraphRewriteEnv(
        s.imported,
        rules=wl.get("rules"),
        horizon=wl["horizon"],
        max_candidates=wl["max_candidates"],
        cost_model=s.cost,
    )


def episode(spec: JobSpec, params: dict[str, Any], s: Setup, ctx: EvalContext) -> Outcome:
    """One episode: uniformly random actions, or the PPO policy (sampled while training,
    deterministic when evaluated or applied). Each rewrite is a step of the trial; with
    `measure.e2e_every`, the graph is also timed end to end every k rewrites."""
    import torch

    from tunelab.workers.graph_rewrite import rollout
    from tunelab.workers.graph_rewrite.kind import derive_seed

    seed = derive_seed(
        spec.search.seed,
        params["search"],
        params.get("model", ""),
        params.get("episode", "eval"),
        params.get("version", ""),
    )
    env = ctx.cache.get(("env", id(s)))
    if env is None:
        env = ctx.cache[("env", id(s))] = make_env(spec, s)
    policy = None
    if params["search"] == "ppo":
        ref = params.get("policy")
        policy = rollout.load_policy(spec, ref, ctx) if ref else rollout.initial_policy(spec)
    gen = torch.Generator().manual_seed(seed)
    every = spec.measure.e2e_every
    m = spec.measure

    def on_step(i: int, info: dict[str, Any], reward: float, rule: str) -> None:
        metrics = {
            "cost_ms": info["cost_s"] * 1e3,
            "reward": reward,
            "rule": rule,
            "model_speedup": s.initial_cost / info["cost_s"],
            "candidates": info["n_candidates"],
        }
        if every and i % every == 0:
            cmp = s.compare(
                env.graph,
                rounds=max(3, m.rounds // 3),
                min_sample_s=m.min_sample_ms / 1e3,
                seed=seed + i,
            )
            metrics["speedup"] = cmp.value
        ctx.report(i, metrics)

    result = rollout.play(
        env,
        policy,
        gen,
        seed=seed,
        deterministic=bool(params.get("deterministic")),
        on_step=on_step,
        should_stop=ctx.should_stop,
    )
    return Outcome(
        env.graph,
        env.state.cost_s,
        [(h.rule, h.location) for h in env.state.history],
        ret=result.ret,
        trajectory=result.trajectory if params.get("train") else None,
    )


def final_runs(spec: JobSpec, finalists: list[Finalist], ctx: EvalContext) -> FinalRuns:
    """The finalists' final graphs (artifacts `JOB:graph-<key>`) and the original, ready
    to be timed against each other in the final rounds. Finalists of another model than
    the job's (none today: held-out models are evaluations) are left out."""
    model = spec.workload["model"]
    s = setup(spec, model, ctx)
    runs = {}
    for f in finalists:
        if f.info.get("model", model) != model or not f.info.get("graph"):
            continue
        runs[f.key] = s.runner(Graph.loads(ctx.load_artifact(f.info["graph"])))
    original, inputs = s.original(), s.imported.inputs
    return FinalRuns(
        runs,
        reference=lambda: original(inputs),
        min_sample_s=spec.measure.min_sample_ms / 1e3,
    )
