"""Running jobs on Ray: the evaluation pool, chunking, trial assembly and the driver loop."""

from tunelab.platform.execution.driver import JobError, JobRunner, Progress, run_job
from tunelab.platform.execution.pool import connect_ray

__all__ = ["JobError", "JobRunner", "Progress", "connect_ray", "run_job"]
