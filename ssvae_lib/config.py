"""What a training run depends on: :class:`TrainConfig` (validated on construction), the tuned settings,
the fast-mode shrink and the model a config builds.

One optimisation step maximises a minibatch estimate of Eq. 10 of the seminar thesis,

    sum_{x in unlabelled batch} L_U(x) + gamma * sum_{(x, y) in labelled batch} L_S(x, y),

divided by the unlabelled batch size. With the ``"fixed"`` labelling every step sees ``batch_size``
unlabelled images (an epoch is one pass over the training pool) and ``labelled_batch_size`` images of
the fixed labelled set (cycled). Relative to Eq. 10 on the whole data, each labelled example is then
weighted by ``gamma * (labelled_batch_size / batch_size) * (N / M)`` — the batch ratio acts as a weight
(Jurasinski 2019, App. D); :func:`effective_supervised_weight` returns that number. The ``"thesis"``
labelling reproduces the seminar thesis's batch-keyed protocol (see ``data.thesis_labelled_batches``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from . import data as data_mod
from . import settings
from .likelihoods import OBSERVATIONS
from .models import ORDERS, SSVAE

OBJECTIVES = ("m2", "ssvae")
LABELLINGS = ("fixed", "thesis")
CORRUPTION_PROTOCOLS = ("fixed", "per_epoch")
# Config fields that fix the architecture: a checkpoint is only loadable into a model with the same.
ARCHITECTURE_FIELDS = ("hidden_dim", "style_dim", "order", "observation")


@dataclass
class TrainConfig:
    """Everything a run depends on; validated on construction (seminar thesis §5.1 defaults)."""

    dataset: str = "auto"
    data_root: str | None = None
    n_labelled: int | None = 100        # M; None = every training image labelled
    alpha: float = 50.0                 # weight of alpha * log q(y|x) (Eq. 6)
    gamma: float = 1.0                  # weight of the supervised sum (Eq. 10)
    beta: float = 1.0                   # weight of the style's KL term (beta-VAE, Eq. 3); 1 = the ELBO
    objective: str = "m2"               # "m2": Eq. 8 + Eq. 9 enumeration; "ssvae": Eq. 20 + concrete
    order: str = "label_first"          # recognition order, see models.SSVAE
    observation: str = "bernoulli"      # p(x|y,z): one of likelihoods.OBSERVATIONS
    labelling: str = "fixed"            # "fixed" labelled set, or the thesis's batch-keyed protocol
    corruption_rate: float = 0.0
    corruption_protocol: str = "fixed"  # "fixed" once, or "per_epoch" (thesis §5.3)
    epochs: int = 40
    batch_size: int = 128               # unlabelled images per step
    labelled_batch_size: int = 64       # labelled images per step ("fixed" labelling)
    augment_shift: int = 0              # labelled images moved by up to this many pixels each step
    lr: float = 1e-3
    n_samples: int = 8                  # S: importance samples of the supervised term
    temperature: float = 0.5            # concrete relaxation of y ("ssvae")
    hidden_dim: int = 256
    style_dim: int = 10
    iwae_samples: int = 16              # K of the test log-likelihood estimate
    iwae_examples: int = 500            # test images used for that estimate
    validation_size: int = 0            # > 0: evaluate on a split carved from the pool, not the test set
    max_train: int | None = None        # cap on the training pool (fast mode)
    max_test: int | None = None
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        def need(ok, message):
            if not ok:
                raise ValueError(f"TrainConfig: {message}")

        need(self.objective in OBJECTIVES, f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        need(self.order in ORDERS, f"order must be one of {ORDERS}, got {self.order!r}")
        need(self.observation in OBSERVATIONS,
             f"observation must be one of {OBSERVATIONS}, got {self.observation!r}")
        need(self.labelling in LABELLINGS, f"labelling must be one of {LABELLINGS}, got {self.labelling!r}")
        need(self.corruption_protocol in CORRUPTION_PROTOCOLS,
             f"corruption_protocol must be one of {CORRUPTION_PROTOCOLS}, got {self.corruption_protocol!r}")
        need(self.objective == "ssvae" or self.order == "label_first",
             "objective 'm2' needs order 'label_first' (M2 has q(y|x) q(z|x,y)); use objective 'ssvae'")
        need(math.isfinite(self.alpha) and self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}")
        need(math.isfinite(self.gamma) and self.gamma >= 0, f"gamma must be >= 0, got {self.gamma}")
        need(math.isfinite(self.beta) and self.beta >= 0, f"beta must be >= 0, got {self.beta}")
        need(0.0 <= self.corruption_rate <= 1.0, f"corruption_rate must lie in [0, 1], got {self.corruption_rate}")
        need(self.n_labelled is None or self.n_labelled >= 1,
             f"n_labelled must be >= 1 or None (all), got {self.n_labelled}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        for name in ("epochs", "batch_size", "labelled_batch_size", "n_samples", "hidden_dim",
                     "style_dim", "iwae_samples", "iwae_examples"):
            need(int(getattr(self, name)) >= 1, f"{name} must be a positive integer, got {getattr(self, name)}")
        need(isinstance(self.augment_shift, int) and self.augment_shift >= 0,
             f"augment_shift must be an integer >= 0 (pixels), got {self.augment_shift!r}")
        need(self.validation_size >= 0, f"validation_size must be >= 0, got {self.validation_size}")
        need(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"),
             f"device must be 'auto', 'cpu' or 'cuda[:i]', got {self.device!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"TrainConfig: unknown fields {sorted(unknown)}")
        return cls(**values)


# Settings chosen on 1,000-image validation splits for M = 100 labels on MNIST-10k (README, Benchmarks):
# the beta-weighted style KL (Eq. 3) pushes the digit's identity out of z into y, where the unlabelled
# term can train the classifier; gamma < 1 keeps the 100 labels from outweighing the unlabelled term;
# labelled images shifted by up to 2 pixels keep the classifier from learning the 100 images by heart.
# Used by the accuracy benchmark, the demo and the paper-table preset.
TUNED = dict(alpha=500.0, beta=8.0, gamma=0.75, lr=3e-3, epochs=80, augment_shift=2)


def fast_mode(config: TrainConfig) -> TrainConfig:
    """The SSVAE_FAST shrink: at most 2 epochs, 2,000 training and 500 test images."""
    if not settings.FAST:
        return config
    cap = lambda value, limit: limit if value is None else min(value, limit)  # noqa: E731
    return dataclasses.replace(config, epochs=min(config.epochs, 2), max_train=cap(config.max_train, 2000),
                               max_test=cap(config.max_test, 500), iwae_examples=min(config.iwae_examples, 200))


def effective_supervised_weight(config: TrainConfig, n_labelled: int, n_unlabelled: int) -> float:
    """Weight of one labelled example relative to one unlabelled example per epoch ("fixed" labelling):
    gamma * (labelled_batch_size / batch_size) * (N / M)."""
    per_step = min(config.labelled_batch_size, n_labelled)
    return config.gamma * per_step / config.batch_size * n_unlabelled / n_labelled


def resolve_device(name: str) -> torch.device:
    return data_mod.default_device() if name == "auto" else torch.device(name)


def build_model(config: TrainConfig, input_dim: int, n_classes: int) -> SSVAE:
    """The untrained model of a run (initialised from torch's global generator: seed it first)."""
    return SSVAE(input_dim=input_dim, hidden_dim=config.hidden_dim, n_classes=n_classes,
                 style_dim=config.style_dim, order=config.order, observation=config.observation)
