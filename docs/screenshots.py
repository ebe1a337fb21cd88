"""Screenshots of every dashboard page for the README, from a database of real jobs.

    python docs/screenshots.py [--out docs]

Builds the database with tests/real_jobs.py (the committed CPU sweeps recorded as jobs
and replayed with each strategy and cost model, plus a live pipeline-search and a live
graph-rewrite job run through `tunelab submit --wait`: several minutes on 2 cores),
starts `tunelab dashboard` on it, opens each page in
headless Chromium and saves `dashboard-PAGE.png`. Needs a chromium binary (Debian:
`apt-get install chromium`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.browser import Chromium, Dashboard, chromium_binary  # noqa: E402
from tests.real_jobs import RealJobs, build  # noqa: E402

GEMM = "gemm-512-cpu.json.gz"


def pages(jobs: RealJobs) -> list[tuple[str, str, int, int]]:
    """(page url, query, minimum number of plotly charts, viewport height) per page."""
    sweep, replays = jobs.sweeps[GEMM], jobs.replays[GEMM]
    live = jobs.live.get("pipeline-search", replays[0])
    return [
        ("jobs", "", 0, 900),
        ("job", f"job={live}", 2, 1300),
        ("explore", f"job={sweep}", 1, 1100),
        ("model", f"job={replays[0]}", 2, 1250),
        ("cost-models", "job=" + ",".join(map(str, replays)), 2, 1400),
        ("speedups", "", 1, 1000),
        ("graph-rewriting", f"job={jobs.live.get('graph-rewrite', '')}", 1, 1100),
        ("trials", f"job={live}", 0, 1300),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    binary = chromium_binary()
    if binary is None:
        sys.exit("no chromium binary on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'real.db'}"
        jobs = build(url, live=True)
        with Dashboard(url, refresh_s=5) as dash, Chromium(binary) as browser:
            for page, query, charts, height in pages(jobs):
                browser.resize(1400, height)
                path_part = "" if page == "jobs" else page  # the default page lives at /
                browser.goto(f"{dash.url}/{path_part}" + (f"?{query}" if query else ""))
                browser.wait_for("document.querySelector('h1') !== null")
                if charts:
                    browser.wait_for(
                        f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {charts}"
                    )
                browser.wait_idle()
                time.sleep(1.5)  # let plotly finish its transitions
                path = args.out / f"dashboard-{page}.png"
                browser.screenshot(path)
                print(f"wrote {path}")


if __name__ == "__main__":
    main()
