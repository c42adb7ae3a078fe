"""The panel base (ssvae_lib.panels.Panel): set/redraw/hold, the display hook and the guard against
non-finite control values, on a minimal panel and on one real derivation panel."""
import math

import ipywidgets as widgets
import pytest
import torch

from ssvae_lib import derivation_widgets as dw
from ssvae_lib import toy
from ssvae_lib.panels import Panel, control, on_step


class Counter(Panel):
    """Two sliders and a list of sliders; ``render`` records the values it saw."""

    def __init__(self):
        self.a = widgets.FloatSlider(value=0.0, min=-5, max=5, description="a")
        self.b = widgets.FloatText(value=1.0, description="b")
        self.items = [widgets.FloatText(value=0.0, description=f"item {i}") for i in range(2)]
        self.choice = widgets.Dropdown(options=["x", "y"], value="x")
        self.watch(self.a, self.b, *self.items, self.choice)
        self.widget = widgets.VBox([self.a, self.b, *self.items, self.choice])
        self.seen = []

    def render(self):
        self.seen.append((self.a.value, self.b.value, self.items[0].value, self.choice.value))


def test_a_change_redraws_and_set_redraws_once():
    panel = Counter()
    panel.a.value = 2.0
    assert panel.seen == [(2.0, 1.0, 0.0, "x")]
    panel.set(a=1.0, b=3.0, choice="y")
    assert panel.seen[1:] == [(1.0, 3.0, 0.0, "y")]
    with panel.hold():
        panel.a.value, panel.b.value = -1.0, -2.0
    assert len(panel.seen) == 2
    panel.redraw()
    assert panel.seen[-1] == (-1.0, -2.0, 0.0, "y")


def test_set_rejects_unknown_names_and_non_finite_values_before_changing_anything():
    panel = Counter()
    with pytest.raises(ValueError, match="no control named 'render'"):
        panel.set(a=1.0, render=2)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="Counter.b must be a finite number"):
            panel.set(a=1.0, b=bad)
    assert (panel.a.value, panel.b.value, panel.seen) == (0.0, 1.0, [])


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_assigning_a_non_finite_value_is_undone_with_a_clear_error(bad):
    panel = Counter()
    panel.b.value = 4.0
    with pytest.raises(ValueError, match=r"Counter\.b must be a finite number, got .*; it keeps 4\.0"):
        panel.b.value = bad
    assert panel.b.value == 4.0 and len(panel.seen) == 1
    with pytest.raises(ValueError, match=r"Counter\.items\[1\] must be a finite number"):
        panel.items[1].value = bad
    assert panel.items[1].value == 0.0 and len(panel.seen) == 1
    panel.a.value = 3.0                                             # the panel still works
    assert panel.seen[-1][0] == 3.0


def test_display_hook_shows_the_widget():
    panel = Counter()
    assert panel._repr_mimebundle_() == panel.widget._repr_mimebundle_()


def test_a_derivation_panel_rejects_nan():
    F64 = torch.float64
    model = toy.LinearGaussian(torch.tensor([[1.0], [0.6]], dtype=F64), torch.zeros(2, dtype=F64), 0.8)
    panel = dw.ImportanceSamplingPanel(model, torch.tensor([1.2, 0.4], dtype=F64), n_replicates=20)
    before = panel.result
    with pytest.raises(ValueError, match="ImportanceSamplingPanel.shift must be a finite number"):
        panel.set(shift=math.nan)
    with pytest.raises(ValueError, match="ImportanceSamplingPanel.shift must be a finite number"):
        panel.shift.value = math.nan
    assert panel.shift.value == 0.0 and panel.result is before


def test_on_step_puts_a_value_where_a_browser_slider_can_show_it():
    slider = widgets.FloatSlider(min=0.3, max=3.0, step=0.05)
    assert on_step(slider, 0.6) == 0.6 and on_step(slider, 0.61) == 0.6 and on_step(slider, 1.3) == 1.3
    assert on_step(slider, 0.01) == 0.3 and on_step(slider, 9.0) == 3.0             # within [min, max]
    fine = widgets.FloatSlider(min=-4.0, max=4.0, step=0.001)
    assert on_step(fine, 0.5653898076274048) == 0.565 and on_step(fine, -1.0) == -1.0
    for other, value in ((widgets.IntSlider(), 3), (widgets.Dropdown(options=["a"]), "a"),
                         (widgets.FloatText(), 0.123456)):
        assert on_step(other, value) == value
    assert math.isnan(on_step(slider, math.nan))


def test_a_float_slider_holds_its_values_on_its_steps_with_one_redraw():
    """A browser's slider moves an off-step value to its grid and sends that back to the kernel; a panel
    puts it there first, so both show the same number and the browser has nothing to send."""
    panel = Counter()
    panel.a.step = 0.25
    panel.a.value = 1.1
    assert panel.a.value == 1.0 and panel.seen == [(1.0, 1.0, 0.0, "x")]
    panel.set(a=-0.4, b=0.123456)                         # a FloatText has no steps: kept as it is
    assert panel.seen[1:] == [(-0.5, 0.123456, 0.0, "x")]
    late = widgets.FloatSlider(value=0.33, min=0, max=1, step=0.1)
    panel.watch(late)                                     # the value a slider holds when watched too
    assert late.value == 0.3


def test_control_sets_the_description_and_the_whole_width():
    slider = control(widgets.FloatSlider, "label corruption rate", value=0.5, min=0, max=1)
    assert (slider.description, slider.value) == ("label corruption rate", 0.5)
    assert slider.style.description_width == "150px" and slider.layout.width == "520px"
    dropdown = control(widgets.Dropdown, "estimate", options=["a", "b"], label_width="140px", width="480px")
    assert dropdown.style.description_width == "140px" and dropdown.layout.width == "480px"
