"""Thin ipywidgets panels for the live notebooks 04-06.

Every callback is one call into the library (``train.train``, ``latent.*``, ``plots.*``). What a panel
adds is only wiring: which slider feeds which argument, a background thread so that training never
freezes the notebook, and in-place redraws (an ``ipywidgets.Image`` whose PNG is replaced, so outputs
never pile up). Show a panel by making it the last expression of a cell; drive it from code the same
way a user would (``panel.alpha.value = 10``, ``panel.train_button.click()``, ``panel.train(blocking=True)``),
which is how the tests and headless notebook runs use it. The mechanics every panel shares (``set``,
``redraw``, the display hook, the guard against non-finite values) are :class:`ssvae_lib.panels.Panel`'s.
"""
from __future__ import annotations

import dataclasses
import html
import threading
import time

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure

from . import data as data_mod
from . import latent, plots, settings
from .panels import Panel
from . import train as train_mod
from .engine import upgrade_record
from .train import Callback, TrainConfig


def _image(css_class: str | None = None) -> widgets.Image:
    """A PNG image kept at its own size inside a flex box (an HBox would stretch it), with a CSS class."""
    image = widgets.Image(format="png", layout=widgets.Layout(align_self="flex-start"))
    if css_class:
        image.add_class(css_class)
    return image


def _wide(kind, description: str, **options):
    """A control of the training panel, its description 150 px wide."""
    return kind(description=description, style=_WIDE, **options)


#: Labelled-set sizes M offered by the training panel ("all": every training image is labelled).
LABELLED_SIZES = (100, 600, 1000, 3000, "all")
OBJECTIVE_CHOICES = (("M2: exact sum over y (Eq. 8, 9)", "m2"),
                     ("SSVAE: importance-sampled (Eq. 20)", "ssvae"))
LABELLING_CHOICES = (("fixed labelled set", "fixed"), ("thesis: batch-keyed", "thesis"))
CORRUPTION_PROTOCOL_CHOICES = (("fixed: drawn once", "fixed"), ("thesis: redrawn every epoch", "per_epoch"))
#: The TrainConfig fields the training panel has a control for (each control is the attribute of that name).
CONTROL_FIELDS = ("alpha", "beta", "n_labelled", "corruption_rate", "corruption_protocol", "objective",
                  "labelling", "epochs", "seed")
STYLE_RANGE = 3.0            # style sliders run over [-3, 3], i.e. +-3 prior standard deviations
_WIDE = {"description_width": "150px"}


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


# -- notebook 04: train live ---------------------------------------------------------------------------
class _LiveCallback(Callback):
    """Feeds a running :func:`train.train` into the panel: progress every step, the plot at most every
    ``redraw_seconds`` and after every epoch."""

    every_n_steps = 1

    def __init__(self, panel: "TrainingPanel", redraw_seconds: float):
        self.panel, self.redraw_seconds = panel, redraw_seconds
        self.steps, self.losses, self.history, self._last_draw = [], [], [], 0.0

    def on_train_begin(self, state):
        self.history = state.history
        self.panel.progress.max = max(state.config.epochs * state.steps_per_epoch, 1)

    def on_step(self, state):
        self.steps.append(state.step)
        self.losses.append(state.loss)
        self.panel.progress.value = min(state.step, self.panel.progress.max)
        if time.monotonic() - self._last_draw >= self.redraw_seconds:
            self.redraw()

    def on_epoch_end(self, state):
        self.redraw()
        self.panel.status.value = html.escape(f"training… {latest_scores(state.history)}")

    def redraw(self):
        self._last_draw = time.monotonic()
        fig = Figure(figsize=(10, 2.6))   # not pyplot: this runs in the training thread
        self.panel.plot.value = plots.figure_png(plots.live_training_figure(self.steps, self.losses,
                                                                            list(self.history), fig))


class TrainingPanel(Panel):
    """Train an SSVAE live (notebook 04): α on a log scale, labelled-set size M, label corruption rate
    and protocol, objective, labelling protocol, epochs and seed; Train and Stop buttons; a progress
    bar; curves redrawn in place; the device and the dataset's provenance.

    ``config`` supplies every field the panel has no widget for (architecture, batch sizes, ...);
    ``dataset`` defaults to ``load_dataset(config.dataset)``. Training runs in a background thread;
    the finished :class:`train.TrainResult` is ``panel.result``."""

    def __init__(self, config: TrainConfig | None = None, dataset: data_mod.Dataset | None = None,
                 redraw_seconds: float = 1.0):
        self.base = config if config is not None else TrainConfig()
        self.dataset = dataset if dataset is not None else data_mod.load_dataset(self.base.dataset,
                                                                                 root=self.base.data_root)
        self.redraw_seconds = redraw_seconds
        self.result: train_mod.TrainResult | None = None
        self.error: BaseException | None = None
        self.live: _LiveCallback | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

        sizes = offered_labelled_sizes(self.base, self.dataset)
        start_m = "all" if self.base.n_labelled is None else self.base.n_labelled
        if start_m not in sizes:
            sizes.insert(0, start_m)
        b = self.base
        self.alpha = _wide(widgets.FloatLogSlider, "α (alpha)", value=b.alpha, base=10, min=-1, max=2, step=0.01,
                           readout_format=".3g")
        self.beta = _wide(widgets.FloatSlider, "β (style KL weight)", value=b.beta, min=0, max=max(16.0, b.beta),
                          step=0.5)
        self.n_labelled = _wide(widgets.Dropdown, "labelled images M", options=[(str(m), m) for m in sizes],
                                value=start_m)
        self.corruption_rate = _wide(widgets.FloatSlider, "label corruption rate", value=b.corruption_rate,
                                     min=0, max=1, step=0.01)
        self.corruption_protocol = _wide(widgets.Dropdown, "corruption protocol", options=CORRUPTION_PROTOCOL_CHOICES,
                                         value=b.corruption_protocol)
        self.objective = _wide(widgets.Dropdown, "objective", options=OBJECTIVE_CHOICES, value=b.objective)
        self.labelling = _wide(widgets.Dropdown, "labelling protocol", options=LABELLING_CHOICES, value=b.labelling)
        self.epochs = _wide(widgets.IntSlider, "epochs", value=b.epochs, min=1, max=max(40, b.epochs))
        self.seed = _wide(widgets.BoundedIntText, "seed", value=b.seed, min=0, max=2**31 - 1)
        self.train_button = widgets.Button(description="Train", button_style="success", icon="play",
                                           tooltip="start training in the background")
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop",
                                          disabled=True, tooltip="stop after the current step")
        self.progress = _wide(widgets.IntProgress, "progress", value=0, min=0, max=1)
        self.status = widgets.HTML("press <b>Train</b>")
        self.info = widgets.HTML(self._info_text())
        self.plot = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.plot.add_class("ssvae-live-plot")
        self.status.add_class("ssvae-status")
        self.train_button.on_click(lambda _: self._train_from_button())
        self.stop_button.on_click(lambda _: self.stop())
        controls = [getattr(self, name) for name in CONTROL_FIELDS]
        self.watch(*controls, redraw=False)        # the controls describe the next run: nothing to redraw
        self.widget = widgets.VBox([self.info, widgets.VBox(controls),
                                    widgets.HBox([self.train_button, self.stop_button, self.progress]),
                                    self.status, self.plot])

    def _info_text(self) -> str:
        device = describe_device(train_mod.resolve_device(self.base.device))
        fast = ("<br><b>fast mode</b> (SSVAE_FAST): at most 2 epochs on 2,000 training images"
                if settings.FAST else "")
        return (f"<b>device:</b> {html.escape(device)}<br><b>data:</b> "
                f"{html.escape(self.dataset.provenance)}{fast}")

    # -- what the controls mean ---------------------------------------------------------------------
    def config(self) -> TrainConfig:
        """The run the controls describe (validated by :class:`train.TrainConfig`)."""
        values = {name: getattr(self, name).value for name in CONTROL_FIELDS}
        if values["n_labelled"] == "all":
            values["n_labelled"] = None
        return dataclasses.replace(self.base, **values)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def history(self) -> list:
        """Per-epoch records of the current (or last) run, growing while it trains."""
        return list(self.live.history) if self.live is not None else []

    # -- actions ------------------------------------------------------------------------------------
    def train(self, blocking: bool = False) -> train_mod.TrainResult | None:
        """Start training the configured model in a background thread. ``blocking=True`` waits for it,
        re-raises an error of the run and returns the result."""
        if self.running:
            raise RuntimeError("a run is already training; press Stop (or call panel.stop()) first")
        config = self.config()
        self.result, self.error = None, None
        self._stop.clear()
        self.live = _LiveCallback(self, self.redraw_seconds)
        self.progress.value, self.progress.bar_style = 0, ""
        self.train_button.disabled, self.stop_button.disabled = True, False
        self.status.value = "training… (the notebook stays usable; <b>Stop</b> ends the run)"
        self._thread = threading.Thread(target=self._run, args=(config,), daemon=True, name="ssvae-train")
        self._thread.start()
        return self.wait() if blocking else None

    def stop(self) -> None:
        """Ask the running training to end after its current step (the model so far is kept)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> train_mod.TrainResult | None:
        """Wait for the run to finish; re-raise its error; return ``panel.result``."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"training still running after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.result

    def _train_from_button(self) -> None:
        try:
            self.train()
        except (ValueError, RuntimeError) as err:   # a bad combination of controls: say so, don't crash
            self.status.value = f"<span style='color:#b00'>cannot train: {html.escape(str(err))}</span>"

    def _run(self, config: TrainConfig) -> None:
        started = time.perf_counter()
        try:
            self.result = train_mod.train(config, [self.live], stop=self._stop, dataset=self.dataset,
                                          progress=False)
        except Exception as err:  # noqa: BLE001 - shown in the panel and re-raised by wait()
            self.error = err
            self.status.value = f"<span style='color:#b00'>error: {html.escape(repr(err))}</span>"
            self.progress.bar_style = "danger"
        else:
            self.live.redraw()
            ended = "stopped early" if self.result.stopped_early else "finished"
            self.status.value = html.escape(f"{ended} after {time.perf_counter() - started:.0f} s — "
                                            f"{latest_scores(self.result.history)}; the model is in panel.result")
            self.progress.bar_style = "warning" if self.result.stopped_early else "success"
        finally:
            self.train_button.disabled, self.stop_button.disabled = False, True


# -- notebook 05: what the model learned -------------------------------------------------------------
def _png(images, image_shape, scale: int) -> bytes:
    return plots.png_bytes(plots.tile_images(images, image_shape), scale)


class StylePanel(Panel):
    """Style exploration (the paper's Figure 2b), live: fix the digit y, move one slider per style
    dimension z_j and see :func:`latent.decode_style`; below, a grid over two chosen dimensions
    (:func:`latent.style_grid`) around the current z. With ``images``, a slider picks a test image
    whose inferred style (and predicted digit) the sliders take over."""

    def __init__(self, model, image_shape, images: torch.Tensor | None = None, y: int = 0,
                 grid_values=None, scale: int = 6, seed: int = 0):
        self.model, self.image_shape, self.images, self.scale = model, tuple(image_shape), images, scale
        self.grid_values = torch.linspace(-2, 2, 7) if grid_values is None else \
            torch.as_tensor(grid_values, dtype=torch.float32)
        self._generator = torch.Generator().manual_seed(seed)
        dims = [(f"z{j}", j) for j in range(model.style_dim)]
        self.digit = widgets.IntSlider(value=y, min=0, max=model.n_classes - 1, description="digit y")
        self.z = [widgets.FloatSlider(value=0.0, min=-STYLE_RANGE, max=STYLE_RANGE, step=0.05,
                                      description=f"z{j}", readout_format="+.2f") for j in range(model.style_dim)]
        self.reset_button = widgets.Button(description="z = 0 (prior mean)", icon="undo")
        self.sample_button = widgets.Button(description="random z ~ N(0, I)", icon="random")
        self.grid_rows = widgets.Dropdown(options=dims, value=0, description="grid rows")
        self.grid_cols = widgets.Dropdown(options=dims, value=min(1, model.style_dim - 1),
                                          description="grid columns")
        self.image, self.grid = _image("ssvae-style-image"), _image("ssvae-style-grid")
        self.grid_caption = widgets.HTML()
        self.watch(self.digit, *self.z, self.grid_rows, self.grid_cols)
        self.reset_button.on_click(lambda _: self.set_style(torch.zeros(model.style_dim)))
        self.sample_button.on_click(lambda _: self.set_style(torch.randn(model.style_dim,
                                                                         generator=self._generator)))
        source = []
        if images is not None:
            self.source = widgets.IntSlider(value=0, min=0, max=len(images) - 1, description="test image #")
            self.copy_button = widgets.Button(description="take its style and digit", icon="copy")
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
        self.grid.value = _png(grid, self.image_shape, max(self.scale // 3, 1))
        lo, hi = float(self.grid_values[0]), float(self.grid_values[-1])
        self.grid_caption.value = (f"digit y = {y}; rows: z{rows} from {lo:+.1f} to {hi:+.1f}; columns: "
                                   f"z{cols} from {lo:+.1f} to {hi:+.1f}; other dimensions as the sliders")


class InterpolationPanel(Panel):
    """Walk in style space between two test images with the digit fixed (:func:`latent.interpolate`);
    the strip shows image a, the decoded path, image b."""

    def __init__(self, model, images: torch.Tensor, image_shape, steps: int = 8, y: int = 0,
                 scale: int = 3):
        if len(images) < 2:
            raise ValueError(f"need at least two images to interpolate between, got {len(images)}")
        self.model, self.images, self.image_shape = model, images, tuple(image_shape)
        self.steps, self.scale = steps, scale
        self.first = widgets.IntSlider(value=0, min=0, max=len(images) - 1, description="test image a")
        self.second = widgets.IntSlider(value=1, min=0, max=len(images) - 1, description="test image b")
        self.digit = widgets.IntSlider(value=y, min=0, max=model.n_classes - 1, description="digit y")
        self.image = _image("ssvae-interpolation")
        self.watch(self.first, self.second, self.digit)
        self.widget = widgets.VBox([widgets.HBox([self.first, self.second, self.digit]), self.image])
        self.redraw()

    def strip(self) -> torch.Tensor:
        """[steps + 2, D]: image a, the decoded interpolation, image b."""
        device = self.model.decoder_out.weight.device
        x_a, x_b = (self.images[i].to(device) for i in (self.first.value, self.second.value))
        path = latent.interpolate(self.model, x_a, x_b, int(self.digit.value), self.steps)
        return torch.cat([x_a[None], path, x_b[None]]).cpu()

    def render(self) -> None:
        self.image.value = _png(self.strip(), self.image_shape, self.scale)
