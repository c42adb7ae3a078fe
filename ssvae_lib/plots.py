"""Figures (matplotlib), each returned as a ``Figure``; :func:`save_figure` writes PNG and PDF."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.image import imsave

from . import settings
from .engine import upgrade_record

HISTORY_PANELS = (("train_loss", "training loss (−Eq. 10 per image)"), ("accuracy", "accuracy"),
                  ("elbo", "ELBO (nats)"), ("log_likelihood", "IWAE log p(x) (nats)"))


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
    fig = fig or plt.figure(figsize=(11, 2.6))
    fig.clear()
    axes = fig.subplots(1, len(HISTORY_PANELS))
    for ax, (key, title) in zip(axes, HISTORY_PANELS):
        for label, history in histories.items():
            epochs, values = _series(history, key)
            ax.plot(epochs, values, marker="o", ms=3, label=label or None)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if any(histories):
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def image_grid(images, image_shape, row_labels=None, col_labels=None, title=None, cell=0.55):
    """Show ``images`` of shape [rows, cols, D] (or [n, D] as one row) as a grid of greyscale tiles."""
    images = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images)
    if images.ndim == 2:
        images = images[None]
    rows, cols = images.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell + 0.6, rows * cell + 0.5), squeeze=False)
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
    fig.tight_layout(pad=0.3)
    return fig


def analogy_figure(originals, analogies, image_shape):
    """Left column: the test images; then the same style decoded with y = 0..C-1 (paper Fig. 2a)."""
    grid = np.concatenate([np.asarray(originals.cpu())[:, None], np.asarray(analogies.cpu())], axis=1)
    cols = ["input"] + [str(k) for k in range(analogies.shape[1])]
    return image_grid(grid, image_shape, col_labels=cols, title="Analogies: style z from the input, label y varied")


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
    fig = _new_figure(fig, (4.6, 4.0))
    ax = fig.subplots()
    ax.imshow(c, cmap="Blues")
    for (i, j), count in np.ndenumerate(c):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                    color="white" if count > c.max() / 2 else "black")
    ax.set_xticks(range(c.shape[1]))
    ax.set_yticks(range(c.shape[0]))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    accuracy = np.trace(c) / max(c.sum(), 1)
    ax.set_title(title or f"accuracy {accuracy:.3f} on {c.sum()} images", fontsize=9)
    fig.tight_layout()
    return fig


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
    images = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images, dtype=np.float64)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or images.shape[-1] != int(np.prod(image_shape)) or len(image_shape) != 2:
        raise ValueError(f"images must have shape [rows, cols, {int(np.prod(image_shape))}] for 2-d "
                         f"images of shape {tuple(image_shape)}, got {images.shape}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
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


LIVE_PANELS = (("accuracy", "test accuracy of q(y|x)"), ("elbo", "test ELBO (nats, Eq. 9)"))


def live_training_figure(steps, losses, history, fig=None):
    """What a live run redraws: the training objective per optimisation step (−Eq. 10 per image,
    lower is better) and, per epoch, the evaluation accuracy and ELBO. Pass a
    ``matplotlib.figure.Figure`` as ``fig`` when drawing from a background thread (pyplot is not
    thread-safe)."""
    if fig is None:
        fig = plt.figure(figsize=(10, 2.6))
    fig.clear()
    axes = fig.subplots(1, 1 + len(LIVE_PANELS))
    axes[0].plot(list(steps), list(losses), lw=1)
    axes[0].set_title("training objective (−Eq. 10 per image)", fontsize=9)
    axes[0].set_xlabel("step")
    for ax, (key, title) in zip(axes[1:], LIVE_PANELS):
        epochs, values = _series(history, key)
        ax.plot(epochs, values, marker="o", ms=4)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        if epochs:
            ax.set_xlim(0.5, max(epochs) + 0.5)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


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


def _ok(rows):
    return [r for r in rows if r.get("status", "ok") == "ok"]


def sweep_axis(rows) -> str | None:
    """The swept quantity of a grid's rows: "alpha" or "corruption_rate" if it takes several values."""
    for axis in SWEEP_AXES:
        if len({r[axis] for r in rows}) > 1:
            return axis
    return None



def _finish_sweep_axis(ax, rows, key, label, values, x, drawn):
    """Shared styling of one sweep panel: majority baseline, 'not computed', title and ticks."""
    if key == "whole_z_probe_accuracy":
        base = _mean_std(r.get("majority_baseline") for r in rows)
        if base[2]:
            ax.axhline(base[0], color="grey", ls="--", lw=1)
    if not drawn:
        ax.text(0.5, 0.5, "not computed", ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_title(label, fontsize=9)
    ax.set_xticks(range(len(values)), [f"{v:g}" for v in values])
    ax.set_xlabel(SWEEP_AXES[x], fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)

def _finish_sweep_figure(fig, axes, title):
    axes[1, 0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def sweep_panels(rows, x: str = "alpha", fig=None, title: str | None = None):
    """The thesis's Figures 2 and 3: final test ELBO (top left), accuracy (bottom left) and the
    label-leakage scores of z against ``x``, one line per labelled-set size M, mean ± 1 standard
    deviation over seeds as error bars. ``rows``: one dict per run (``store.result_row``)."""
    if x not in SWEEP_AXES:
        raise ValueError(f"x must be one of {tuple(SWEEP_AXES)}, got {x!r}")
    rows = _ok(rows)
    values = sorted({r[x] for r in rows})
    position = {v: i for i, v in enumerate(values)}
    sizes = sorted({r["n_labelled"] for r in rows}, key=lambda m: (m is None, m or 0))
    fig = fig or plt.figure(figsize=(12, 6))
    fig.clear()
    axes = fig.subplots(2, 3)
    colours = plt.cm.viridis(np.linspace(0, 0.85, max(len(sizes), 1)))
    for row_i, col_i, key, label in SWEEP_PANELS:
        ax = axes[row_i, col_i]
        drawn = False
        for colour, m in zip(colours, sizes):
            points = [(position[v], *_mean_std(r.get(key) for r in rows if r[x] == v and r["n_labelled"] == m))
                      for v in values]
            points = [p for p in points if p[3]]
            if points:
                pos, mean, std, _ = zip(*points)
                ax.errorbar(np.asarray(pos), np.asarray(mean), yerr=np.asarray(std), marker="o", ms=4, capsize=3,
                            color=colour, label=f"M = {_m_label(m)}")
                drawn = True
        _finish_sweep_axis(ax, rows, key, label, values, x, drawn)
    return _finish_sweep_figure(fig, axes, title)


def appendix_training_curves(rows, x: str = "alpha", fig=None, title: str | None = None):
    """The thesis's Appendix B (Figure 4): every run's training loss, test ELBO and test accuracy per
    epoch, coloured by ``x``. ``rows``: one dict per run with its ``"history"``."""
    if x not in SWEEP_AXES:
        raise ValueError(f"x must be one of {tuple(SWEEP_AXES)}, got {x!r}")
    values = sorted({r[x] for r in rows})
    sizes = sorted({r["n_labelled"] for r in rows}, key=lambda m: (m is None, m or 0))
    colours = dict(zip(values, plt.cm.plasma(np.linspace(0, 0.9, max(len(values), 1)))))
    styles = {m: ("-", "--", ":", "-.")[i % 4] for i, m in enumerate(sizes)}
    fig = fig or plt.figure(figsize=(12, 3.2))
    fig.clear()
    axes = fig.subplots(1, len(CURVE_PANELS))
    for ax, (key, label) in zip(axes, CURVE_PANELS):
        for r in rows:
            epochs, series = _series(r.get("history") or [], key)
            ax.plot(epochs, series, color=colours[r[x]], ls=styles[r["n_labelled"]], marker="o", ms=2,
                    lw=0.8, alpha=0.6)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
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
    sizes = sorted({r["n_labelled"] for r in rows}, key=lambda m: (m is None, m or 0))
    settings_ = sorted({(r["dataset"], r["objective"], r["protocol"], r["alpha"], r["corruption_rate"]) for r in rows})
    long_rows, lines = [], []
    header = ["dataset", "objective", "protocol", "α", "corruption"] + [f"M = {_m_label(m)}" for m in sizes]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for dataset, objective, protocol, alpha, rate in settings_:
        cells = []
        for m in sizes:
            mean, std, n = _mean_std(100 * r["accuracy"] for r in rows
                                     if (r["dataset"], r["objective"], r["protocol"], r["alpha"],
                                         r["corruption_rate"], r["n_labelled"]) == (dataset, objective, protocol,
                                                                                    alpha, rate, m))
            long_rows.append({"dataset": dataset, "objective": objective, "protocol": protocol, "alpha": alpha,
                              "corruption_rate": rate, "n_labelled": m, "accuracy_mean": mean,
                              "accuracy_std": std, "n_seeds": n})
            cells.append(f"{mean:.1f} ± {std:.1f} ({n})" if n else "–")
        lines.append("| " + " | ".join([DATASET_LABELS.get(dataset, dataset), objective, protocol, f"{alpha:g}",
                                        f"{rate:g}", *cells]) + " |")
    for name, numbers in reference.items():
        cells = [f"{numbers[m]:.1f}" if m in numbers else "–" for m in sizes]
        lines.append("| " + " | ".join(["MNIST (full)", name, "", "", "", *cells]) + " |")
    note = ("\nCells: test accuracy in %, mean ± standard deviation over seeds (number of seeds). "
            "Reference lines are published full-MNIST numbers; other datasets are not comparable to them.\n")
    return long_rows, "\n".join(lines) + "\n" + note


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
            fig = sweep_panels(part, axis, title=_sweep_title(grid, part))
            written += save_figure(fig, f"{grid}{suffix}_panels", directory)
            plt.close(fig)
            fig = appendix_training_curves(part, axis, title=_sweep_title(grid, part, error_bars=False))
            written += save_figure(fig, f"{grid}{suffix}_curves", directory)
            plt.close(fig)
        long_rows, markdown = accuracy_table(rows)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{grid}_accuracy.md").write_text(f"# {grid}: test accuracy\n\n{markdown}")
        with open(directory / f"{grid}_accuracy.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(long_rows[0]) if long_rows else ["dataset"])
            writer.writeheader()
            writer.writerows(long_rows)
        written += [directory / f"{grid}_accuracy.md", directory / f"{grid}_accuracy.csv"]
    return written


# -- derivation notebooks 01-03: the ELBO, importance sampling, the supervised estimator ---------------
def _new_figure(fig, figsize):
    """A fresh ``Figure`` (no pyplot state, so a redrawn panel never piles up figures) or ``fig`` cleared.
    The figures redrawn by the panels use fixed margins instead of ``tight_layout``, which would double
    the cost of every redraw."""
    if fig is None:
        return Figure(figsize=figsize)
    fig.clear()
    return fig


def _histogram(ax, values, bins=60, **style):
    """``ax.hist`` of the finite ``values`` (filled outline) that also copes with (nearly) constant data,
    e.g. the estimates of an estimator with zero variance: such data get one bar of a small width."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    style.setdefault("histtype", "stepfilled")      # one polygon, not one patch per bin: fast redraws
    low, high = values.min(), values.max()
    if high - low <= 1e-9 * max(1.0, abs(low), abs(high)):
        half = 1e-3 * max(1.0, abs(low))
        return ax.hist(values, bins=1, range=(low - half, high + half), **style)
    return ax.hist(values, bins=bins, **style)


def _normal_pdf(z, mean, sd):
    return np.exp(-0.5 * ((z - mean) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))


def _ellipse(ax, mean, cov, n_sd, **style):
    """The n_sd contour of N(mean, cov) in 2-d."""
    values, vectors = np.linalg.eigh(np.asarray(cov, dtype=float))
    angle = np.linspace(0, 2 * np.pi, 200)
    circle = np.stack([np.cos(angle), np.sin(angle)])
    points = np.asarray(mean, dtype=float)[:, None] + n_sd * vectors @ (np.sqrt(values)[:, None] * circle)
    return ax.plot(points[0], points[1], **style)


def elbo_figure(terms: dict, posterior_mean, posterior_cov, q_mean, q_log_sd, fig=None):
    """Left: the prior p(z), the exact posterior p(z|x) and q(z|x) (densities for a 1-d latent, 1- and
    2-sd contours for a 2-d one). Right: Eq. 1 as a waterfall, reconstruction − KL(q ‖ p(z)) = ELBO,
    ELBO + KL(q ‖ p(z|x)) = log p(x), from the dict of :func:`ssvae_lib.toy_experiments.elbo_decomposition`."""
    fig = _new_figure(fig, (10, 3.4))
    ax_density, ax_bar = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[1.3, 1]))
    post_mean = np.atleast_1d(np.asarray(posterior_mean, dtype=float))
    post_cov = np.atleast_2d(np.asarray(posterior_cov, dtype=float))
    q_mean = np.atleast_1d(np.asarray(q_mean, dtype=float))
    q_sd = np.exp(np.atleast_1d(np.asarray(q_log_sd, dtype=float)))
    colours = dict(prior="0.6", posterior="C0", q="C3")
    if post_mean.size == 1:
        sd_post = np.sqrt(post_cov[0, 0])
        low = min(-3.0, post_mean[0] - 4 * sd_post, q_mean[0] - 4 * q_sd[0])
        high = max(3.0, post_mean[0] + 4 * sd_post, q_mean[0] + 4 * q_sd[0])
        z = np.linspace(low, high, 400)
        ax_density.plot(z, _normal_pdf(z, 0.0, 1.0), color=colours["prior"], ls=":", label="prior p(z)")
        ax_density.plot(z, _normal_pdf(z, post_mean[0], sd_post), color=colours["posterior"], lw=2,
                        label="posterior p(z|x)")
        ax_density.plot(z, _normal_pdf(z, q_mean[0], q_sd[0]), color=colours["q"], lw=2, ls="--",
                        label="q(z|x)")
        ax_density.set_xlabel("z")
        ax_density.set_ylabel("density")
    else:
        for n_sd in (1, 2):
            _ellipse(ax_density, np.zeros(2), np.eye(2), n_sd, color=colours["prior"], ls=":",
                     label="prior p(z)" if n_sd == 1 else None)
            _ellipse(ax_density, post_mean, post_cov, n_sd, color=colours["posterior"], lw=2,
                     label="posterior p(z|x)" if n_sd == 1 else None)
            _ellipse(ax_density, q_mean, np.diag(q_sd ** 2), n_sd, color=colours["q"], lw=2, ls="--",
                     label="q(z|x)" if n_sd == 1 else None)
        ax_density.set_aspect("equal", adjustable="datalim")
        ax_density.set_xlabel("z₁")
        ax_density.set_ylabel("z₂")
    ax_density.legend(fontsize=8, loc="upper left")
    ax_density.set_title("q(z|x) against the exact posterior", fontsize=9)

    recon, kl, elbo = terms["reconstruction"], terms["kl_prior"], terms["elbo"]
    gap, log_px = terms["gap"], terms["log_px"]
    labels = ["E_q[log p(x|z)]", "−KL(q‖p(z))", "ELBO", "+KL(q‖p(z|x))", "log p(x)"]
    bottoms = [0.0, recon, 0.0, elbo, 0.0]
    heights = [recon, -kl, elbo, gap, log_px]
    colours_bar = ["C2", "C1", "C3", "C4", "C0"]
    ax_bar.bar(range(5), heights, bottom=bottoms, color=colours_bar, width=0.6)
    for i, (b, h) in enumerate(zip(bottoms, heights)):        # each value in the middle of its bar
        ax_bar.text(i, b + h / 2, f"{h:+.3f}" if i in (1, 3) else f"{h:.3f}", ha="center", va="center",
                    fontsize=8, bbox=dict(facecolor="white", alpha=0.7, edgecolor="none", pad=1))
    ax_bar.axhline(0.0, color="k", lw=0.8)
    ax_bar.margins(y=0.15)
    ax_bar.set_xticks(range(5))
    ax_bar.set_xticklabels(labels, rotation=25, ha="right", fontsize=8)
    ax_bar.set_title("log p(x) = ELBO + KL(q ‖ p(z|x))   (nats)", fontsize=9)
    ax_bar.grid(alpha=0.3, axis="y")
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.24, top=0.92, wspace=0.22)
    return fig


def gradient_variance_figure(sizes, exact_variances: dict, current_size: int, estimates: dict,
                             exact_gradient: float, parameter: str = "m₁", fig=None):
    """Left: the exact variance of an S-sample gradient estimate (single-sample variance / S) for each
    estimator on log-log axes, with the Monte Carlo variance at the current S as a dot. Right: the
    histogram of the estimates at the current S against the exact gradient."""
    fig = _new_figure(fig, (10, 3.2))
    ax_var, ax_hist = fig.subplots(1, 2)
    sizes = np.asarray(sizes, dtype=float)
    for i, (name, single) in enumerate(exact_variances.items()):
        values = np.asarray(estimates[name].detach().cpu(), dtype=float)
        ax_var.plot(sizes, single / sizes, color=f"C{i}", label=f"{name}: exact Var/S")
        ax_var.plot([current_size], [values.var(ddof=1)], "o", color=f"C{i}", ms=7)
        _histogram(ax_hist, values, bins=50, density=True, alpha=0.5, color=f"C{i}", label=name)
    ax_var.axvline(current_size, color="k", lw=0.8, ls=":")
    ax_var.set_xscale("log", base=2)
    ax_var.set_yscale("log")
    ax_var.set_xlabel("number of samples S")
    ax_var.set_ylabel(f"variance of ∂ELBO/∂{parameter}")
    ax_var.legend(fontsize=8)
    ax_var.grid(alpha=0.3, which="both")
    ax_hist.axvline(exact_gradient, color="k", lw=1.5, label="exact gradient")
    ax_hist.set_xlabel(f"estimate of ∂ELBO/∂{parameter} with S = {current_size}")
    ax_hist.legend(fontsize=8)
    ax_hist.set_title(f"{len(next(iter(estimates.values())))} independent estimates", fontsize=9)
    fig.subplots_adjust(left=0.08, right=0.99, bottom=0.16, top=0.91, wspace=0.2)
    return fig


def importance_sampling_figure(experiment, summary, fig=None):
    """Left: the target p(z|x), the proposal q(z) and the normalised weight w̄(z) = p(z|x)/q(z).
    Right: the histogram of ``summary.estimates`` (a :class:`ssvae_lib.toy_experiments.ReplicateSummary`) with the
    exact value, the mean and a readout of bias, std, ESS and χ²."""
    fig = _new_figure(fig, (10, 3.3))
    ax_density, ax_hist = fig.subplots(1, 2)
    mu_p, sd_p = experiment.posterior_mean, experiment.posterior_sd
    mu_q, sd_q = experiment.proposal_mean, experiment.proposal_sd
    z = np.linspace(min(mu_p - 4 * sd_p, mu_q - 3 * sd_q), max(mu_p + 4 * sd_p, mu_q + 3 * sd_q), 400)
    p, q = _normal_pdf(z, mu_p, sd_p), _normal_pdf(z, mu_q, sd_q)
    ax_density.plot(z, p, color="C0", lw=2, label="target p(z|x)")
    ax_density.plot(z, q, color="C3", lw=2, ls="--", label="proposal q(z)")
    ax_weight = ax_density.twinx()
    ax_weight.plot(z, p / q, color="C2", lw=1, label="weight w̄ = p/q")
    ax_weight.set_yscale("log")
    ax_weight.set_ylabel("w̄(z) (log scale)", color="C2", fontsize=8)
    ax_density.set_xlabel("z")
    ax_density.set_ylabel("density")
    handles = ax_density.get_legend_handles_labels()
    extra = ax_weight.get_legend_handles_labels()
    ax_density.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=8, loc="upper left")
    ax_density.set_title(f"shift {experiment.shift:+.2f} sd, scale ×{experiment.scale:.2f}", fontsize=9)

    values = np.asarray(summary.estimates.detach().cpu(), dtype=float)
    _histogram(ax_hist, values, bins=60, density=True, color="C7", alpha=0.7)
    ax_hist.axvline(summary.exact, color="k", lw=2, label="exact value")
    ax_hist.axvline(summary.mean, color="C3", lw=1.5, ls="--", label="mean of estimates")
    ax_hist.set_xlabel(f"{summary.estimator} estimate, K = {summary.n_samples}")
    chi2 = "∞" if not np.isfinite(summary.chi_square) else f"{summary.chi_square:.3g}"
    predicted = "n/a" if not np.isfinite(summary.predicted_bias) else f"{summary.predicted_bias:+.4f}"
    text = (f"bias {summary.bias:+.4f} ± {summary.standard_error:.4f}\nfirst-order bias {predicted}\n"
            f"std {summary.std:.4f}\nESS {summary.mean_ess:.1f} of {summary.n_samples}\nχ²(p‖q) {chi2}")
    ax_hist.text(0.98, 0.97, text, transform=ax_hist.transAxes, ha="right", va="top", fontsize=8,
                 bbox=dict(facecolor="white", alpha=0.8, edgecolor="0.8"))
    ax_hist.legend(fontsize=8, loc="upper left")
    ax_hist.set_title(f"{len(values)} replicates", fontsize=9)
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.16, top=0.91, wspace=0.3)
    return fig


def sorted_weights_figure(weights: dict, fig=None):
    """Normalised importance weights of one K-sample draw per proposal, sorted from the largest down
    (log-log): a flat curve means many samples count, a steep head means a few dominate."""
    fig = _new_figure(fig, (5.5, 3.2))
    ax = fig.subplots()
    for label, w in weights.items():
        values = np.sort(np.asarray(w.detach().cpu() if hasattr(w, "detach") else w, dtype=float))[::-1]
        ax.plot(np.arange(1, len(values) + 1), values, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rank")
    ax.set_ylabel("normalised weight w̃")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def bias_law_figure(sizes, biases, standard_errors, predicted, slope: float, label: str = "", fig=None):
    """|bias| against the number of samples K on log-log axes: Monte Carlo means ± 2 SE, the closed-form
    prediction, and the fitted slope (−1 for a 1/K law)."""
    fig = _new_figure(fig, (5.5, 3.4))
    ax = fig.subplots()
    sizes, biases = np.asarray(sizes, dtype=float), np.abs(np.asarray(biases, dtype=float))
    ses = np.asarray(standard_errors, dtype=float)
    ax.errorbar(sizes, biases, yerr=2 * ses, fmt="o", color="C0", capsize=3, label=f"Monte Carlo {label}")
    ax.plot(sizes, np.abs(np.asarray(predicted, dtype=float)), color="C3", label="closed-form prediction")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("number of samples K")
    ax.set_ylabel("|bias|")
    ax.set_title(f"fitted slope {slope:.2f} (a 1/K law has slope −1)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def supervised_tightening_figure(sizes, means: dict, standard_errors: dict, reference, fig=None):
    """The climax of notebook 03. Left: Eq. 19 as written (mean of log w) stays at E_q(z|x)[log q(y|x,z)]
    for every S, while log-mean-exp of w rises to log q(y|x). Right: Eq. 20 as written converges to its
    own limit, the importance-weighted form to the Eq. 16 objective. Means ± 2 SE over replicates;
    ``reference`` is a :class:`ssvae_lib.toy_experiments.SupervisedEstimatorReference`."""
    fig = _new_figure(fig, (11, 3.6))
    axes = fig.subplots(1, 2)
    sizes_arr = np.asarray(sizes, dtype=float)
    panels = (
        (axes[0], (("eq19", "Eq. 19 as written: mean of log w", "C3"),
                   ("eq19_iw", "log of the mean of w", "C0")),
         (("log q(y|x)", reference.log_q_y, "C0"),
          ("E_q(z|x)[log q(y|x,z)]", reference.expected_log_w, "C3")), "estimate of log q(y|x)"),
        (axes[1], (("as_written", "Eq. 20 as written", "C3"), ("weighted", "importance-weighted Eq. 20", "C0")),
         (("Eq. 16 (the objective)", reference.eq16, "C0"),
          ("limit of Eq. 20 as written", reference.limit_as_written, "C3")), "supervised objective L_S"),
    )
    for ax, curves, lines, ylabel in panels:
        for name, label, colour in curves:
            m, se = np.asarray(means[name], dtype=float), np.asarray(standard_errors[name], dtype=float)
            ax.errorbar(sizes_arr, m, yerr=2 * se, fmt="o-", color=colour, ms=4, capsize=2, label=label)
            predicted = [reference.predicted_mean(name, int(s)) for s in sizes_arr]
            ax.plot(sizes_arr, predicted, color=colour, lw=0.8, ls=":")
        top = max(value for _, value, _ in lines)
        for label, value, colour in lines:
            ax.axhline(value, color=colour, lw=1.2, ls="--", alpha=0.7)
            above = value == top            # the upper line is labelled above, the lower one below
            ax.annotate(f"exact: {label}", (sizes_arr[-1], value), xytext=(0, 4 if above else -4),
                        textcoords="offset points", ha="right", va="bottom" if above else "top",
                        fontsize=8, color=colour)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("number of samples S")
        ax.set_ylabel(ylabel)
        ax.margins(y=0.12)
        ax.legend(fontsize=8, loc="center right")
        ax.grid(alpha=0.3)
    axes[0].set_title("averaging log w does not tighten; log-mean-exp does", fontsize=9)
    axes[1].set_title(f"α = {reference.alpha:g}: dotted = first-order prediction", fontsize=9)
    fig.tight_layout()
    return fig


def supervised_estimator_figure(estimates: dict, reference, n_samples: int, fig=None):
    """Histograms of the supervised estimates at one S (from :func:`ssvae_lib.toy_experiments.supervised_estimates`)
    against their S → ∞ limits (dashed): left the two forms of Eq. 20, with the exact Eq. 16 objective;
    right the two estimates of log q(y|x), with the exact log q(y|x)."""
    fig = _new_figure(fig, (11, 3.3))
    axes = fig.subplots(1, 2)
    panels = ((axes[0], (("as_written", "Eq. 20 as written", "C3", "its limit"),
                         ("weighted", "importance-weighted", "C0", "exact Eq. 16")),
               f"supervised objective, S = {n_samples}, α = {reference.alpha:g}"),
              (axes[1], (("eq19", "mean of log w (Eq. 19)", "C3", "E_q(z|x)[log q(y|x,z)]"),
                         ("eq19_iw", "log of the mean of w", "C0", "exact log q(y|x)")),
               f"estimate of log q(y|x), S = {n_samples}"))
    for ax, curves, title in panels:
        for name, label, colour, limit_label in curves:
            values = np.asarray(estimates[name].detach().cpu(), dtype=float)
            _histogram(ax, values, bins=60, density=True, alpha=0.45, color=colour, label=label)
            ax.axvline(reference.target(name), color=colour, lw=2, ls="--", label=f"{limit_label} (S → ∞)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.1, top=0.91, wspace=0.15)
    return fig


# -- disentanglement scores side by side (notebook 07) -----------------------------------------------
def score_bars(table: dict, title: str | None = None, fig=None):
    """Grouped bars: one group per score, one bar per representation or run, each bar labelled with its
    value. ``table`` maps a run name to ``{score name: value}`` (the first run's names set the order)."""
    runs = list(table)
    if not runs:
        raise ValueError("score_bars needs at least one run")
    scores = list(table[runs[0]])
    fig = _new_figure(fig, (max(6.0, 1.2 * len(scores) + 1.5), 3.2))
    ax = fig.subplots()
    width = 0.8 / len(runs)
    for i, run in enumerate(runs):
        values = [float(table[run].get(s, np.nan)) for s in scores]
        bars = ax.bar(np.arange(len(scores)) + (i - (len(runs) - 1) / 2) * width, values, width, label=run)
        ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
    ax.set_xticks(np.arange(len(scores)), scores, fontsize=8, rotation=15, ha="right")
    ax.axhline(0, color="k", lw=0.6)
    ax.legend(fontsize=7, ncol=min(len(runs), 4))
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


# -- notebook 06: the thesis's protocol next to the corrected one ---------------------------------------
PROTOCOL_COLOURS = {"thesis": "tab:red", "corrected": "tab:blue"}


def protocol_panels(rows, x: str = "alpha", fig=None, title: str | None = None):
    """The panels of :func:`sweep_panels` with one line per (protocol, M) instead of per M: mean ± 1
    standard deviation over seeds, and every seed as a small dot, so that a bimodal spread (runs that
    saw no label next to runs that did) stays visible. ``rows``: one dict per run (``store.result_row``)."""
    if x not in SWEEP_AXES:
        raise ValueError(f"x must be one of {tuple(SWEEP_AXES)}, got {x!r}")
    rows = _ok(rows)
    values = sorted({r[x] for r in rows})
    position = {v: i for i, v in enumerate(values)}
    by_size = lambda m: (m is None, m or 0)  # noqa: E731  ("all" = None last)
    groups = sorted({(r["protocol"], r["n_labelled"]) for r in rows}, key=lambda g: (g[0], *by_size(g[1])))
    sizes = sorted({m for _, m in groups}, key=by_size)
    styles = ("-", "--", ":", "-.")
    fig = fig or plt.figure(figsize=(12, 6))
    fig.clear()
    axes = fig.subplots(2, 3)
    for row_i, col_i, key, label in SWEEP_PANELS:
        ax = axes[row_i, col_i]
        drawn = False
        for g, (protocol, m) in enumerate(groups):
            colour = PROTOCOL_COLOURS.get(protocol, f"C{g}")
            shift = 0.08 * (g - (len(groups) - 1) / 2)        # side by side, not on top of each other
            members = [r for r in rows if (r["protocol"], r["n_labelled"]) == (protocol, m)]
            points = [(position[v] + shift, *_mean_std(r.get(key) for r in members if r[x] == v)) for v in values]
            points = [p for p in points if p[3]]
            if not points:
                continue
            pos, mean, std, _ = zip(*points)
            ax.errorbar(pos, mean, yerr=std, marker="o", ms=4, capsize=3, color=colour,
                        ls=styles[sizes.index(m) % len(styles)],
                        label=f"{protocol}, M = {_m_label(m)}")
            seeds = [(position[r[x]] + shift, float(r[key])) for r in members
                     if r.get(key) not in (None, "") and np.isfinite(float(r[key]))]
            if seeds:
                ax.scatter(*zip(*seeds), s=9, color=colour, alpha=0.35, zorder=3)
            drawn = True
        _finish_sweep_axis(ax, rows, key, label, values, x, drawn)
    return _finish_sweep_figure(fig, axes, title)
