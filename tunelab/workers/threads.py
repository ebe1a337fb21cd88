"""The measurement policy for CPU threads, in one place for TVM, OpenMP, BLAS and torch.

A measurement uses every core of its node unless the spec says `measure.threads`; the
count is set before the evaluation worker starts (environment variables, which TVM's and
OpenMP's thread pools read once) and again at run time for libraries already loaded
(BLAS through threadpoolctl, torch). What was set, and which BLAS is in use, goes into
the environment recorded with every trial.
"""

from __future__ import annotations

import os
import sys
from typing import Any

THREAD_VARS = (
    "TVM_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)

_limits: Any = None  # threadpoolctl's limiter, kept alive for the process


def thread_env(threads: int) -> dict[str, str]:
    """Environment variables that give every threaded library `threads` threads."""
    return dict.fromkeys(THREAD_VARS, str(threads))


def apply(threads: int) -> None:
    """Use `threads` threads in this process from now on (set before heavy imports)."""
    global _limits
    os.environ.update(thread_env(threads))
    from threadpoolctl import threadpool_limits

    _limits = threadpool_limits(limits=threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def describe(threads: int | None) -> dict[str, Any]:
    """The thread settings and the BLAS of this process, for the environment record."""
    from threadpoolctl import threadpool_info

    blas = [
        f"{p.get('internal_api')} {p.get('version')} ({p.get('num_threads')} threads)"
        for p in threadpool_info()
        if p.get("user_api") == "blas"
    ]
    return {"threads": threads, "blas": ", ".join(blas) or None}
