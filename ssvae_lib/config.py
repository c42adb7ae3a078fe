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
import numbers
import types
import typing
from dataclasses import dataclass

import torch

from . import data as data_mod
from . import settings
from .checks import check_choice, check_int, check_real
from .likelihoods import OBSERVATIONS
from .models import CCVAE, ORDERS, SSVAE

OBJECTIVES = ("m2", "ssvae", "ccvae")
SUPERVISED_ESTIMATORS = ("as_written", "importance_weighted")   # Eq. 20, or its consistent fix
LABELLINGS = ("fixed", "thesis")
CORRUPTION_PROTOCOLS = ("fixed", "per_epoch")
# Config fields that fix the architecture: a checkpoint is only loadable into a model with the same.
ARCHITECTURE_FIELDS = ("objective", "hidden_dim", "style_dim", "characteristic_dim", "order", "observation", "sigma",
                       "var_floor", "learn_beta")
MAX_SEED = 2**32 - 1                # seeds numpy, torch and the evaluation offset all accept


@dataclass
class TrainConfig:
    """Everything a run depends on; validated on construction (seminar thesis §5.1 defaults)."""

    dataset: str = "auto"
    data_root: str | None = None
    n_labelled: int | None = 100        # M; None = every training image labelled
    alpha: float = 50.0                 # weight of alpha * log q(y|x) (Eq. 6)
    gamma: float = 1.0                  # weight of the supervised sum (Eq. 10)
    beta: float = 1.0                   # weight of the style's KL term (beta-VAE, Eq. 3); 1 = the ELBO
    objective: str = "m2"               # "m2": Eq. 8 + Eq. 9 enumeration; "ssvae": Eq. 20 + concrete;
                                        # "ccvae": models.CCVAE, Joy et al. 2021 Eq. 4 + Eq. 5
    order: str = "label_first"          # recognition order, see models.SSVAE
    supervised_estimator: str = "as_written"  # "ssvae": Eq. 20 as written, or "importance_weighted" (notebook 03)
    observation: str = "bernoulli"      # p(x|y,z): one of likelihoods.OBSERVATIONS
    sigma: float = 1.0                  # Gaussian observations: σ (fixed), or its start (gaussian_learned)
    var_floor: float | None = None      # Gaussian: v in N(μ, (σ² + v) I); None = 0 fixed, 1e-3 learned
    binarize: bool = False              # pixels x ~ Bernoulli(grey level): drawn anew each step in training,
                                        # once (data.binarized) for evaluation; see scored_as
    labelling: str = "fixed"            # "fixed" labelled set, or the thesis's batch-keyed protocol
    corruption_rate: float = 0.0
    corruption_protocol: str = "fixed"  # "fixed" once, or "per_epoch" (thesis §5.3)
    epochs: int = 40
    batch_size: int = 128               # unlabelled images per step
    labelled_batch_size: int = 64       # labelled images per step ("fixed" labelling)
    augment_shift: int = 0              # labelled images moved by up to this many pixels each step
    lr: float = 1e-3
    pretrain_epochs: int = 0            # first epochs without the labelled term: an unsupervised VAE (002)
    learn_beta: bool = False            # L-VAE: the reconstruction and KL weights learned (003 Eq. 6)
    n_samples: int = 8                  # S: importance samples of the supervised term
    temperature: float = 0.5            # concrete relaxation of y ("ssvae")
    hidden_dim: int = 256
    style_dim: int = 10
    characteristic_dim: int = 2         # "ccvae": the units of z_c, the label's characteristic latents
    iwae_samples: int = 16              # K of the test log-likelihood estimate
    iwae_examples: int = 500            # test images used for that estimate
    validation_size: int = 0            # > 0: evaluate on a split carved from the pool, not the test set
    max_train: int | None = None        # cap on the training pool (fast mode)
    max_test: int | None = None
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        for f in dataclasses.fields(self):
            setattr(self, f.name, _typed(f.name, getattr(self, f.name)))

        def need(ok, field, allowed):
            if not ok:
                raise ValueError(f"TrainConfig: {field} must be {allowed}, got {getattr(self, field)!r}")

        for name, choices in (("objective", OBJECTIVES), ("order", ORDERS), ("observation", OBSERVATIONS),
                              ("supervised_estimator", SUPERVISED_ESTIMATORS),
                              ("labelling", LABELLINGS), ("corruption_protocol", CORRUPTION_PROTOCOLS)):
            check_choice(f"TrainConfig: {name}", getattr(self, name), choices)
        if self.objective == "m2" and self.order != "label_first":
            raise ValueError("TrainConfig: objective 'm2' needs order 'label_first' (M2 has q(y|x) q(z|x,y)); "
                             "use objective 'ssvae'")
        for name in ("alpha", "gamma", "beta"):
            check_real(f"TrainConfig: {name}", getattr(self, name), 0.0)
        for name in ("lr", "temperature"):
            check_real(f"TrainConfig: {name}", getattr(self, name), 0.0, open_interval=True)
        check_real("TrainConfig: corruption_rate", self.corruption_rate, 0.0, 1.0)
        for name in ("epochs", "batch_size", "labelled_batch_size", "n_samples", "hidden_dim", "style_dim",
                     "iwae_samples", "iwae_examples"):
            check_int(f"TrainConfig: {name}", getattr(self, name))
        for name in ("n_labelled", "max_train", "max_test"):
            need(getattr(self, name) is None or getattr(self, name) >= 1, name, "a positive integer or None (all)")
        need(self.augment_shift >= 0, "augment_shift", "an integer >= 0 (pixels)")
        check_real("TrainConfig: sigma", self.sigma, 0.0, open_interval=True)
        need(self.var_floor is None or (math.isfinite(self.var_floor) and self.var_floor >= 0), "var_floor",
             "None or a finite number >= 0")
        if not self.observation.startswith("gaussian"):
            need(self.sigma == 1.0 and self.var_floor is None, "sigma",
                 "left at 1 with var_floor None: they apply to Gaussian observations only")
        need(0 <= self.pretrain_epochs < self.epochs, "pretrain_epochs", "an integer in [0, epochs)")
        need(not self.learn_beta or self.beta == 1.0, "beta", "1 when learn_beta is set (β is learned)")
        check_int("TrainConfig: characteristic_dim", self.characteristic_dim)
        if self.objective == "ccvae":
            need(self.beta == 1.0 and not self.learn_beta and self.supervised_estimator == "as_written", "beta",
                 "1 (and learn_beta False, supervised_estimator left as is) with objective 'ccvae': its bounds "
                 "(Joy et al. 2021 Eq. 4-5) have no β")
        else:
            need(self.characteristic_dim == 2, "characteristic_dim", "left at 2: it applies to objective 'ccvae' only")
        check_int("TrainConfig: validation_size", self.validation_size, 0)
        need(0 <= self.seed <= MAX_SEED, "seed", f"an integer in [0, {MAX_SEED}]")
        need(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"), "device",
             "'auto', 'cpu', 'mps' or 'cuda[:i]'")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"TrainConfig: unknown fields {sorted(unknown)}")
        return cls(**values)


def field_type(name: str) -> tuple[type, bool]:
    """(the value type, whether None is allowed) of a TrainConfig field, from its annotation."""
    hints = typing.get_type_hints(TrainConfig)
    if name not in hints:
        raise ValueError(f"unknown TrainConfig field {name!r}; the fields are: {', '.join(hints)}")
    hint = hints[name]
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return next(t for t in args if t is not type(None)), type(None) in args


def _typed(name: str, value):
    """``value`` as the type of field ``name`` (integral numbers as int, real numbers as float), or a
    ``ValueError`` naming the field and the type it takes; never a silent rounding of 1.5 to 1."""
    kind, optional = field_type(name)
    if value is None and optional:
        return None
    if kind is bool and isinstance(value, bool):
        return value
    if not isinstance(value, bool):
        if kind is int and isinstance(value, numbers.Integral):
            return int(value)
        if kind is float and isinstance(value, numbers.Real):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
    allowed = {int: "an integer", float: "a number", str: "a string", bool: "True or False"}[kind]
    raise ValueError(f"TrainConfig: {name} must be {allowed}{' or None' if optional else ''}, got {value!r}")


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
    epochs = min(config.epochs, 2)
    return dataclasses.replace(config, epochs=epochs, pretrain_epochs=min(config.pretrain_epochs, epochs - 1),
                               max_train=cap(config.max_train, 2000),
                               max_test=cap(config.max_test, 500), iwae_examples=min(config.iwae_examples, 200))


def scored_as(config: TrainConfig) -> str:
    """What a run's ELBO and IWAE numbers are: a log-likelihood only where the observation model is a
    normalised distribution of the pixels it scores (notebook 01: a Bernoulli on grey levels is not)."""
    if config.observation == "bernoulli" and not config.binarize:
        return ("Bernoulli decoder on grey-level pixels: a bound on a score that is not a normalised density, "
                "not a log-likelihood (notebook 01; binarize=True or observation='continuous_bernoulli' fix it)")
    pixels = f"binarised pixels (evaluation: one fixed binarisation, seed {data_mod.BINARIZATION_SEED})" \
        if config.binarize else "grey-level pixels"
    if config.observation == "bernoulli":
        return f"log-likelihood (a log-probability) of {pixels}, in nats per image"
    return f"{config.observation.replace('_', ' ')} log-density of {pixels}, in nats per image"


def effective_supervised_weight(config: TrainConfig, n_labelled: int, n_unlabelled: int) -> float:
    """Weight of one labelled example relative to one unlabelled example per epoch ("fixed" labelling):
    gamma * (labelled_batch_size / batch_size) * (N / M)."""
    per_step = min(config.labelled_batch_size, n_labelled)
    return config.gamma * per_step / config.batch_size * n_unlabelled / n_labelled


def resolve_device(name: str) -> torch.device:
    """``"auto"``: the best device here; a named CUDA or MPS device only where it exists (else a
    ``ValueError`` saying what is available)."""
    if name == "auto":
        return data_mod.default_device()
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: CUDA is not available on this machine (torch {torch.__version__}); "
                             "use device 'auto' or 'cpu'")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {name!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r}: MPS is not available on this machine; use device 'auto' or 'cpu'")
    return device


def build_model(config: TrainConfig, input_dim: int, n_classes: int) -> SSVAE | CCVAE:
    """The untrained model of a run (initialised from torch's global generator: seed it first)."""
    observation = config.observation
    if observation.startswith("gaussian"):
        observation = dict(name="gaussian", sigma=config.sigma, var_floor=config.var_floor,
                           learned=observation == "gaussian_learned",
                           n_pixels=input_dim if observation == "gaussian_learned" else None)
    shared = dict(input_dim=input_dim, hidden_dim=config.hidden_dim, n_classes=n_classes,
                  style_dim=config.style_dim, observation=observation)
    if config.objective == "ccvae":
        return CCVAE(**shared, characteristic_dim=config.characteristic_dim)
    return SSVAE(**shared, order=config.order, learn_beta=config.learn_beta)
