"""End to end: `tunelab dashboard` serves a seeded database, headless Chromium opens the
Job page over the DevTools protocol, waits for its Plotly charts and takes a screenshot."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import Chromium, Dashboard, chromium_binary
from tests.seed_data import seed_demo
from tunelab.schema.db import get_engine

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_dashboard_in_headless_chromium(tmp_path: Path) -> None:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no chromium binary on PATH (`apt-get install chromium`; make test does)")
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    ids = seed_demo(get_engine(url))
    with Dashboard(url) as dash, Chromium(binary) as browser:
        browser.goto(f"{dash.url}/job?job={ids[0]}")
        n_charts = browser.wait_for(
            "document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2 && "
            "document.querySelectorAll('.js-plotly-plot').length"
        )
        assert n_charts >= 2  # best-so-far curve and status bars
        browser.wait_idle()
        page = browser.text()
        assert "Best-so-far latency" in page and "gemm-512-random" in page
        assert "Traceback" not in page
        shot = browser.screenshot(tmp_path / "job.png")
        assert shot.startswith(PNG) and len(shot) > 20_000
