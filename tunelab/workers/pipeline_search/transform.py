"""Turn a detection result into software-pipeline annotations (ALCOP's second obstacle).

TVM's `InjectSoftwarePipeline` does the rewriting (an S-fold buffer, producer writing
slot (k+S-1)%S, consumer reading k%S, a prologue of S-1 loads, cp.async with
commit/wait groups for asynchronous stages). What it needs from us, per streaming loop,
is one stage and one order entry per statement of the loop body as the schedule left
it, and which stages are asynchronous. Those are derived here from what `detect` found,
so any schedule whose copies it recognises can be pipelined, not only ours.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from tunelab.workers.pipeline_search.detection import (
    Pipelinable,
    contains,
    loop_body_size,
    statements,
)


def pipeline_annotations(
    body_size: int, buffers: list[tuple[Pipelinable, int]], asynchronous: bool
) -> dict[str, list[int]]:
    """Annotations for one loop whose body has `body_size` statements, given its
    pipelined buffers with their stage counts (all > 1).

    A statement holding a copy with S stages runs S-1 iterations ahead of the
    statements that consume: it gets stage `top - (S - 1)`, consumers get `top`, where
    `top` is the largest S - 1 of the loop.
    """
    top = max(s for _, s in buffers) - 1
    stage = [top] * body_size
    for p, s in buffers:
        stage[p.statement] = min(stage[p.statement], top - (s - 1))
    out = {
        "software_pipeline_stage": stage,
        "software_pipeline_order": list(range(body_size)),
    }
    producers = sorted({stage[p.statement] for p, _ in buffers})
    if asynchronous and all(p.async_copy for p, _ in buffers):
        out["software_pipeline_async_stages"] = producers
    return out


def _flat_size(stmt: Any) -> int:
    """Statements as the pipeline pass counts them: nested sequences are flattened and
    blocks that only hold buffer allocations are seen through."""
    from tvm import s_tir, tirx

    if isinstance(stmt, tirx.SeqStmt):
        return sum(_flat_size(s) for s in stmt.seq)
    if isinstance(stmt, s_tir.SBlockRealize):
        block = stmt.block
        if len(block.alloc_buffers) and not len(block.iter_vars):
            return _flat_size(block.body)
    return 1


def _lowered_body_size(sch: Any, loop_var: str) -> int:
    """Statements in the body of loop `loop_var` once TVM has expanded the pipelines
    already annotated inside it (each becomes prologue, steady-state loop, epilogue)."""
    import tvm
    from tvm import s_tir, tirx

    passes = [
        s_tir.transform.CanonicalizeLoop(),
        s_tir.transform.LowerCrossThreadReduction(),
        s_tir.transform.LowerInitBlock(),
        s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
        s_tir.transform.ConvertBlocksToOpaque(),
        s_tir.transform.LiftThreadBinding(),
        s_tir.transform.ManifestSharedMemoryLocalStage(),
        s_tir.transform.CompactBufferAllocation(),
        s_tir.transform.LowerAutoCopy(),
        s_tir.transform.UnifyThreadBinding(),
        s_tir.transform.LowerMatchBuffer(),
        s_tir.transform.StmtSimplify(),
        s_tir.transform.InjectSoftwarePipeline(),
    ]
    with tvm.transform.PassContext(config={"tirx.use_async_copy": True}):
        mod = tvm.transform.Sequential(passes)(sch.mod)
    sizes: list[int] = []

    def visit(stmt: Any) -> None:
        if isinstance(stmt, tirx.For):
            if str(stmt.loop_var.name) == loop_var:
                body = stmt.body
                while isinstance(body, s_tir.SBlockRealize):
                    body = body.block.body
                sizes.append(_flat_size(body))
            visit(stmt.body)
        elif isinstance(stmt, tirx.SeqStmt):
            for s in stmt.seq:
                visit(s)
        elif isinstance(stmt, s_tir.SBlockRealize):
            visit(stmt.block.body)
        elif isinstance(stmt, tirx.IfThenElse):
            visit(stmt.then_case)
        elif hasattr(stmt, "body") and isinstance(stmt.body, tirx.Stmt):
            visit(stmt.body)

    visit(mod["main"].body)
    if len(sizes) != 1:
        raise RuntimeError(f"expected one loop {loop_var} after lowering, found {len(sizes)}")
    return sizes[0]


def apply_pipelining(
    sch: Any,
    found: list[Pipelinable],
    stages_for: Callable[[Pipelinable], int],
    *,
    asynchronous: bool,
) -> list[dict[str, Any]]:
    """Annotate every streaming loop of `sch` whose buffers get more than one stage.

    `stages_for` gives each buffer's stage count (1 = not pipelined); buffers of one
    synchronisation group must get the same count. Inner loops are annotated first; an
    outer loop's lists are then sized to its body with the inner pipelines expanded.
    Returns the per-buffer records a trial keeps (buffers with one stage left out).
    """
    by_group: dict[int, set[int]] = {}
    for p in found:
        by_group.setdefault(p.group, set()).add(stages_for(p))
    for group, counts in by_group.items():
        if len(counts) > 1:
            raise ValueError(f"buffers of sync group {group} asked for different stages {counts}")

    loops: dict[str, list[tuple[Pipelinable, int]]] = {}
    for p in found:
        if (stages := stages_for(p)) > 1:
            loops.setdefault(p.loop, []).append((p, stages))

    def loop_rv(name: str) -> Any:
        p = loops[name][0][0]
        return sch.get_loops(sch.get_sblock(p.copy_block))[p.loop_depth]

    def inside(inner: str, outer: str) -> bool:
        """Is loop `inner` nested in loop `outer`?"""
        p = loops[inner][0][0]
        enclosing = sch.get_loops(sch.get_sblock(p.copy_block))[: p.loop_depth]
        return any(str(sch.get(rv).loop_var.name) == outer for rv in enclosing)

    records: list[dict[str, Any]] = []
    # Innermost first, so that an outer loop is sized with its inner pipelines expanded.
    for name in sorted(loops, key=lambda n: -sum(inside(n, o) for o in loops)):
        buffers = loops[name]
        rv = loop_rv(name)
        original = loop_body_size(sch.get(rv))
        expanded = any(inside(o, name) for o in loops if o != name)
        size = _lowered_body_size(sch, name) if expanded else original
        if size != original:
            # The statement holding the inner pipeline became several: copies after it
            # move down by as many.
            body = statements(sch.get(rv))
            inner_blocks = [sch.get(sch.get_sblock(q.copy_block))
                            for o in loops if o != name and inside(o, name)
                            for q, _ in loops[o]]  # fmt: skip
            holder = next(i for i, st in enumerate(body)
                          if any(contains(st, b) for b in inner_blocks))  # fmt: skip
            shift = size - original
            buffers = [
                (replace(p, statement=p.statement + shift) if p.statement > holder else p, s)
                for p, s in buffers
            ]
        use_async = asynchronous and all(p.level.endswith("shared") for p, _ in buffers)
        for key, value in pipeline_annotations(size, buffers, use_async).items():
            sch.annotate(rv, key, value)
        records.extend(p.as_record(s) | {"async": use_async and p.async_copy} for p, s in buffers)
    return records
