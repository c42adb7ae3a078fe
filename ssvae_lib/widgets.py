"""Thin ipywidgets panels for the live notebooks 04-06.

Every callback is one call into the library (``train.train``, ``latent.*``, ``plots.*``). What a panel
adds is only wiring: which slider feeds which argument, a background thread so that training never
freezes the notebook, and in-place redraws (an ``ipywidgets.Image`` whose PNG is replaced, so outputs
never pile up). Show a panel by making it the last expression of a cell; drive it from code the same
way a user would (``panel.alpha.value = 10``, ``panel.train_button.click()``, ``panel.train(blocking=True)``),
which is how the tests and headless notebook runs use it. The mechanics every panel shares (``set``,
``redraw``, the display hook, the guard against non-finite values, controls wide enough for their text)
are :mod:`ssvae_lib.panels`'.
"""
from __future__ import annotations

import dataclasses
import functools
import html
import math
import threading
import time

import ipywidgets as widgets
import torch

from . import data as data_mod
from . import latent, plots, settings
from .diagnostics import DiagnosticsCallback
from .panels import Panel, control
from . import train as train_mod
from .engine import upgrade_record
from .grid import THESIS_ALPHAS
from .train import TUNED, Callback, TrainConfig


def _image(css_class: str | None = None) -> widgets.Image:
    """A PNG image kept at its own size inside a flex box (an HBox would stretch it), with a CSS class."""
    image = widgets.Image(format="png", layout=widgets.Layout(align_self="flex-start"))
    if css_class:
        image.add_class(css_class)
    return image


#: Labelled-set sizes M offered by the training panel ("all": every training image is labelled).
LABELLED_SIZES = (100, 600, 1000, 3000, "all")
#: The α values of the training panel's slider: the thesis's grid (§5.2), the tuned α and a few between.
ALPHA_CHOICES = tuple(sorted({*THESIS_ALPHAS, 0.2, 2.0, 5.0, 20.0, 200.0, TUNED["alpha"], 1000.0}))
OBJECTIVE_CHOICES = (("M2: exact sum over y (Eq. 8, 9)", "m2"),
                     ("SSVAE: importance-sampled (Eq. 20)", "ssvae"))
LABELLING_CHOICES = (("fixed labelled set", "fixed"), ("thesis: batch-keyed", "thesis"))
CORRUPTION_PROTOCOL_CHOICES = (("fixed: drawn once", "fixed"), ("thesis: redrawn every epoch", "per_epoch"))
#: The TrainConfig fields the training panel has a control for (each control is the attribute of that name).
CONTROL_FIELDS = ("alpha", "beta", "n_labelled", "corruption_rate", "corruption_protocol", "objective",
                  "labelling", "epochs", "seed")
#: One click each: the seminar thesis's settings (TrainConfig's defaults) or the tuned ones (train.TUNED).
PRESETS = {"thesis defaults": {name: getattr(TrainConfig(), name) for name in TUNED}, "tuned": dict(TUNED)}
#: How a run's label names a setting (run_labels).
SETTING_NAMES = {"alpha": "α", "beta": "β", "n_labelled": "M", "corruption_rate": "corruption",
                 "corruption_protocol": "corruption protocol", "gamma": "γ", "augment_shift": "shift"}
STYLE_RANGE = 3.0            # style sliders run over [-3, 3], i.e. +-3 prior standard deviations
#: The share of the training time the live plot may take: after a redraw of d seconds the next waits
#: at least d / DRAW_SHARE seconds (and at least ``redraw_seconds``).
DRAW_SHARE = 0.05
#: The controls of the panels of notebook 05: descriptions 110 px wide, 420 px in all.
_compact = functools.partial(control, label_width="110px", width="420px")
_FIT = {"width": "auto"}             # a button as wide as its text (ipywidgets' default cuts long ones off)


def describe_device(device) -> str:
    """'cuda (NVIDIA H100 ...)' or 'cpu (no GPU found)': the device a run uses, in words."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return "cpu (no GPU found)" if not torch.cuda.is_available() else "cpu"


def offered_labelled_sizes(config: TrainConfig, dataset: data_mod.Dataset) -> list:
    """The sizes of ``LABELLED_SIZES`` that :func:`train.prepare_data` accepts for this run's training
    pool: a size is left out when the pool is smaller or a class is too rare for a class-balanced
    labelled set (see :func:`data.split_labelled`)."""
    sizes = []
    for m in LABELLED_SIZES:
        try:
            train_mod.prepare_data(dataclasses.replace(train_mod.fast_mode(config),
                                                       n_labelled=None if m == "all" else m), dataset)
        except ValueError:
            continue
        sizes.append(m)
    return sizes


def latest_scores(history: list) -> str:
    """'epoch 3: test accuracy 0.912, test ELBO -104.2 nats' for the last record of a history."""
    if not history:
        return "no epoch finished yet"
    last = upgrade_record(history[-1])
    return (f"epoch {last['epoch']}: {last['split']} accuracy {last['accuracy']:.3f}, "
            f"{last['split']} ELBO {last['elbo']:.1f} nats")


def _setting(name: str, value) -> str:
    if name == "n_labelled":
        value = "all" if value is None else value
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{SETTING_NAMES.get(name, name)}={shown}"


def run_labels(configs: list) -> list[str]:
    """A legend label per run: 'α=0.1, M=100', followed by every other setting of the panel (controls
    and presets) in which the runs differ ('α=50, M=100, seed=1')."""
    others = [name for name in (*CONTROL_FIELDS, *TUNED) if name not in ("alpha", "n_labelled")]
    differing = [name for name in dict.fromkeys(others) if len({getattr(c, name) for c in configs}) > 1]
    return [", ".join(_setting(name, getattr(c, name)) for name in ("alpha", "n_labelled", *differing))
            for c in configs]


# -- notebook 04: train live ---------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class LiveRun:
    """One run of the training panel as its plot shows it: the loss of every step and the per-epoch
    records (the history that :func:`train.train` fills), under ``label``."""

    config: TrainConfig
    steps: list = dataclasses.field(default_factory=list)
    losses: list = dataclasses.field(default_factory=list)
    history: list = dataclasses.field(default_factory=list)
    label: str = ""


class _LiveCallback(Callback):
    """Feeds a running :func:`train.train` into the panel: the loss of every step into ``run`` (cheap),
    the progress bar at most every 0.2 s, the plot after every epoch and in between as ``DRAW_SHARE``
    and ``redraw_seconds`` allow."""

    every_n_steps = 1

    def __init__(self, panel: "TrainingPanel", run: LiveRun, redraw_seconds: float):
        self.panel, self.run, self.redraw_seconds = panel, run, redraw_seconds
        self._next_draw = self._next_progress = 0.0

    def on_train_begin(self, state):
        self.run.history = state.history
        self.panel.progress.max = max(state.config.epochs * state.steps_per_epoch, 1)
        self._next_draw = time.monotonic() + self.redraw_seconds

    def on_step(self, state):
        self.run.steps.append(state.step)
        self.run.losses.append(state.loss)
        now = time.monotonic()
        if now >= self._next_progress:
            self._show_progress(state)
            self._next_progress = now + 0.2
        if now >= self._next_draw:
            self.redraw()

    def on_epoch_end(self, state):
        self._show_progress(state)
        self.redraw()
        self.panel.status.value = html.escape(f"training… {latest_scores(state.history)}")

    def on_train_end(self, state):
        self._show_progress(state)

    def _show_progress(self, state):
        self.panel.progress.value = min(state.step, self.panel.progress.max)

    def redraw(self):
        started = time.monotonic()
        self.panel.redraw()
        took = time.monotonic() - started
        self._next_draw = time.monotonic() + max(self.redraw_seconds, took / DRAW_SHARE)


class TrainingPanel(Panel):
    """Train an SSVAE live (notebook 04): α, labelled-set size M, label corruption rate and protocol,
    objective, labelling protocol, epochs and seed; the presets "thesis defaults" and "tuned"
    (:data:`PRESETS`); Train, Stop and Clear buttons; a progress bar; the curves of every run since the
    last Clear, one colour per run, labelled by its settings (:func:`run_labels`); the device and the
    dataset's provenance.

    ``config`` supplies every field the panel has no control for (architecture, batch sizes, ...; a
    preset sets γ, the learning rate and the shift of the labelled images too); ``dataset`` defaults to
    ``load_dataset(config.dataset)``. Training runs in a background thread; the finished
    :class:`train.TrainResult` is ``panel.result``, the plotted runs are ``panel.runs``."""

    def __init__(self, config: TrainConfig | None = None, dataset: data_mod.Dataset | None = None,
                 redraw_seconds: float = 1.0, diagnostics: bool = False):
        self.base = config if config is not None else TrainConfig()
        self.dataset = dataset if dataset is not None else data_mod.load_dataset(self.base.dataset,
                                                                                 root=self.base.data_root)
        self.redraw_seconds = redraw_seconds
        self.result: train_mod.TrainResult | None = None
        self.error: BaseException | None = None
        self.runs: list[LiveRun] = []
        self.live: _LiveCallback | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        # diagnostics: the style code's health on 500 test images after every epoch (notebook 08)
        self.diagnostics = DiagnosticsCallback(self.dataset.x_test[:500]) if diagnostics else None
        self._figure = plots.LiveTrainingFigure((15, 2.8), plots.LIVE_PANELS + plots.DIAGNOSTIC_PANELS) \
            if diagnostics else plots.LiveTrainingFigure()
        self._drawing = threading.Lock()          # the training thread and the notebook both redraw

        sizes = offered_labelled_sizes(self.base, self.dataset)
        start_m = "all" if self.base.n_labelled is None else self.base.n_labelled
        if start_m not in sizes:
            sizes.insert(0, start_m)
        b = self.base
        alphas = sorted({*ALPHA_CHOICES, b.alpha})
        # a slider of the values themselves: every value it shows is exact, and fully left is 0.1
        self.alpha = control(widgets.SelectionSlider, "α (alpha)", options=[(f"{a:g}", a) for a in alphas],
                             value=b.alpha)
        self.beta = control(widgets.FloatSlider, "β (style KL weight)", value=b.beta, min=0,
                            max=max(16.0, b.beta), step=0.5)
        self.n_labelled = control(widgets.Dropdown, "labelled images M", options=[(str(m), m) for m in sizes],
                                  value=start_m)
        self.corruption_rate = control(widgets.FloatSlider, "label corruption rate", value=b.corruption_rate,
                                       min=0, max=1, step=0.01)
        self.corruption_protocol = control(widgets.Dropdown, "corruption protocol",
                                           options=CORRUPTION_PROTOCOL_CHOICES, value=b.corruption_protocol)
        self.objective = control(widgets.Dropdown, "objective", options=OBJECTIVE_CHOICES, value=b.objective)
        self.labelling = control(widgets.Dropdown, "labelling protocol", options=LABELLING_CHOICES,
                                 value=b.labelling)
        self.epochs = control(widgets.IntSlider, "epochs", value=b.epochs, min=1,
                              max=max(100, b.epochs, TUNED["epochs"]))
        self.seed = control(widgets.BoundedIntText, "seed", value=b.seed, min=0, max=2**31 - 1)
        self.preset_buttons = {name: widgets.Button(description=name, tooltip=_preset_text(name),
                                                    layout=widgets.Layout(width="140px")) for name in PRESETS}
        for name, button in self.preset_buttons.items():
            button.on_click(lambda _, name=name: self.apply_preset(name))
        self.preset_info = widgets.HTML()
        self.train_button = widgets.Button(description="Train", button_style="success", icon="play",
                                           tooltip="start training in the background")
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop",
                                          disabled=True, tooltip="stop after the current step")
        self.clear_button = widgets.Button(description="Clear", icon="eraser",
                                           tooltip="remove the curves of earlier runs from the plot")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="300px"))
        self.status = widgets.HTML("press <b>Train</b>")
        self.info = widgets.HTML(self._info_text())
        self.plot = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.plot.add_class("ssvae-live-plot")
        self.status.add_class("ssvae-status")
        self.train_button.on_click(lambda _: self._train_from_button())
        self.stop_button.on_click(lambda _: self.stop())
        self.clear_button.on_click(lambda _: self.clear())
        controls = [getattr(self, name) for name in CONTROL_FIELDS]
        self.watch(*controls, redraw=False)        # the controls describe the next run: nothing to redraw
        self._show_preset()
        self.widget = widgets.VBox([self.info,
                                    widgets.HBox([widgets.Label("presets:"), *self.preset_buttons.values(),
                                                  self.preset_info]),
                                    widgets.VBox(controls),
                                    widgets.HBox([self.train_button, self.stop_button, self.clear_button,
                                                  self.progress]),
                                    self.status, self.plot])

    def _info_text(self) -> str:
        device = describe_device(train_mod.resolve_device(self.base.device))
        fast = ("<br><b>fast mode</b> (SSVAE_FAST): at most 2 epochs on 2,000 training images"
                if settings.FAST else "")
        return (f"<b>device:</b> {html.escape(device)}<br><b>data:</b> "
                f"{html.escape(self.dataset.provenance)}{fast}")

    def _show_preset(self) -> None:
        b = self.base
        self.preset_info.value = html.escape(f"without a control: γ = {b.gamma:g}, learning rate {b.lr:g}, "
                                             f"labelled images shifted by up to {b.augment_shift} px")

    # -- what the controls mean ---------------------------------------------------------------------
    def config(self) -> TrainConfig:
        """The run the controls describe (validated by :class:`train.TrainConfig`)."""
        values = {name: getattr(self, name).value for name in CONTROL_FIELDS}
        if values["n_labelled"] == "all":
            values["n_labelled"] = None
        return dataclasses.replace(self.base, **values)

    def apply_preset(self, name: str) -> None:
        """Set the controls and the settings without a control to the preset ``name`` of :data:`PRESETS`."""
        values = PRESETS[name]
        self.base = dataclasses.replace(self.base, **{k: v for k, v in values.items() if k not in CONTROL_FIELDS})
        for field, value in values.items():
            if field in CONTROL_FIELDS:
                getattr(self, field).value = value
        self._show_preset()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def history(self) -> list:
        """Per-epoch records of the current (or last) run, growing while it trains."""
        return list(self.live.run.history) if self.live is not None else []

    # -- actions ------------------------------------------------------------------------------------
    def train(self, blocking: bool = False) -> train_mod.TrainResult | None:
        """Start training the configured model in a background thread; its curves join those of the
        earlier runs on the plot. ``blocking=True`` waits for it, re-raises an error of the run and
        returns the result."""
        if self.running:
            raise RuntimeError("a run is already training; press Stop (or call panel.stop()) first")
        config = self.config()
        self.result, self.error = None, None
        self._stop.clear()
        self.runs.append(LiveRun(config))
        self.live = _LiveCallback(self, self.runs[-1], self.redraw_seconds)
        self.progress.value, self.progress.bar_style = 0, ""
        self.train_button.disabled, self.stop_button.disabled = True, False
        self.status.value = "training… (the notebook stays usable; <b>Stop</b> ends the run)"
        self._thread = threading.Thread(target=self._run, args=(config, torch.get_num_threads()), daemon=True,
                                        name="ssvae-train")
        self._thread.start()
        return self.wait() if blocking else None

    def stop(self) -> None:
        """Ask the running training to end after its current step (the model so far is kept)."""
        self._stop.set()

    def clear(self) -> None:
        """Remove the curves of the finished runs from the plot (a run in progress stays)."""
        self.runs = self.runs[-1:] if self.running else []
        self.redraw()

    def wait(self, timeout: float | None = None) -> train_mod.TrainResult | None:
        """Wait for the run to finish; re-raise its error; return ``panel.result``."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"training still running after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.result

    def render(self) -> None:
        """Draw every run of ``self.runs`` into the plot (:class:`plots.LiveTrainingFigure`)."""
        with self._drawing:
            for run, label in zip(self.runs, run_labels([run.config for run in self.runs])):
                run.label = label
            self.plot.value = plots.figure_png(self._figure.update(list(self.runs)))

    def _train_from_button(self) -> None:
        try:
            self.train()
        except (ValueError, RuntimeError) as err:   # a bad combination of controls: say so, don't crash
            self.status.value = f"<span style='color:#b00'>cannot train: {html.escape(str(err))}</span>"

    def _run(self, config: TrainConfig, threads: int) -> None:
        torch.set_num_threads(threads)       # as the notebook's thread: else MKL picks its own count here
        started = time.perf_counter()
        try:
            callbacks = [self.live] if self.diagnostics is None else [self.diagnostics, self.live]
            self.result = train_mod.train(config, callbacks, stop=self._stop, dataset=self.dataset,
                                          progress=False)
        except Exception as err:  # noqa: BLE001 - shown in the panel and re-raised by wait()
            self.error = err
            if not self.live.run.steps and self.live.run in self.runs:     # nothing to plot
                self.runs.remove(self.live.run)
            self.status.value = f"<span style='color:#b00'>error: {html.escape(repr(err))}</span>"
            self.progress.bar_style = "danger"
        else:
            if self.result.stopped_early:      # else the last epoch's redraw already shows every step
                self.redraw()
            ended = "stopped early" if self.result.stopped_early else "finished"
            self.status.value = html.escape(f"{ended} after {time.perf_counter() - started:.0f} s — "
                                            f"{latest_scores(self.result.history)}; the model is in panel.result")
            self.progress.bar_style = "warning" if self.result.stopped_early else "success"
        finally:
            self.train_button.disabled, self.stop_button.disabled = False, True


def _preset_text(name: str) -> str:
    return f"{name}: " + ", ".join(_setting(k, v) for k, v in PRESETS[name].items())


# -- notebook 05: what the model learned -------------------------------------------------------------
def _png(images, image_shape, scale: int) -> bytes:
    return plots.png_bytes(plots.tile_images(images, image_shape), scale)


class StylePanel(Panel):
    """Style exploration (the paper's Figure 2b), live: fix the digit y, move one slider per style
    dimension z_j and see :func:`latent.decode_style`; below, a grid over two chosen dimensions
    (:func:`latent.style_grid`) around the current z, its rows and columns labelled with their values.
    With ``images``, a slider picks a test image whose inferred style (and predicted digit) the sliders
    take over. ``y`` and ``z`` (default 0) are where the sliders start; a z slider holds values on its
    steps of 0.01 (``+.2f``, as its readout shows them)."""

    def __init__(self, model, image_shape, images: torch.Tensor | None = None, y: int = 0, z=None,
                 grid_values=None, scale: int = 6, seed: int = 0):
        self.model, self.image_shape, self.images, self.scale = model, tuple(image_shape), images, scale
        self.grid_values = torch.linspace(-2, 2, 7) if grid_values is None else \
            torch.as_tensor(grid_values, dtype=torch.float32)
        self._generator = torch.Generator().manual_seed(seed)
        z = [0.0] * model.style_dim if z is None else torch.as_tensor(z, dtype=torch.float32).tolist()
        if len(z) != model.style_dim or not all(map(math.isfinite, z)):
            raise ValueError(f"z must be {model.style_dim} finite numbers (the model's style_dim), got {z}")
        dims = [(f"z{j}", j) for j in range(model.style_dim)]
        self.digit = _compact(widgets.IntSlider, "digit y", value=y, min=0, max=model.n_classes - 1)
        self.z = [_compact(widgets.FloatSlider, f"z{j}", value=z[j], min=-STYLE_RANGE, max=STYLE_RANGE, step=0.01,
                           readout_format="+.2f") for j in range(model.style_dim)]
        self.reset_button = widgets.Button(description="z = 0 (prior mean)", icon="undo", layout=_FIT)
        self.sample_button = widgets.Button(description="random z ~ N(0, I)", icon="random", layout=_FIT)
        self.grid_rows = _compact(widgets.Dropdown, "grid rows", options=dims, value=0, width="220px")
        self.grid_cols = _compact(widgets.Dropdown, "grid columns", options=dims, value=min(1, model.style_dim - 1),
                                  width="220px")
        self.image, self.grid = _image("ssvae-style-image"), _image("ssvae-style-grid")
        self.grid_figure = None
        self.grid_caption = widgets.HTML()
        self.watch(self.digit, *self.z, self.grid_rows, self.grid_cols)
        self.reset_button.on_click(lambda _: self.set_style(torch.zeros(model.style_dim)))
        self.sample_button.on_click(lambda _: self.set_style(torch.randn(model.style_dim,
                                                                         generator=self._generator)))
        source = []
        if images is not None:
            self.source = _compact(widgets.IntSlider, "test image #", value=0, min=0, max=len(images) - 1)
            self.copy_button = widgets.Button(description="take its style and digit", icon="copy", layout=_FIT)
            self.source_image = _image()
            self.source.observe(lambda _: self._show_source(), names="value")
            self.copy_button.on_click(lambda _: self.copy_style_from(self.source.value))
            self._show_source()
            source = [widgets.HBox([self.source, self.copy_button, self.source_image])]
        sliders = widgets.VBox([self.digit, *self.z, widgets.HBox([self.reset_button, self.sample_button])])
        grid = widgets.VBox([widgets.HBox([self.grid_rows, self.grid_cols]), self.grid_caption, self.grid])
        self.widget = widgets.VBox([*source, widgets.HBox([sliders, self.image]), grid])
        self.redraw()

    def style(self) -> torch.Tensor:
        """The style vector z the sliders show."""
        return torch.tensor([s.value for s in self.z], dtype=torch.float32)

    def set_style(self, z, digit: int | None = None) -> None:
        """Move all style sliders (and the digit) at once and redraw once; values outside +-3 are
        clipped by the sliders."""
        z = torch.as_tensor(z, dtype=torch.float32)
        if not torch.isfinite(z).all():
            raise ValueError(f"StylePanel.z must be finite numbers, got {z.tolist()}")
        with self.hold():
            if digit is not None:
                self.digit.value = int(digit)
            for slider, value in zip(self.z, z.tolist()):
                slider.value = value
        self.redraw()

    def copy_style_from(self, index: int) -> None:
        """Take the inferred style z and the predicted digit of test image ``index``."""
        x = self.images[index:index + 1].to(self.model.decoder_out.weight.device)
        self.set_style(self.model.infer_style(x)[0].cpu(), digit=int(self.model.classify(x).argmax(-1)))

    def _show_source(self) -> None:
        self.source_image.value = _png(self.images[self.source.value][None], self.image_shape, self.scale // 2 or 1)

    def render(self) -> None:
        y, z = int(self.digit.value), self.style()
        self.image.value = _png(latent.decode_style(self.model, y, z)[None], self.image_shape, self.scale)
        rows, cols = int(self.grid_rows.value), int(self.grid_cols.value)
        if rows == cols:
            self.grid_caption.value = "choose two <i>different</i> dimensions for the grid"
            return
        grid = latent.style_grid(self.model, y, dims=(rows, cols), values=self.grid_values, base=z)
        labels = [f"{round(v, 1) + 0.0:+.1f}" for v in self.grid_values.tolist()]     # + 0.0: no "-0.0"
        self.grid_figure = plots.tile_figure(grid, self.image_shape, labels, labels, xlabel=f"z{cols}",
                                             ylabel=f"z{rows}", zoom=max(self.scale // 3, 1), fig=self.grid_figure)
        self.grid.value = plots.figure_png(self.grid_figure)
        self.grid_caption.value = (f"digit y = {y}; rows: z{rows}, columns: z{cols} as labelled; "
                                   f"other dimensions as the sliders")


class InterpolationPanel(Panel):
    """Walk in style space between two test images with the digit fixed (:func:`latent.interpolate`);
    the strip shows image a, the decoded path, image b. ``first``, ``second`` and ``y`` are where the
    sliders start."""

    def __init__(self, model, images: torch.Tensor, image_shape, steps: int = 8, y: int = 0,
                 scale: int = 3, first: int = 0, second: int = 1):
        if len(images) < 2:
            raise ValueError(f"need at least two images to interpolate between, got {len(images)}")
        self.model, self.images, self.image_shape = model, images, tuple(image_shape)
        self.steps, self.scale = steps, scale
        self.first = _compact(widgets.IntSlider, "test image a", value=first, min=0, max=len(images) - 1)
        self.second = _compact(widgets.IntSlider, "test image b", value=second, min=0, max=len(images) - 1)
        self.digit = _compact(widgets.IntSlider, "digit y", value=y, min=0, max=model.n_classes - 1)
        self.image = _image("ssvae-interpolation")
        self.watch(self.first, self.second, self.digit)
        self.widget = widgets.VBox([self.first, self.second, self.digit, self.image])
        self.redraw()

    def strip(self, y: int | None = None) -> torch.Tensor:
        """[steps + 2, D]: image a, the decoded interpolation with digit ``y`` (default: the slider's),
        image b."""
        device = self.model.decoder_out.weight.device
        x_a, x_b = (self.images[i].to(device) for i in (self.first.value, self.second.value))
        path = latent.interpolate(self.model, x_a, x_b, int(self.digit.value if y is None else y), self.steps)
        return torch.cat([x_a[None], path, x_b[None]]).cpu()

    def render(self) -> None:
        self.image.value = _png(self.strip(), self.image_shape, self.scale)
