"""Fixtures of the browser tests: one JupyterLab server and one headless Chromium per session.

Run with ``make test-browser`` (``pytest tests/browser -m browser``); ``make test`` leaves them out.
Screenshots and the server log go to ``tests/browser/artifacts/``.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from lab_driver import CHROMIUM, CHROMIUM_ARGS, NotebookPage, start_lab

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def pytest_addoption(parser):
    parser.addoption("--notebooks", default=str(ROOT / "notebooks"),
                     help="folder of the notebooks the browser tests open "
                          "(default: the checkout's notebooks/)")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def lab(tmp_path_factory, artifacts, request):
    """A JupyterLab on 127.0.0.1 (SSVAE_FAST=1 for its kernels) serving copies of the notebooks, so
    what the kernels write (runs/) and any accidental save stay out of the checkout."""
    source = Path(request.config.getoption("--notebooks"))
    notebooks = tmp_path_factory.mktemp("notebooks")
    for notebook in source.glob("*.ipynb"):
        shutil.copyfile(notebook, notebooks / notebook.name)
    server = start_lab(notebooks, tmp_path_factory.mktemp("lab"), log=artifacts / "jupyterlab.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless (``apt-get install chromium``; Playwright downloads no browser)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def lab_page(browser, lab, artifacts):
    """A fresh page on the server; requests anywhere but the server are refused (and listed in
    ``lab_page.blocked``). Afterwards the kernels are shut down and a last screenshot is saved."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(60_000)
    elsewhere = re.compile("^(?!" + re.escape(lab.url) + "/|data:|blob:)")   # matched by the browser side
    notebook_page = NotebookPage(context.new_page(), lab, artifacts)

    def refuse(route):
        notebook_page.blocked.append(route.request.url)
        route.abort()

    context.route(elsewhere, refuse)
    yield notebook_page
    try:
        notebook_page.screenshot("last")
    finally:
        context.close()
        lab.shut_down_kernels()
