"""tunelab: distributed autotuning and benchmarking of deep-learning compiler optimisations.

The Python API mirrors the `tunelab` command line::

    import tunelab
    job_id = tunelab.submit("examples/gemm-cpu-demo.yaml")   # runs it here, on local Ray
    best = tunelab.trials(job_id, top=5)
"""

from tunelab.platform.api import (
    cancel,
    export,
    get_job,
    list_jobs,
    resume,
    submit,
    trials,
)

__all__ = ["cancel", "export", "get_job", "list_jobs", "resume", "submit", "trials"]
__version__ = "0.1.0"
