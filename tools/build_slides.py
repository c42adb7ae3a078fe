"""Static reveal.js slides of the notebooks that open offline: ``python tools/build_slides.py``.

nbconvert's SlidesExporter loads reveal.js, MathJax, require.js, jQuery and the widget renderer from
CDNs, so without internet a deck stays blank. This script installs the versions pinned in
``tools/slides/package-lock.json`` from the npm registry (once, into ``build/slides-assets``), copies the
files a deck needs into ``<out>/vendor/`` and points the exporter at them with relative URLs
(``reveal_url_prefix``, ``mathjax_url``, ...). Every deck is then checked: each file it loads must be
local and present. ``<out>/index.html`` links the decks.

Before exporting, each notebook is checked for widget outputs whose state was not saved (JupyterLab
saves widget state only with its ``saveState`` setting, which ``make install`` turns on): such a deck
would show ``VBox(children=(...`` text, so the build stops and names the cells. Slides are 1280 x 720;
a slide taller than that is scaled down to fit, and the ``# NBVAL_*`` test markers are left out.

    python tools/build_slides.py                       # every notebooks/*.ipynb -> slides/
    python tools/build_slides.py notebooks/01_elbo.ipynb --out /some/folder
"""
from __future__ import annotations

import argparse
import hashlib
import html
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
ASSET_SPEC = ROOT / "tools" / "slides"              # package.json + package-lock.json
TEMPLATES = ASSET_SPEC / "templates"                # ssvae_reveal: nbconvert's reveal without mermaid
DEFAULT_NOTEBOOKS = ROOT / "notebooks"
DEFAULT_OUT = ROOT / "slides"
DEFAULT_ASSET_CACHE = ROOT / "build" / "slides-assets"
VENDOR = "vendor"

#: Files and folders (globs) of the npm packages that a deck loads, and where under ``<out>/vendor`` they go.
VENDORED = [
    ("reveal.js/dist", "reveal.js/dist"),
    ("reveal.js/plugin/notes", "reveal.js/plugin/notes"),
    ("mathjax/MathJax.js", "mathjax/MathJax.js"),
    *((f"mathjax/{d}", f"mathjax/{d}")
      for d in ("config", "extensions", "jax", "localization", "fonts/HTML-CSS/TeX")),
    ("requirejs/require.js", "requirejs/require.js"),
    ("jquery/dist/jquery.min.js", "jquery/dist/jquery.min.js"),
    ("@jupyter-widgets/html-manager/dist", "@jupyter-widgets/html-manager/dist"),
    # the widget renderer's base module finds its icon fonts next to its module path, @jupyter-widgets/
    *((f"@jupyter-widgets/html-manager/dist/*.{ext}", "@jupyter-widgets")
      for ext in ("woff2", "woff", "ttf", "eot", "svg")),
]

#: Exporter options that replace nbconvert's CDN URLs (relative to the deck).
LOCAL_URLS = {
    "reveal_url_prefix": f"{VENDOR}/reveal.js",
    "mathjax_url": f"{VENDOR}/mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe",
    "require_js_url": f"{VENDOR}/requirejs/require.js",
    "jquery_url": f"{VENDOR}/jquery/dist/jquery.min.js",
    "widget_renderer_url": f"{VENDOR}/@jupyter-widgets/html-manager/dist/embed-amd.js",
}


def lock_digest() -> str:
    """SHA-256 of the pinned package-lock.json: marks which package versions a folder holds."""
    return hashlib.sha256((ASSET_SPEC / "package-lock.json").read_bytes()).hexdigest()


def vendor_digest() -> str:
    """SHA-256 of the lock and :data:`VENDORED`: marks what a ``vendor`` folder holds."""
    return hashlib.sha256(f"{lock_digest()} {VENDORED!r}".encode()).hexdigest()


def install_assets(cache: Path = DEFAULT_ASSET_CACHE) -> Path:
    """``npm ci`` the pinned packages into ``cache`` (skipped when it already holds this lock);
    returns its ``node_modules``."""
    cache = Path(cache)
    stamp = cache / ".lock-sha256"
    if stamp.is_file() and stamp.read_text() == lock_digest():
        return cache / "node_modules"
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm was not found; the slides take reveal.js and MathJax from the npm registry "
                           "(install Node.js, e.g. `apt-get install npm` on Debian)")
    cache.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(ASSET_SPEC / name, cache / name)
    subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=cache, check=True)
    stamp.write_text(lock_digest())
    return cache / "node_modules"


def copy_assets(node_modules: Path, out: Path) -> Path:
    """Copy the files of :data:`VENDORED` from ``node_modules`` to ``out/vendor`` (source maps left
    out; skipped when the folder already holds this lock's versions). Returns ``out/vendor``."""
    node_modules, vendor = Path(node_modules), Path(out) / VENDOR
    stamp = vendor / ".vendor-sha256"
    if stamp.is_file() and stamp.read_text() == vendor_digest():
        return vendor
    if vendor.exists():
        shutil.rmtree(vendor)
    for pattern, target in VENDORED:
        sources = sorted(node_modules.glob(pattern))
        if not sources:
            raise FileNotFoundError(f"{node_modules / pattern} is missing: are the packages of "
                                    f"{ASSET_SPEC / 'package-lock.json'} installed there?")
        for source in sources:
            dest = vendor / target / source.name if "*" in pattern else vendor / target
            dest.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, dest, ignore=shutil.ignore_patterns("*.map"))
            else:
                shutil.copyfile(source, dest)
    stamp.write_text(vendor_digest())
    return vendor


#: A code line that only marks a cell for the notebook tests (nbval), e.g. ``# NBVAL_IGNORE_OUTPUT``.
TEST_MARKER = re.compile(r"^[ \t]*#[ \t]*NBVAL_[A-Z_]+[ \t]*\n?", re.MULTILINE)
SLIDE_SIZE = (1280, 720)        # reveal.js's slide size in px: a 16:9 projector without scaling


def strip_test_markers(nb, resources):
    """nbconvert preprocessor: remove the :data:`TEST_MARKER` lines from every code cell."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = TEST_MARKER.sub("", cell.source)
    return nb, resources


def make_exporter():
    """nbconvert's SlidesExporter with every asset URL local (:data:`LOCAL_URLS`), 1280 x 720 slides and
    no test markers."""
    from nbconvert import SlidesExporter
    from traitlets.config import Config

    config = Config()
    config.SlidesExporter.update(LOCAL_URLS)
    config.SlidesExporter.update(template_name="ssvae_reveal", extra_template_basedirs=[str(TEMPLATES)],
                                 reveal_width=str(SLIDE_SIZE[0]), reveal_height=str(SLIDE_SIZE[1]),
                                 reveal_scroll=False, reveal_theme="white", reveal_transition="fade",
                                 exclude_input_prompt=True, exclude_output_prompt=True)
    exporter = SlidesExporter(config=config)
    exporter.register_preprocessor(strip_test_markers, enabled=True)
    return exporter


# -- widget state ----------------------------------------------------------------------------------------
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


class MissingWidgetState(ValueError):
    """A notebook shows widgets whose state it does not hold: its deck would show them as text."""


def missing_widget_state(nb: dict) -> list[str]:
    """'cell N: widget ID' for each widget a notebook's outputs show (or a saved widget refers to) whose
    state is not in ``metadata.widgets``. ``nb``: the notebook as JSON."""
    state = nb.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    missing = []
    for number, cell in enumerate(nb.get("cells", []), start=1):
        for output in cell.get("outputs", []):
            model = output.get("data", {}).get(WIDGET_VIEW, {}).get("model_id")
            if model is not None and model not in state:
                missing.append(f"cell {number}: widget {model}")
    referenced = set(re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(state)))
    missing += [f"metadata: widget {model} (a part of a saved widget)" for model in sorted(referenced - set(state))]
    return missing


def check_widget_state(notebook: Path) -> None:
    """Raise :class:`MissingWidgetState`, naming the cells and the fix, when widget state is missing."""
    missing = missing_widget_state(json.loads(Path(notebook).read_text(encoding="utf-8")))
    if missing:
        raise MissingWidgetState(
            f"{notebook}: {len(missing)} widget(s) without saved state, so the slides would show them as "
            f"'VBox(children=(...' text:\n  " + "\n  ".join(missing[:10]) + ("\n  ..." if len(missing) > 10 else "")
            + "\nJupyterLab saves widget state only with Settings > Jupyter Widgets > 'Save Jupyter widget "
              "state in notebooks' on (`make install` turns it on: python tools/lab_settings.py). Open the "
              "notebook, run all cells and save it again; or re-run it with `jupyter nbconvert --to notebook "
              "--execute --inplace NOTEBOOK`.")


# -- which files a page loads --------------------------------------------------------------------------
_QUOTED = re.compile(r"""["']([^"'\s]+)["']""")
_LOADABLE = re.compile(r"(^[a-z][a-z0-9+.-]*:|^//|\.(m?js|css)(\?[^#]*)?$)", re.IGNORECASE)
_CSS_URL = re.compile(r"""url\(\s*["']?([^"')\s]+)["']?\s*\)|@import\s+["']([^"']+)["']""", re.IGNORECASE)
_DATA_SCRIPT_TYPES = ("json", "text/x-mathjax-config")


class _AssetCollector(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self._in = None          # "script" (inline code), "style", or None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            if attrs.get("src"):
                self.urls.append(attrs["src"])
            kind = (attrs.get("type") or "").lower()
            self._in = None if any(t in kind for t in _DATA_SCRIPT_TYPES) else "script"
        elif tag == "link" and attrs.get("href") and set((attrs.get("rel") or "").lower().split()) & {
                "stylesheet", "icon", "preload", "modulepreload", "manifest"}:
            self.urls.append(attrs["href"])
        elif tag in ("img", "iframe", "source", "embed", "video", "audio") and attrs.get("src"):
            self.urls.append(attrs["src"])
        elif tag == "style":
            self._in = "style"

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._in = None

    def handle_data(self, data):
        if self._in == "script":      # require([...]) paths, the widget renderer, `import ... from '...'`
            self.urls += [s for s in _QUOTED.findall(data) if _LOADABLE.search(s)]
        elif self._in == "style":
            self.urls += [a or b for a, b in _CSS_URL.findall(data)]


def loaded_urls(page: str) -> list[str]:
    """Every URL an HTML page loads by itself: script sources, stylesheet links, images, the script
    paths quoted in inline code (``require([...])``, the widget renderer) and ``url()``/``@import`` in
    ``<style>``. Hyperlinks (``<a href>``) load nothing and inline ``data:`` URLs need nothing: neither
    is listed."""
    collector = _AssetCollector()
    collector.feed(page)
    collector.close()
    return [u for u in collector.urls if not u.lower().startswith("data:")]


def _needs_network(url: str) -> bool:
    """A URL with a scheme other than blob:/file:, or protocol-relative (//host/...)."""
    return url.startswith("//") or urlsplit(url).scheme not in ("", "blob", "file")


def remote_urls(page: str) -> list[str]:
    """The loaded URLs (:func:`loaded_urls`) that need a network."""
    return [u for u in loaded_urls(page) if _needs_network(u)]


def offline_problems(page_file: Path) -> list[str]:
    """Why a page would not work offline: each loaded URL that needs a network or names a missing
    file, following the local stylesheets it loads (their ``@import`` and ``url()``) as well."""
    problems, seen = [], set()
    pending = [(Path(page_file), loaded_urls(Path(page_file).read_text(encoding="utf-8")))]
    while pending:
        source, urls = pending.pop()
        for url in urls:
            if _needs_network(url):
                problems.append(f"{source.name} loads from the network: {url}")
                continue
            if urlsplit(url).scheme:          # blob: made by the page itself, file: outside the deck
                continue
            path = Path(source.parent) / unquote(urlsplit(url).path)
            if not path.is_file():
                problems.append(f"{source.name} loads a missing file: {url}")
            elif path.suffix == ".css" and path not in seen:
                seen.add(path)
                css = path.read_text(encoding="utf-8", errors="replace")
                pending.append((path, [u for a, b in _CSS_URL.findall(_strip_css_comments(css))
                                       if not (u := a or b).lower().startswith("data:")]))
    return problems


def _strip_css_comments(css: str) -> str:
    return re.sub(r"/\*.*?\*/", "", css, flags=re.DOTALL)


def check_offline(deck: Path) -> None:
    """Raise ``RuntimeError`` unless everything the deck loads is local and present."""
    problems = offline_problems(deck)
    if problems:
        raise RuntimeError(f"{deck} would not open offline:\n  " + "\n  ".join(problems))


# -- building ------------------------------------------------------------------------------------------
def _checked_notebook(notebook: Path) -> Path:
    """``notebook`` if it is an existing .ipynb file holding the state of its widgets (else an error)."""
    notebook = Path(notebook)
    if notebook.suffix != ".ipynb" or not notebook.is_file():
        raise ValueError(f"expected an existing .ipynb file, got {notebook}")
    check_widget_state(notebook)
    return notebook


def export_notebook(notebook: Path, out: Path, exporter=None) -> Path:
    """Write ``out/<name>.slides.html`` for one notebook (assets are not copied here)."""
    return _export(_checked_notebook(notebook), out, exporter)


def _export(notebook: Path, out: Path, exporter=None) -> Path:
    body, _ = (exporter or make_exporter()).from_filename(str(notebook), resources={"vendor": VENDOR})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    deck = out / f"{notebook.stem}.slides.html"
    deck.write_text(body, encoding="utf-8")
    return deck


def write_index(decks: list[Path], out: Path) -> Path:
    """``out/index.html``: one link per deck."""
    items = "\n".join(f'  <li><a href="{html.escape(d.name)}">'
                      f'{html.escape(d.name.removesuffix(".slides.html"))}</a></li>' for d in decks)
    index = Path(out) / "index.html"
    index.write_text('<!DOCTYPE html>\n<html lang="en">\n'
                     '<head><meta charset="utf-8"><title>Slides</title></head>\n'
                     "<body>\n<h1>Slides</h1>\n<p>Arrow keys or Space move between slides; Esc shows an "
                     "overview; S opens the speaker view; F goes full screen.</p>\n"
                     f"<ul>\n{items}\n</ul>\n</body>\n</html>\n", encoding="utf-8")
    return index


def build(notebooks: list[Path], out: Path = DEFAULT_OUT,
          asset_cache: Path = DEFAULT_ASSET_CACHE) -> list[Path]:
    """Check every notebook's widget state, install and copy the assets, export every notebook, check each
    deck opens offline (a notebook that fails its check stops the build before anything is written)."""
    if not notebooks:
        raise ValueError("no notebooks to export")
    notebooks = [_checked_notebook(nb) for nb in notebooks]
    copy_assets(install_assets(asset_cache), out)
    exporter = make_exporter()
    decks = [_export(nb, out, exporter) for nb in notebooks]
    for deck in decks:
        check_offline(deck)
    write_index(decks, out)
    return decks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to export (default: every notebooks/*.ipynb)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: slides/)")
    parser.add_argument("--asset-cache", type=Path, default=DEFAULT_ASSET_CACHE,
                        help="where npm installs the pinned packages (default: build/slides-assets/)")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted(DEFAULT_NOTEBOOKS.glob("*.ipynb"))
    try:
        decks = build(notebooks, args.out, args.asset_cache)
    except MissingWidgetState as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for deck in decks:
        print(f"wrote {deck}")
    print(f"open {(args.out / 'index.html').resolve().as_uri()} in a browser (works offline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
