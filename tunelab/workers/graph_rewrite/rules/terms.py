"""A small symbolic term language for stating a rule's source and target (TASO style).

Tensors, scalars and integer parameters (axes, conv configurations) are variables; every
operator is uninterpreted (`verify.py` gives z3 the operators' algebraic laws). Plain
Python: z3 is imported by `verify.py` only.

Conventions: `tr(i, j, x)` transposes dims i and j, `T(x)` the last two (as matmul needs);
`concat(axis, a, b, ...)` nests binary concatenations to the right and `split(axis, x, n)`
is its inverse (`split0`/`split1` of binary splits, the split point being the concat's);
`chan(v)` broadcasts a per-channel vector over an NCHW tensor; conv configurations
(stride, padding, dilation, groups) are an integer `cfg`.
"""

from __future__ import annotations

from typing import NamedTuple


class Term(NamedTuple):
    """`op(*args)`; variables are `var` (tensor), `svar` (scalar) and `ivar` (integer)."""

    op: str
    args: tuple = ()

    def __repr__(self) -> str:
        if self.op in ("var", "svar", "ivar"):
            return str(self.args[0])
        return f"{self.op}({', '.join(repr(a) for a in self.args)})"


def var(name: str) -> Term:
    """A tensor variable."""
    return Term("var", (name,))


def svar(name: str) -> Term:
    """A scalar variable."""
    return Term("svar", (name,))


def ivar(name: str) -> Term:
    """An integer variable (an axis, a configuration)."""
    return Term("ivar", (name,))


def f(op: str, *args: Term | int) -> Term:
    return Term(op, tuple(args))


def add(a: Term, b: Term) -> Term:
    return f("add", a, b)


def mul(a: Term, b: Term) -> Term:
    return f("mul", a, b)


def matmul(a: Term, b: Term) -> Term:
    return f("matmul", a, b)


def tr(i: Term | int, j: Term | int, x: Term) -> Term:
    return f("tr", i, j, x)


def T(x: Term) -> Term:
    """Transpose of the last two dims."""
    return tr(-2, -1, x)


def perm(p: Term | int, x: Term) -> Term:
    return f("perm", p, x)


def reshape(s: Term | int, x: Term) -> Term:
    return f("reshape", s, x)


def scalar(op: str, x: Term, s: Term) -> Term:
    """`mul_scalar`/`div_scalar` of x by the scalar s."""
    return f({"mul_scalar": "smul", "div_scalar": "sdiv"}[op], x, s)


def relu(x: Term) -> Term:
    return f("relu", x)


def concat(axis: Term | int, *xs: Term) -> Term:
    if len(xs) == 1:
        return xs[0]
    return f("concat", axis, xs[0], concat(axis, *xs[1:]))


def split(axis: Term | int, x: Term, n: int) -> list[Term]:
    """The n parts of x split along axis (the inverse of `concat` of n parts)."""
    if n == 1:
        return [x]
    return [f("split0", axis, x), *split(axis, f("split1", axis, x), n - 1)]


def linear(x: Term, w: Term, b: Term | None = None) -> Term:
    return f("linear0", x, w) if b is None else f("linear", x, w, b)


def conv(cfg: Term, x: Term, w: Term, b: Term | None = None) -> Term:
    return f("conv", cfg, x, w) if b is None else f("convb", cfg, x, w, b)


def variables(term: Term) -> set[Term]:
    """The variables of a term."""
    if term.op in ("var", "svar", "ivar"):
        return {term}
    out: set[Term] = set()
    for a in term.args:
        if isinstance(a, Term):
            out |= variables(a)
    return out
