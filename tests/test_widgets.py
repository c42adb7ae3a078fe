"""Widget panels driven without a browser: set controls, click buttons, check the library was called
and the shown result changed. Tiny models on the 8x8 digits keep the file fast."""
import dataclasses
import threading

import ipywidgets
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings as hyp_settings, strategies as st

from ssvae_lib import latent, plots, widgets
from ssvae_lib import train as train_mod
from ssvae_lib.models import SSVAE
from ssvae_lib.panels import on_step
from tiny_run import tiny_config
from ssvae_lib.train import Callback, TrainConfig

SHAPE = (8, 8)


def tiny(**kw):
    return tiny_config(**{**dict(n_labelled=100, iwae_samples=2, iwae_examples=40, max_test=100), **kw})


@pytest.fixture
def spy(monkeypatch):
    """Records every call of train.train made through the panel (and still trains)."""
    calls = []
    real = train_mod.train

    def recording(config, callbacks=(), **kw):
        calls.append(config)
        return real(config, callbacks, **kw)

    monkeypatch.setattr(widgets.train_mod, "train", recording)
    return calls


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SSVAE(input_dim=64, hidden_dim=16, style_dim=3).eval()


# -- the training panel --------------------------------------------------------------------------------
def test_controls_map_onto_the_config(digits):
    panel = widgets.TrainingPanel(tiny(n_labelled=None), dataset=digits)
    assert panel.n_labelled.value == "all"
    panel.alpha.value = 25.0
    panel.beta.value = 8.0
    panel.corruption_rate.value = 0.2
    panel.corruption_protocol.value = "per_epoch"
    panel.objective.value = "ssvae"
    panel.labelling.value = "thesis"
    panel.epochs.value = 7
    panel.seed.value = 3
    config = panel.config()
    assert (config.alpha, config.n_labelled, config.corruption_rate, config.corruption_protocol) == \
        (25.0, None, 0.2, "per_epoch")
    assert (config.objective, config.labelling, config.epochs, config.seed) == ("ssvae", "thesis", 7, 3)
    assert config.beta == 8.0
    assert config.hidden_dim == 32   # fields without a widget come from the base config
    panel.n_labelled.value = 100
    assert panel.config().n_labelled == 100


def test_labelled_sizes_larger_than_the_pool_are_not_offered(digits):
    """Only sizes that train.prepare_data accepts are offered: 600 of a 600-image pool would need
    exactly 60 images of every digit, 3000 exceed the 1,497 digits."""
    offered = lambda config: [v for _, v in widgets.TrainingPanel(config, dataset=digits).n_labelled.options]  # noqa: E731
    assert 600 not in offered(tiny(max_train=600))
    assert {100, 600, 1000} <= set(offered(tiny(max_train=None))) and 3000 not in offered(tiny(max_train=None))
    for config in (tiny(), tiny(max_train=None)):
        for m in widgets.offered_labelled_sizes(config, digits):
            train_mod.prepare_data(dataclasses.replace(config, n_labelled=None if m == "all" else m), digits)


def test_alpha_slider_offers_exact_values_from_the_thesis_range_to_the_tuned_alpha(digits):
    """The α slider is a slider over the values themselves: what it shows is exactly what a run gets (a
    log slider's steps turned 50 into 50.1 in a browser), fully left is 0.1, and the thesis's grid, the
    base config's α and the tuned α are all on it."""
    from ssvae_lib.grid import THESIS_ALPHAS

    panel = widgets.TrainingPanel(tiny(alpha=3.0), dataset=digits)
    values = [value for _, value in panel.alpha.options]
    assert values == sorted(values) and values[0] == 0.1 and values[-1] == 1000.0
    assert set(THESIS_ALPHAS) | {train_mod.TUNED["alpha"], 3.0} <= set(values)
    assert panel.alpha.value == 3.0 and panel.config().alpha == 3.0
    assert [label for label, _ in panel.alpha.options][:3] == ["0.1", "0.2", "0.5"]
    panel.alpha.index = 0                                   # dragged fully left
    assert panel.config().alpha == 0.1


def test_controls_are_wide_enough_for_their_text(digits, model):
    """ipywidgets' default of 300 px per control left the α slider a 54 px track and cut off the
    dropdowns' texts: every control of the panels has a width and a description width, and its longest
    option fits (about 7 px per character, 30 px for a dropdown's arrow and padding; the browser test measures)."""
    from ssvae_lib import derivation_widgets as dw, toy

    def px(value):
        return float(value.removesuffix("px"))

    f64 = torch.float64
    linear = toy.LinearGaussian(torch.tensor([[1.0], [0.6]], dtype=f64), torch.zeros(2, dtype=f64), 0.8)
    x = torch.tensor([1.2, 0.4], dtype=f64)
    training = widgets.TrainingPanel(tiny(), dataset=digits)
    importance = dw.ImportanceSamplingPanel(linear, x, n_replicates=20)
    gradient = dw.GradientVariancePanel(linear, x, [0.0], [0.0], n_replicates=20)
    style = widgets.StylePanel(model, SHAPE, images=digits.x_test[:5])
    walk = widgets.InterpolationPanel(model, digits.x_test[:5], SHAPE)
    controls = {"training": [getattr(training, n) for n in widgets.CONTROL_FIELDS],
                "importance": [importance.n_samples, importance.shift, importance.scale, importance.estimator],
                "gradient": [gradient.n_samples, gradient.parameter],
                "style": [style.digit, *style.z, style.grid_rows, style.grid_cols, style.source],
                "interpolation": [walk.first, walk.second, walk.digit]}
    for name, items in controls.items():
        for c in items:
            width, label = px(c.layout.width), px(c.style.description_width)
            assert width - label >= 100, (name, c.description)
            assert 7 * len(c.description) <= label, (name, c.description)
            if isinstance(c, ipywidgets.Dropdown):
                longest = max(len(text) for text in c._options_labels)
                assert 7 * longest + 30 <= width - label, (name, c.description, longest)
            if isinstance(c, (ipywidgets.FloatSlider, ipywidgets.SelectionSlider)) and name != "style":
                assert width - label - 80 >= 200, (name, c.description)          # track >= 200 px
    for button in (style.reset_button, style.sample_button, style.copy_button):   # wider than the default
        assert button.layout.width == "auto", button.description


def test_train_button_trains_in_the_background_and_shows_the_result(digits, spy):
    panel = widgets.TrainingPanel(tiny(), dataset=digits, redraw_seconds=0.5)
    assert "digits" in panel.info.value and "device" in panel.info.value
    panel.alpha.value = 2.0
    panel.train_button.click()
    assert panel.stop_button.disabled is False or panel.result is not None
    result = panel.wait(timeout=60)
    assert len(spy) == 1 and spy[0].alpha == 2.0
    assert result is panel.result and len(result.history) == 2 and not result.stopped_early
    assert panel.history == result.history
    assert panel.progress.value == panel.progress.max > 0
    assert panel.plot.value[:4] == b"\x89PNG"
    assert "accuracy" in panel.status.value and "finished" in panel.status.value
    assert panel.train_button.disabled is False and panel.stop_button.disabled is True
    first_plot = panel.plot.value
    panel.epochs.value = 1
    second = panel.train(blocking=True)       # a new run replaces the result; its curves join the plot
    assert len(second.history) == 1 and panel.plot.value != first_plot
    assert panel.history == second.history and [run.history for run in panel.runs] == [result.history,
                                                                                           second.history]


def test_successive_runs_overlay_labelled_by_their_settings_and_clear_empties(digits):
    """Notebook 04's exercise: α = 0.1, then α = 50. Both runs stay on the plot, one colour each, named
    by α and M (and by every other setting in which they differ); Clear removes them."""
    panel = widgets.TrainingPanel(tiny(epochs=1), dataset=digits)
    panel.alpha.value = 0.1
    panel.train(blocking=True)
    panel.alpha.value = 50.0
    panel.train(blocking=True)
    figure = panel._figure
    loss_ax, accuracy_ax, elbo_ax = figure.axes
    assert [line.get_label() for line in loss_ax.lines] == ["α=0.1, M=100", "α=50, M=100"]
    assert [line.get_color() for line in loss_ax.lines] == ["C0", "C1"]
    for run, line in zip(panel.runs, loss_ax.lines):
        assert list(line.get_ydata()) == run.losses and len(run.losses) > 0
    for run, line in zip(panel.runs, accuracy_ax.lines):
        assert list(line.get_ydata()) == [record["accuracy"] for record in run.history] and run.history
    assert [t.get_text() for t in figure.figure.legends[0].get_texts()] == ["α=0.1, M=100", "α=50, M=100"]
    panel.seed.value = 1                                   # a third run that differs in its seed too
    panel.train(blocking=True)
    assert [run.label for run in panel.runs] == ["α=0.1, M=100, seed=0", "α=50, M=100, seed=0",
                                                 "α=50, M=100, seed=1"]
    before = panel.plot.value
    panel.clear_button.click()
    assert panel.runs == [] and all(not ax.lines for ax in figure.axes) and not figure.figure.legends
    assert panel.plot.value != before and panel.result is not None       # the model of the last run stays
    panel.train(blocking=True)
    assert [line.get_label() for line in loss_ax.lines] == ["α=50, M=100"]


def test_run_labels_name_the_settings_that_differ():
    base = TrainConfig(n_labelled=100, alpha=50.0)
    assert widgets.run_labels([base]) == ["α=50, M=100"]
    tuned = dataclasses.replace(base, **train_mod.TUNED)
    assert widgets.run_labels([base, dataclasses.replace(base, n_labelled=None)]) == ["α=50, M=100", "α=50, M=all"]
    assert widgets.run_labels([base, tuned]) == [
        "α=50, M=100, β=1, epochs=40, γ=1, lr=0.001, shift=0",
        "α=500, M=100, β=8, epochs=80, γ=0.75, lr=0.003, shift=2"]


def test_presets_set_the_thesis_defaults_or_the_tuned_settings(digits):
    """One click: "tuned" sets every field of train.TUNED (those without a control through the config),
    "thesis defaults" TrainConfig's defaults of the same fields; the line beside the buttons says what
    the settings without a control are."""
    panel = widgets.TrainingPanel(tiny(), dataset=digits)
    panel.preset_buttons["tuned"].click()
    config = panel.config()
    assert {name: getattr(config, name) for name in train_mod.TUNED} == train_mod.TUNED
    assert (panel.alpha.value, panel.beta.value, panel.epochs.value) == (500.0, 8.0, 80)
    assert "γ = 0.75" in panel.preset_info.value and "0.003" in panel.preset_info.value
    assert config.hidden_dim == 32 and config.n_labelled == 100           # the rest stays the base config's
    panel.preset_buttons["thesis defaults"].click()
    config, defaults = panel.config(), TrainConfig()
    assert {name: getattr(config, name) for name in train_mod.TUNED} == \
        {name: getattr(defaults, name) for name in train_mod.TUNED}
    assert (config.alpha, config.beta, config.gamma, config.lr, config.epochs, config.augment_shift) == \
        (50.0, 1.0, 1.0, 1e-3, 40, 0)
    assert "γ = 1," in panel.preset_info.value
    assert set(widgets.PRESETS) == {"thesis defaults", "tuned"}


def test_the_live_plot_takes_a_bounded_share_of_the_training_time(digits, monkeypatch):
    """After a redraw that took d seconds the next one waits max(redraw_seconds, d / DRAW_SHARE): on a
    fake clock, a 0.25 s redraw holds the next one back for 5 s; epochs always redraw."""
    clock = [100.0]
    monkeypatch.setattr(widgets.time, "monotonic", lambda: clock[0])
    panel = widgets.TrainingPanel(tiny(), dataset=digits, redraw_seconds=1.0)
    draws = []

    def slow_redraw():
        draws.append(clock[0])
        clock[0] += 0.25

    monkeypatch.setattr(panel, "redraw", slow_redraw)
    run = widgets.LiveRun(panel.config())
    live = widgets._LiveCallback(panel, run, redraw_seconds=1.0)
    state = train_mod.TrainState(panel.config(), None, [], steps_per_epoch=100)
    live.on_train_begin(state)
    for step in range(1, 161):                        # 0.125 s per step on the fake clock (exact in binary)
        state.step, state.loss = step, 1.0 / step
        clock[0] += 0.125
        live.on_step(state)
    assert len(run.losses) == 160 and run.steps == list(range(1, 161))
    assert draws[0] == 101.0                                         # after redraw_seconds
    assert len(draws) >= 3 and all(b - a >= 0.25 + 0.25 / widgets.DRAW_SHARE for a, b in zip(draws, draws[1:]))
    assert 0.25 * len(draws) / (clock[0] - 100.0) <= widgets.DRAW_SHARE
    live.on_epoch_end(state)
    assert draws[-1] == clock[0] - 0.25 and panel.progress.value == 160


def test_stop_ends_training_mid_epoch(digits):
    """The Stop button, clicked from inside step 3 (deterministic), ends the run before the first
    evaluation: no epoch record, and the model so far is kept."""
    panel = widgets.TrainingPanel(tiny(epochs=3, batch_size=16), dataset=digits)

    class ClickStopAtStep3(Callback):
        every_n_steps = 3

        def on_step(self, state):
            panel.stop_button.click()

    real = widgets.train_mod.train
    widgets.train_mod.train = lambda config, callbacks=(), **kw: real(config, [*callbacks, ClickStopAtStep3()], **kw)
    try:
        result = panel.train(blocking=True)
    finally:
        widgets.train_mod.train = real
    assert result.stopped_early and result.history == []
    assert panel.progress.value == 3 and "stopped early" in panel.status.value
    assert panel.progress.bar_style == "warning"


def test_stop_from_the_main_thread_ends_a_long_run(digits):
    panel = widgets.TrainingPanel(tiny(epochs=40, batch_size=8, max_train=None), dataset=digits)
    panel.train()
    deadline = threading.Event()
    for _ in range(600):                 # wait until training has really started (<= 30 s)
        if panel.progress.value >= 2:
            break
        deadline.wait(0.05)
    panel.stop()
    result = panel.wait(timeout=60)
    assert result.stopped_early and len(result.history) < 40


def test_errors_are_shown_and_reraised(digits, monkeypatch):
    panel = widgets.TrainingPanel(tiny(), dataset=digits)

    def broken(config, callbacks=(), **kw):
        raise ValueError("n_labelled=5000 is larger than the training pool")

    monkeypatch.setattr(widgets.train_mod, "train", broken)
    panel.train_button.click()
    with pytest.raises(ValueError, match="larger than the training pool"):
        panel.wait(timeout=10)
    assert "error" in panel.status.value and panel.train_button.disabled is False
    monkeypatch.setattr(panel, "config", lambda: TrainConfig(alpha=-1.0))   # invalid controls
    panel.train_button.click()                                               # shown, not raised
    assert "cannot train" in panel.status.value and "alpha" in panel.status.value


def test_a_second_train_while_running_is_refused(digits):
    panel = widgets.TrainingPanel(tiny(epochs=40, batch_size=8, max_train=None), dataset=digits)
    panel.train()
    try:
        with pytest.raises(RuntimeError, match="already training"):
            panel.train()
        panel.train_button.click()                     # the button says so instead of raising
        assert "already training" in panel.status.value
    finally:
        panel.stop()
        panel.wait(timeout=60)


@hyp_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.floats(0.1, 100), st.integers(0, 10), st.floats(0, 1), st.booleans(),
                          st.booleans(), st.booleans(), st.integers(1, 40), st.integers(0, 2**31 - 1)),
                min_size=1, max_size=5))
def test_any_sequence_of_control_values_gives_a_valid_config(digits, moves):
    panel = _shared_panel(digits)
    for alpha, m, rate, per_epoch, ssvae, thesis, epochs, seed in moves:
        alpha = widgets.ALPHA_CHOICES[int(alpha * 1000) % len(widgets.ALPHA_CHOICES)]
        panel.alpha.value = alpha
        panel.n_labelled.index = m % len(panel.n_labelled.options)
        panel.corruption_rate.value = rate
        panel.corruption_protocol.value = "per_epoch" if per_epoch else "fixed"
        panel.objective.value = "ssvae" if ssvae else "m2"
        panel.labelling.value = "thesis" if thesis else "fixed"
        panel.epochs.value = epochs
        panel.seed.value = seed
        config = panel.config()
        # the corruption slider holds the rate on its steps of 0.01, as a browser shows it
        assert config.alpha == alpha and config.corruption_rate == on_step(panel.corruption_rate, rate)
        assert abs(config.corruption_rate - rate) <= 0.005 + 1e-12
        train_mod.prepare_data(train_mod.fast_mode(config), digits)   # the data side accepts it too


_PANELS = {}


def _shared_panel(digits):
    if "training" not in _PANELS:
        _PANELS["training"] = widgets.TrainingPanel(tiny(), dataset=digits)
    return _PANELS["training"]


def test_latest_scores_and_device_text():
    assert widgets.latest_scores([]) == "no epoch finished yet"
    record = {"epoch": 3, "validation_accuracy": 0.91234, "validation_elbo": -104.24}
    assert widgets.latest_scores([record]) == "epoch 3: validation accuracy 0.912, validation ELBO -104.2 nats"
    assert widgets.describe_device("cpu").startswith("cpu")


# -- the style and interpolation panels ----------------------------------------------------------------
def test_style_sliders_decode_through_the_library(model):
    panel = widgets.StylePanel(model, SHAPE, y=2)
    expected = lambda: widgets._png(latent.decode_style(model, panel.digit.value, panel.style())[None],  # noqa: E731
                                    SHAPE, panel.scale)
    before = panel.image.value
    assert before == expected()
    panel.z[1].value = 1.5
    assert panel.style().tolist() == [0.0, 1.5, 0.0]
    assert panel.image.value == expected() and panel.image.value != before
    grid_before = panel.grid.value
    panel.digit.value = 7
    assert panel.image.value == expected() and panel.grid.value != grid_before
    grid = latent.style_grid(model, 7, dims=(0, 1), values=panel.grid_values, base=panel.style())
    (ax,) = panel.grid_figure.axes                                   # one picture, with labelled axes
    np.testing.assert_array_equal(ax.images[0].get_array(), plots.tile_images(grid, SHAPE))
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("z1", "z0")
    values = ["-2.0", "-1.3", "-0.7", "+0.0", "+0.7", "+1.3", "+2.0"]
    assert [t.get_text() for t in ax.get_xticklabels()] == values == [t.get_text() for t in ax.get_yticklabels()]
    assert panel.grid.value[:4] == b"\x89PNG"
    panel.grid_cols.value = 2
    assert "z0" in panel.grid_caption.value and "z2" in panel.grid_caption.value
    assert panel.grid_figure.axes[0].get_xlabel() == "z2"
    panel.grid_cols.value = 0                                        # same dims: a hint, no error
    assert "different" in panel.grid_caption.value


def test_style_buttons_and_copy_from_a_test_image(model, digits):
    images = digits.x_test[:5]
    panel = widgets.StylePanel(model, SHAPE, images=images)
    panel.sample_button.click()
    sampled = panel.style()
    assert not torch.equal(sampled, torch.zeros(3))
    panel.reset_button.click()
    assert torch.equal(panel.style(), torch.zeros(3))
    panel.source.value = 4
    panel.copy_button.click()
    x = images[4:5]
    assert panel.digit.value == int(model.classify(x).argmax(-1))
    z = model.infer_style(x)[0].clamp(-widgets.STYLE_RANGE, widgets.STYLE_RANGE)
    # the sliders hold the style on their steps of 0.01, as a browser shows (and would send back) it
    assert torch.allclose(panel.style(), z, atol=0.005 + 1e-6)
    assert [s.value for s in panel.z] == [round(v, 2) for v in panel.style().double().tolist()]
    assert panel.image.value == widgets._png(latent.decode_style(model, panel.digit.value, panel.style())[None],
                                             SHAPE, panel.scale)


@hyp_settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 2), st.floats(-10, 10), st.integers(0, 2),
                          st.integers(0, 2)), min_size=1, max_size=6))
def test_random_style_slider_sequences_never_raise(moves):
    panel = _style_panel()
    for digit, dim, value, rows, cols in moves:
        panel.digit.value = digit
        panel.z[dim].value = value                     # out-of-range values are clipped by the slider
        panel.grid_rows.value, panel.grid_cols.value = rows, cols
        assert abs(panel.z[dim].value) <= widgets.STYLE_RANGE
        assert panel.image.value[:4] == b"\x89PNG"


def test_style_panel_starts_from_its_final_values_on_the_sliders_steps(model):
    """Notebook 05 builds the panel with the style its check prints (no later change that a browser could
    answer with the older value), and the sliders hold it as their readouts show it: -1.8812 is -1.88
    (with steps of 0.05 a browser showed, and sent back, -1.90)."""
    panel = widgets.StylePanel(model, SHAPE, y=7, z=[2.0, -1.8812, 0.304])
    assert panel.digit.value == 7 and [s.value for s in panel.z] == [2.0, -1.88, 0.3]
    assert [s.step for s in panel.z] == [0.01] * 3 and panel.z[0].readout_format == "+.2f"
    assert panel.image.value == widgets._png(latent.decode_style(model, 7, torch.tensor([2.0, -1.88, 0.3]))[None],
                                             SHAPE, panel.scale)
    panel.z[1].value = 0.123456                                      # by hand, from code: the same steps
    assert panel.z[1].value == 0.12
    with pytest.raises(ValueError, match="3 finite numbers"):
        widgets.StylePanel(model, SHAPE, z=[0.0, 1.0])


def test_style_panel_rejects_non_finite_styles():
    panel = _style_panel()
    panel.set_style([0.5, -0.5, 0.0])
    image = panel.image.value
    with pytest.raises(ValueError, match=r"StylePanel\.z\[1\] must be a finite number"):
        panel.z[1].value = float("nan")
    with pytest.raises(ValueError, match="StylePanel.z must be finite"):
        panel.set_style([0.0, float("inf"), 0.0])
    assert panel.style().tolist() == [0.5, -0.5, 0.0] and panel.image.value == image


def _style_panel():
    if "style" not in _PANELS:
        torch.manual_seed(1)
        _PANELS["style"] = widgets.StylePanel(SSVAE(input_dim=64, hidden_dim=16, style_dim=3).eval(), SHAPE)
    return _PANELS["style"]


def test_interpolation_panel(model, digits):
    images = digits.x_test[:6]
    panel = widgets.InterpolationPanel(model, images, SHAPE, steps=5, y=3)
    strip = panel.strip()
    assert strip.shape == (7, 64)
    assert torch.equal(strip[0], images[0]) and torch.equal(strip[-1], images[1])
    assert torch.allclose(strip[1:-1], latent.interpolate(model, images[0], images[1], 3, 5))
    before = panel.image.value
    panel.second.value = 5
    assert panel.image.value != before and torch.equal(panel.strip()[-1], images[5])
    with pytest.raises(ValueError, match="at least two images"):
        widgets.InterpolationPanel(model, images[:1], SHAPE)
    # notebook 05 builds it with its final images and draws other digits without moving the slider
    walk = widgets.InterpolationPanel(model, images, SHAPE, steps=5, y=3, first=1, second=2)
    assert (walk.first.value, walk.second.value, walk.digit.value) == (1, 2, 3)
    assert torch.allclose(walk.strip(y=8)[1:-1], latent.interpolate(model, images[1], images[2], 8, 5))
    assert walk.digit.value == 3


# -- the library functions the panels rely on ------------------------------------------------------
def test_traversal_varies_one_dimension_per_row(model):
    base = torch.tensor([0.3, -0.2, 0.5])
    values = torch.tensor([-1.0, 0.0, 2.0])
    rows = latent.traversal(model, 4, base=base, values=values)
    assert rows.shape == (3, 3, 64)
    for j in range(3):
        for i, v in enumerate(values):
            z = base.clone()
            z[j] = v
            assert torch.allclose(rows[j, i], latent.decode_style(model, 4, z))
    with pytest.raises(ValueError, match="base must have 3"):
        latent.traversal(model, 4, base=torch.zeros(2))
    with pytest.raises(ValueError, match="y must lie"):
        latent.traversal(model, 10)


def test_tile_images_and_png_bytes():
    images = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4) / 24
    canvas = plots.tile_images(images, (2, 2), pad=1)
    assert canvas.shape == (2 * 3 + 1, 3 * 3 + 1)
    assert np.array_equal(canvas[4:6, 7:9], images[1, 2].reshape(2, 2))     # row 1, column 2
    assert canvas[0].sum() == 0 and canvas[:, 3].sum() == 0                  # blank separators
    png = plots.png_bytes(canvas, scale=3)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread
    import io
    assert imread(io.BytesIO(png)).shape[:2] == (21, 30)
    with pytest.raises(ValueError, match="shape"):
        plots.tile_images(images, (3, 3))
    with pytest.raises(ValueError, match="scale"):
        plots.png_bytes(canvas, scale=0)


def test_live_training_figure_draws_each_series_and_updates_its_lines_in_place():
    history = [{"epoch": 1, "step": 2, "test_accuracy": 0.5, "test_elbo": -200.0},
               {"epoch": 2, "step": 3, "test_accuracy": 0.7, "test_elbo": -150.0}]
    first = widgets.LiveRun(TrainConfig(), [1, 2, 3], [300.0, 250.0, 240.0], history, "α=50, M=100")
    live = plots.LiveTrainingFigure()
    fig = live.update([first])
    loss_ax, acc_ax, elbo_ax = fig.axes
    ends, = loss_ax.collections                                  # the epoch ends, where the loss dips
    assert [segment[0][0] for segment in ends.get_segments()] == [2, 3]
    assert "epoch ends" in loss_ax.get_xlabel()
    assert list(loss_ax.lines[0].get_ydata()) == [300.0, 250.0, 240.0]
    assert list(acc_ax.lines[0].get_ydata()) == [0.5, 0.7]
    assert list(elbo_ax.lines[0].get_xdata()) == [1, 2]
    assert plots.figure_png(fig)[:4] == b"\x89PNG"
    loss_line = loss_ax.lines[0]
    first.steps.append(4), first.losses.append(230.0)
    second = widgets.LiveRun(TrainConfig(), [1], [310.0], [], "α=0.1, M=100")
    assert live.update([first, second]) is fig
    assert loss_ax.lines[0] is loss_line and list(loss_line.get_ydata())[-1] == 230.0     # moved, not redrawn
    assert [line.get_label() for line in loss_ax.lines] == ["α=50, M=100", "α=0.1, M=100"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["α=50, M=100", "α=0.1, M=100"]
    live.update([second])                                       # the first run removed: its lines go
    assert [list(line.get_ydata()) for line in loss_ax.lines] == [[310.0]] and len(acc_ax.lines) == 1
    live.update([])
    assert not loss_ax.lines and not fig.legends and plots.figure_png(fig)[:4] == b"\x89PNG"


def test_confusion_figure_shows_every_nonzero_count_and_the_accuracy():
    confusion = np.array([[5, 1, 0], [0, 3, 0], [2, 0, 4]])
    fig = plots.confusion_figure(confusion)
    (ax,) = fig.axes
    np.testing.assert_array_equal(ax.images[0].get_array(), confusion)
    assert sorted(t.get_text() for t in ax.texts) == sorted(["5", "1", "3", "2", "4"])
    assert ax.get_title() == "accuracy 0.800 on 15 images"


def _readable_model(decoder_uses_y: bool) -> SSVAE:
    """A 3-pixel, 3-class model whose classifier reads the brightest pixel; its decoder either writes
    pixel y (uses the label) or always pixel 0 (ignores it)."""
    model = SSVAE(input_dim=3, hidden_dim=3, n_classes=3, style_dim=2)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        eye = torch.eye(3)
        model.hidden.weight.copy_(eye)
        model.label_head.weight.copy_(10 * eye)
        model.decoder_out.weight.copy_(20 * eye)
        if decoder_uses_y:
            model.decoder_in_label.weight.copy_(eye)
            model.decoder_out.bias.fill_(-10.0)
        else:
            model.decoder_out.bias.copy_(torch.tensor([5.0, -5.0, -5.0]))
    return model.eval()


def test_analogy_consistency_exact_cases():
    x = torch.eye(3)
    assert latent.analogy_consistency(_readable_model(True), x) == 1.0
    assert latent.analogy_consistency(_readable_model(False), x) == pytest.approx(1 / 3)


def test_protocol_panels_show_mean_std_and_every_seed():
    rows = [dict(status="ok", protocol=p, n_labelled=100, alpha=a, seed=s, accuracy=acc, elbo=-100.0,
                 best_single_dim_probe_above_chance=0.1, between_within_variance_ratio=0.2,
                 top_two_mi_gap_nats=0.0, whole_z_probe_accuracy=0.3, majority_baseline=0.11)
            for p, accs in (("thesis", (0.1, 0.7)), ("corrected", (0.6, 0.7))) for a in (0.1, 10.0)
            for s, acc in enumerate(accs)]
    fig = plots.protocol_panels(rows, "alpha")
    accuracy_ax = fig.axes[3]                                # SWEEP_PANELS order: elbo, accuracy, ...
    assert accuracy_ax.get_title().startswith("final test accuracy")
    means = {c.get_label(): list(c.lines[0].get_ydata()) for c in accuracy_ax.containers}
    assert means == {"corrected, M = 100": pytest.approx([0.65, 0.65]), "thesis, M = 100": pytest.approx([0.4, 0.4])}
    thesis = next(c for c in accuracy_ax.containers if c.get_label().startswith("thesis"))
    segments = thesis.lines[2][0].get_segments()             # the error bar of the first α
    assert segments[0][:, 1] == pytest.approx([0.4 - np.std([0.1, 0.7], ddof=1), 0.4 + np.std([0.1, 0.7], ddof=1)])
    from matplotlib.collections import PathCollection
    dots = [c for c in accuracy_ax.collections if isinstance(c, PathCollection)]
    assert sum(len(c.get_offsets()) for c in dots) == 8                 # 2 protocols x 2 alphas x 2 seeds
    fig.canvas.draw()                                                   # the legend lies beside every panel
    renderer = fig.canvas.get_renderer()
    legend, = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["corrected, M = 100", "thesis, M = 100"]
    assert all(legend.get_window_extent(renderer).x0 > ax.get_window_extent(renderer).x1 for ax in fig.axes)
    with pytest.raises(ValueError, match="x must be one of"):
        plots.protocol_panels(rows, "seed")


@pytest.mark.parametrize("rows", [1, 2, 10])
def test_an_image_grid_keeps_its_title_clear_of_the_first_row(rows):
    fig = plots.image_grid(torch.rand(rows, 8, 64), (8, 8), title="Samples from the prior: one row per digit y",
                           col_labels=list(range(8)))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert fig._suptitle.get_window_extent(renderer).y0 >= max(ax.get_tightbbox(renderer).y1 for ax in fig.axes)


def test_the_panel_with_diagnostics_plots_them_live(digits):
    panel = widgets.TrainingPanel(tiny(), dataset=digits, diagnostics=True)
    result = panel.train(blocking=True)
    assert all({"active_units", "mutual_information", "kl_per_dimension"} <= set(h) for h in result.history)
    figure = panel._figure.figure
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[-2:] == [title for _, title in plots.DIAGNOSTIC_PANELS]
    assert list(figure.axes[-2].lines[0].get_ydata()) == [h["active_units"] for h in result.history]
    plain = widgets.TrainingPanel(tiny(), dataset=digits)
    assert len(plain._figure.figure.axes) == 1 + len(plots.LIVE_PANELS) and plain.diagnostics is None


def test_settings_summary_compare_and_bars():
    rows = [dict(status="ok", sigma=s, accuracy=a) for s, accs in ((0.1, (0.8, 0.9)), (0.8, (0.5, 0.55))) for a in accs]
    rows.append(dict(status="failed", sigma=0.8, accuracy=0.99))            # failed runs do not count
    summary = plots.settings_summary(rows, ("sigma",), "accuracy")
    assert summary == {(0.1,): pytest.approx((0.85, np.std([0.8, 0.9], ddof=1), 2)),
                       (0.8,): pytest.approx((0.525, np.std([0.5, 0.55], ddof=1), 2))}
    assert plots.compare(summary[(0.8,)], summary[(0.1,)]) == "higher"
    assert plots.compare(summary[(0.1,)], summary[(0.8,)]) == "lower"
    assert plots.compare((0.5, 0.1, 3), (0.6, 0.1, 3)) == "within the spread"
    sizes = [dict(status="ok", size=b, accuracy=0.5) for b in (100, 16, 64)]
    assert list(plots.settings_summary(sizes, ("size",), "accuracy")) == [(16,), (64,), (100,)]   # by value
    by_name = plots.settings_summary(rows, lambda r: f"σ = {r['sigma']}", "accuracy")
    assert list(by_name) == ["σ = 0.1", "σ = 0.8"]
    fig = plots.summary_bars(by_name, title="t")
    bars = fig.axes[0].patches
    assert [b.get_height() for b in bars] == pytest.approx([0.85, 0.525])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["σ = 0.1\n(2 seeds)", "σ = 0.8\n(2 seeds)"]


def test_score_bars_draw_means_with_their_spread():
    table = {"a": {"MIG": (0.2, 0.05, 3), "SAP": (0.1, 0.02, 3)}, "b": {"MIG": 0.4, "SAP": 0.3}}
    fig = plots.score_bars(table, "t")
    ax = fig.axes[0]
    assert [round(b.get_height(), 6) for b in ax.patches] == [0.2, 0.1, 0.4, 0.3]
    caps = [c for c in ax.containers if hasattr(c, "has_yerr") and c.has_yerr]
    assert len(caps) == 1                                  # error bars for the run given as (mean, std, n) only
    segments = caps[0].lines[2][0].get_segments()
    assert [round(s[1][1] - s[0][1], 6) for s in segments] == [0.1, 0.04]   # ± one standard deviation
