"""Screenshots of every dashboard page for the README, from a seeded demo database.

    python docs/screenshots.py [--out docs]

Seeds a demo SQLite database (tests/seed_data.py: seed_demo) in a temporary
directory, starts `tunelab dashboard` on it, opens each page in headless Chromium and
saves `dashboard-PAGE.png`. Needs a chromium binary (Debian: `apt-get install chromium`).
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
from tests.seed_data import seed_demo  # noqa: E402
from tunelab.schema.db import get_engine  # noqa: E402

# page url, query, minimum number of plotly charts, viewport height
PAGES = [
    ("jobs", "", 0, 620),
    ("job", "job={first}&compare={second}", 2, 1050),
    ("model", "job={first}", 2, 1150),
    ("speedups", "", 1, 1000),
    ("trials", "job={first}", 0, 1500),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    binary = chromium_binary()
    if binary is None:
        sys.exit("no chromium binary on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'demo.db'}"
        ids = seed_demo(get_engine(url))
        with Dashboard(url, refresh_s=5) as dash, Chromium(binary) as browser:
            for page, query, charts, height in PAGES:
                browser.resize(1400, height)
                q = query.format(first=ids[0], second=ids[1])
                path_part = "" if page == "jobs" else page  # the default page lives at /
                browser.goto(f"{dash.url}/{path_part}" + (f"?{q}" if q else ""))
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
