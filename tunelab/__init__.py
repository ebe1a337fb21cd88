"""tunelab: distributed autotuning and benchmarking of deep-learning compiler optimisations.

The Python API mirrors the `tunelab` command line::

    import tunelab
    job_id = tunelab.submit("examples/gemm-cpu-demo.yaml")   # runs it here, on local Ray
    best = tunelab.trials(job_id, top=5)
"""

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
