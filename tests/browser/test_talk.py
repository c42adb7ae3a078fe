"""The first hour and the talk, as a person meets them in JupyterLab.

* A newcomer with a fresh copy of the notebooks, no data folder and no MNIST mirror in reach runs the
  first cell of the training notebook: its output says which offline stand-in it picked, why, and the
  command that fetches MNIST.
* A presenter runs a notebook in JupyterLab and saves it (autosave does the same); the static slides
  built from the saved file then show the widget panels, not ``VBox(children=(...`` text: the install
  turned JupyterLab's widget-state saving on (tools/lab_settings.py).
"""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import time
from pathlib import Path

import pytest
from lab_driver import NotebookPage, start_lab

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("build_slides", ROOT / "tools" / "build_slides.py")
build_slides = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_slides)

TRAIN_NOTEBOOK = "04_train_live.ipynb"
PANEL_NOTEBOOK = "01_elbo.ipynb"        # three derivation panels, runs in seconds


@pytest.fixture(scope="module")
def newcomer_lab(tmp_path_factory, artifacts, request):
    """JupyterLab as on a newcomer's machine: a fresh copy of the notebooks, no $SSVAE_DATA_DIR, an
    empty user cache, and MNIST mirrors that refuse the connection (offline)."""
    notebooks = tmp_path_factory.mktemp("fresh-notebooks")
    for notebook in Path(request.config.getoption("--notebooks")).glob("*.ipynb"):
        shutil.copyfile(notebook, notebooks / notebook.name)
    server = start_lab(notebooks, tmp_path_factory.mktemp("newcomer"), log=artifacts / "jupyterlab-newcomer.log",
                       environment={"SSVAE_DATA_DIR": None, "XDG_CACHE_HOME": str(tmp_path_factory.mktemp("cache")),
                                    "SSVAE_MNIST_MIRRORS": "http://127.0.0.1:9/"})
    yield server
    server.stop()


def test_a_newcomer_without_data_sees_what_was_picked_and_how_to_get_mnist(browser, newcomer_lab, artifacts):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(60_000)
    page = NotebookPage(context.new_page(), newcomer_lab, artifacts)
    try:
        page.open(TRAIN_NOTEBOOK)
        first_code = page.page.evaluate("""() => {
            const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
            for (let i = 0; i < cells.length; i++) if (cells.get(i).type === 'code') return i;
            return -1; }""")
        started = time.monotonic()
        page.run_cell(first_code)
        seconds = time.monotonic() - started
        output = page.page.locator(".jp-OutputArea-output", has_text="offline stand-in").first
        output.wait_for(state="visible", timeout=30_000)
        page.screenshot("newcomer-warning", output)
        text = output.inner_text()
        summary = page.output_text(r"^dataset: ")
    finally:
        context.close()
        newcomer_lab.shut_down_kernels()
    assert "dataset 'auto' picked digits, an offline stand-in, not full MNIST" in text
    assert "no MNIST mirror served the files" in text
    assert "python -m ssvae_lib data --dataset mnist" in text
    assert summary.startswith("dataset: digits")
    assert seconds < 60, f"the first cell took {seconds:.0f} s offline"


def test_panels_saved_in_jupyterlab_render_in_the_slides(lab_page, browser, tmp_path):
    saved_file = lab_page.server.root / PANEL_NOTEBOOK
    before = json.loads(saved_file.read_text(encoding="utf-8"))
    old_models = set(before["metadata"]["widgets"][build_slides.WIDGET_STATE]["state"])
    lab_page.open(PANEL_NOTEBOOK)
    lab_page.run_all()
    lab_page.save()

    def saved_with_live_state():
        nb = json.loads(saved_file.read_text(encoding="utf-8"))
        views = [o["data"][build_slides.WIDGET_VIEW]["model_id"] for c in nb["cells"] for o in c.get("outputs", [])
                 if build_slides.WIDGET_VIEW in o.get("data", {})]
        return nb if views and not set(views) & old_models and not build_slides.missing_widget_state(nb) else None

    saved = lab_page.wait_until("the notebook saved with its widget state", saved_with_live_state, timeout=60)
    assert len(saved["metadata"]["widgets"][build_slides.WIDGET_STATE]["state"]) > 0

    out = tmp_path / "slides"
    deck, = build_slides.build([saved_file], out)
    page_html = deck.read_text(encoding="utf-8")
    assert "VBox(children=" not in page_html
    context = browser.new_context(viewport={"width": 1280, "height": 720}, offline=True)
    try:
        page = context.new_page()
        page.goto(deck.as_uri())
        page.locator(".reveal.ready").wait_for(state="attached", timeout=60_000)
        rendered = page.locator(".slides .widget-vbox, .slides .widget-box")
        rendered.first.wait_for(state="attached", timeout=60_000)
        count = rendered.count()
        body = page.locator(".slides").inner_text()
    finally:
        context.close()
    assert count > 0 and not re.search(r"VBox\(children=", body)
