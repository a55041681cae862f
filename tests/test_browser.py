"""The report page and the MLflow UI as a user meets them, in headless Chromium.

Chromium comes from Debian's `chromium` package and is driven by Playwright
(PyPI) with that system browser; `.ci/run` installs both. Outside CI the tests
are skipped when either is missing; in CI (CI=true) they fail instead.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bnlab import tracking
from bnlab.report.build import build_report
from conftest import TINY, free_port, run_train, serve
from test_report import fill

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Without these, Chromium keeps calling home on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDTH = 1280

pytestmark = pytest.mark.slow


@contextmanager
def chromium() -> Iterator:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or CHROMIUM is None:
        message = "needs Debian's chromium and PyPI's playwright (.ci/run installs both)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def watch(page) -> tuple[list[str], list[str]]:
    """Collects the page's console errors and uncaught exceptions, and every request."""
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    return errors, requests


# Elements whose right edge passes the window, outside the boxes that scroll on purpose.
OVERFLOWING = """() => {
    const width = document.documentElement.clientWidth;
    return [...document.querySelectorAll('body *')]
        .filter(e => !e.closest('.scroll') && e.getBoundingClientRect().right > width + 1)
        .map(e => e.tagName + (e.className ? '.' + e.className : ''));
}"""


def test_report_page_loads_whole_and_fits_1280_pixels(store_uri, tmp_path) -> None:
    fill(tracking.Store(store_uri, "bn-trick"), seeds=(0, 1, 2))
    folder = tmp_path / "report"
    build_report(store_uri, "bn-trick", folder, log_artifacts=False)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": WIDTH, "height": 900})
        errors, requests = watch(page)
        page.goto((folder / "index.html").as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all(
            "img", "images => images.map(i => [i.complete, i.naturalWidth, i.alt])"
        )
        assert len(images) == 2
        assert all(complete and width > 0 for complete, width, _ in images), images
        assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
        assert page.evaluate(OVERFLOWING) == []
        # Every table sits in a box that scrolls sideways instead of widening the page.
        tables = page.evaluate("document.querySelectorAll('table').length")
        assert tables >= 2
        assert page.evaluate("document.querySelectorAll('.scroll > table').length") == tables
        footer = page.inner_text("footer")
        assert "Commit:" in footer and "All runs in MLflow" in footer
        assert page.locator("footer a[href*='#/experiments/']").count() == 37
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        assert errors == []
        # One self-contained file: nothing is fetched from anywhere else.
        assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert (tmp_path / "report.png").stat().st_size > 10_000


@contextmanager
def mlflow_ui(store_uri: str, port: int, log: Path) -> Iterator[None]:
    """`mlflow ui` as the README starts it: one worker, no job runner, on loopback."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store_uri]
    command += ["--workers", "1", "--host", "127.0.0.1", "--port", str(port)]
    with serve(command, port, log, env):
        yield


def test_printed_link_opens_the_runs_table_with_the_sweep_and_its_jobs(tmp_path) -> None:
    store_uri = f"sqlite:///{tmp_path}/mlflow.db"
    port = free_port()
    done = run_train(
        [
            "-m",
            "bn=true,false",
            *TINY,
            f"tracking.uri={store_uri}",
            f"tracking.ui_url=http://127.0.0.1:{port}",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    [url] = re.findall(r"Runs table \(Group by -> bn\): (\S+)", output)
    [command] = re.findall(r"Start the MLflow UI: (.+)", output)
    assert f"--port {port}" in command and "--workers 1" in command
    [sweep_id] = re.findall(r"Sweep (\w{12}): parent run", output)
    with chromium() as browser, mlflow_ui(store_uri, port, tmp_path / "ui.log"):
        page = browser.new_page(viewport={"width": WIDTH, "height": 900})
        page.goto(url)
        parent = page.get_by_role("row").filter(has_text=f"sweep {sweep_id[:6]} (2 jobs)")
        parent.first.wait_for(timeout=60_000)
        # The runs table, not the GenAI overview: its Group by control is there.
        assert page.get_by_text("Group by").first.is_visible()
        assert page.get_by_text("BN relu lr=0.001 s0", exact=True).count() == 0
        parent.first.locator("button").first.click()  # expand the sweep
        for job in ("BN relu lr=0.001 s0", "no BN relu lr=0.001 s0"):
            page.get_by_text(job, exact=True).first.wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / "mlflow_ui.png"))
