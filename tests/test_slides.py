"""The static slides (tools/build_slides.py) load nothing from the network.

Exporting needs no npm: these tests check the exported HTML and the copy plan; ``make slides`` installs
the real reveal.js/MathJax, and tests/browser/test_slides_offline.py opens a real deck offline.
"""
import importlib.util
import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbconvert import SlidesExporter

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("build_slides", ROOT / "tools" / "build_slides.py")
build_slides = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_slides)

REAL_NOTEBOOK = ROOT / "notebooks" / "05_latent_traversal.ipynb"   # has saved widget state and math

# What every deck must load from vendor/: the check below has to see these, or it looks at nothing.
EXPECTED = {"vendor/reveal.js/dist/reveal.js", "vendor/reveal.js/dist/reveal.css",
            "vendor/reveal.js/dist/theme/white.css", "vendor/reveal.js/plugin/notes/notes.js",
            "vendor/requirejs/require.js", "vendor/jquery/dist/jquery.min.js",
            "vendor/mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe"}
WIDGET_RENDERER = "vendor/@jupyter-widgets/html-manager/dist/embed-amd.js"


def small_notebook(path: Path) -> Path:
    """Math, code and a saved widget (so the page also loads the widget renderer)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# ELBO\n$\\log p(x) \\ge \\mathcal{L}(x)$",
                                              metadata={"slideshow": {"slide_type": "slide"}}),
                nbformat.v4.new_code_cell("1 + 1", metadata={"slideshow": {"slide_type": "fragment"}})]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "version_major": 2, "version_minor": 0, "state": {}}}
    nbformat.write(nb, path)
    return path


def is_vendored(url: str) -> bool:
    """Does the copy plan (VENDORED) put a file at this deck-relative URL?"""
    path = url.split("?")[0]
    prefix = build_slides.VENDOR + "/"
    return path.startswith(prefix) and any(
        path[len(prefix):] == target or path[len(prefix):].startswith(target + "/")
        for _, target in build_slides.VENDORED)


@pytest.mark.parametrize("which", ["small", "real"])
def test_exported_deck_loads_only_vendored_files(tmp_path, which):
    notebook = small_notebook(tmp_path / "small.ipynb") if which == "small" else REAL_NOTEBOOK
    deck = build_slides.export_notebook(notebook, tmp_path / "slides")
    page = deck.read_text(encoding="utf-8")
    urls = build_slides.loaded_urls(page)
    assert EXPECTED | {WIDGET_RENDERER} <= set(urls), "the deck does not load reveal.js/MathJax from vendor/"
    assert build_slides.remote_urls(page) == []
    assert [u for u in urls if not is_vendored(u)] == []
    assert "mermaid" not in page           # an ES module: Chromium will not load one from file://


def test_nbconvert_default_deck_is_caught_as_remote(tmp_path):
    """The check can fail: nbconvert's own defaults load reveal.js and MathJax from CDNs."""
    body, _ = SlidesExporter().from_filename(str(small_notebook(tmp_path / "small.ipynb")))
    remote = build_slides.remote_urls(body)
    assert any("reveal.js" in u and u.startswith("https://") for u in remote)
    assert any("mathjax" in u.lower() and u.startswith("https://") for u in remote)


def test_offline_problems_follow_stylesheets(tmp_path):
    (tmp_path / "vendor").mkdir()
    (tmp_path / "vendor" / "ok.css").write_text("/* @import url(https://in.a/comment.css); */ p {}")
    (tmp_path / "vendor" / "theme.css").write_text(
        "@import url(https://fonts.example/css?family=Lato);\n"
        "@font-face { src: url(fonts/missing.woff) format('woff'), url(data:font/woff;base64,AAAA); }")
    page = tmp_path / "deck.html"
    page.write_text('<html><head><link rel="stylesheet" href="vendor/ok.css">'
                    '<link rel="stylesheet" href="vendor/theme.css"><script src="vendor/gone.js"></script>'
                    '<script>require(["https://cdn.example/reveal.js"], function () {});</script>'
                    '<script type="application/vnd.jupyter.widget-state+json">{"u": "https://x.y/z.js"}'
                    '</script>'
                    '</head><body><a href="https://example.org">a link loads nothing</a></body></html>')
    assert sorted(build_slides.offline_problems(page)) == sorted([
        "deck.html loads a missing file: vendor/gone.js",
        "deck.html loads from the network: https://cdn.example/reveal.js",
        "theme.css loads from the network: https://fonts.example/css?family=Lato",
        "theme.css loads a missing file: fonts/missing.woff"])
    with pytest.raises(RuntimeError, match="would not open offline"):
        build_slides.check_offline(page)


def test_copy_assets_follows_the_plan(tmp_path):
    modules = tmp_path / "node_modules"
    for pattern, _ in build_slides.VENDORED:                   # a stand-in for each planned file/folder
        source = modules / pattern.replace("*", "icons")
        if source.suffix in (".js", ".woff2", ".woff", ".ttf", ".eot", ".svg"):
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_text(pattern)
        else:
            (source / "sub").mkdir(parents=True, exist_ok=True)
            (source / "sub" / "a.js").write_text(pattern)
            (source / "sub" / "a.js.map").write_text("{}")
    vendor = build_slides.copy_assets(modules, tmp_path / "out")
    assert (vendor / "reveal.js" / "dist" / "sub" / "a.js").read_text() == "reveal.js/dist"
    assert not (vendor / "reveal.js" / "dist" / "sub" / "a.js.map").exists()    # source maps left out
    fonts = vendor / "@jupyter-widgets"                                          # a glob: into the folder
    assert (fonts / "icons.woff2").read_text() == "@jupyter-widgets/html-manager/dist/*.woff2"
    assert {p.name for p in vendor.iterdir()} == {
        ".vendor-sha256", "@jupyter-widgets", "jquery", "mathjax", "reveal.js", "requirejs"}

    (modules / "requirejs" / "require.js").unlink()
    with pytest.raises(FileNotFoundError, match="require.js"):
        build_slides.copy_assets(modules, tmp_path / "elsewhere")


def test_export_rejects_what_is_not_a_notebook(tmp_path):
    with pytest.raises(ValueError, match=r"\.ipynb"):
        build_slides.export_notebook(tmp_path / "missing.ipynb", tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"\.ipynb"):
        build_slides.export_notebook(tmp_path / "notes.txt", tmp_path)


def test_test_markers_are_left_out_of_the_slides(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nanswer = 6 * 7\n  # NBVAL_IGNORE_OUTPUT  \nanswer")]
    nbformat.write(nb, tmp_path / "marked.ipynb")
    page = build_slides.export_notebook(tmp_path / "marked.ipynb", tmp_path / "slides").read_text(encoding="utf-8")
    assert "NBVAL" not in page and "answer" in page
    plain, _ = SlidesExporter().from_filename(str(tmp_path / "marked.ipynb"))
    assert "NBVAL_CHECK_OUTPUT" in plain            # what the deck would show without the preprocessor


def _widget_notebook(path: Path, saved: dict) -> Path:
    nb = nbformat.v4.new_notebook()
    view = {"model_id": "aa11", "version_major": 2, "version_minor": 0}
    nb.cells = [nbformat.v4.new_markdown_cell("# A panel"),
                nbformat.v4.new_code_cell("panel", outputs=[nbformat.v4.new_output(
                    "display_data", data={build_slides.WIDGET_VIEW: view, "text/plain": "VBox(children=(...))"})])]
    nb.metadata["widgets"] = {build_slides.WIDGET_STATE: {"version_major": 2, "version_minor": 0, "state": saved}}
    nbformat.write(nb, path)
    return path


def test_a_widget_without_saved_state_stops_the_build(tmp_path, capsys):
    box = {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_bb22"]}}
    unsaved = _widget_notebook(tmp_path / "unsaved.ipynb", {})
    with pytest.raises(build_slides.MissingWidgetState, match=r"cell 2: widget aa11.*\n.*Save Jupyter widget state"):
        build_slides.export_notebook(unsaved, tmp_path / "slides")
    assert build_slides.main([str(unsaved), "--out", str(tmp_path / "slides")]) == 1
    assert "cell 2: widget aa11" in capsys.readouterr().err
    assert not (tmp_path / "slides" / "unsaved.slides.html").exists()
    part_missing = _widget_notebook(tmp_path / "part.ipynb", {"aa11": box})
    assert build_slides.missing_widget_state(nbformat.read(part_missing, 4)) == [
        "metadata: widget bb22 (a part of a saved widget)"]
    whole = _widget_notebook(tmp_path / "whole.ipynb", {"aa11": box, "bb22": {"model_name": "LayoutModel"}})
    assert build_slides.export_notebook(whole, tmp_path / "slides").is_file()


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_every_committed_notebook_holds_the_state_of_its_widgets(notebook):
    assert build_slides.missing_widget_state(nbformat.read(notebook, 4)) == []


def test_slides_are_16_by_9_and_keep_the_case_of_their_titles(tmp_path):
    page = build_slides.export_notebook(small_notebook(tmp_path / "small.ipynb"), tmp_path).read_text(encoding="utf-8")
    assert "width: 1280," in page and "height: 720," in page
    assert "text-transform: none" in page
    assert 'Reveal.on("slidechanged", watch)' in page          # the fit-to-slide script is in the deck


def test_lab_settings_turn_on_widget_state_and_keep_other_settings(tmp_path):
    spec = importlib.util.spec_from_file_location("lab_settings", ROOT / "tools" / "lab_settings.py")
    lab_settings = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lab_settings)
    path = lab_settings.overrides_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"},'
                    ' "@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": false}}')
    assert lab_settings.main(["--prefix", str(tmp_path)]) == 0
    assert json.loads(path.read_text()) == {"@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"},
                                            "@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": True}}
    # the environment running the tests was installed by `make install`, which runs the script
    installed = lab_settings.overrides_file(sys.prefix)
    assert installed.is_file(), f"{installed} is missing: run `python tools/lab_settings.py` (make install does)"
    assert json.loads(installed.read_text())[lab_settings.PLUGIN]["saveState"] is True
