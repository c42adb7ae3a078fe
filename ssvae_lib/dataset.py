"""The ``Dataset`` container: train/test images and labels, their provenance and optional ground-truth
factors, checked on construction (dtype, shape, matching rows). Every loader returns one: the MNIST
and digits loaders of :mod:`ssvae_lib.data` and the shapes generator of :mod:`ssvae_lib.shapes`.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch


@dataclasses.dataclass(eq=False)
class Dataset:
    """Train/test images and labels plus what the user needs to know about where they came from.

    ``x_*``: float32 [N, D], finite (in [0, 1] for the Bernoulli observation models: training checks the
    range its observation model needs); ``y_*``: int64 [N]. Optional ``factors_*`` are int64 numpy
    arrays [N, K] of ground-truth generative factors (rows aligned with ``x_*``), named by
    ``factor_names`` (used by procedurally generated datasets).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    image_shape: tuple[int, ...]
    n_classes: int
    name: str
    provenance: str
    factors_train: np.ndarray | None = None
    factors_test: np.ndarray | None = None
    factor_names: tuple[str, ...] | None = None

    def __post_init__(self):
        self.image_shape = tuple(int(s) for s in self.image_shape)
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if not (isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.dim() == 2):
                raise ValueError(f"x_{split} must be a float32 tensor of shape [N, D]")
            if not (isinstance(y, torch.Tensor) and y.dtype == torch.int64 and y.dim() == 1):
                raise ValueError(f"y_{split} must be an int64 tensor of shape [N]")
            if not torch.isfinite(x).all():
                raise ValueError(f"x_{split} holds non-finite values (nan or inf)")
            if len(x) != len(y):
                raise ValueError(f"x_{split} has {len(x)} rows but y_{split} has {len(y)}")
            if x.shape[1] != math.prod(self.image_shape):
                raise ValueError(
                    f"x_{split} has {x.shape[1]} columns but image_shape {self.image_shape} "
                    f"has {math.prod(self.image_shape)} pixels"
                )
            factors = getattr(self, f"factors_{split}")
            if factors is not None and (np.ndim(factors) != 2 or len(factors) != len(x)):
                raise ValueError(f"factors_{split} must be an array [N, K] with N = {len(x)} rows")
        if (self.factors_train is None) != (self.factors_test is None):
            raise ValueError("give both factors_train and factors_test, or neither")

    @property
    def n_train(self) -> int:
        return len(self.x_train)

    @property
    def n_test(self) -> int:
        return len(self.x_test)

    @property
    def input_dim(self) -> int:
        return self.x_train.shape[1]

    @property
    def factors(self) -> np.ndarray | None:
        """Ground-truth factors of train and test rows stacked (None when the dataset has none)."""
        if self.factors_train is None:
            return None
        return np.concatenate([self.factors_train, self.factors_test])

    def to(self, device) -> "Dataset":
        """A copy with all tensors on ``device`` (moved once, so training loops never copy)."""
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def summary(self) -> str:
        """A few lines: name, provenance, sizes, image shape, classes and class counts."""

        def counts(y):
            values = torch.bincount(y.cpu(), minlength=self.n_classes).tolist()
            return " ".join(f"{c}:{n}" for c, n in enumerate(values))

        shape = "x".join(str(s) for s in self.image_shape)
        both = torch.cat([self.x_train.reshape(-1), self.x_test.reshape(-1)])
        low, high = (float(v) for v in torch.aminmax(both)) if both.numel() else (0.0, 0.0)
        return "\n".join(
            [
                f"dataset: {self.name}",
                f"provenance: {self.provenance}",
                f"sizes: {self.n_train:,} train / {self.n_test:,} test",
                f"images: {shape} = {self.input_dim} values in [{low:g}, {high:g}]",
                f"classes: {self.n_classes}",
                f"train class counts: {counts(self.y_train)}",
                f"test class counts: {counts(self.y_test)}",
            ]
        )
