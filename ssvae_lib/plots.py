"""Figures (matplotlib), each returned as a ``Figure``; :func:`save_figure` writes PNG and PDF."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from . import settings

HISTORY_PANELS = (("train_loss", "training loss (−Eq. 10 per image)"), ("accuracy", "accuracy"),
                  ("elbo", "ELBO (nats)"), ("log_likelihood", "IWAE log p(x) (nats)"))


def _series(history: list, key: str):
    """Values of ``key`` per epoch; evaluation keys carry a split prefix (test_/validation_)."""
    if not history:
        return [], []
    name = key if key in history[0] else next((k for k in history[0] if k.endswith("_" + key)), None)
    if name is None:
        return [], []
    return [r["epoch"] for r in history], [r[name] for r in history]


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


def save_figure(fig, name: str, directory: str | Path | None = None) -> list[Path]:
    """Write ``fig`` as ``directory/name.png`` and ``.pdf`` (default: ``settings.figures_dir()``);
    returns the paths."""
    directory = Path(directory) if directory is not None else settings.figures_dir()
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{name}.{ext}" for ext in ("png", "pdf")]
    for path in paths:
        fig.savefig(path, dpi=130, bbox_inches="tight")
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
    import io

    from matplotlib.image import imsave
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
    import io

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
