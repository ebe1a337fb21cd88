"""Dashboard at scale: with 1,000,000 trials in the database, every page renders in < 2 s.

Seeds a fresh database with 1,000,000 synthetic trials (one 600,000-trial job with a
prediction per trial, the newest, so every page opens on it; eight 50,000-trial jobs;
PostgreSQL through COPY; then VACUUM ANALYZE, as autovacuum would), then for each page
times (a) the queries the page runs, called directly, and (b) a headless render of the
page with Streamlit's AppTest (after one warm-up render that pays for importing Streamlit
and Plotly). Nothing is cached between renders: each page's SQL runs again. Prints a
table; the target is 2 s for both.

    python bench/dashboard_scale.py [--db postgres|sqlite] [--trials 1000000] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "tunelab" / "dashboard" / "app.py"
TARGET_S = 2.0
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))  # tunelab from this checkout, and tests.seed_data

from benchdb import fresh_database  # noqa: E402
from report import emit  # noqa: E402


def seed(url: str, total: int) -> tuple[int, list[int], float]:
    """Returns (big job id, all job ids, seconds)."""
    from sqlalchemy import text

    from tests.seed_data import (
        CPU_ENV,
        environment_id,
        insert_trials,
        make_job,
        refresh_job,
        synthetic_trials,
    )
    from tunelab.schema.db import get_engine

    t0 = time.perf_counter()
    engine = get_engine(url)
    env = environment_id(engine, CPU_ENV)
    big_n = total * 6 // 10
    small_n = (total - big_n) // 8
    ids = []
    for i in range(8):
        job = make_job(engine, f"scale-{i}", size=256 * (1 + i % 4), strategy="random")
        insert_trials(engine, synthetic_trials(job, small_n, seed=i, environment_id=env))
        refresh_job(engine, job)
        ids.append(job)
    big = make_job(engine, "scale-big", size=2048, strategy="random")
    insert_trials(engine, synthetic_trials(big, total - 8 * small_n, seed=99, environment_id=env))
    refresh_job(engine, big)
    ids.append(big)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # What autovacuum does after a bulk load: statistics and the visibility map
        # (index-only counts). On SQLite, ANALYZE feeds the query planner.
        conn.execute(text("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE"))
    return big, ids, time.perf_counter() - t0


def page_queries(engine: Any, big: int, ids: list[int]) -> dict[str, Callable[[], Any]]:
    """What each page asks the database for on its first render (same calls as the page)."""
    from tunelab.dashboard import queries as q
    from tunelab.workers.pipeline_search.dashboard import queries as speedup_queries

    flt = q.TrialFilter(job_id=big)

    def jobs() -> None:
        q.job_filters(engine)
        q.list_jobs(engine, limit=0)
        q.list_jobs(engine, statuses=("pending", "running"), limit=0)
        q.list_jobs(engine, limit=50)

    def job() -> None:
        q.list_jobs(engine, limit=500)
        q.get_job(engine, big)
        q.status_counts(engine, big)
        q.trials_to_reach(q.best_so_far(engine, [big])[big])
        q.job_environments(engine, big)
        q.common_errors(engine, big)

    def model() -> None:
        q.list_jobs(engine, limit=500)
        q.best_so_far(engine, [big])
        q.model_report(engine, big, k=10)
        q.prediction_sample(engine, big)

    def speedups() -> None:
        q.list_jobs(engine, kinds=("pipeline-search",), limit=500)
        speedup_queries.speedups(engine, ids)

    def trials() -> None:
        q.list_jobs(engine, limit=500)
        q.count_trials(engine, flt)
        rows = q.trial_page(engine, flt, page=0, page_size=50)
        q.rows_to_csv(rows)
        q.trial_detail(engine, rows[0]["id"])

    return {"Jobs": jobs, "Job": job, "Performance model": model, "Speedups": speedups,
            "Trials": trials}  # fmt: skip


PAGE_FILES = {
    "Jobs": None,
    "Job": "views/job.py",
    "Performance model": "views/model.py",
    "Speedups": "../workers/pipeline_search/dashboard/speedups.py",  # the kind's own page
    "Trials": "views/trials.py",
}


def render_seconds(url: str, page_file: str | None) -> float:
    """Seconds for a headless render of one page (AppTest), checked free of exceptions."""
    from streamlit.testing.v1 import AppTest

    os.environ["TUNELAB_DB_URL"] = url
    at = AppTest.from_file(str(APP), default_timeout=120)
    if page_file is None:
        t0 = time.perf_counter()
        at.run()
    else:
        at.run()  # the default page first: switch_page needs one run
        at.switch_page(page_file)
        t0 = time.perf_counter()
        at.run()
    elapsed = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"{page_file}: {at.exception[0].message}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--trials", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from tunelab.dashboard.db import open_readonly

    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
    ]
    with fresh_database(args.db, "dashboard") as url:
        big, ids, seed_s = seed(url, args.trials)
        engine = open_readonly(url)
        lines.append(
            f"database: {args.db}, {args.trials:,} trials in {len(ids)} jobs "
            f"(largest {args.trials - 8 * ((args.trials - args.trials * 6 // 10) // 8):,}), "
            f"seeded in {seed_s:.1f} s"
        )
        render_seconds(url, None)  # warm-up: imports Streamlit, Plotly, pandas
        lines += ["", f"{'page':<20}{'query s':>10}{'render s':>10}{'target s':>10}  ok"]
        worst = 0.0
        for page, run in page_queries(engine, big, ids).items():
            t0 = time.perf_counter()
            run()
            query_s = time.perf_counter() - t0
            render_s = render_seconds(url, PAGE_FILES[page])
            worst = max(worst, query_s, render_s)
            ok = "yes" if max(query_s, render_s) < TARGET_S else "NO"
            lines.append(f"{page:<20}{query_s:>10.3f}{render_s:>10.3f}{TARGET_S:>10.1f}  {ok}")
        lines += ["", f"slowest: {worst:.3f} s (target < {TARGET_S:.0f} s)"]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
