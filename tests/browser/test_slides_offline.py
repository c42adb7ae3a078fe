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


# the first slide of each kind: [kind, "#/h/v"] (leaf sections in document order)
_SLIDE_KINDS_JS = """() => {
    const kinds = {}, stacks = [...document.querySelectorAll('.reveal .slides > section')];
    stacks.forEach((stack, h) => {
        const leaves = stack.querySelector('section') ? [...stack.children].filter(s => s.matches('section'))
                                                       : [stack];
        leaves.forEach((slide, v) => {
            const kind = h === 0 && v === 0 ? 'title'
                : slide.querySelector('script[type="application/vnd.jupyter.widget-view+json"], .jupyter-widgets')
                    ? 'widget panel'
                : slide.querySelector('.jp-CodeCell .jp-OutputArea-output img') ? 'code and figure'
                : slide.querySelector('.jp-CodeCell') ? 'code and printed output' : 'text and equations';
            if (!(kind in kinds)) kinds[kind] = `#/${h}/${v}`;
        });
    });
    return kinds;
}"""

# where the shown part of the current slide lies, its scale, and how its titles are cased
_CURRENT_SLIDE_JS = """() => {
    const present = [...document.querySelectorAll('.reveal .slides section.present')];
    const slide = present[present.length - 1];
    let top = Infinity, bottom = -Infinity, left = Infinity, right = -Infinity;
    for (const child of slide.children) {
        if (child.classList.contains('fragment') && !child.classList.contains('visible')) continue;
        const r = child.getBoundingClientRect();
        if (!r.height) continue;
        top = Math.min(top, r.top); bottom = Math.max(bottom, r.bottom);
        left = Math.min(left, r.left); right = Math.max(right, r.right);
    }
    return {top, bottom, left, right, scale: Number(slide.dataset.fitScale),
            cases: [...slide.querySelectorAll('h1, h2, h3')].map(h => getComputedStyle(h).textTransform),
            text: slide.innerText};
}"""


@pytest.mark.parametrize("notebook", DECKS)
def test_one_slide_of_each_kind_fits_1280_by_720(browser, slides_dir, artifacts, notebook):
    deck = slides_dir / notebook.replace(".ipynb", ".slides.html")
    context = browser.new_context(viewport={"width": 1280, "height": 720}, offline=True)
    page = context.new_page()
    try:
        page.goto(deck.as_uri())
        page.locator(".reveal.ready").wait_for(state="attached", timeout=60_000)
        kinds = page.evaluate(_SLIDE_KINDS_JS)
        seen = {}
        for kind, where in kinds.items():
            page.evaluate(f"() => {{ location.hash = '{where}/99'; }}")      # every fragment shown
            page.wait_for_timeout(1500)                                      # typesetting, widgets, fit
            seen[kind] = page.evaluate(_CURRENT_SLIDE_JS)
            page.screenshot(path=str(artifacts / f"slides-{Path(notebook).stem}-{kind.replace(' ', '-')}.png"))
    finally:
        context.close()
    assert {"title", "text and equations"} <= set(kinds), kinds
    assert notebook != "05_latent_traversal.ipynb" or {"widget panel", "code and figure"} <= set(kinds), kinds
    for kind, box in seen.items():
        where = f"{notebook}, {kind} slide {kinds[kind]}"
        assert box["top"] >= -1 and box["bottom"] <= 721, f"{where} overflows vertically: {box}"
        assert box["left"] >= -1 and box["right"] <= 1281, f"{where} overflows horizontally: {box}"
        assert 0.3 <= box["scale"] <= 1, f"{where} is scaled to {box['scale']}"
        assert set(box["cases"]) <= {"none"}, f"{where}: titles are not shown as written: {box['cases']}"
        assert "NBVAL" not in box["text"], f"{where} shows a test marker"
