"""Every query the dashboard runs: small, aggregated results computed in SQL.

Functions take an Engine and return a few rows (dataclasses or dicts), never a whole
table of trials: counts and minima are GROUP BYs, curves are window functions that keep
only the points where something changes, and trial lists are pages (LIMIT/OFFSET).
The same SQL runs on SQLite and PostgreSQL. One module per page's concern; every public
name is importable from here.
"""

from __future__ import annotations

from tunelab.dashboard.queries.common import OK, geomean
from tunelab.dashboard.queries.curves import (
    CurvePoint,
    Reference,
    best_known,
    best_reference,
    best_so_far,
    reach_trial,
    share_of,
    trials_to_reach,
)
from tunelab.dashboard.queries.jobs import (
    FinalBest,
    JobRow,
    common_errors,
    final_best,
    get_job,
    job_environments,
    job_filters,
    list_jobs,
    status_counts,
)
from tunelab.dashboard.queries.model import (
    EXACT_LIMIT,
    MAX_WINDOWS,
    MIN_WINDOW,
    ModelMetrics,
    ModelReport,
    PredictionSource,
    WorkloadJobs,
    guided,
    model_report,
    n_predicted,
    not_applicable,
    prediction_sample,
    provenance,
    tie_share,
    topk_recall,
    version_cuts,
    workloads_with_jobs,
)
from tunelab.dashboard.queries.trials import (
    TRIAL_LIST_COLUMNS,
    TrialFilter,
    count_trials,
    iter_trials_csv,
    rows_to_csv,
    trial_detail,
    trial_page,
)

__all__ = [
    "EXACT_LIMIT",
    "MAX_WINDOWS",
    "MIN_WINDOW",
    "OK",
    "TRIAL_LIST_COLUMNS",
    "CurvePoint",
    "FinalBest",
    "JobRow",
    "ModelMetrics",
    "ModelReport",
    "PredictionSource",
    "Reference",
    "TrialFilter",
    "WorkloadJobs",
    "best_known",
    "best_reference",
    "best_so_far",
    "common_errors",
    "count_trials",
    "final_best",
    "geomean",
    "get_job",
    "guided",
    "iter_trials_csv",
    "job_environments",
    "job_filters",
    "list_jobs",
    "model_report",
    "n_predicted",
    "not_applicable",
    "prediction_sample",
    "provenance",
    "reach_trial",
    "rows_to_csv",
    "share_of",
    "status_counts",
    "tie_share",
    "topk_recall",
    "trial_detail",
    "trial_page",
    "trials_to_reach",
    "version_cuts",
    "workloads_with_jobs",
]
