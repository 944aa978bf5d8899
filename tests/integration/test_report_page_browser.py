"""The report page (chain/report_page.py) in a real headless browser: Debian's Chromium driven by
Python Playwright (no browser download: `playwright install` is never run). The page must render
its timeline and progress curve with no console or page error and load nothing from anywhere.

Needs /usr/bin/chromium and the playwright package (`scripts/install --slurm` installs both): when
one is missing the test skips, and fails under CI=true."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

from ftslurm.chain.report_page import render_page
from tests.plugins.slurm_ci import running_in_ci
from tests.unit.test_report_page import sample_doc

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]


def _require_browser() -> None:
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install playwright)")
    if missing:
        message = "the browser test needs " + " and ".join(missing) + \
            ": scripts/install --slurm installs chromium and playwright"
        if running_in_ci():
            pytest.fail(f"CI=true: {message}", pytrace=False)
        pytest.skip(message)


def test_report_page_renders_in_chromium(tmp_path: Path) -> None:
    _require_browser()
    from playwright.sync_api import sync_playwright

    page_file = tmp_path / "report.html"
    page_file.write_text(render_page(sample_doc()), encoding="utf-8")
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=15_000)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_file.as_uri(), wait_until="load", timeout=10_000)

            boxes: dict[str, Any] = {}
            for element_id in ("timeline", "progress-curve"):
                box = page.locator(f"svg#{element_id}").bounding_box()
                assert box is not None and box["width"] > 300 and box["height"] > 50, \
                    (element_id, box)
                boxes[element_id] = box
            assert boxes["progress-curve"]["y"] > boxes["timeline"]["y"]
            assert page.locator("#timeline g.attempt").count() == 3
            assert page.locator("#timeline polygon.marker").count() == 5
            assert page.locator("#progress-curve polyline.curve").count() == 4
            # The drawn shapes have a size on screen (not just elements in the DOM).
            seg = page.locator("#timeline rect.seg.train").first.bounding_box()
            assert seg is not None and seg["width"] > 1 and seg["height"] > 5
            line = page.locator("#progress-curve polyline.curve").first.bounding_box()
            assert line is not None and line["width"] > 20 and line["height"] > 20
            assert page.locator("h1").inner_text() == "Run report"
            assert page.title() == "ftslurm report: /runs/demo"
        finally:
            browser.close()
    assert errors == []
    assert requests == [page_file.as_uri()], requests
