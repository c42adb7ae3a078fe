"""A procedurally generated shapes dataset with known generative factors (numpy only, no download).

Every combination of five factors is rendered once, deterministically, as a 28x28 image:

========  =====  =====================================================================
factor    sizes  values
========  =====  =====================================================================
shape     3      square, ellipse, triangle (the partially observed label y)
scale     4      circumradius 3, 4, 5, 6 pixels
rotation  8      0, 11.25, ..., 78.75 degrees (counter-clockwise)
x         8      centre column 7, 9, ..., 21 (pixels from the left edge)
y         8      centre row 7, 9, ..., 21 (pixels from the top edge)
========  =====  =====================================================================

3 * 4 * 8 * 8 * 8 = 6,144 images. Each shape fits inside its circumscribed circle, so at every
rotation it stays inside the disc of radius ``scale`` around its centre; the largest disc spans
pixels 1..26, so every shape lies fully inside the canvas with a blank one-pixel border.
Pixels are anti-aliased by supersampling: a pixel's value is the fraction of its 8x8 sub-pixel
grid inside the shape, in [0, 1].

The factors are independent and uniform over the grid, like dSprites (Higgins et al. 2017), so
the disentanglement metrics of ``ssvae_lib.metrics`` can be computed against them; use
``ShapesSampler`` to draw factors and their images.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from .checks import check_int, split_indices
from .dataset import Dataset

FACTOR_NAMES: tuple[str, ...] = ("shape", "scale", "rotation", "x", "y")
FACTOR_SIZES: tuple[int, ...] = (3, 4, 8, 8, 8)
SHAPE_NAMES: tuple[str, ...] = ("square", "ellipse", "triangle")
SCALES_PX: tuple[float, ...] = (3.0, 4.0, 5.0, 6.0)
ROTATIONS_DEG: tuple[float, ...] = tuple(90.0 * k / 8 for k in range(8))
POSITIONS_PX: tuple[int, ...] = tuple(range(7, 22, 2))
IMAGE_SIZE = 28
SUPERSAMPLING = 8
ELLIPSE_AXES = (1.0, 0.6)  # semi-axes relative to the circumradius (not a circle: rotation shows)

N_IMAGES = int(np.prod(FACTOR_SIZES))
_SPRITE_CENTRE = IMAGE_SIZE // 2  # sprites are drawn around the pixel corner (14, 14), then shifted


def _inside_unit_shape(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether points (u, v) lie inside the shape of circumradius 1 centred at the origin."""
    if shape == 0:
        return np.maximum(np.abs(u), np.abs(v)) <= 1.0 / np.sqrt(2.0)
    if shape == 1:
        return (u / ELLIPSE_AXES[0]) ** 2 + (v / ELLIPSE_AXES[1]) ** 2 <= 1.0
    # Triangle with vertices at 90, 210 and 330 degrees: three half-planes n . p <= 1/2 (inradius).
    inside = np.ones(np.broadcast(u, v).shape, dtype=bool)
    for angle in np.deg2rad([270.0, 30.0, 150.0]):
        inside &= np.cos(angle) * u + np.sin(angle) * v <= 0.5
    return inside


def render_sprite(shape: int, scale: int, rotation: int) -> np.ndarray:
    """One anti-aliased shape centred on the canvas' middle corner (14, 14): float64 [28, 28].

    Arguments are factor indices (see the module table)."""
    for name, value, size in zip(FACTOR_NAMES[:3], (shape, scale, rotation), FACTOR_SIZES[:3]):
        check_int(name, value, low=0, high=size - 1)
    offsets = (np.arange(SUPERSAMPLING) + 0.5) / SUPERSAMPLING
    coords = (np.arange(IMAGE_SIZE)[:, None] + offsets[None, :]).reshape(-1) - _SPRITE_CENTRE
    x = coords[None, :]            # sub-pixel x, to the right
    y = -coords[:, None]           # sub-pixel y, upwards (image rows grow downwards)
    theta = np.deg2rad(ROTATIONS_DEG[rotation])
    radius = SCALES_PX[scale]
    # Rotate the sample points by -theta: the shape itself turns by +theta.
    u = (np.cos(theta) * x + np.sin(theta) * y) / radius
    v = (-np.sin(theta) * x + np.cos(theta) * y) / radius
    inside = _inside_unit_shape(int(shape), u, v).astype(np.float64)
    return inside.reshape(IMAGE_SIZE, SUPERSAMPLING, IMAGE_SIZE, SUPERSAMPLING).mean(axis=(1, 3))


def all_factors() -> np.ndarray:
    """Every factor combination, int64 [6144, 5], in the row order of ``render_all``."""
    grids = np.meshgrid(*[np.arange(n) for n in FACTOR_SIZES], indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=1).astype(np.int64)


@functools.lru_cache(maxsize=1)
def render_all() -> np.ndarray:
    """All 6,144 images, float32 [6144, 784] in [0, 1], rows ordered like ``all_factors()``.

    Rendered once per process (about a second) and cached; the array is read-only."""
    sprites = np.stack([render_sprite(s, c, r) for s in range(FACTOR_SIZES[0])
                        for c in range(FACTOR_SIZES[1]) for r in range(FACTOR_SIZES[2])])
    images = np.zeros((len(sprites), len(POSITIONS_PX), len(POSITIONS_PX), IMAGE_SIZE, IMAGE_SIZE),
                      dtype=np.float32)
    for i, column in enumerate(POSITIONS_PX):
        for j, row in enumerate(POSITIONS_PX):
            # Integer shifts keep the supersampled pixels exact; nothing wraps around because
            # every sprite is blank within 7 pixels of the canvas edge.
            images[:, i, j] = np.roll(sprites, (row - _SPRITE_CENTRE, column - _SPRITE_CENTRE),
                                      axis=(1, 2))
    images = images.reshape(N_IMAGES, IMAGE_SIZE * IMAGE_SIZE)
    images.setflags(write=False)
    return images


def factor_index(factors) -> np.ndarray:
    """Row of each factor combination in ``render_all()``: int64 [n] for factors [n, 5]."""
    factors = check_factors(factors)
    return np.ravel_multi_index(tuple(factors.T), FACTOR_SIZES).astype(np.int64)


def check_factors(factors) -> np.ndarray:
    """Factors as an int64 array [n, 5] of valid indices, or a ValueError saying what is wrong."""
    if isinstance(factors, torch.Tensor):
        factors = factors.detach().cpu().numpy()
    factors = np.asarray(factors)
    if factors.ndim != 2 or factors.shape[1] != len(FACTOR_SIZES):
        raise ValueError(f"factors must be an array [n, {len(FACTOR_SIZES)}] "
                         f"({', '.join(FACTOR_NAMES)}), got shape {factors.shape}")
    if factors.size and not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f"factors must be integer indices, got dtype {factors.dtype}")
    factors = factors.astype(np.int64)
    for k, (name, size) in enumerate(zip(FACTOR_NAMES, FACTOR_SIZES)):
        column = factors[:, k]
        if column.size and (column.min() < 0 or column.max() >= size):
            raise ValueError(f"factor {name!r} (column {k}) must lie in [0, {size - 1}], "
                             f"found values {column.min()}..{column.max()}")
    return factors


class ShapesSampler:
    """Draws factors uniformly and independently, and returns their rendered images.

    The protocol the metrics of ``ssvae_lib.metrics`` rely on: ``factor_sizes``,
    ``sample_factors(n, rng)`` and ``sample_observations(factors)``. Every sampling method takes
    an optional ``rng`` (a ``numpy.random.Generator``); without one it uses the sampler's own,
    seeded by ``seed``, so the same seed and the same calls give the same draws.
    """

    factor_names: tuple[str, ...] = FACTOR_NAMES
    factor_sizes: tuple[int, ...] = FACTOR_SIZES
    image_shape: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE)

    def __init__(self, seed: int = 0):
        self.seed = check_int("seed", seed, low=0)
        self.rng = np.random.default_rng(self.seed)
        self._images = render_all()

    def _generator(self, rng) -> np.random.Generator:
        if rng is None:
            return self.rng
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
        return rng

    def sample_factors(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """``n`` factor combinations drawn uniformly: int64 [n, 5]."""
        check_int("n", n)
        rng = self._generator(rng)
        return np.stack([rng.integers(0, size, n) for size in self.factor_sizes], axis=1)

    def sample_observations(self, factors) -> np.ndarray:
        """The images of ``factors`` [n, 5]: float32 [n, 784] in [0, 1] (a fresh copy)."""
        return self._images[factor_index(factors)]

    def sample(self, n: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random factors and their images: (int64 [n, 5], float32 [n, 784])."""
        factors = self.sample_factors(n, rng)
        return factors, self.sample_observations(factors)


def load_shapes(seed: int = 0, test_fraction: float = 0.2, label: str = "shape") -> Dataset:
    """The shapes dataset as a ``Dataset``: all 6,144 images split at random (seeded) into
    train/test, labels = the factor named ``label`` (default the shape, 3 classes), ``factors_*`` int64
    [N, 5] named by ``factor_names``. The same seed gives the same split."""
    if label not in FACTOR_NAMES:
        raise ValueError(f"label must be one of the factors {FACTOR_NAMES}, got {label!r}")
    k = FACTOR_NAMES.index(label)
    train, test = map(np.sort, split_indices(N_IMAGES, test_fraction, check_int("seed", seed, low=0)))
    images, factors = render_all(), all_factors()
    provenance = (f"shapes: procedurally generated {N_IMAGES:,} images (3 shapes x 4 scales x "
                  f"8 rotations x 8 x 8 positions), split {len(train):,} train / {len(test):,} test "
                  f"(seed {seed}); label = {label}")
    part = lambda a: torch.from_numpy(a.copy())  # noqa: E731
    return Dataset(x_train=part(images[train]), y_train=part(factors[train, k]), x_test=part(images[test]),
                   y_test=part(factors[test, k]), image_shape=(IMAGE_SIZE, IMAGE_SIZE), n_classes=FACTOR_SIZES[k],
                   name="shapes", provenance=provenance, factors_train=factors[train].copy(),
                   factors_test=factors[test].copy(), factor_names=FACTOR_NAMES)
