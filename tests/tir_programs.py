"""Hand-written TIR programs the pipelining analysis was not written for (tests only)."""

from __future__ import annotations

from tvm.script import tirx as T

# fmt: off


@T.prim_func(s_tir=True)
def extra_operand(A: T.Buffer((64, 64), "float32"), E: T.Buffer((64, 64), "float32"),
                  B: T.Buffer((64, 64), "float32"), D: T.Buffer((64, 64), "float32")):
    """D = (A + E) @ B with all three operands staged per k-tile: three copies, one group."""
    T.func_attr({"tirx.noalias": True})
    A_s = T.sblock_alloc_buffer((64, 64), scope="local")
    E_s = T.sblock_alloc_buffer((64, 64), scope="local")
    B_s = T.sblock_alloc_buffer((64, 64), scope="local")
    for i, j in T.grid(64, 64):
        with T.sblock("init"):
            vi, vj = T.axis.remap("SS", [i, j])
            D[vi, vj] = T.float32(0)
    for i0 in range(4):
        for ko in range(8):
            for ii, kk in T.grid(16, 8):
                with T.sblock("load_a"):
                    vi = T.axis.spatial(64, i0 * 16 + ii)
                    vk = T.axis.spatial(64, ko * 8 + kk)
                    A_s[vi, vk] = A[vi, vk]
            for ii, kk in T.grid(16, 8):
                with T.sblock("load_e"):
                    vi = T.axis.spatial(64, i0 * 16 + ii)
                    vk = T.axis.spatial(64, ko * 8 + kk)
                    E_s[vi, vk] = E[vi, vk]
            for kk, j in T.grid(8, 64):
                with T.sblock("load_b"):
                    vk = T.axis.spatial(64, ko * 8 + kk)
                    vj = T.axis.spatial(64, j)
                    B_s[vk, vj] = B[vk, vj]
            for ii, j, kk in T.grid(16, 64, 8):
                with T.sblock("update"):
                    vi = T.axis.spatial(64, i0 * 16 + ii)
                    vj = T.axis.spatial(64, j)
                    vk = T.axis.reduce(64, ko * 8 + kk)
                    D[vi, vj] = D[vi, vj] + (A_s[vi, vk] + E_s[vi, vk]) * B_s[vk, vj]


@T.prim_func(s_tir=True)
def read_twice(A: T.Buffer((64, 64), "float32"), B: T.Buffer((64, 64), "float32"),
               C: T.Buffer((64, 64), "float32"), S: T.Buffer((64,), "float32")):
    """C = A @ B and S = row sums of A, both accumulated per k-tile: A's tile is read by
    two statements of the loop body, B's by one, so they are separate sync groups."""
    T.func_attr({"tirx.noalias": True})
    A_s = T.sblock_alloc_buffer((64, 64), scope="local")
    B_s = T.sblock_alloc_buffer((64, 64), scope="local")
    for i, j in T.grid(64, 64):
        with T.sblock("init_c"):
            vi, vj = T.axis.remap("SS", [i, j])
            C[vi, vj] = T.float32(0)
    for i in range(64):
        with T.sblock("init_s"):
            vi = T.axis.remap("S", [i])
            S[vi] = T.float32(0)
    for ko in range(8):
        for ii, kk in T.grid(64, 8):
            with T.sblock("load_a"):
                vi = T.axis.spatial(64, ii)
                vk = T.axis.spatial(64, ko * 8 + kk)
                A_s[vi, vk] = A[vi, vk]
        for kk, j in T.grid(8, 64):
            with T.sblock("load_b"):
                vk = T.axis.spatial(64, ko * 8 + kk)
                vj = T.axis.spatial(64, j)
                B_s[vk, vj] = B[vk, vj]
        for ii, j, kk in T.grid(64, 64, 8):
            with T.sblock("matmul"):
                vi = T.axis.spatial(64, ii)
                vj = T.axis.spatial(64, j)
                vk = T.axis.reduce(64, ko * 8 + kk)
                C[vi, vj] = C[vi, vj] + A_s[vi, vk] * B_s[vk, vj]
        for ii, kk in T.grid(64, 8):
            with T.sblock("rowsum"):
                vi = T.axis.spatial(64, ii)
                vk = T.axis.reduce(64, ko * 8 + kk)
                S[vi] = S[vi] + A_s[vi, vk]


@T.prim_func(s_tir=True)
def no_reduction(A: T.Buffer((64, 64), "float32"), B: T.Buffer((64, 64), "float32")):
    """B = 2 * A through a staged tile per column block: a copy in a loop, consumed in
    the same iteration, but by no reduction: nothing to pipeline."""
    T.func_attr({"tirx.noalias": True})
    A_s = T.sblock_alloc_buffer((64, 64), scope="local")
    for jo in range(8):
        for i, jj in T.grid(64, 8):
            with T.sblock("load"):
                vi = T.axis.spatial(64, i)
                vj = T.axis.spatial(64, jo * 8 + jj)
                A_s[vi, vj] = A[vi, vj]
        for i, jj in T.grid(64, 8):
            with T.sblock("scale"):
                vi = T.axis.spatial(64, i)
                vj = T.axis.spatial(64, jo * 8 + jj)
                B[vi, vj] = A_s[vi, vj] * T.float32(2)
