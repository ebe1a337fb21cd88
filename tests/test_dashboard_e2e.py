"""End to end: `tunelab dashboard` serves a database, headless Chromium opens every page
the dashboard lists over the DevTools protocol, waits for its charts and fails on any
exception it shows.

Two databases: the synthetic demo (tests/seed_data.py: a GPU job with baselines, a failed
and a running job), and one of real jobs (tests/real_jobs.py: the committed exhaustive
sweeps recorded as jobs and replayed with each strategy and cost model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import Chromium, Dashboard, chromium_binary
from tests.real_jobs import record_sweeps
from tests.seed_data import seed_demo
from tunelab.dashboard import registry
from tunelab.schema.db import get_engine

PNG = b"\x89PNG\r\n\x1a\n"
# What Streamlit renders for an uncaught exception, and what a traceback prints.
EXCEPTION_JS = "document.querySelectorAll('[data-testid=\"stException\"]').length"
FAILURE_TEXT = ("Traceback (most recent call last)", "StreamlitAPIException", "Error running app")


def browser_or_skip() -> str:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no chromium binary on PATH (`apt-get install chromium`; make test does)")
    return binary


def visit_every_page(
    browser: Chromium, base: str, job_ids: list[int], kinds: set[str], shots: Path
) -> dict[str, str]:
    """Open each listed page with `?job=` the given jobs; returns each page's text."""
    texts = {}
    query = "job=" + ",".join(map(str, job_ids))
    for page in registry.discover():
        if not page.applies_to(kinds):
            continue
        browser.goto(f"{base}/{'' if page.default else page.url_path}?{query}")
        try:
            # Generous: the first page imports Streamlit, Plotly and pandas on a machine
            # that may be running other tests.
            browser.wait_for("document.querySelector('h1') !== null", timeout=180)
            browser.wait_idle(timeout=180)
            # Charts draw after the script ends: wait until each plot has its SVG.
            browser.wait_for(
                "[...document.querySelectorAll('.js-plotly-plot')]"
                ".every(p => p.querySelector('.main-svg') !== null)"
            )
        except TimeoutError as exc:
            browser.screenshot(shots / f"{page.url_path}-timeout.png")
            raise AssertionError(f"{page.title}: {exc}\n{browser.text()}") from exc
        text = browser.text()
        assert browser.evaluate(EXCEPTION_JS) == 0, f"{page.title}: an exception is shown\n{text}"
        for bad in FAILURE_TEXT:
            assert bad not in text, f"{page.title}: {bad!r} on the page\n{text}"
        assert page.title.split(" ")[0].lower() in text.lower(), page.title
        shot = browser.screenshot(shots / f"{page.url_path}.png")
        assert shot.startswith(PNG)
        texts[page.title] = text
    return texts


@pytest.mark.slow
def test_every_page_on_the_demo_database(tmp_path: Path) -> None:
    binary = browser_or_skip()
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    ids = seed_demo(get_engine(url))
    with Dashboard(url) as dash, Chromium(binary) as browser:
        texts = visit_every_page(browser, dash.url, ids[:1], {"pipeline-search"}, tmp_path)
        assert "Best-so-far latency" in texts["Job"] and "gemm-512-random" in texts["Job"]
        assert len(texts) >= 5


@pytest.mark.slow
def test_every_page_on_real_jobs(tmp_path: Path) -> None:
    """The replays of one sweep (the same workload, four strategies/models) selected
    together, as a user compares them; the sweep's own job is in the database too."""
    binary = browser_or_skip()
    url = f"sqlite:///{tmp_path / 'real.db'}"
    jobs = record_sweeps(get_engine(url), ("conv2d-14x14x64-cpu.json.gz",))
    replays = jobs.replays["conv2d-14x14x64-cpu.json.gz"]
    with Dashboard(url) as dash, Chromium(binary) as browser:
        texts = visit_every_page(browser, dash.url, replays, {"pipeline-search"}, tmp_path)
        assert "conv2d" in texts["Job"]
        assert len(texts) >= 5
