"""Partial supervision over several labels: K categorical label variables, any subset observed.

The seminar thesis's §4.1 argues that with K partially observed labels y_1..y_K the objective
"fractures into 2^K observation patterns" needing bespoke code per pattern. It does not: one
batched objective with a per-example, per-variable observation mask covers every pattern.

Generative model (Eq. 4 with K labels): p(y_k) = Cat(1/n_k) independently, p(z) = N(0, I),
p(x|y_1..y_K, z) Bernoulli. Recognition model: independent heads q(y_k|x) and q(z|x, y_1..y_K).

For one example with observed labels O and missing labels U, the bound (:func:`masked_bound`) is

    L(x, y_O) = Σ_{y_U} q(y_U|x) L(x, y) + Σ_{k∈U} H(q(y_k|x)) + α Σ_{k∈O} log q(y_k|x),
    L(x, y)   = E_q(z|x,y)[log p(x|y,z)] − KL(q(z|x,y) ‖ p(z)) + Σ_k log p(y_k),

with q(y_U|x) = Π_{k∈U} q(y_k|x). It is Eq. 8 when every label is observed and Eq. 9 (for the
joint label) when none is. Computed for all patterns at once: the J = Π_k n_k joint label
configurations c are enumerated once, and each example gives configuration c the weight

    w(c) = Π_k (observed_k ? 1[c_k = label_k] : q(c_k|x)),

so Σ_c w(c) L(x, c) is the first term for every pattern; the other two are masked sums over k.
The price of having no branches: a fully labelled example still evaluates all J configurations.
"""
from __future__ import annotations

import itertools
import numbers
from dataclasses import dataclass, field

import numpy as np
import torch

from . import data as data_mod
from . import engine
from .checks import check_choice, check_int, check_real
from .models import MultiLabelSSVAE, check_label_range
from .objectives import categorical_entropy, gaussian_kl, reparameterise
from .shapes import FACTOR_NAMES, FACTOR_SIZES

__all__ = ["MultiLabelSSVAE", "joint_configurations", "masked_bound", "observation_mask",
           "pattern_counts", "representation", "MultiLabelConfig", "MultiLabelResult",
           "shapes_labels", "evaluate_multilabel", "train_multilabel"]


# -- the masked objective ------------------------------------------------------------------------
def joint_configurations(label_sizes) -> torch.Tensor:
    """Every joint value of the K labels, int64 ``[Π_k n_k, K]`` (the last label varies fastest)."""
    sizes = tuple(label_sizes)
    if not sizes or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1 for n in sizes):
        raise ValueError(f"label_sizes must be a non-empty sequence of positive integers, got {sizes!r}")
    return torch.tensor(list(itertools.product(*(range(n) for n in sizes))), dtype=torch.int64)


def _check_labels_and_mask(labels, observed, sizes: tuple[int, ...], batch: int) -> None:
    shape = (batch, len(sizes))
    for name, value, dtype, kind, note in (("labels", labels, torch.int64, "an int64", ""),
                                           ("observed", observed, torch.bool, "a bool", " (True = label observed)")):
        if not isinstance(value, torch.Tensor) or value.dtype != dtype or tuple(value.shape) != shape:
            raise ValueError(f"{name} must be {kind} tensor of shape [B, K] = {list(shape)}{note}, got "
                             f"{getattr(value, 'dtype', type(value).__name__)} {list(getattr(value, 'shape', []))}")
    check_label_range(labels, sizes, observed)


def masked_bound(model: MultiLabelSSVAE, x: torch.Tensor, labels: torch.Tensor, observed: torch.Tensor,
                 alpha: float, *, n_samples: int = 1, eps: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """The bound L(x, y_O) of the module docstring for every example, ``[B]``, to be maximised:
    Eq. 8 of the seminar thesis for the observed labels, Eq. 9 (exact enumeration) for the missing ones.

    ``labels``: int64 ``[B, K]``; entries where ``observed`` is False are ignored (any integer, e.g. −1).
    ``observed``: bool ``[B, K]``, True where label k of example b is observed.
    ``eps``: standard normal noise ``[n_samples, B, Dz]`` (drawn from ``generator`` when None), shared by
    all configurations: z^s(c) = mu(x, c) + sigma(x, c)·eps^s, reparameterised (Eq. 2).
    Gradients: path-wise through z, analytic KL and entropies, exact sums over the configurations.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"x must be a [B, D] tensor, got {getattr(x, 'shape', type(x).__name__)}")
    sizes, batch = model.label_sizes, x.shape[0]
    _check_labels_and_mask(labels, observed, sizes, batch)
    alpha, n_samples = check_real("alpha", alpha), check_int("n_samples", n_samples)
    labels, observed = labels.to(x.device), observed.to(x.device)

    configs = joint_configurations(sizes).to(x.device)                                 # [J, K]
    log_q = [torch.log_softmax(logits, -1) for logits in model.classify(x)]            # K x [B, n_k]
    log_p = model.log_prior()

    # Weight of configuration c for example b: Π_k (observed ? 1[c_k = label_k] : q(c_k|x)).
    weights = torch.ones(batch, len(configs), dtype=x.dtype, device=x.device)          # [B, J]
    for k in range(len(sizes)):
        q_at_config = torch.exp(log_q[k])[:, configs[:, k]]                           # [B, J]
        matches = (labels[:, k:k + 1] == configs[None, :, k]).to(x.dtype)               # [B, J]
        weights = weights * torch.where(observed[:, k:k + 1], matches, q_at_config)

    # L(x, c) for every configuration, with the same noise eps for all of them.
    onehots = model.onehot(configs)[:, None, :]                                        # [J, 1, Σn]
    mu, log_sigma = model.encode(x, onehots)                                           # [J, B, Dz]
    z = reparameterise(mu[:, None], log_sigma[:, None], n_samples, eps, generator)     # [J, S, B, Dz]
    reconstruction = model.log_likelihood(x, onehots[:, None], z).mean(1)              # [J, B]
    log_p_config = sum(log_p[k][configs[:, k]] for k in range(len(sizes)))             # [J]
    per_config = reconstruction - gaussian_kl(mu, log_sigma) + log_p_config[:, None]   # [J, B]

    missing_entropy = sum(torch.where(observed[:, k], 0.0, categorical_entropy(log_q[k]))
                          for k in range(len(sizes)))                                  # [B]
    safe = torch.where(observed, labels, 0)
    observed_log_q = sum(torch.where(observed[:, k], log_q[k].gather(1, safe[:, k:k + 1])[:, 0], 0.0)
                         for k in range(len(sizes)))                                    # [B]
    return (weights * per_config.transpose(0, 1)).sum(1) + missing_entropy + alpha * observed_log_q


# -- observation masks ---------------------------------------------------------------------------
def observation_mask(n: int, n_labels: int, observe_prob: float, seed: int = 0) -> torch.Tensor:
    """Bool ``[n, K]``: each of the K labels of each example observed independently with
    probability ``observe_prob`` (so pattern O has probability p^|O| (1−p)^(K−|O|)). Seeded."""
    n, n_labels, seed = check_int("n", n), check_int("n_labels", n_labels), check_int("seed", seed, low=0)
    check_real("observe_prob", observe_prob, 0.0, 1.0)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 21]))
    return torch.from_numpy(rng.random((n, n_labels)) < observe_prob)


def pattern_counts(observed: torch.Tensor, names=None) -> dict[str, int]:
    """How many examples show each of the 2^K observation patterns, keyed like
    ``"shape+scale"``, ``"shape"``, ``"scale"``, ``"none"`` (label names default to y1..yK)."""
    if not isinstance(observed, torch.Tensor) or observed.dtype != torch.bool or observed.dim() != 2:
        raise ValueError("observed must be a bool tensor [N, K]")
    k = observed.shape[1]
    names = [f"y{i + 1}" for i in range(k)] if names is None else list(names)
    if len(names) != k:
        raise ValueError(f"names must give one name per label ({k}), got {names!r}")
    counts = {}
    for pattern in itertools.product((True, False), repeat=k):
        key = "+".join(name for name, seen in zip(names, pattern) if seen) or "none"
        counts[key] = int((observed == torch.tensor(pattern)).all(1).sum())
    return counts


@torch.no_grad()
def representation(model, x: torch.Tensor) -> torch.Tensor:
    """The complete code of a semi-supervised model: the posterior-mean style z followed by the
    predicted label(s) as numbers, ``[B, Dz + K]`` — the input of the disentanglement metrics.

    Works for :class:`MultiLabelSSVAE` and for the single-label ``SSVAE`` (K = 1)."""
    logits = model.classify(x)
    if isinstance(logits, torch.Tensor):                 # single-label SSVAE: one [B, C] tensor
        predicted = logits.argmax(-1)
        z = model.infer_style(x, predicted)
        predicted = predicted[:, None]
    else:                                                # MultiLabelSSVAE: K tensors [B, n_k]
        predicted = torch.stack([l.argmax(-1) for l in logits], -1)
        z = model.infer_style(x, predicted)
    return torch.cat([z, predicted.to(z.dtype)], dim=-1)


# -- training on the shapes data -----------------------------------------------------------------
@dataclass
class MultiLabelConfig:
    """A small training run on the shapes data with a random observation mask."""

    label_factors: tuple[str, ...] = ("shape", "scale")
    observe_prob: float = 0.1       # p: each label of each image observed independently with prob. p
    alpha: float = 50.0             # weight of α log q(y_k|x) for every observed label
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    n_samples: int = 1
    hidden_dim: int = 256
    style_dim: int = 10
    max_train: int | None = None
    seed: int = 0

    def __post_init__(self):
        self.label_factors = tuple(self.label_factors)
        if not self.label_factors or any(f not in FACTOR_NAMES for f in self.label_factors) \
                or len(set(self.label_factors)) != len(self.label_factors):
            raise ValueError(f"MultiLabelConfig: label_factors must be distinct names from {FACTOR_NAMES}, "
                             f"got {self.label_factors!r}")
        check_real("MultiLabelConfig: observe_prob", self.observe_prob, 0.0, 1.0)
        check_real("MultiLabelConfig: alpha", self.alpha)
        check_real("MultiLabelConfig: lr", self.lr, 0.0, open_interval=True)
        for name in ("epochs", "batch_size", "n_samples", "hidden_dim", "style_dim"):
            check_int(f"MultiLabelConfig: {name}", getattr(self, name))
        if self.max_train is not None:
            check_int("MultiLabelConfig: max_train", self.max_train)


@dataclass
class MultiLabelResult:
    config: MultiLabelConfig
    model: MultiLabelSSVAE
    observed: torch.Tensor                 # the training mask [N, K]
    history: list = field(default_factory=list)

    def final(self, key: str) -> float:
        return self.history[-1][key] if self.history else float("nan")


def shapes_labels(dataset: data_mod.Dataset, label_factors, split: str = "train") -> torch.Tensor:
    """The named factors of the shapes data as int64 labels ``[N, K]``."""
    if dataset.factor_names is None:
        raise ValueError(f"dataset {dataset.name!r} has no generative factors")
    check_choice("split", split, ("train", "test"))
    columns = [dataset.factor_names.index(name) for name in label_factors]
    return torch.as_tensor(getattr(dataset, f"factors_{split}")[:, columns], dtype=torch.int64)


@torch.no_grad()
def evaluate_multilabel(model: MultiLabelSSVAE, x: torch.Tensor, labels: torch.Tensor, names,
                        generator: torch.Generator | None = None, batch_size: int = 1000) -> dict:
    """Accuracy of argmax q(y_k|x) for each label (keyed ``accuracy_<name>``) and the mean unsupervised
    bound (all labels missing: Eq. 9 over the joint label), ``elbo``, in nats per image."""
    model.eval()
    correct, elbo = torch.zeros(model.n_labels), 0.0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], labels[start:start + batch_size]
        correct += (model.predict(xb) == yb).sum(0).cpu().float()
        missing = torch.zeros_like(yb, dtype=torch.bool)
        elbo += float(masked_bound(model, xb, yb, missing, 0.0, generator=generator).sum())
    model.train()
    return {**{f"accuracy_{name}": float(c) / len(x) for name, c in zip(names, correct)},
            "elbo": elbo / len(x)}


def train_multilabel(config: MultiLabelConfig, dataset: data_mod.Dataset | None = None,
                     device: str = "cpu") -> MultiLabelResult:
    """Train a :class:`MultiLabelSSVAE` on the shapes data: the training images are fixed, each label
    of each image is observed with probability ``observe_prob`` (:func:`observation_mask`, drawn once),
    and every step maximises the mean :func:`masked_bound` of a shuffled batch (Adam). Fast mode
    (``SSVAE_FAST``): at most 2 epochs and 1,500 training images. Same seed, same result on the CPU."""
    ds = dataset if dataset is not None else data_mod.load_dataset("shapes")
    config, keep = engine.fit_examples(config, len(ds.x_train))
    x, labels = ds.x_train[keep], shapes_labels(ds, config.label_factors, "train")[keep]
    device = torch.device(device)
    x, labels = x.to(device), labels.to(device)
    x_test, labels_test = ds.x_test.to(device), shapes_labels(ds, config.label_factors, "test").to(device)
    observed = observation_mask(len(x), len(config.label_factors), config.observe_prob, config.seed).to(device)

    sizes = [FACTOR_SIZES[FACTOR_NAMES.index(name)] for name in config.label_factors]
    torch.manual_seed(config.seed)
    model = MultiLabelSSVAE(input_dim=x.shape[1], hidden_dim=config.hidden_dim, label_sizes=sizes,
                            style_dim=config.style_dim).to(device)

    def batch_loss(rows, generator):
        return -masked_bound(model, x[rows], labels[rows], observed[rows], config.alpha,
                             n_samples=config.n_samples, generator=generator).mean()

    def scores(generator):
        found = evaluate_multilabel(model, x_test, labels_test, config.label_factors, generator)
        return {f"test_{k}": v for k, v in found.items()}

    history = engine.fit(model, batch_loss, len(x), epochs=config.epochs, batch_size=config.batch_size,
                         lr=config.lr, seed=config.seed, evaluate=scores)
    return MultiLabelResult(config, model, observed.cpu(), history)
