"""The `graph-rewrite` job kind: a real model's dataflow graph rewritten by verified
substitutions, searched by a PPO agent (X-RLflow), TASO's greedy and backtracking, or
at random.

A trial is one search run: one RL or random episode, or one greedy/backtracking search.
Its result is the graph it ends with, checked against the original (a mismatch is
`wrong_result`, never the best) and timed end to end against the original in paired,
shuffled rounds: the primary objective is that measured speedup (higher is better),
kept with its 95% interval and verdict; the model cost (TASO's sum of per-operator
runtimes), the episode's return and the rewrite sequence are kept beside it, each step
of an episode as a step of the trial, the final graph as an artifact (`graph-<trial>`).
After the search, the best distinct final graphs are timed again against the original
on one worker (`final_runs`): the job's best is the winner of those rounds.

Importing this module imports no torch: the work happens on the workers.
"""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict

from tunelab.platform.artifacts import save_new_version
from tunelab.platform.kinds import (
    Built,
    EvalContext,
    Finalist,
    FinalRuns,
    JobKind,
    Measurement,
    Objective,
    Resources,
    RunError,
    WrongResult,
)
from tunelab.platform.spec import JobSpec
from tunelab.workers.graph_rewrite.spec import (
    BacktrackingOptions,
    GraphMeasureSpec,
    GraphRewriteWorkload,
    GreedyOptions,
    RandomOptions,
)

SPEEDUP = "speedup"


class NoSpace(BaseModel):
    """graph-rewrite takes no `space:` section: its searches generate their graphs."""

    model_config = ConfigDict(extra="forbid")


def derive_seed(seed: int, *parts: Any) -> int:
    """A seed for one purpose (an episode, the learner) derived from the job's seed."""
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


class GraphRewrite(JobKind):
    """Optimise a model's dataflow graph with verified rewrites (X-RLflow, TASO)."""

    name = "graph-rewrite"
    workload_model = GraphRewriteWorkload
    space_model = NoSpace
    measure_model = GraphMeasureSpec
    long_running = True  # episodes report steps; an RL job keeps checkpoints
    objectives = (
        Objective(SPEEDUP, "maximize"),  # measured end to end against the original
        Objective("latency_s", "minimize"),
        Objective("model_speedup", "maximize"),  # by TASO's cost model
        Objective("model_cost_s", "minimize"),
        Objective("return", "maximize"),
    )
    replay_keys = ("search", "rewrites", "model")
    reference_label = "the original graph"

    def strategies(self) -> dict[str, Any]:
        from tunelab.workers.graph_rewrite import strategies as s

        return {
            "ppo": s.PPO,
            "greedy": s.Greedy,
            "backtracking": s.Backtracking,
            "random": s.RandomEpisodes,
        }

    def resources(self, spec: JobSpec) -> Resources:
        return Resources(evaluate="pool", workers=spec.workload.get("workers"), build=None)

    def describe(self, workload: dict[str, Any]) -> str:
        return f"{workload.get('model')} ({workload.get('size', 'cpu')})"

    def environment(self) -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            torch_version = version("torch")
        except PackageNotFoundError:
            torch_version = None
        return {"torch_version": torch_version, "cpu": platform.processor() or platform.machine()}

    def validate_spec(self, spec: JobSpec) -> None:
        options = {
            "ppo": None,
            "greedy": GreedyOptions,
            "backtracking": BacktrackingOptions,
            "random": RandomOptions,
        }
        name = spec.search.strategy
        if name not in options:
            raise ValueError(
                f"search.strategy: {name!r} does not apply to graph-rewrite "
                f"(its searches: {', '.join(options)})"
            )
        if name == "ppo":
            from tunelab.workers.graph_rewrite.strategies import ppo_options

            ppo_options(spec)  # ValueError naming the field
        else:
            spec.search.options_for(name, options[name])

    def resolve_spec(self, spec: JobSpec, on_worker: Callable[[Callable[[], Any]], Any]) -> JobSpec:
        """Import the model(s) once on a worker before anything runs: a model that
        torch.export cannot trace fails the job here, with nothing recorded."""
        wl = spec.workload
        models = [wl["model"], *wl.get("held_out", [])]
        size, seed = wl.get("size", "cpu"), wl.get("weights_seed", 0)

        def check() -> dict[str, int]:
            from tunelab.workers.graphs.frontend import FrontendError, import_model

            sizes = {}
            for m in models:
                try:
                    sizes[m] = len(import_model(m, size, seed).graph.nodes)
                except (FrontendError, ValueError) as exc:
                    raise ValueError(f"workload.model {m!r}: {exc}") from None
            return sizes

        on_worker(check)
        return spec

    def space(self, spec: JobSpec) -> list[dict[str, Any]]:
        """The planned trials of the job's search: greedy's or backtracking's one run,
        random's episodes; for ppo (whose episodes the learner generates as it trains),
        the untrained policy's deterministic episode on each model — the training one
        first, then the held-out ones — (the learning curve's evaluations at update 0)
        with the environment's settings, which is where the learner reads them."""
        wl, search = spec.workload, spec.search
        name = search.strategy
        if name == "greedy":
            return [{"search": "greedy", "budget": search.options_for(name, GreedyOptions).budget}]
        if name == "backtracking":
            o = search.options_for(name, BacktrackingOptions)
            return [{"search": "backtracking", "alpha": o.alpha, "budget": o.budget}]
        if name == "random":
            n = search.options_for(name, RandomOptions).episodes
            return [{"search": "random", "episode": i} for i in range(n)]
        models = dict.fromkeys([wl["model"], *wl.get("held_out", [])])
        return [
            {"search": "ppo", "model": m, "version": 0, "deterministic": True,
             "baseline": f"eval:{m}", "horizon": wl["horizon"],
             "max_candidates": wl["max_candidates"]}
            for m in models
        ]  # fmt: skip

    # -- on the worker -----------------------------------------------------------------

    def measure(
        self, spec: JobSpec, params: dict[str, Any], built: Built, ctx: EvalContext
    ) -> Measurement:
        from tunelab.workers.graph_rewrite import runs

        wl = spec.workload
        model = params.get("model", wl["model"])
        setup = runs.setup(spec, model, ctx)
        search = params["search"]
        if search in ("greedy", "backtracking"):
            outcome = runs.cost_search(spec, params, setup, ctx)
        elif search in ("random", "ppo"):
            outcome = runs.episode(spec, params, setup, ctx)
        else:
            raise RunError(f"unknown search {search!r}")
        if ctx.should_stop():
            raise RunError("stopped before the final graph was measured")
        m = spec.measure
        problem = setup.env_validate(
            outcome.graph, seed=derive_seed(spec.search.seed, "check", ctx.trial_key)
        )
        if problem is not None:
            raise WrongResult(
                f"the final graph differs from the original: {problem} "
                f"(rewrites: {[r for r, _ in outcome.rewrites]})"
            )
        cmp = setup.compare(
            outcome.graph,
            rounds=m.rounds,
            min_sample_s=m.min_sample_ms / 1e3,
            seed=derive_seed(spec.search.seed, "timing", ctx.trial_key),
        )
        graph = outcome.graph.dumps().encode()
        meta = {"model": model, "search": search, "nodes": len(outcome.graph.nodes)}
        # Written once: an evaluation run again (its worker lost) that ends in another
        # graph stores it as the next version of the name.
        name, graph_hash = save_new_version(
            lambda n: ctx.save_artifact(n, graph, meta=meta), f"graph-{ctx.trial_key[:16]}"
        )
        graph_ref = f"{ctx.job_id}:{name}"  # two episodes may end in the same graph
        return Measurement(
            latencies_s=None,
            objectives={
                SPEEDUP: cmp.value,
                "latency_s": cmp.final_s,
                "model_speedup": setup.initial_cost / outcome.cost_s,
                "model_cost_s": outcome.cost_s,
                "return": outcome.ret,
            },
            info={
                "model": model,
                "search": search,
                "return": outcome.ret,
                "model_speedup": setup.initial_cost / outcome.cost_s,
                "rewrites": [[r, loc] for r, loc in outcome.rewrites],
                "rules_used": sorted({r for r, _ in outcome.rewrites}),
                "steps": len(outcome.rewrites),
                "explored": outcome.explored,
                **cmp.info(),  # speedup_ci, speedup_verdict, original_latency_s, rounds
                "initial_model_cost_s": setup.initial_cost,
                "nodes": [len(setup.imported.graph.nodes), len(outcome.graph.nodes)],
                "graph": graph_ref,
                "graph_hash": graph_hash,
                "policy_version": params.get("version"),
                "ops_timed": setup.cost.measured,
                "threads": setup.threads,
            },
            payload=outcome.trajectory,
        )

    def final_identity(self, params: dict[str, Any], info: dict[str, Any]) -> str:
        """Episodes that end in the same graph are one finalist."""
        return str(
            info.get("graph_hash") or info.get("graph") or super().final_identity(params, info)
        )

    def final_runs(self, spec: JobSpec, finalists: list[Finalist], ctx: EvalContext) -> FinalRuns:
        """The finalists' final graphs and the original, to time against each other."""
        from tunelab.workers.graph_rewrite import runs

        return runs.final_runs(spec, finalists, ctx)
