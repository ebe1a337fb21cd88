"""Symbolic verification with z3, as TASO does: tensors are an uninterpreted sort, every
operator an uninterpreted function, and the operators' algebraic laws universally
quantified axioms (with E-matching patterns). A rule is proved when z3 finds the
negation of `source == target` unsatisfiable under the axioms, for each pair of its
`terms()`. Rules whose correctness rests on arithmetic the theory does not model are
`numeric-only` and checked on examples (`numeric.check_rule`).

`verify_all()` gives the table of every rule; `python -m
tunelab.workers.graph_rewrite.rules.verify` prints it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import z3

from tunelab.workers.graph_rewrite.rules.core import Rule
from tunelab.workers.graph_rewrite.rules.terms import Term

TENSOR = z3.DeclareSort("Tensor")
SCALAR = z3.DeclareSort("Scalar")
INT = z3.IntSort()

# operator -> (argument sorts, result sort)
SIGNATURES: dict[str, tuple[tuple[Any, ...], Any]] = {
    "add": ((TENSOR, TENSOR), TENSOR),
    "mul": ((TENSOR, TENSOR), TENSOR),
    "matmul": ((TENSOR, TENSOR), TENSOR),
    "tr": ((INT, INT, TENSOR), TENSOR),
    "perm": ((INT, TENSOR), TENSOR),
    "reshape": ((INT, TENSOR), TENSOR),
    "smul": ((TENSOR, SCALAR), TENSOR),
    "sdiv": ((TENSOR, SCALAR), TENSOR),
    "relu": ((TENSOR,), TENSOR),
    "concat": ((INT, TENSOR, TENSOR), TENSOR),
    "split0": ((INT, TENSOR), TENSOR),
    "split1": ((INT, TENSOR), TENSOR),
    "linear": ((TENSOR, TENSOR, TENSOR), TENSOR),
    "linear0": ((TENSOR, TENSOR), TENSOR),
    "conv": ((INT, TENSOR, TENSOR), TENSOR),
    "convb": ((INT, TENSOR, TENSOR, TENSOR), TENSOR),
    "conv_relu": ((INT, TENSOR, TENSOR, TENSOR), TENSOR),
    "conv_relu0": ((INT, TENSOR, TENSOR), TENSOR),
    "chan": ((TENSOR,), TENSOR),
    "chscale": ((TENSOR, TENSOR), TENSOR),
    "zpad": ((TENSOR,), TENSOR),
    "enl": ((INT,), INT),
    "layernorm": ((TENSOR, TENSOR, TENSOR), TENSOR),
    "layernorm_w": ((TENSOR, TENSOR), TENSOR),
    "ln0": ((TENSOR,), TENSOR),
    "maxpool": ((INT, TENSOR), TENSOR),
}
FN = {op: z3.Function(op, *args, result) for op, (args, result) in SIGNATURES.items()}


def to_z3(term: Term | int) -> Any:
    """The z3 expression of a term."""
    if isinstance(term, int):
        return z3.IntVal(term)
    if term.op == "var":
        return z3.Const(term.args[0], TENSOR)
    if term.op == "svar":
        return z3.Const(term.args[0], SCALAR)
    if term.op == "ivar":
        return z3.Int(term.args[0])
    if term.op not in FN:
        raise ValueError(f"no operator {term.op!r} in the theory (term {term!r})")
    return FN[term.op](*(to_z3(a) for a in term.args))


# -- the axioms -----------------------------------------------------------------------------


def _law(name: str, vs: Sequence[Any], lhs: Any, rhs: Any) -> tuple[str, Any]:
    """`forall vs: lhs == rhs`, triggered by either side that holds every variable."""

    def covers(side: Any) -> bool:
        if z3.is_const(side) and side.decl().kind() == z3.Z3_OP_UNINTERPRETED:
            return False  # a bare variable cannot be a pattern
        found = {str(s) for s in _subterms(side)}
        return all(str(v) in found for v in vs)

    patterns = [s for s in (lhs, rhs) if covers(s)]
    return name, z3.ForAll(list(vs), lhs == rhs, patterns=patterns)


def _subterms(e: Any) -> Iterable[Any]:
    yield e
    for c in e.children():
        yield from _subterms(c)


@functools.cache
def axioms() -> list[tuple[str, Any]]:
    """The operator axioms, named."""
    a, b, c, d, x, w, v = z3.Consts("a b c d x w v", TENSOR)
    s = z3.Const("s", SCALAR)
    i, j, k = z3.Ints("i j k")
    F = FN
    add, mul, mm, tr, relu, cat = F["add"], F["mul"], F["matmul"], F["tr"], F["relu"], F["concat"]
    s0, s1, conv, chan = F["split0"], F["split1"], F["conv"], F["chan"]

    def T(e: Any) -> Any:
        return tr(-2, -1, e)

    out = [
        _law("add-commutative", [a, b], add(a, b), add(b, a)),
        _law("add-associative", [a, b, c], add(add(a, b), c), add(a, add(b, c))),
        _law("mul-commutative", [a, b], mul(a, b), mul(b, a)),
        _law("mul-associative", [a, b, c], mul(mul(a, b), c), mul(a, mul(b, c))),
        _law("mul-distributes-over-add", [a, b, c], mul(add(a, b), c), add(mul(a, c), mul(b, c))),
        _law("matmul-associative", [a, b, c], mm(mm(a, b), c), mm(a, mm(b, c))),
        _law("matmul-distributes-right", [a, b, c], mm(a, add(b, c)), add(mm(a, b), mm(a, c))),
        _law("matmul-distributes-left", [a, b, c], mm(add(a, b), c), add(mm(a, c), mm(b, c))),
        _law("transpose-involution", [i, j, a], tr(i, j, tr(i, j, a)), a),
        _law("transpose-symmetric", [i, j, a], tr(i, j, a), tr(j, i, a)),
        _law("transpose-of-matmul", [a, b], T(mm(a, b)), mm(T(b), T(a))),
        _law("linear-definition", [x, w, b], F["linear"](x, w, b), add(mm(x, T(w)), b)),
        _law("linear0-definition", [x, w], F["linear0"](x, w), mm(x, T(w))),
        _law("split0-of-concat", [i, a, b], s0(i, cat(i, a, b)), a),
        _law("split1-of-concat", [i, a, b], s1(i, cat(i, a, b)), b),
        _law("matmul-concat-columns", [a, b, c], mm(a, cat(-1, b, c)), cat(-1, mm(a, b), mm(a, c))),
        _law("matmul-concat-rows", [a, b, c], mm(cat(-2, a, b), c), cat(-2, mm(a, c), mm(b, c))),
        _law("transpose-concat-rows", [a, b], T(cat(-2, a, b)), cat(-1, T(a), T(b))),
        _law("transpose-concat-columns", [a, b], T(cat(-1, a, b)), cat(-2, T(a), T(b))),
        _law("add-concat", [i, a, b, c, d], add(cat(i, a, b), cat(i, c, d)),
             cat(i, add(a, c), add(b, d))),
        _law("mul-concat", [i, a, b, c, d], mul(cat(i, a, b), cat(i, c, d)),
             cat(i, mul(a, c), mul(b, d))),
        _law("relu-concat", [i, a, b], relu(cat(i, a, b)), cat(i, relu(a), relu(b))),
        _law("maxpool-relu", [k, a], F["maxpool"](k, relu(a)), relu(F["maxpool"](k, a))),
        # conv: linear in its weight, channel concatenations, bias, fused relu, enlarging
        _law("conv-bias", [k, x, w, b], F["convb"](k, x, w, b), add(conv(k, x, w), chan(b))),
        _law("conv-weight-additive", [k, x, a, b], conv(k, x, add(a, b)),
             add(conv(k, x, a), conv(k, x, b))),
        _law("conv-concat-out-channels", [k, x, a, b], conv(k, x, cat(0, a, b)),
             cat(1, conv(k, x, a), conv(k, x, b))),
        _law("conv-concat-in-channels", [k, a, b, c, d], conv(k, cat(1, a, b), cat(1, c, d)),
             add(conv(k, a, c), conv(k, b, d))),
        _law("conv-channel-scale", [k, x, w, v], conv(k, x, F["chscale"](w, v)),
             mul(conv(k, x, w), chan(v))),
        _law("conv-enlarge-kernel", [k, x, w], conv(F["enl"](k), x, F["zpad"](w)), conv(k, x, w)),
        _law("conv-relu-definition", [k, x, w, b], F["conv_relu"](k, x, w, b),
             relu(F["convb"](k, x, w, b))),
        _law("conv-relu0-definition", [k, x, w], F["conv_relu0"](k, x, w), relu(conv(k, x, w))),
        _law("channel-add", [a, b], chan(add(a, b)), add(chan(a), chan(b))),
        _law("channel-mul", [a, b], chan(mul(a, b)), mul(chan(a), chan(b))),
        _law("channel-concat", [a, b], chan(cat(-1, a, b)), cat(1, chan(a), chan(b))),
        # layer norm: its affine part
        _law("layernorm-definition", [x, w, b], F["layernorm"](x, w, b),
             add(mul(F["ln0"](x), w), b)),
        _law("layernorm-w-definition", [x, w], F["layernorm_w"](x, w), mul(F["ln0"](x), w)),
    ]  # fmt: skip
    # a whole is the concatenation of its two split parts
    out.append(("concat-of-splits", z3.ForAll([i, a], cat(i, s0(i, a), s1(i, a)) == a,
                                               patterns=[s0(i, a), s1(i, a)])))  # fmt: skip
    for sop in ("smul", "sdiv"):
        sc = F[sop]
        out += [
            _law(f"{sop}-matmul-left", [a, b, s], mm(sc(a, s), b), sc(mm(a, b), s)),
            _law(f"{sop}-matmul-right", [a, b, s], mm(a, sc(b, s)), sc(mm(a, b), s)),
            _law(f"{sop}-add", [a, b, s], sc(add(a, b), s), add(sc(a, s), sc(b, s))),
            _law(f"{sop}-concat", [i, a, b, s], sc(cat(i, a, b), s), cat(i, sc(a, s), sc(b, s))),
            _law(f"{sop}-transpose", [i, j, a, s], tr(i, j, sc(a, s)), sc(tr(i, j, a), s)),
            _law(f"{sop}-permute", [k, a, s], F["perm"](k, sc(a, s)), sc(F["perm"](k, a), s)),
            _law(f"{sop}-reshape", [k, a, s], F["reshape"](k, sc(a, s)),
                 sc(F["reshape"](k, a), s)),
        ]  # fmt: skip
    return out


# -- proofs ---------------------------------------------------------------------------------


@dataclass
class Proof:
    """The outcome of proving a rule: `proved` only if every pair of terms is proved."""

    rule: str
    proved: bool
    detail: str
    seconds: float


@functools.cache
def _solver() -> z3.Solver:
    """A solver holding the axioms; each goal is checked in a push/pop scope."""
    solver = z3.Solver()
    # E-matching only: with model-based instantiation z3 searches (and times out) for a
    # model of the quantified theory whenever a goal does not follow.
    solver.set("smt.auto_config", False)
    solver.set("smt.mbqi", False)
    solver.add([ax for _, ax in axioms()])
    return solver


def prove_equal(src: Term, tgt: Term, timeout_ms: int = 5000) -> tuple[bool, str]:
    """Whether `src == tgt` follows from the axioms (z3 finds its negation unsat), and
    z3's answer."""
    solver = _solver()
    solver.set("timeout", timeout_ms)
    solver.push()
    try:
        solver.add(to_z3(src) != to_z3(tgt))
        result = solver.check()
        reason = solver.reason_unknown() if result == z3.unknown else "a counter-model exists"
    finally:
        solver.pop()
    if result == z3.unsat:
        return True, "unsat"
    return False, f"{result} ({reason})"


def prove(rule: Rule, timeout_ms: int = 5000) -> Proof:
    """Prove every (source, target) pair of an algebraic rule."""
    start = time.perf_counter()
    pairs = rule.terms()
    if rule.kind != "algebraic":
        return Proof(rule.name, False, f"numeric-only: {rule.why_numeric_only}", 0.0)
    if not pairs:
        return Proof(rule.name, False, "no terms stated", 0.0)
    for src, tgt in pairs:
        ok, answer = prove_equal(src, tgt, timeout_ms)
        if not ok:
            return Proof(rule.name, False, f"not proved: {src!r} == {tgt!r}: {answer}",
                         time.perf_counter() - start)  # fmt: skip
    return Proof(rule.name, True, f"{len(pairs)} equalities proved",
                 time.perf_counter() - start)  # fmt: skip


def verify_all(
    rules: Iterable[Rule] | None = None, *, numeric: bool = True, timeout_ms: int = 5000
) -> list[dict[str, str]]:
    """One row per rule: rule, kind, proved (yes / no / numeric-only), reason and, with
    `numeric`, the numeric check on its examples (ok or the first problem)."""
    from tunelab.workers.graph_rewrite.rules import get_rules
    from tunelab.workers.graph_rewrite.rules.numeric import check_rule

    rows = []
    for rule in get_rules(None) if rules is None else rules:
        if rule.kind == "numeric-only":
            proved, reason = "numeric-only", rule.why_numeric_only
        else:
            p = prove(rule, timeout_ms)
            proved, reason = ("yes" if p.proved else "no"), p.detail
        row = {"rule": rule.name, "kind": rule.kind, "proved": proved, "reason": reason}
        if numeric:
            problems = check_rule(rule)
            row["numeric"] = "ok" if not problems else problems[0]
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, str]]) -> str:
    """The rows of `verify_all` as a plain-text table."""
    if not rows:
        return ""
    cols = list(rows[0])
    width = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols[:-1]}
    lines = ["  ".join(c.ljust(width.get(c, 0)) for c in cols)]
    for r in rows:
        lines.append("  ".join(r[c].ljust(width.get(c, 0)) for c in cols))
    return "\n".join(line.rstrip() for line in lines)


if __name__ == "__main__":
    print(format_table(verify_all()))
