"""Weak supervision from pairs: Locatello et al. 2020, "Weakly-Supervised Disentanglement Without
Compromises", the Ada-GVAE, on the shapes data.

Generative model of a pair (the ``diagrams.weak_supervision_pair`` plate): z ~ p(z) = N(0, I); a set S of
k factors, unknown to the model, is redrawn, z̃_S ~ p(z_S), z̃_j = z_j for j ∉ S; then x_1 ~ p(x|z) and
x_2 ~ p(x|z̃) with one decoder (``models.VAE``). The annotation is only "these two images differ in k
factors" (:func:`weak_pairs`); which factors differ, and how many latent units they occupy, is not given.

Adaptive averaging (Locatello et al. 2020, Ada-GVAE): with q(z|x_i) = N(mu_i, diag sigma_i²) for each unit j

    δ_j = KL(N(mu_1j, sigma_1j²) ‖ N(mu_2j, sigma_2j²)),     τ = ½ (max_j δ_j + min_j δ_j),

and the units with δ_j < τ are taken as shared. In them both posteriors are replaced by the average of
the GVAE, q̃(z_j) = N(½(mu_1j + mu_2j), ½(sigma_1j² + sigma_2j²)); the other units keep their own
(:func:`adaptive_average`). The bound of a pair (:func:`pair_bound`) is the sum of two β-VAE bounds
(:func:`vae_bound`) under the averaged posteriors q̃_1, q̃_2:

    L(x) = E_q(z|x)[log p(x|z)] − β KL(q(z|x) ‖ N(0, I)),
    L_pair(x_1, x_2) = E_q̃_1[log p(x_1|z)] − β KL(q̃_1 ‖ N(0, I))
                     + E_q̃_2[log p(x_2|z)] − β KL(q̃_2 ‖ N(0, I)).

Training (:func:`train_weak`) mixes every training image with a budget of M annotated pairs, the minibatch
estimate in the style of Eq. 10 of the seminar thesis (γ weighs the pairs as it weighs the labelled set):

    loss = −[Σ_{x ∈ batch} L(x) + γ Σ_{(x_1, x_2) ∈ pair batch} L_pair(x_1, x_2)] / B,

B the number of images in the batch. With M = 0 it is a plain β-VAE (Locatello et al. train on pairs only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from . import data as data_mod
from . import engine
from .checks import check_int, check_real
from .models import VAE
from .objectives import checked_input, gaussian_kl, gaussian_kl_between, reparameterise

__all__ = ["weak_pairs", "adaptive_average", "vae_bound", "pair_bound", "WeakConfig", "WeakResult",
           "evaluate_weak", "train_weak"]

_PAIR_STREAM, _CYCLE_STREAM = 31, 37     # numpy seed streams: drawing the pairs, cycling through them
_MAX_TRIES_PER_PAIR = 1000               # draws allowed per pair before giving up (no partner exists)


# -- the annotated pairs -------------------------------------------------------------------------
def _draw_pairs(factors: np.ndarray, n_pairs: int, k: int, seed: int) -> torch.Tensor:
    """Pairs of rows of ``factors`` ``[N, K]`` that differ in exactly ``k`` factors (see :func:`weak_pairs`)."""
    factors = np.asarray(factors)
    n_factors = factors.shape[1]
    if k > n_factors - 1:
        raise ValueError(f"k must leave at least one shared factor: at most {n_factors - 1} of {n_factors}, got {k}")
    row_of = {tuple(f.tolist()): row for row, f in enumerate(factors)}
    values = [np.unique(factors[:, j]) for j in range(n_factors)]
    rng = np.random.default_rng(np.random.SeedSequence([seed, _PAIR_STREAM]))
    pairs, tries = np.empty((n_pairs, 2), dtype=np.int64), 0
    for p in range(n_pairs):
        while True:
            tries += 1
            if tries > _MAX_TRIES_PER_PAIR * (p + 1):
                raise ValueError(f"found only {p} of {n_pairs} pairs differing in exactly {k} factors among "
                                 f"{len(factors)} images after {tries - 1} draws; use more images or another k")
            first = int(rng.integers(len(factors)))
            partner = factors[first].copy()
            for j in rng.choice(n_factors, size=k, replace=False):
                others = values[j][values[j] != partner[j]]
                if len(others) == 0:
                    break
                partner[j] = others[rng.integers(len(others))]
            else:
                second = row_of.get(tuple(partner.tolist()))
                if second is not None:
                    pairs[p] = first, second
                    break
    return torch.from_numpy(pairs)


def weak_pairs(dataset: data_mod.Dataset, n_pairs: int, k: int = 1, seed: int = 0) -> torch.Tensor:
    """``n_pairs`` pairs of rows of ``dataset.x_train``, int64 ``[n_pairs, 2]``, whose generative factors
    differ in exactly ``k`` factors and agree in all others (Locatello et al. 2020's weak annotation).

    Per pair: a training image uniformly at random, k of the factors uniformly at random, and for each of
    them a new value uniformly among the other values seen in the training split. A partner that is not a
    training image (it is in the test split) is rejected and the pair drawn again, so both images are
    always training images. Seeded (numpy, ``[seed, 31]``): the same seed gives the same pairs."""
    n_pairs = check_int("n_pairs", n_pairs, low=0)
    k = check_int("k", k, low=1, high=4)
    seed = check_int("seed", seed, low=0)
    factors = getattr(dataset, "factors_train", None)
    if factors is None:
        raise ValueError(f"dataset {getattr(dataset, 'name', '?')!r} has no generative factors (factors_train); "
                         "weak pairs need them: use load_dataset('shapes')")
    return _draw_pairs(factors, n_pairs, k, seed)


# -- the Ada-GVAE bound --------------------------------------------------------------------------
def adaptive_average(mu1: torch.Tensor, log_sigma1: torch.Tensor, mu2: torch.Tensor, log_sigma2: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Ada-GVAE's averaged posteriors of a batch of pairs (Locatello et al. 2020, Ada-GVAE; the module
    docstring): ``(mu1', log_sigma1', mu2', log_sigma2', shared)``, all ``[B, Dz]``.

    ``shared`` (bool) is δ_j < τ with δ_j = KL(q(z_j|x_1) ‖ q(z_j|x_2)) and τ = ½(max_j δ_j + min_j δ_j) per
    pair (strict: a pair whose δ are all equal shares no unit). Shared units get mean ½(mu1 + mu2) and
    variance ½(sigma1² + sigma2²) in both posteriors; the others are returned unchanged. Gradients flow
    through the averages to both encoders; the mask is a hard choice and carries no gradient."""
    shapes = {tuple(t.shape) for t in (mu1, log_sigma1, mu2, log_sigma2)}
    if len(shapes) != 1 or mu1.dim() != 2:
        raise ValueError(f"mu1, log_sigma1, mu2, log_sigma2 must have one shape [B, Dz], got {sorted(shapes)}")
    delta = gaussian_kl_between(mu1, log_sigma1, mu2, log_sigma2)
    tau = 0.5 * (delta.amax(-1, keepdim=True) + delta.amin(-1, keepdim=True))
    shared = (delta < tau).detach()
    mu = 0.5 * (mu1 + mu2)
    log_sigma = 0.5 * (torch.logaddexp(2.0 * log_sigma1, 2.0 * log_sigma2) - math.log(2.0))
    return (torch.where(shared, mu, mu1), torch.where(shared, log_sigma, log_sigma1),
            torch.where(shared, mu, mu2), torch.where(shared, log_sigma, log_sigma2), shared)


def vae_bound(model: VAE, x: torch.Tensor, *, beta: float = 1.0, eps: torch.Tensor | None = None,
              generator: torch.Generator | None = None,
              posterior: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The β-VAE bound L(x) = E_q[log p(x|z)] − β KL(q(z|x) ‖ N(0, I)) (Eq. 3 of the seminar thesis; Eq. 1 at
    β = 1) of every image, ``[B]``, to be maximised: one reparameterised sample z = mu + sigma·eps (Eq. 2) for
    the expectation, the KL analytic.

    ``eps``: standard normal noise ``[1, B, Dz]`` or ``[B, Dz]`` (drawn from ``generator`` when None).
    ``posterior``: ``(mu, log_sigma)`` of q(z|x), each ``[B, Dz]``, used instead of ``model.encode_latent(x)``
    (the averaged posteriors of :func:`pair_bound`)."""
    x = checked_input(model, x, validate=False, needs_order=False)
    beta = check_real("beta", beta, 0.0)
    mu, log_sigma = model.encode_latent(x) if posterior is None else posterior
    if isinstance(eps, torch.Tensor) and eps.dim() == 2:
        eps = eps[None]
    z = reparameterise(mu, log_sigma, 1, eps, generator)                  # [1, B, Dz]
    return model.log_likelihood(x, z)[0] - beta * gaussian_kl(mu, log_sigma)


def pair_bound(model: VAE, x1: torch.Tensor, x2: torch.Tensor, *, beta: float = 1.0,
               eps1: torch.Tensor | None = None, eps2: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """The Ada-GVAE bound L_pair(x_1, x_2) of every pair, ``[B]`` (module docstring): both images encoded,
    their posteriors averaged in the shared units (:func:`adaptive_average`), then the sum of the two
    :func:`vae_bound` under the averaged posteriors. ``eps1``, ``eps2``: their noise (as in
    :func:`vae_bound`; drawn from ``generator`` when None, first for x_1, then for x_2)."""
    if not isinstance(x1, torch.Tensor) or not isinstance(x2, torch.Tensor) or x1.shape != x2.shape:
        raise ValueError(f"x1 and x2 must be tensors of one shape [B, D], got "
                         f"{getattr(x1, 'shape', type(x1).__name__)} and {getattr(x2, 'shape', type(x2).__name__)}")
    mu1, log_sigma1, mu2, log_sigma2, _ = adaptive_average(*model.encode_latent(x1), *model.encode_latent(x2))
    return (vae_bound(model, x1, beta=beta, eps=eps1, generator=generator, posterior=(mu1, log_sigma1))
            + vae_bound(model, x2, beta=beta, eps=eps2, generator=generator, posterior=(mu2, log_sigma2)))


# -- training on the shapes data -----------------------------------------------------------------
@dataclass
class WeakConfig:
    """A small Ada-GVAE run on the shapes data: all training images plus ``n_pairs`` annotated pairs."""

    n_pairs: int = 1000             # the annotation budget M; 0 gives a plain β-VAE
    k: int = 1                      # factors in which the two images of a pair differ
    beta: float = 1.0               # KL weight of every bound
    gamma: float = 1.0              # weight of the pair term
    pairs_per_step: int = 32        # pairs in each step's pair batch
    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    hidden_dim: int = 256
    latent_dim: int = 10
    max_train: int | None = None
    seed: int = 0

    def __post_init__(self):
        check_int("WeakConfig: n_pairs", self.n_pairs, low=0)
        check_int("WeakConfig: k", self.k, low=1, high=4)
        check_real("WeakConfig: beta", self.beta, 0.0)
        check_real("WeakConfig: gamma", self.gamma, 0.0)
        check_real("WeakConfig: lr", self.lr, 0.0, open_interval=True)
        for name in ("pairs_per_step", "epochs", "batch_size", "hidden_dim", "latent_dim"):
            check_int(f"WeakConfig: {name}", getattr(self, name))
        if self.max_train is not None:
            check_int("WeakConfig: max_train", self.max_train)
        check_int("WeakConfig: seed", self.seed, low=0)


@dataclass
class WeakResult:
    config: WeakConfig
    model: VAE
    pairs: torch.Tensor                    # the annotated pairs, rows of dataset.x_train [n_pairs, 2]
    history: list = field(default_factory=list)

    def final(self, key: str) -> float:
        return self.history[-1][key] if self.history else float("nan")


@torch.no_grad()
def evaluate_weak(model: VAE, x: torch.Tensor, generator: torch.Generator | None = None,
                  batch_size: int = 1000) -> dict:
    """The mean ELBO (:func:`vae_bound` at β = 1) of the images ``x`` in nats per image, ``{"elbo": ...}``."""
    total = sum(float(vae_bound(model, x[i:i + batch_size], generator=generator).sum())
                for i in range(0, len(x), batch_size))
    return {"elbo": total / len(x)}


def _pair_cycle(n_pairs: int, size: int, rng: np.random.Generator):
    """Endless batches of ``size`` pair indices: consecutive slices of a shuffled order of the ``n_pairs``
    pairs, reshuffled at the start of every pass (a batch may span two passes)."""
    order, position = rng.permutation(n_pairs), 0
    while True:
        parts, needed = [], size
        while needed:
            if position == n_pairs:
                order, position = rng.permutation(n_pairs), 0
            part = order[position:position + needed]
            parts.append(part)
            position, needed = position + len(part), needed - len(part)
        yield np.concatenate(parts)


def train_weak(config: WeakConfig, dataset: data_mod.Dataset | None = None, device: str = "cpu") -> WeakResult:
    """Train a :class:`~ssvae_lib.models.VAE` with the Ada-GVAE pair term on the shapes data (Adam, the
    loss of the module docstring): ``engine.fit`` visits all training images in shuffled batches, and each
    step adds the next ``pairs_per_step`` pairs of a shuffled cycle over the ``n_pairs`` pairs (numpy,
    ``[seed, 37]``; no pair term when ``n_pairs`` or ``gamma`` is 0). The pairs (:func:`weak_pairs`) are drawn
    once, among the kept images. After each epoch: ``test_elbo``, the mean ELBO on the test images. Fast mode
    (``SSVAE_FAST``): at most 2 epochs and 1,500 training images. Same seed, same result on the CPU."""
    ds = dataset if dataset is not None else data_mod.load_dataset("shapes")
    if ds.factors_train is None:
        raise ValueError(f"dataset {ds.name!r} has no generative factors; weak pairs need them")
    config, keep = engine.fit_examples(config, len(ds.x_train))
    x, factors = ds.x_train[keep], ds.factors_train[keep.numpy()]
    pairs = _draw_pairs(factors, config.n_pairs, config.k, config.seed)     # rows of the kept images
    device = torch.device(device)
    x, x_test, pair_rows = x.to(device), ds.x_test.to(device), pairs.to(device)

    torch.manual_seed(config.seed)
    model = VAE(input_dim=x.shape[1], hidden_dim=config.hidden_dim, latent_dim=config.latent_dim).to(device)
    x, x_test = model.check_input(x), model.check_input(x_test)
    use_pairs = config.n_pairs > 0 and config.gamma > 0
    cycle = _pair_cycle(config.n_pairs, config.pairs_per_step,
                        np.random.default_rng(np.random.SeedSequence([config.seed, _CYCLE_STREAM])))

    def batch_loss(rows, generator):
        total = vae_bound(model, x[rows], beta=config.beta, generator=generator).sum()
        if use_pairs:
            chosen = pair_rows[torch.as_tensor(next(cycle), device=device)]
            total = total + config.gamma * pair_bound(model, x[chosen[:, 0]], x[chosen[:, 1]], beta=config.beta,
                                                      generator=generator).sum()
        return -total / len(rows)

    def scores(generator):
        return {f"test_{k}": v for k, v in evaluate_weak(model, x_test, generator).items()}

    history = engine.fit(model, batch_loss, len(x), epochs=config.epochs, batch_size=config.batch_size,
                         lr=config.lr, seed=config.seed, evaluate=scores)
    return WeakResult(config, model, keep[pairs], history)
