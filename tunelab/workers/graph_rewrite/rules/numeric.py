"""Numeric verification: a rule applied to its examples must compute the same outputs
on random inputs as the graph it rewrote."""

from __future__ import annotations

from collections.abc import Sequence

from tunelab.workers.graph_rewrite.rules.core import Example, Rule
from tunelab.workers.graphs.ir import GraphError


def check_rule(
    rule: Rule,
    examples: Sequence[Example] | None = None,
    *,
    seeds: Sequence[int] = (0, 1),
    rtol: float = 1e-4,
    atol: float = 1e-4,
) -> list[str]:
    """What is wrong with `rule` on its examples (or on `examples`): locations where it
    does not fire, fails to apply, modifies its input or changes an output beyond the
    tolerances. Empty when the rule checks out."""
    from tunelab.workers.graphs.execute import compare, random_inputs, run

    problems = []
    for ex in rule.examples() if examples is None else examples:
        g = ex.graph
        where = g.name or "example"
        matches = rule.match(g)
        if not matches:
            problems.append(f"{where}: {rule.name} does not fire")
            continue
        before = g.dumps()
        for m in matches:
            try:
                new = rule.apply(g, m)
            except GraphError as exc:
                problems.append(f"{where} at {list(m.location)}: apply failed: {exc}")
                continue
            if g.dumps() != before:
                problems.append(f"{where} at {list(m.location)}: apply modified its input")
            for seed in seeds:
                inputs = random_inputs(g, seed)
                diff = compare(run(new, ex.constants, inputs), run(g, ex.constants, inputs),
                               rtol=rtol, atol=atol)  # fmt: skip
                if diff is not None:
                    problems.append(f"{where} at {list(m.location)}, seed {seed}: {diff}")
    return problems
