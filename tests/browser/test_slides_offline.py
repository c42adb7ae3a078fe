"""A deck built by tools/build_slides.py opens from disk in Chromium with the network cut off:
reveal.js starts, MathJax typesets, saved widgets render, and no file fails to load.

Building needs npm once (the pinned reveal.js and MathJax are cached in build/slides-assets).
"""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("build_slides", ROOT / "tools" / "build_slides.py")
build_slides = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_slides)

DECKS = ["01_elbo.ipynb", "05_latent_traversal.ipynb"]     # derivations (math) and saved widgets


@pytest.fixture(scope="module")
def slides_dir(tmp_path_factory, request) -> Path:
    notebooks = Path(request.config.getoption("--notebooks"))
    out = tmp_path_factory.mktemp("slides")
    build_slides.build([notebooks / name for name in DECKS], out)
    return out


@pytest.mark.parametrize("notebook", DECKS)
def test_deck_opens_offline(browser, slides_dir, artifacts, notebook, request):
    saved = json.loads((Path(request.config.getoption("--notebooks")) / notebook).read_text(encoding="utf-8"))
    deck = slides_dir / notebook.replace(".ipynb", ".slides.html")
    context = browser.new_context(viewport={"width": 1280, "height": 800}, offline=True)
    asked_network, failed, errors = [], [], []
    context.route(re.compile(r"^(?!file:|data:|blob:)"),
                  lambda route: (asked_network.append(route.request.url), route.abort()))
    page = context.new_page()
    page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(deck.as_uri())
        page.locator(".reveal.ready").wait_for(state="attached", timeout=60_000)      # reveal.js started
        page.wait_for_function("() => window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0"
                               " && document.querySelectorAll('.MathJax_CHTML, .mjx-chtml').length > 0",
                               timeout=60_000)                                         # formulas typeset
        if "widgets" in saved["metadata"]:                                              # saved widget views
            page.locator(".slides .jupyter-widgets").first.wait_for(state="attached", timeout=60_000)
        page.screenshot(path=str(artifacts / f"slides-{Path(notebook).stem}-1.png"))
        page.keyboard.press("ArrowRight")
        page.wait_for_timeout(1000)
        page.screenshot(path=str(artifacts / f"slides-{Path(notebook).stem}-2.png"))
    finally:
        context.close()
    assert asked_network == [], "the deck asked for files on the network"
    assert failed == [], "files of the deck failed to load"
    assert errors == [], "the deck's scripts raised"
