"""tunelab: distributed autotuning and benchmarking of deep-learning compiler optimisations.

The Python API mirrors the `tunelab` command line::

    import tunelab
    job_id = tunelab.submit("examples/gemm-cpu-demo.yaml")   # runs it here, on local Ray
    best = tunelab.trials(job_id, top=5)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tunelab.platform.api import (
        artifacts,
        baseline_trials,
        cancel,
        create,
        curve,
        export,
        get_artifact,
        get_job,
        list_jobs,
        pin_artifact,
        prune_artifacts,
        resume,
        status_counts,
        steps,
        submit,
        trials,
    )

__all__ = [
    "artifacts", "baseline_trials", "cancel", "create", "curve", "export", "get_artifact",
    "get_job", "list_jobs", "pin_artifact", "prune_artifacts", "resume", "status_counts",
    "steps", "submit", "trials",
]  # fmt: skip
__version__ = "0.2.0"


def __getattr__(name: str) -> Any:
    """The API's functions, imported on first use: every `tunelab.*` module (the command
    line's included) imports this package first, and the API loads SQLAlchemy."""
    if name in __all__:
        from tunelab.platform import api

        return getattr(api, name)
    raise AttributeError(f"module 'tunelab' has no attribute {name!r}")
