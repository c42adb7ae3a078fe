"""The live widgets of notebooks 04 and 05 work in a real JupyterLab in a real browser.

Each test opens its notebook, runs all cells from the menu (fast mode), then uses a panel the way a
presenter does: drags a style slider, presses Train. A timeout is retried once with the page reloaded
(two slow cores shared with other jobs); a wrong result is never retried.
"""
from __future__ import annotations

import re

import pytest
from lab_driver import LabTimeout

pytestmark = pytest.mark.browser

STYLE_NOTEBOOK = "05_latent_traversal.ipynb"
TRAIN_NOTEBOOK = "04_train_live.ipynb"


def run_notebook(lab_page, notebook: str) -> None:
    """Open and run all cells (fails at once if a cell raises)."""
    lab_page.open(notebook)
    lab_page.run_all()
    lab_page.screenshot("ran")


def with_one_retry(lab_page, scenario) -> None:
    """Run ``scenario``; after a timeout, shut the kernels down and run it once more."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        scenario()
    except (PlaywrightTimeout, LabTimeout):
        lab_page.screenshot("timeout-before-retry")
        lab_page.server.shut_down_kernels()
        scenario()


def test_style_slider_changes_decoded_image(lab_page):
    def scenario():
        run_notebook(lab_page, STYLE_NOTEBOOK)
        image = lab_page.page.locator("img.ssvae-style-image").first
        image.scroll_into_view_if_needed()
        before = lab_page.settled_image(image)                    # the decoded digit, as the notebook left it
        # the z0 slider beside that image (StylePanel: HBox([sliders, image]))
        row = image.locator("xpath=..")
        z0_label = lab_page.page.locator(".widget-label", has_text=re.compile(r"^z0$"))
        slider = row.locator(".widget-slider", has=z0_label)
        readout = slider.locator(".widget-readout").inner_text()
        towards_centre = -1 if float(readout) > 0 else 1          # the notebook may have left z0 at an end
        box = slider.locator(".noUi-handle").bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        lab_page.screenshot("before-slider", row)
        lab_page.page.mouse.move(x, y)
        lab_page.page.mouse.down()
        lab_page.page.mouse.move(x + towards_centre * 40, y, steps=6)
        lab_page.page.mouse.up()
        assert slider.locator(".widget-readout").inner_text() != readout, "the drag did not move the slider"
        after = lab_page.wait_for_new_image(image, old=before)
        lab_page.screenshot("after-slider", row)
        assert after != before
        # a flex row stretches an <img> to the height of its tallest neighbour unless told not to;
        # 5 %: whole-pixel rounding of the shown size moves the ratio by under 2 % for images >= 60 px
        assert abs(lab_page.distortion(image)) < 0.05, "the decoded digit is shown distorted"

    with_one_retry(lab_page, scenario)
    assert lab_page.blocked == [], "the page tried to reach outside the loopback server"


def test_train_button_updates_accuracy_plot(lab_page):
    def scenario():
        run_notebook(lab_page, TRAIN_NOTEBOOK)
        plot = lab_page.page.locator("img.ssvae-live-plot").first
        panel = lab_page.page.locator(".jp-OutputArea-output", has=plot).first
        status = panel.locator(".ssvae-status")
        train = panel.locator("button.jupyter-button", has_text=re.compile(r"^\s*Train\s*$"))
        panel.scroll_into_view_if_needed()
        lab_page.settled_image(plot)                              # the notebook's own run has been drawn
        lab_page.screenshot("before-train", panel)
        plot.evaluate("""img => {
            window.plotRedraws = 0;
            new MutationObserver(() => window.plotRedraws++)
                .observe(img, {attributes: true, attributeFilter: ['src']});
        }""")
        train.click()
        lab_page.page.wait_for_function("() => window.plotRedraws > 0", timeout=120_000, polling=250)
        status.filter(has_text=re.compile(r"finished|stopped|error")).wait_for(timeout=240_000)
        lab_page.screenshot("after-train", panel)
        text = status.inner_text()
        assert re.search(r"finished .* accuracy \d\.\d{3}", text), f"training did not finish: {text!r}"
        assert lab_page.image_digest(plot) is not None
        assert abs(lab_page.distortion(plot)) < 0.05, "the training plot is shown distorted"

    with_one_retry(lab_page, scenario)
    assert lab_page.blocked == [], "the page tried to reach outside the loopback server"
