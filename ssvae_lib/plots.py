"""Figures (matplotlib), each returned as a ``Figure``; :func:`save_figure` writes PNG and PDF.

Training curves, latent-space grids, the live panels' pictures (notebooks 04-06), the sweeps of the
seminar thesis and the disentanglement scores (notebook 07); the figures of the derivation notebooks
01-03 are in :mod:`ssvae_lib.derivation_plots`. Every panel is styled by :func:`decorate`."""
from __future__ import annotations

import csv
import io
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.image import imsave

from . import settings
from .checks import check_choice, check_int
from .engine import upgrade_record

HISTORY_PANELS = (("train_loss", "training loss (−Eq. 10 per image)"), ("accuracy", "accuracy"),
                  ("elbo", "test ELBO (nats)"), ("log_likelihood", "test IWAE bound (nats)"))


def new_figure(fig, figsize, pyplot: bool = False):
    """``fig`` cleared, or a new figure: a pyplot one with ``pyplot`` (shown by a notebook), else a bare
    ``Figure`` (no pyplot state, so a redrawn panel never piles up figures; drawable from a thread)."""
    if fig is None:
        return plt.figure(figsize=figsize) if pyplot else Figure(figsize=figsize)
    fig.clear()
    return fig


def decorate(ax, title: str | None = None, *, legend: float | None = None, grid: str | None = "major",
             **props):
    """The styling every panel shares: ``ax.set(**props)`` (labels, scales, limits; ``xscale="log2"``
    for a base-2 log axis), the title at font size 9, a legend at font size ``legend`` (none when None)
    and a light grid on the ``grid`` ticks ("major", "both"; none when None)."""
    if props.get("xscale") == "log2":
        del props["xscale"]
        ax.set_xscale("log", base=2)
    ax.set(**props)
    if title is not None:
        ax.set_title(title, fontsize=9)
    if legend:
        ax.legend(fontsize=legend)
    if grid:
        ax.grid(alpha=0.3, which=grid)


def as_array(values, dtype=None) -> np.ndarray:
    """A tensor (detached, on the CPU) or array-like as a numpy array."""
    return np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=dtype)


def _series(history: list, key: str):
    """Values of ``key`` per epoch (records of any age: ``engine.upgrade_record``)."""
    history = [upgrade_record(r) for r in history]
    if not history or key not in history[0]:
        return [], []
    return [r["epoch"] for r in history], [r[key] for r in history]


def training_curves(histories, fig=None):
    """One panel per tracked quantity; ``histories`` is a history or a dict label -> history."""
    if isinstance(histories, list):
        histories = {"": histories}
    fig = new_figure(fig, (11, 2.6), pyplot=True)
    axes = fig.subplots(1, len(HISTORY_PANELS))
    for ax, (key, title) in zip(axes, HISTORY_PANELS):
        for label, history in histories.items():
            ax.plot(*_series(history, key), marker="o", ms=3, label=label or None)
        decorate(ax, title, xlabel="epoch")
    if any(histories):
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def image_grid(images, image_shape, row_labels=None, col_labels=None, title=None, cell=0.55):
    """Show ``images`` of shape [rows, cols, D] (or [n, D] as one row) as a grid of greyscale tiles."""
    images = as_array(images)
    if images.ndim == 2:
        images = images[None]
    rows, cols = images.shape[:2]
    height = rows * cell + 0.5 + (0.3 if title else 0)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell + 0.6, height), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(images[r, c].reshape(image_shape), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0 and col_labels is not None:
                ax.set_title(str(col_labels[c]), fontsize=8)
            if c == 0 and row_labels is not None:
                ax.set_ylabel(str(row_labels[r]), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 1 - 0.3 / height) if title else None)   # the title's own room
    return fig


def analogy_figure(originals, analogies, image_shape):
    """Left column: the test images; then the same style decoded with y = 0..C-1 (paper Fig. 2a)."""
    grid = np.concatenate([as_array(originals)[:, None], as_array(analogies)], axis=1)
    cols = ["input"] + [str(k) for k in range(analogies.shape[1])]
    return image_grid(grid, image_shape, col_labels=cols,
                      title="Analogies: style z from the input, label y varied")


def style_figure(grid, image_shape, y, dims, values):
    """A style grid from :func:`ssvae_lib.latent.style_grid` with its axis values (paper Fig. 2b)."""
    labels = [f"{v:+.1f}" for v in np.asarray(values)]
    return image_grid(grid, image_shape, row_labels=[f"z{dims[0]}={v}" for v in labels],
                      col_labels=[f"z{dims[1]}={v}" for v in labels],
                      title=f"Style exploration: y = {y}, z{dims[0]} and z{dims[1]} varied")


def confusion_figure(confusion, title: str | None = None, fig=None):
    """A confusion matrix (``metrics.confusion_matrix``) as a heat map with its counts: rows are the true
    digits, columns the predicted ones; the diagonal is what the classifier gets right."""
    c = np.asarray(confusion)
    ax = new_figure(fig, (4.6, 4.0)).subplots()
    ax.imshow(c, cmap="Blues")
    for (i, j), count in np.ndenumerate(c):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                    color="white" if count > c.max() / 2 else "black")
    accuracy = np.trace(c) / max(c.sum(), 1)
    decorate(ax, title or f"accuracy {accuracy:.3f} on {c.sum()} images", grid=None, xticks=range(c.shape[1]),
             yticks=range(c.shape[0]), xlabel="predicted digit", ylabel="true digit")
    ax.figure.tight_layout()
    return ax.figure


def save_figure(fig, name: str, directory: str | Path | None = None) -> list[Path]:
    """Write ``fig`` as ``directory/name.png`` and ``.pdf`` (default: ``settings.figures_dir()``);
    returns the paths."""
    directory = Path(directory) if directory is not None else settings.figures_dir()
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{name}.{ext}" for ext in ("png", "pdf")]
    for path in paths:
        metadata = {"CreationDate": None} if path.suffix == ".pdf" else {}   # reproducible files
        fig.savefig(path, dpi=130, bbox_inches="tight", metadata=metadata)
    return paths


# -- live panels (notebooks 04-06): fast PNG rendering for ipywidgets.Image --------------------------------
def tile_images(images, image_shape, pad: int = 1) -> np.ndarray:
    """Lay out ``images`` ``[rows, cols, D]`` (or ``[n, D]`` as one row) as one 2-d array, tiles separated
    by ``pad`` blank pixels; much faster than :func:`image_grid` when a slider redraws it."""
    images = as_array(images, np.float64)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or images.shape[-1] != int(np.prod(image_shape)) or len(image_shape) != 2:
        raise ValueError(f"images must have shape [rows, cols, {int(np.prod(image_shape))}] for 2-d "
                         f"images of shape {tuple(image_shape)}, got {images.shape}")
    pad = check_int("pad", pad, low=0)
    rows, cols = images.shape[:2]
    h, w = image_shape
    canvas = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad))
    for r in range(rows):
        for c in range(cols):
            top, left = pad + r * (h + pad), pad + c * (w + pad)
            canvas[top:top + h, left:left + w] = images[r, c].reshape(h, w)
    return canvas


def png_bytes(image, scale: int = 1) -> bytes:
    """A 2-d array of ink values in [0, 1] as PNG bytes, dark ink on white, each pixel enlarged to
    ``scale`` x ``scale`` (nearest neighbour, so digits stay sharp in a browser)."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"image must be a 2-d array, got shape {image.shape}")
    if int(scale) < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    image = np.kron(np.clip(image, 0.0, 1.0), np.ones((int(scale), int(scale))))
    buffer = io.BytesIO()
    imsave(buffer, image, cmap="gray_r", vmin=0.0, vmax=1.0, format="png")
    return buffer.getvalue()


def figure_png(fig, dpi: int = 80) -> bytes:
    """A figure as PNG bytes (for an ``ipywidgets.Image`` that is redrawn in place)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def tile_figure(images, image_shape, row_labels, col_labels, *, xlabel: str, ylabel: str, title: str | None = None,
                zoom: int = 2, fig=None, dpi: int = 80):
    """``images`` ``[rows, cols, D]`` as one picture (:func:`tile_images`, a single ``imshow``: cheap enough
    to redraw at every slider move) with a label under each column and beside each row and both axes
    named; each image pixel ``zoom`` x ``zoom`` screen pixels at ``dpi``. A bare figure unless ``fig``."""
    canvas = tile_images(images, image_shape)
    (height, width), (h, w) = canvas.shape, image_shape
    left, right, bottom, top = 0.75, 0.1, 0.45, 0.3 if title else 0.1          # margins in inches
    size = (width * zoom / dpi, height * zoom / dpi)
    fig = new_figure(fig, (size[0] + left + right, size[1] + bottom + top))
    ax = fig.add_axes([left / fig.get_figwidth(), bottom / fig.get_figheight(), size[0] / fig.get_figwidth(),
                       size[1] / fig.get_figheight()])
    ax.imshow(canvas, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([1 + c * (w + 1) + (w - 1) / 2 for c in range(len(col_labels))], col_labels, fontsize=7)
    ax.set_yticks([1 + r * (h + 1) + (h - 1) / 2 for r in range(len(row_labels))], row_labels, fontsize=7)
    decorate(ax, title, grid=None, xlabel=xlabel, ylabel=ylabel)
    ax.tick_params(length=0)
    return fig


LIVE_PANELS = (("accuracy", "test accuracy of q(y|x)"), ("elbo", "test ELBO (nats, Eq. 9)"))
# the style code's health (diagnostics.DiagnosticsCallback), for TrainingPanel(diagnostics=True)
DIAGNOSTIC_PANELS = (("active_units", "active style units"), ("mutual_information", "I(x; z) of the encoder (nats)"))


class LiveTrainingFigure:
    """What the live training panel shows: the training objective per optimisation step (−Eq. 10 per
    image, lower is better; an epoch's last step dips, its unlabelled sum covering fewer images than the
    nominal batch it is divided by, see ``engine.step_terms``; grey lines mark the epoch ends) and, per
    epoch, the evaluation accuracy and ELBO; one colour per run, named in the legend by its label. The
    figure is kept between redraws: :meth:`update` moves the data of the lines it has and adds lines for
    new runs, which costs a fraction of drawing the figure anew. A bare ``Figure`` (not pyplot), so a
    background thread may draw it."""

    def __init__(self, figsize=(12, 2.8), panels=LIVE_PANELS):
        self.panels = tuple(panels)
        self.figure = Figure(figsize=figsize)
        self.axes = self.figure.subplots(1, 1 + len(self.panels))
        decorate(self.axes[0], "training objective (−Eq. 10 per image)",
                 xlabel="step (grey: epoch ends; a smaller last batch dips)")
        self.axes[0].xaxis.label.set_fontsize(7)
        self._epoch_ends = None            # grey lines at the newest run's epoch ends
        for ax, (_, title) in zip(self.axes[1:], self.panels):
            decorate(ax, title, xlabel="epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
        self.figure.subplots_adjust(left=0.05, right=0.77, bottom=0.17, top=0.9, wspace=0.25)   # legend: right
        self.lines: list[list] = []          # per run: its loss line, then one line per panel
        self._runs: list = []                # the runs the lines show, oldest first
        self._labels: list[str] | None = None

    def update(self, runs) -> Figure:
        """Show ``runs``, oldest first, each with ``label``, ``steps``, ``losses`` and ``history``
        (per-epoch records); lines of runs no longer listed are removed."""
        if any(a is not b for a, b in zip(runs, self._runs)) or len(runs) < len(self._runs):   # start over
            for line in (line for lines in self.lines for line in lines):
                line.remove()
            self.lines, self._runs, self._labels = [], [], None
        for run in runs[len(self._runs):]:
            colour = f"C{len(self.lines) % 10}"
            self.lines.append([self.axes[0].plot([], [], lw=1, color=colour)[0]]
                              + [ax.plot([], [], marker="o", ms=4, color=colour)[0] for ax in self.axes[1:]])
        self._runs = list(runs)
        last_epoch = 0
        for run, (loss, *per_epoch) in zip(runs, self.lines):
            loss.set_data(list(run.steps), list(run.losses))
            for line, (key, _) in zip(per_epoch, self.panels):
                epochs, values = _series(list(run.history), key)
                line.set_data(epochs, values)
                last_epoch = max([last_epoch, *epochs])
        ends = [e["step"] for e in runs[-1].history if "step" in e] if runs else []
        if self._epoch_ends is not None:
            self._epoch_ends.remove()
        self._epoch_ends = self.axes[0].vlines(ends, 0, 1, transform=self.axes[0].get_xaxis_transform(),
                                               colors="0.8", lw=0.6, zorder=0)
        for ax in self.axes:
            ax.relim()
            ax.autoscale_view()
        for ax in self.axes[1:]:
            ax.set_xlim(0.5, last_epoch + 0.5 if last_epoch else 1.5)
        labels = [run.label for run in runs]
        if labels != self._labels:                               # a new legend only when something changed
            for legend in list(self.figure.legends):
                legend.remove()
            for label, (loss, *_) in zip(labels, self.lines):
                loss.set_label(label)
            if any(labels):
                self.figure.legend([lines[0] for lines in self.lines], [textwrap.fill(x, 30) for x in labels],
                                   loc="center left", bbox_to_anchor=(0.775, 0.5), fontsize=7, frameon=False)
            self._labels = labels
        return self.figure


# -- sweeps: the seminar thesis's Figures 2-3 and Appendix B, the paper's accuracy table -------------
SWEEP_AXES = {"alpha": "supervision weight α", "corruption_rate": "label corruption rate"}
# (row key, panel title); the scores are metrics.leakage_scores of the posterior-mean z (lower = less
# label information in z), under the names the thesis gave them in quotes.
SWEEP_PANELS = (
    (0, 0, "elbo", "final test ELBO (nats)"),
    (1, 0, "accuracy", "final test accuracy of q(y|x)"),
    (0, 1, "best_single_dim_probe_above_chance", "best single-z-dim probe, above chance\n(thesis: 'β-VAE')"),
    (0, 2, "between_within_variance_ratio", "between/within-class variance of z\n(thesis: 'FactorVAE')"),
    (1, 1, "top_two_mi_gap_nats", "gap of the two largest I(z_j; y), nats\n(thesis: 'MIG')"),
    (1, 2, "whole_z_probe_accuracy", "probe accuracy of y from all of z\n(dashed: majority class)"),
)
CURVE_PANELS = (("train_loss", "training loss (−Eq. 10 per image)"), ("elbo", "test ELBO (nats)"),
                ("accuracy", "test accuracy"))
# Test accuracy (%) on full MNIST as published, by number of labels M.
PAPER_ACCURACY = {
    "paper: SSVAE (Narayanaswamy et al. 2017)": {100: 90.3, 600: 96.2, 1000: 97.1, 3000: 98.4},
    "paper: M2 (Kingma et al. 2014)": {100: 88.0, 600: 95.1, 1000: 96.4, 3000: 96.1},
}
LINE_STYLES = ("-", "--", ":", "-.")
DATASET_LABELS = {"mnist": "MNIST", "mnist-t10k": "MNIST-10k", "digits": "8x8 digits", "shapes": "shapes"}


def _finite(values) -> np.ndarray:
    values = np.asarray([np.nan if v is None or v == "" else float(v) for v in values], dtype=float)
    return values[np.isfinite(values)]


def _mean_std(values) -> tuple[float, float, int]:
    """Mean, standard deviation (ddof = 1; 0 for a single value) and count of the finite values."""
    v = _finite(values)
    if not len(v):
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def _m_label(m) -> str:
    return "all" if m is None else str(m)


def _size_order(m) -> tuple:
    """Sort key of labelled-set sizes M: ascending, "all" (None) last."""
    return m is None, m or 0


def _ok(rows):
    return [r for r in rows if r.get("status", "ok") == "ok"]


def sweep_axis(rows) -> str | None:
    """The swept quantity of a grid's rows: "alpha" or "corruption_rate" if it takes several values."""
    return next((axis for axis in SWEEP_AXES if len({r[axis] for r in rows}) > 1), None)


def _sweep_figure(rows, x: str, fig, title: str | None, by_protocol: bool):
    """The 2 x 3 panels of :data:`SWEEP_PANELS` against ``x``: one error-bar line (mean ± 1 std over
    seeds) per labelled-set size M, or with ``by_protocol`` per (protocol, M), side by side, with every
    seed as a dot."""
    check_choice("x", x, SWEEP_AXES)
    rows = _ok(rows)
    values = sorted({r[x] for r in rows})
    position = {v: i for i, v in enumerate(values)}
    group_of = (lambda r: (r["protocol"] if by_protocol else None, r["n_labelled"]))   # noqa: E731
    groups = sorted({group_of(r) for r in rows}, key=lambda g: (g[0] or "", *_size_order(g[1])))
    sizes = sorted({m for _, m in groups}, key=_size_order)
    colours = plt.cm.viridis(np.linspace(0, 0.85, max(len(sizes), 1)))
    fig = new_figure(fig, (12, 6), pyplot=True)
    axes = fig.subplots(2, 3)
    for row_i, col_i, key, label in SWEEP_PANELS:
        ax = axes[row_i, col_i]
        drawn = False
        for g, (protocol, m) in enumerate(groups):
            members = [r for r in rows if group_of(r) == (protocol, m)]
            shift = 0.08 * (g - (len(groups) - 1) / 2) if by_protocol else 0   # side by side, not on top
            points = [(position[v] + shift, *_mean_std(r.get(key) for r in members if r[x] == v)) for v in values]
            points = [p for p in points if p[3]]
            if not points:
                continue
            pos, mean, std, _ = zip(*points)
            if by_protocol:
                style = dict(color=PROTOCOL_COLOURS.get(protocol, f"C{g}"), label=f"{protocol}, M = {_m_label(m)}",
                             ls=LINE_STYLES[sizes.index(m) % len(LINE_STYLES)])
            else:
                style = dict(color=colours[g], label=f"M = {_m_label(m)}")
            ax.errorbar(np.asarray(pos), np.asarray(mean), yerr=np.asarray(std), marker="o", ms=4, capsize=3,
                        **style)
            if by_protocol:
                seeds = [(position[r[x]] + shift, v) for r in members for v in _finite([r.get(key)])]
                if seeds:
                    ax.scatter(*zip(*seeds), s=9, color=style["color"], alpha=0.35, zorder=3)
            drawn = True
        if key == "whole_z_probe_accuracy":
            base = _mean_std(r.get("majority_baseline") for r in rows)
            if base[2]:
                ax.axhline(base[0], color="grey", ls="--", lw=1)
        if not drawn:
            ax.text(0.5, 0.5, "not computed", ha="center", va="center", transform=ax.transAxes, color="grey")
        decorate(ax, label, xticks=range(len(values)), xticklabels=[f"{v:g}" for v in values])
        ax.set_xlabel(SWEEP_AXES[x], fontsize=8)
        ax.tick_params(labelsize=8)
    handles, labels = axes[1, 0].get_legend_handles_labels()
    if handles:                      # beside the panels, where it covers no data
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(0.865, 0.5), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    return fig


def sweep_panels(rows, x: str = "alpha", fig=None, title: str | None = None):
    """The thesis's Figures 2 and 3: final test ELBO (top left), accuracy (bottom left) and the
    label-leakage scores of z against ``x``, one line per labelled-set size M, mean ± 1 standard
    deviation over seeds as error bars. ``rows``: one dict per run (``store.result_row``)."""
    return _sweep_figure(rows, x, fig, title, by_protocol=False)


def appendix_training_curves(rows, x: str = "alpha", fig=None, title: str | None = None):
    """The thesis's Appendix B (Figure 4): every run's training loss, test ELBO and test accuracy per
    epoch, coloured by ``x``. ``rows``: one dict per run with its ``"history"``."""
    check_choice("x", x, SWEEP_AXES)
    values = sorted({r[x] for r in rows})
    sizes = sorted({r["n_labelled"] for r in rows}, key=_size_order)
    colours = dict(zip(values, plt.cm.plasma(np.linspace(0, 0.9, max(len(values), 1)))))
    styles = {m: LINE_STYLES[i % len(LINE_STYLES)] for i, m in enumerate(sizes)}
    fig = new_figure(fig, (12, 3.2), pyplot=True)
    axes = fig.subplots(1, len(CURVE_PANELS))
    for ax, (key, label) in zip(axes, CURVE_PANELS):
        for r in rows:
            ax.plot(*_series(r.get("history") or [], key), color=colours[r[x]], ls=styles[r["n_labelled"]],
                    marker="o", ms=2, lw=0.8, alpha=0.6)
        decorate(ax, label)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.tick_params(labelsize=8)
    symbol = "α" if x == "alpha" else "rate"
    handles = [plt.Line2D([], [], color=colours[v], label=f"{symbol} = {v:g}") for v in values]
    handles += [plt.Line2D([], [], color="black", ls=styles[m], label=f"M = {_m_label(m)}") for m in sizes]
    axes[-1].legend(handles=handles, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def accuracy_table(rows, reference: dict | None = None) -> tuple[list[dict], str]:
    """The paper-style table: test accuracy (%) mean ± std over seeds per labelled-set size M, one
    line per setting (dataset, objective, protocol, α, corruption rate), followed by ``reference``
    lines (default :data:`PAPER_ACCURACY`, full MNIST). Returns (long rows for a CSV, Markdown)."""
    reference = PAPER_ACCURACY if reference is None else reference
    rows = _ok(rows)
    fields = ("dataset", "objective", "protocol", "alpha", "corruption_rate")
    sizes = sorted({r["n_labelled"] for r in rows}, key=_size_order)
    long_rows = []
    header = ["dataset", "objective", "protocol", "α", "corruption"] + [f"M = {_m_label(m)}" for m in sizes]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for setting in sorted({tuple(r[f] for f in fields) for r in rows}):
        cells = []
        for m in sizes:
            mean, std, n = _mean_std(100 * r["accuracy"] for r in rows
                                     if (*(r[f] for f in fields), r["n_labelled"]) == (*setting, m))
            long_rows.append({**dict(zip(fields, setting)), "n_labelled": m, "accuracy_mean": mean,
                              "accuracy_std": std, "n_seeds": n})
            cells.append(f"{mean:.1f} ± {std:.1f} ({n})" if n else "–")
        dataset, objective, protocol, alpha, rate = setting
        lines.append("| " + " | ".join([DATASET_LABELS.get(dataset, dataset), objective, protocol, f"{alpha:g}",
                                        f"{rate:g}", *cells]) + " |")
    for name, numbers in reference.items():
        cells = [f"{numbers[m]:.1f}" if m in numbers else "–" for m in sizes]
        lines.append("| " + " | ".join(["MNIST (full)", name, "", "", "", *cells]) + " |")
    note = ("\nCells: test accuracy in %, mean ± standard deviation over seeds (number of seeds). "
            "Reference lines are published full-MNIST numbers; other datasets are not comparable to them.\n")
    return long_rows, "\n".join(lines) + "\n" + note


def sweep_table(rows, x: str, key: str, digits: int = 2) -> str:
    """Markdown table of ``key`` (a :func:`~ssvae_lib.store.result_row` field) for a grid's finished runs:
    one line per (protocol, M), one column per value of ``x``, cells "mean ± std (seeds)"."""
    check_choice("x", x, SWEEP_AXES)
    rows = _ok(rows)
    values = sorted({r[x] for r in rows})
    groups = sorted({(r["protocol"], r["n_labelled"]) for r in rows}, key=lambda g: (g[0], *_size_order(g[1])))
    lines = ["| protocol | M | " + " | ".join(f"{x} = {v:g}" for v in values) + " |",
             "|---|---|" + "---|" * len(values)]
    for protocol, m in groups:
        cells = []
        for v in values:
            mean, std, n = _mean_std(r.get(key) for r in rows
                                     if (r["protocol"], r["n_labelled"], r[x]) == (protocol, m, v))
            cells.append(f"{mean:.{digits}f} ± {std:.{digits}f} ({n})" if n else "–")
        lines.append(f"| {protocol} | {_m_label(m)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def sweep_trend(rows, x: str, key: str, protocol: str, n_labelled) -> tuple[str, tuple, tuple]:
    """How ``key`` moves from the smallest to the largest value of ``x`` for one (protocol, M):
    "rises" / "falls" when the two means differ by more than the sum of their standard deviations over
    seeds, else "flat"; with the (mean, std, seeds) at both ends."""
    rows = [r for r in _ok(rows) if r["protocol"] == protocol and r["n_labelled"] == n_labelled]
    if not rows:
        raise ValueError(f"no finished runs for protocol {protocol!r}, M = {n_labelled}")
    ends = min(r[x] for r in rows), max(r[x] for r in rows)
    low, high = (_mean_std(r.get(key) for r in rows if r[x] == v) for v in ends)
    verdict = {"higher": "rises", "lower": "falls"}.get(compare(low, high), "flat")
    return verdict, low, high


def settings_summary(rows, by, key: str) -> dict:
    """``key`` over the finished runs of each setting: {setting: (mean, std, seeds)}, where a run's setting
    is the tuple of its ``by`` fields (or ``by(row)`` when ``by`` is a function), in sorted order."""
    name = by if callable(by) else (lambda r: tuple(r[f] for f in by))
    groups: dict = {}
    for r in _ok(rows):
        groups.setdefault(name(r), []).append(r.get(key))
    try:
        order = sorted(groups)
    except TypeError:                      # settings of mixed types (e.g. None among numbers): by their text
        order = sorted(groups, key=str)
    return {setting: _mean_std(groups[setting]) for setting in order}


def compare(a: tuple, b: tuple) -> str:
    """"higher" / "lower" when the mean of ``b`` differs from that of ``a`` by more than the sum of their
    standard deviations over seeds, else "within the spread": the one rule by which the notebooks call a
    difference between two settings (``a``, ``b``: (mean, std, seeds) as :func:`settings_summary` gives)."""
    margin = a[1] + b[1]
    return "higher" if b[0] - a[0] > margin else "lower" if a[0] - b[0] > margin else "within the spread"


def summary_bars(summary: dict, labels=None, title: str | None = None, ylabel: str = "", fig=None):
    """Bars of a :func:`settings_summary`: mean ± std per setting, its number of seeds under its label."""
    fig = new_figure(fig, (1.2 + 1.1 * len(summary), 3.2), pyplot=True)
    ax = fig.subplots()
    names = list(labels) if labels is not None else [str(s) for s in summary]
    means, stds, counts = zip(*summary.values())
    ax.bar(range(len(means)), means, yerr=stds, capsize=4, color=[f"C{i % 10}" for i in range(len(means))])
    ax.set_xticks(range(len(means)), [f"{n}\n({c} seeds)" for n, c in zip(names, counts)], fontsize=8)
    decorate(ax, title, ylabel=ylabel)
    fig.tight_layout()
    return fig


def diagnostics_figure(history: list, title: str | None = None, fig=None):
    """The style code's health over training (records with ``diagnostics.DiagnosticsCallback``'s keys):
    KL of each style unit per epoch (heat map), the number of active units and I(x; z)."""
    records = [h for h in history if "kl_per_dimension" in h]
    if not records:
        raise ValueError("no diagnostics in this history: train with diagnostics.DiagnosticsCallback")
    fig = new_figure(fig, (12, 3.0), pyplot=True)
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.4, 1, 1]})
    epochs = [h["epoch"] for h in records]
    kl = np.array([h["kl_per_dimension"] for h in records]).T
    image = axes[0].imshow(kl, aspect="auto", cmap="viridis", origin="lower",
                           extent=(epochs[0] - 0.5, epochs[-1] + 0.5, -0.5, kl.shape[0] - 0.5))
    fig.colorbar(image, ax=axes[0], label="nats")
    decorate(axes[0], "KL(q(z_j|x) ‖ N(0, 1)) per style unit", xlabel="epoch", ylabel="unit j", grid=None)
    for ax, (key, panel_title) in zip(axes[1:], DIAGNOSTIC_PANELS):
        ax.plot(epochs, [h[key] for h in records], marker="o", ms=4)
        decorate(ax, panel_title, xlabel="epoch")
    axes[1].set_ylim(-0.5, kl.shape[0] + 0.5)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _sweep_title(grid: str, rows, error_bars: bool = True) -> str:
    first = rows[0]
    seeds = len({r["seed"] for r in rows})
    epochs = max(r["epochs"] for r in rows)
    title = (f"{grid}: {DATASET_LABELS.get(first['dataset'], first['dataset'])}, {first['objective']} objective, "
             f"{first['protocol']} protocol, {epochs} epoch{'s' * (epochs != 1)}")
    runs = f"{seeds} seed{'s' * (seeds != 1)}"
    return title + (f"; error bars ±1 std over {runs}" if error_bars else f"; every run of {runs}")


def write_sweep_figures(grids: dict, directory: str | Path | None = None) -> list[Path]:
    """For each grid (name -> rows with histories, ``store.load_grids``): the Figure 2/3-style panels and
    the Appendix B curves per protocol and objective (when α or the corruption rate is swept), and the
    accuracy table as ``<grid>_accuracy.md`` and ``.csv``. Returns the written paths."""
    directory = Path(directory) if directory is not None else settings.figures_dir()
    written = []
    for grid, rows in grids.items():
        if not rows:
            continue
        splits = sorted({(r["protocol"], r["objective"]) for r in rows})
        for protocol, objective in splits:
            part = [r for r in rows if (r["protocol"], r["objective"]) == (protocol, objective)]
            axis = sweep_axis(part)
            if axis is None:
                continue
            suffix = "" if len(splits) == 1 else f"_{protocol}_{objective}".replace("/", "-")
            for draw, name, error_bars in ((sweep_panels, "panels", True),
                                           (appendix_training_curves, "curves", False)):
                fig = draw(part, axis, title=_sweep_title(grid, part, error_bars))
                written += save_figure(fig, f"{grid}{suffix}_{name}", directory)
                plt.close(fig)
        long_rows, markdown = accuracy_table(rows)
        directory.mkdir(parents=True, exist_ok=True)
        markdown_path, csv_path = (directory / f"{grid}_accuracy.{ext}" for ext in ("md", "csv"))
        markdown_path.write_text(f"# {grid}: test accuracy\n\n{markdown}")
        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(long_rows[0]) if long_rows else ["dataset"])
            writer.writeheader()
            writer.writerows(long_rows)
        written += [markdown_path, csv_path]
    return written


# -- disentanglement scores side by side (notebook 07) -----------------------------------------------
def score_bars(table: dict, title: str | None = None, fig=None):
    """Grouped bars: one group per score, one bar per representation or run, each bar labelled with its
    value. ``table`` maps a run name to ``{score name: value}`` (the first run's names set the order); a value
    may be a (mean, std, seeds) tuple (``settings_summary``), drawn with its standard deviation as error bar."""
    runs = list(table)
    if not runs:
        raise ValueError("score_bars needs at least one run")
    scores = list(table[runs[0]])
    ax = new_figure(fig, (max(6.0, 1.2 * len(scores) + 1.5), 3.2)).subplots()
    width = 0.8 / len(runs)
    for i, run in enumerate(runs):
        entries = [table[run].get(s, np.nan) for s in scores]
        values = [float(e[0] if isinstance(e, tuple) else e) for e in entries]
        errors = [float(e[1]) if isinstance(e, tuple) else 0.0 for e in entries]
        bars = ax.bar(np.arange(len(scores)) + (i - (len(runs) - 1) / 2) * width, values, width, label=run,
                      yerr=errors if any(errors) else None, capsize=2, error_kw={"lw": 0.8})
        ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
    ax.set_xticks(np.arange(len(scores)), scores, fontsize=8, rotation=15, ha="right")
    ax.axhline(0, color="k", lw=0.6)
    ax.legend(fontsize=7, ncol=min(len(runs), 4))
    decorate(ax, title, grid=None)
    ax.grid(axis="y", alpha=0.3)
    ax.figure.tight_layout()
    return ax.figure


# -- notebook 06: the thesis's protocol next to the corrected one ---------------------------------------
PROTOCOL_COLOURS = {"thesis": "tab:red", "corrected": "tab:blue"}


def protocol_panels(rows, x: str = "alpha", fig=None, title: str | None = None):
    """The panels of :func:`sweep_panels` with one line per (protocol, M) instead of per M: mean ± 1
    standard deviation over seeds, and every seed as a small dot, so that a bimodal spread (runs that
    saw no label next to runs that did) stays visible. ``rows``: one dict per run (``store.result_row``)."""
    return _sweep_figure(rows, x, fig, title, by_protocol=True)
