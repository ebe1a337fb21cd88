"""Find the buffers of a scheduled tensor program that can be load/compute pipelined.

ALCOP's first obstacle (REFERENCE.md section 1a), as an analysis of the TIR itself rather
than of a known template. A buffer is pipelinable when

- a *copy* block (one write, one read, the value stored is the value loaded, possibly
  under a predicate such as padding) fills it inside a serial loop: the *streaming loop*,
  the innermost loop around the copy that also holds other statements;
- the copy's source index depends on that loop (each iteration loads a new tile);
- the buffer is read in the same iteration by the loop's reduction, directly or through
  a further copy (a shared tile read into registers, which the reduction then reads).

The level is the pair of scopes (global->shared, shared->register, where registers
include tensor-core fragments loaded with wmma/ldmatrix; on the CPU backend
global->local and local->register). A copy can be asynchronous (cp.async) only from
global to shared memory in 4-, 8- or 16-byte vectors. Buffers staged by the same loop,
into the same scope, and used by the same first and last consumer statement share their
synchronisation points, so one pipeline (one stage count) serves the whole group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ASYNC_BYTES = (4, 8, 16)
_DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "int8": 1, "float64": 8}


@dataclass
class Pipelinable:
    """One pipelinable buffer and where its pipeline goes."""

    buffer: str  # the staged buffer (the copy's destination)
    source: str  # the buffer it is copied from
    copy_block: str
    loop: str  # the streaming loop's variable name
    loop_depth: int  # index of that loop in the copy block's enclosing loops
    level: str  # "global->shared", "shared->register", ...
    async_copy: bool  # can use cp.async
    vector_bytes: int  # bytes per copied vector (innermost vectorised loop), 0 if scalar
    statement: int  # index of the loop-body statement holding the copy
    consumers: list[str] = field(default_factory=list)  # blocks reading the buffer
    consumer_statements: tuple[int, int] = (0, 0)  # first and last statement reading it
    group: int = 0  # buffers with the same group share synchronisation points

    def as_record(self, stages: int) -> dict[str, Any]:
        """What a trial records about this buffer."""
        return {
            "buffer": self.buffer,
            "level": self.level,
            "stages": stages,
            "async": self.async_copy and stages > 1,
            "loop": self.loop,
            "group": self.group,
        }


@dataclass
class _Leaf:
    block: Any  # tvm.s_tir.SBlock
    realize: Any
    loops: list[Any]  # enclosing For nodes, outermost first


def _scope(buffer: Any) -> str:
    return str(buffer.scope())


def _walk(stmt: Any, loops: list[Any], out: list[_Leaf]) -> None:
    from tvm import s_tir, tirx

    if isinstance(stmt, tirx.For):
        _walk(stmt.body, [*loops, stmt], out)
    elif isinstance(stmt, tirx.SeqStmt):
        for s in stmt.seq:
            _walk(s, loops, out)
    elif isinstance(stmt, s_tir.SBlockRealize):
        block = stmt.block
        inner: list[_Leaf] = []
        _walk(block.body, loops, inner)
        if inner:
            out.extend(inner)
        else:
            out.append(_Leaf(block, stmt, loops))
    elif isinstance(stmt, tirx.IfThenElse):
        _walk(stmt.then_case, loops, out)
        if stmt.else_case is not None:
            _walk(stmt.else_case, loops, out)
    elif hasattr(stmt, "body") and isinstance(stmt.body, tirx.Stmt):
        _walk(stmt.body, loops, out)  # attribute, let, allocation and declaration wrappers


def statements(loop: Any) -> list[Any]:
    """The top-level statements of a loop's body."""
    from tvm import tirx

    body = loop.body
    return list(body.seq) if isinstance(body, tirx.SeqStmt) else [body]


def loop_body_size(loop: Any) -> int:
    """How many statements a pipeline annotation on `loop` must list."""
    return len(statements(loop))


def contains(stmt: Any, block: Any) -> bool:
    """Does `stmt` hold `block` (an SBlock) somewhere inside it?"""
    found: list[_Leaf] = []
    _walk(stmt, [], found)
    return any(leaf.block.same_as(block) for leaf in found)


FRAGMENT_SCOPES = ("wmma.matrix_a", "wmma.matrix_b", "m16n8k8.matrix")


def _is_copy(block: Any) -> bool:
    """One read, one write, and the stored value is the loaded one (maybe predicated),
    or a tensor-core fragment load (a tensorized wmma/ldmatrix block)."""
    import tvm
    from tvm import tirx

    if len(block.reads) != 1 or len(block.writes) != 1 or block.init is not None:
        return False
    if _scope(block.writes[0].source).startswith(FRAGMENT_SCOPES):
        return True
    store = block.body
    if not isinstance(store, tirx.BufferStore):
        return False
    value = store.value
    if isinstance(value, tvm.ir.Call) and str(value.op.name).endswith("if_then_else"):
        value = value.args[1]  # padding: pred ? load : 0
    return isinstance(value, tvm.ir.TensorLoad) and value.source.same_as(block.reads[0].source)


def _is_reduction(block: Any) -> bool:
    return any(int(iv.iter_type) == 2 for iv in block.iter_vars)  # CommReduce


def _source_depends_on(leaf: _Leaf, loop: Any) -> bool:
    """Does the copy's source region move with `loop`?"""
    from tvm.tirx.analysis.analysis import undefined_vars

    region = leaf.block.reads[0].region
    used = {v.name for r in region for v in undefined_vars(r.min)}
    for iv, value in zip(leaf.block.iter_vars, leaf.realize.iter_values, strict=True):
        if iv.var.name in used and any(v.same_as(loop.loop_var) for v in undefined_vars(value)):
            return True
    return False


def _vector_bytes(leaf: _Leaf, dtype: str) -> int:
    from tvm import tirx

    innermost = leaf.loops[-1] if leaf.loops else None
    if innermost is None or innermost.kind != tirx.ForKind.VECTORIZED:
        return 0
    return int(innermost.extent) * _DTYPE_BYTES.get(dtype, 4)


def _level(src_scope: str, dst_scope: str) -> str:
    if (dst_scope == "local" and src_scope != "global") or dst_scope.startswith(FRAGMENT_SCOPES):
        dst_scope = "register"  # a thread's registers, or a warp's tensor-core fragments
    return f"{src_scope.replace('.dyn', '')}->{dst_scope.replace('.dyn', '')}"


def detect(func: Any) -> list[Pipelinable]:
    """The pipelinable buffers of a scheduled PrimFunc (or an IRModule's `main`)."""
    from tvm import tirx

    if not isinstance(func, tirx.PrimFunc):
        func = func["main"]
    leaves: list[_Leaf] = []
    _walk(func.body, [], leaves)
    readers: dict[str, list[_Leaf]] = {}
    for leaf in leaves:
        for region in leaf.block.reads:
            readers.setdefault(region.source.name, []).append(leaf)

    found: list[Pipelinable] = []
    for leaf in leaves:
        if not _is_copy(leaf.block):
            continue
        src, dst = leaf.block.reads[0].source, leaf.block.writes[0].source
        depth = _streaming_loop(leaf)
        if depth is None:
            continue
        loop = leaf.loops[depth]
        if loop.kind != tirx.ForKind.SERIAL or not _source_depends_on(leaf, loop):
            continue
        stmts = statements(loop)
        consumers = [r for r in readers.get(dst.name, []) if contains(loop.body, r.block)]
        if not consumers or not _feeds_reduction(dst.name, loop, readers, set()):
            continue
        statement = next(i for i, s in enumerate(stmts) if contains(s, leaf.block))
        used_in = [i for i, s in enumerate(stmts) if any(contains(s, c.block) for c in consumers)]
        src_scope, dst_scope = _scope(src), _scope(dst)
        vec = _vector_bytes(leaf, str(dst.dtype))
        found.append(
            Pipelinable(
                buffer=dst.name,
                source=src.name,
                copy_block=str(leaf.block.name_hint),
                loop=str(loop.loop_var.name),
                loop_depth=depth,
                level=_level(src_scope, dst_scope),
                async_copy=src_scope == "global"
                and dst_scope.startswith("shared")
                and vec in ASYNC_BYTES,
                vector_bytes=vec,
                statement=statement,
                consumers=[str(c.block.name_hint) for c in consumers],
                consumer_statements=(used_in[0], used_in[-1]),
            )
        )
    _assign_groups(found)
    return found


def _streaming_loop(leaf: _Leaf) -> int | None:
    """Index of the innermost enclosing loop whose body holds more than the copy."""
    for depth in range(len(leaf.loops) - 1, -1, -1):
        if loop_body_size(leaf.loops[depth]) > 1:
            return depth
    return None


def _feeds_reduction(
    buffer: str, loop: Any, readers: dict[str, list[_Leaf]], seen: set[str]
) -> bool:
    """Is `buffer` read, in `loop`'s body, by a reduction or by a copy that feeds one?"""
    if buffer in seen:
        return False
    seen.add(buffer)
    for reader in readers.get(buffer, []):
        if not contains(loop.body, reader.block):
            continue
        if _is_reduction(reader.block):
            return True
        if _is_copy(reader.block) and _feeds_reduction(
            reader.block.writes[0].source.name, loop, readers, seen
        ):
            return True
    return False


def _assign_groups(found: list[Pipelinable]) -> None:
    """Same loop, same level, same first and last consuming statement -> one group."""
    keys: dict[tuple[Any, ...], int] = {}
    for p in found:
        key = (p.loop, p.loop_depth, p.level, p.consumer_statements)
        p.group = keys.setdefault(key, len(keys))
