"""The tensor programs `pipeline-search` tunes, and the named suites of their real shapes.

Every workload is a GEMM at heart: `C[b, m, n] = sum_k A[b, m, k] * B[b, k, n]` with
inputs in `dtype` and float32 accumulation. A plain GEMM has no batch axis, a batched
GEMM has one, and conv2d (NHWC input, RSCK filter) is the implicit GEMM whose A operand
is the im2col view of the input, formed tile by tile where it is staged (never stored
whole). Schedules see the same loop nest for all three: (batch?, m, n, k).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, TypeAdapter, model_validator

Dtype = Literal["float32", "float16"]


class GemmWorkload(BaseModel):
    """C[M, N] = A[M, K] @ B[K, N]; with `batch` > 1, `batch` independent GEMMs."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["gemm"] = "gemm"
    M: PositiveInt
    N: PositiveInt
    K: PositiveInt
    batch: PositiveInt = 1
    dtype: Dtype = "float32"
    acc_dtype: Literal["float32"] = "float32"

    def gemm_shape(self) -> tuple[int, int, int, int]:
        """(batch, M, N, K) of the GEMM this workload is."""
        return self.batch, self.M, self.N, self.K

    def describe(self) -> str:
        if self.batch > 1:
            return f"batch_matmul {self.batch}x{self.M}x{self.N}x{self.K} {self.dtype}"
        return f"gemm {self.M}x{self.N}x{self.K} {self.dtype}"


class Conv2dWorkload(BaseModel):
    """NHWC conv2d with an RSCK filter, computed as an implicit GEMM:
    M = N*P*Q output pixels, N = K output channels, K = R*S*C reduction."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["conv2d"] = "conv2d"
    batch: PositiveInt
    H: PositiveInt
    W: PositiveInt
    C: PositiveInt = Field(description="input channels")
    K: PositiveInt = Field(description="output channels")
    R: PositiveInt = 3
    S: PositiveInt = 3
    stride: PositiveInt = 1
    pad: int = Field(0, ge=0)
    dtype: Dtype = "float32"
    acc_dtype: Literal["float32"] = "float32"

    @model_validator(mode="after")
    def _output_not_empty(self) -> Conv2dWorkload:
        if self.P < 1 or self.Q < 1:
            raise ValueError("the filter is larger than the padded input")
        return self

    @property
    def P(self) -> int:
        return (self.H + 2 * self.pad - self.R) // self.stride + 1

    @property
    def Q(self) -> int:
        return (self.W + 2 * self.pad - self.S) // self.stride + 1

    def gemm_shape(self) -> tuple[int, int, int, int]:
        return 1, self.batch * self.P * self.Q, self.K, self.R * self.S * self.C

    def describe(self) -> str:
        return (
            f"conv2d n{self.batch} {self.H}x{self.W}x{self.C}->{self.K} "
            f"{self.R}x{self.S}/s{self.stride}p{self.pad} {self.dtype}"
        )


Workload = Annotated[GemmWorkload | Conv2dWorkload, Field(discriminator="op")]
WORKLOAD_ADAPTER: TypeAdapter[GemmWorkload | Conv2dWorkload] = TypeAdapter(Workload)


def parse_workload(data: dict[str, Any]) -> GemmWorkload | Conv2dWorkload:
    """A validated workload; `op` defaults to gemm."""
    return WORKLOAD_ADAPTER.validate_python({"op": "gemm", **data})


def _resnet50_convs() -> list[dict[str, Any]]:
    # (H=W, C, K, R=S, stride, pad) of ResNet-50's distinct conv2d layers past the stem.
    layers = [
        (56, 64, 64, 1, 1, 0), (56, 64, 64, 3, 1, 1), (56, 64, 256, 1, 1, 0),
        (56, 256, 64, 1, 1, 0), (56, 256, 128, 1, 1, 0), (28, 128, 128, 3, 1, 1),
        (28, 128, 512, 1, 1, 0), (28, 512, 128, 1, 1, 0), (28, 512, 256, 1, 1, 0),
        (14, 256, 256, 3, 1, 1), (14, 256, 1024, 1, 1, 0), (14, 1024, 256, 1, 1, 0),
        (14, 1024, 512, 1, 1, 0), (7, 512, 512, 3, 1, 1), (7, 512, 2048, 1, 1, 0),
        (7, 2048, 512, 1, 1, 0),
    ]  # fmt: skip
    return [
        {"op": "conv2d", "batch": 64, "H": hw, "W": hw, "C": c, "K": k, "R": r, "S": r,
         "stride": s, "pad": p, "dtype": "float16"}
        for hw, c, k, r, s, p in layers
    ]  # fmt: skip


def _gemms(shapes: list[tuple[int, ...]], dtype: str = "float16") -> list[dict[str, Any]]:
    out = []
    for shape in shapes:
        if len(shape) == 4:
            b, m, n, k = shape
            out.append({"op": "gemm", "batch": b, "M": m, "N": n, "K": k, "dtype": dtype})
        else:
            m, n, k = shape
            out.append({"op": "gemm", "M": m, "N": n, "K": k, "dtype": dtype})
    return out


RESNET50_IM2COL = [
    (50176, 128, 64), (200704, 64, 256), (50176, 64, 576), (12544, 256, 1152),
    (3136, 512, 2304), (12544, 512, 256),
]  # fmt: skip
CPU_SMALL = [(256, 256, 256), (512, 512, 512), (4, 128, 128, 256)]
CPU_SMALL_CONV = {"op": "conv2d", "batch": 1, "H": 14, "W": 14, "C": 64, "K": 64,
                  "R": 3, "S": 3, "stride": 1, "pad": 1, "dtype": "float32"}  # fmt: skip

# The ALCOP paper's workloads (REFERENCE.md section 1); fp16 inputs, fp32 accumulation.
SUITES: dict[str, list[dict[str, Any]]] = {
    # BERT dense layers: tokens x hidden, as (M=tokens, N=hidden, K=hidden) projections.
    "bert-dense": _gemms([(t, h, h) for t in (512, 1024) for h in (768, 1024, 2304, 3072, 4096)]),
    "square": _gemms([(s, s, s) for s in (1024, 2048, 4096)]),
    # ResNet-50 convolutions lowered to GEMMs by im2col: (N*P*Q, K, R*S*C).
    "resnet50-im2col": _gemms(RESNET50_IM2COL),
    "batch-matmul": _gemms(
        [(b, s, d, s) for b in (12, 16) for s in (512, 1024) for d in (64, 512, 1024)]
    ),
    "resnet50-conv2d": _resnet50_convs(),
    # Small shapes the CPU backend sweeps in minutes (tests, demos, committed sweeps).
    "cpu-small": [*_gemms(CPU_SMALL, "float32"), CPU_SMALL_CONV],
}


def tensor_program(wl: GemmWorkload | Conv2dWorkload) -> Any:
    """The unscheduled PrimFunc. Its reduction block is `C`; its GEMM operands are `A`
    and `B` (for conv2d, the im2col and filter views, which schedules stage per tile)."""
    from tvm import te, tirx

    acc = wl.acc_dtype
    if isinstance(wl, Conv2dWorkload):
        n_, p_, q_ = wl.batch, wl.P, wl.Q
        x = te.placeholder((n_, wl.H, wl.W, wl.C), wl.dtype, name="X")
        w = te.placeholder((wl.R, wl.S, wl.C, wl.K), wl.dtype, name="Wt")
        m_total, k_total = n_ * p_ * q_, wl.R * wl.S * wl.C

        def im2col(m: Any, k: Any) -> Any:
            b, pq = m // (p_ * q_), m % (p_ * q_)
            r, sc = k // (wl.S * wl.C), k % (wl.S * wl.C)
            h = pq // q_ * wl.stride + r - wl.pad
            v = pq % q_ * wl.stride + sc // wl.C - wl.pad
            inside = tirx.all(h >= 0, h < wl.H, v >= 0, v < wl.W)
            return tirx.if_then_else(inside, x[b, h, v, k % wl.C], tirx.const(0, wl.dtype))

        a = te.compute((m_total, k_total), im2col, name="A")
        bmat = te.compute(
            (k_total, wl.K),
            lambda k, n: w[k // (wl.S * wl.C), k // wl.C % wl.S, k % wl.C, n],
            name="B",
        )
        r = te.reduce_axis((0, k_total), name="k")
        c = te.compute(
            (m_total, wl.K),
            lambda i, j: te.sum(a[i, r].astype(acc) * bmat[r, j].astype(acc), axis=r),
            name="C",
        )
        return te.create_prim_func([x, w, c])
    batch, m, n, k = wl.gemm_shape()
    r = te.reduce_axis((0, k), name="k")
    if batch == 1:
        a = te.placeholder((m, k), wl.dtype, name="A")
        b = te.placeholder((k, n), wl.dtype, name="B")
        c = te.compute(
            (m, n),
            lambda i, j: te.sum(a[i, r].astype(acc) * b[r, j].astype(acc), axis=r),
            name="C",
        )
    else:
        a = te.placeholder((batch, m, k), wl.dtype, name="A")
        b = te.placeholder((batch, k, n), wl.dtype, name="B")
        c = te.compute(
            (batch, m, n),
            lambda q, i, j: te.sum(a[q, i, r].astype(acc) * b[q, r, j].astype(acc), axis=r),
            name="C",
        )
    return te.create_prim_func([a, b, c])


def arg_shapes(wl: GemmWorkload | Conv2dWorkload) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype) of the kernel's arguments, inputs first, output last."""
    if isinstance(wl, Conv2dWorkload):
        return [
            ("X", (wl.batch, wl.H, wl.W, wl.C), wl.dtype),
            ("Wt", (wl.R, wl.S, wl.C, wl.K), wl.dtype),
            ("C", (wl.batch * wl.P * wl.Q, wl.K), wl.acc_dtype),
        ]
    batch, m, n, k = wl.gemm_shape()
    lead = (batch,) if batch > 1 else ()
    return [
        ("A", (*lead, m, k), wl.dtype),
        ("B", (*lead, k, n), wl.dtype),
        ("C", (*lead, m, n), wl.acc_dtype),
    ]


def reference(wl: GemmWorkload | Conv2dWorkload, inputs: list[Any]) -> Any:
    """The exact result (float64 NumPy) for `inputs`, for correctness checks."""
    import numpy as np

    if isinstance(wl, Conv2dWorkload):
        x, w = (t.astype(np.float64) for t in inputs)
        xp = np.pad(x, ((0, 0), (wl.pad, wl.pad), (wl.pad, wl.pad), (0, 0)))
        out = np.zeros((wl.batch, wl.P, wl.Q, wl.K))
        for r in range(wl.R):
            for s in range(wl.S):
                patch = xp[
                    :,
                    r : r + wl.stride * (wl.P - 1) + 1 : wl.stride,
                    s : s + wl.stride * (wl.Q - 1) + 1 : wl.stride,
                    :,
                ]
                out += patch @ w[r, s]
        return out.reshape(-1, wl.K)
    a, b = (t.astype(np.float64) for t in inputs)
    return a @ b
