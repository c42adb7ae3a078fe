"""Objectives of the seminar thesis (Eq. 1–10, 14–22): densities, M2 bounds and the SSVAE estimator.

Two levels:

* **tensor level** — pure functions of log-densities and distribution parameters
  (:func:`gaussian_kl`, :func:`m2_supervised_bound`, :func:`enumerated_unsupervised_bound`,
  :func:`supervised_is_estimator`, ...). They know nothing about networks.
* **model level** — :func:`supervised_bound` and :func:`unsupervised_bound` evaluate those on any object
  with the duck-typed interface below and return one value per example, shape ``[B]``, to be
  *maximised* (a trainer minimises the negative).

Model interface (``C`` classes, ``Dz`` style dimensions; prior p(z) = N(0, I))::

    model.n_classes                          C
    model.order                              "label_first": q(y|x) q(z|x,y)  (M2, Eq. 5 / Eq. 21)
                                             "style_first": q(z|x) q(y|x,z)  (label predicted from style)
    model.log_prior_y() -> [C]               log p(y)
    model.log_likelihood(x, y_onehot, z)     log p(x|y,z) summed over pixels
    model.classify(x) -> [B, C]              logits of q(y|x)           (label_first)
    model.encode(x, y_onehot) -> mu, log_sigma of q(z|x,y)              (label_first)
    model.encode_marginal(x) -> mu, log_sigma of q(z|x), [B, Dz]        (style_first)
    model.classify_style(x, z) -> logits of q(y|x,z)                    (style_first)
    model.shares_features (optional)         True: the four heads above accept features=model.features(x),
                                             computed here once per call

Shapes: ``x`` is ``[B, D]`` and is never expanded here; ``y_onehot`` and ``z`` carry leading dimensions
(samples ``S`` first; for enumeration a class dimension before that: ``y_onehot [C, 1, 1, C]``,
``z [C, S, B, Dz]``) and the model broadcasts over them.

Noise: ``eps`` (standard normal, ``[S, B, Dz]``) and ``gumbel`` (standard Gumbel, ``[S, B, C]``) may be
supplied by the caller; otherwise they are drawn from ``generator`` (on the generator's device, then
moved), in the order in which they are used. ``n_samples`` must equal ``S`` of supplied noise.

Gradients: z = mu + sigma·eps is reparameterised (Eq. 2), so every term evaluated at z carries a
path-wise gradient to the encoder; KL terms are analytic; log q(y|x) terms are exact sums over classes.
What does *not* carry gradient is stated where it happens (the discrete choice of a mixture component,
a hard Gumbel-max label).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .checks import check_choice, check_int, check_real
from .estimators import log_mean_exp, self_normalised_weights
from .likelihoods import bernoulli_log_likelihood, gaussian_log_likelihood  # re-exported: tensor-level densities

__all__ = [
    # densities
    "gaussian_kl", "gaussian_kl_between", "gaussian_log_density", "standard_normal_log_density",
    "bernoulli_log_likelihood", "gaussian_log_likelihood",
    "categorical_entropy", "categorical_kl",
    # noise and relaxation
    "noise", "reparameterise", "standard_gumbel", "relaxed_one_hot",
    # tensor-level bounds and estimators
    "m2_supervised_bound", "enumerated_unsupervised_bound",
    "supervised_log_weights", "log_q_y_lower_bound", "log_q_y_iw_bound",
    "supervised_is_estimator", "supervised_iw_estimator",
    # model level
    "supervised_is_terms", "supervised_bound", "unsupervised_bound",
    "combined_objective", "supervision_rate",
    # the characteristic-capturing VAE (models.CCVAE)
    "characteristic_terms", "characteristic_supervised_bound", "characteristic_unsupervised_bound",
]

ORDERS = ("label_first", "style_first")
SUPERVISED_ESTIMATORS = ("m2", "is")
PROPOSALS = ("conditional", "marginal")
UNSUPERVISED_METHODS = ("enumerate", "concrete")
_LOG_2PI = math.log(2.0 * math.pi)


# -- densities (tensor level) --------------------------------------------------------------------
def gaussian_kl(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag sigma²) ‖ N(0, I)), summed over the last dimension (the KL term of Eq. 1 and 8).

    = ½ Σ_j (mu_j² + sigma_j² − 1 − 2 log sigma_j). Shapes broadcast; the result drops the last dim.
    """
    return 0.5 * (mu.pow(2) + torch.exp(2.0 * log_sigma) - 1.0 - 2.0 * log_sigma).sum(-1)


def gaussian_kl_between(mu1: torch.Tensor, log_sigma1: torch.Tensor, mu2: torch.Tensor,
                        log_sigma2: torch.Tensor) -> torch.Tensor:
    """KL(N(mu1, sigma1²) ‖ N(mu2, sigma2²)) per unit, not summed:
    log(sigma2/sigma1) + (sigma1² + (mu1 − mu2)²) / (2 sigma2²) − ½ (the δ_j of Locatello et al. 2020)."""
    return (log_sigma2 - log_sigma1
            + 0.5 * (torch.exp(2.0 * (log_sigma1 - log_sigma2)) + (mu1 - mu2).pow(2) * torch.exp(-2.0 * log_sigma2))
            - 0.5)


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag sigma²), summed over the last dimension (the log q(z|·) of Eq. 7 and 17)."""
    standardised = (z - mu) * torch.exp(-log_sigma)
    return (-0.5 * standardised.pow(2) - log_sigma - 0.5 * _LOG_2PI).sum(-1)


def standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    """log p(z) = log N(z; 0, I), summed over the last dimension (the prior of Eq. 4)."""
    return (-0.5 * z.pow(2) - 0.5 * _LOG_2PI).sum(-1)


def categorical_entropy(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """H(q) = −Σ_y q(y) log q(y) with q = softmax(logits) (the entropy term of Eq. 9)."""
    log_q = torch.log_softmax(logits, dim=dim)
    return -(torch.exp(log_q) * log_q).sum(dim)


def categorical_kl(logits_q: torch.Tensor, log_p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """KL(q ‖ p) = Σ_y q(y)(log q(y) − log p(y)) for q = softmax(logits_q) and normalised log p."""
    log_q = torch.log_softmax(logits_q, dim=dim)
    return (torch.exp(log_q) * (log_q - log_p)).sum(dim)


# -- noise and the concrete relaxation -----------------------------------------------------------
def standard_gumbel(shape, dtype: torch.dtype = torch.float32,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard Gumbel noise −log(−log U), U ~ Uniform(0, 1) clamped away from 0 and 1 (always finite)."""
    device = generator.device if generator is not None else None
    u = torch.rand(shape, generator=generator, dtype=dtype, device=device)
    info = torch.finfo(dtype)
    u = u.clamp(min=info.tiny, max=1.0 - info.eps)
    return -torch.log(-torch.log(u))


def relaxed_one_hot(logits: torch.Tensor, temperature: float, gumbel: torch.Tensor) -> torch.Tensor:
    """Concrete / Gumbel-softmax sample softmax((log q + g)/τ) over the last dimension.

    ``temperature=0`` returns the hard Gumbel-max one-hot (an exact sample of Cat(softmax(logits)), no
    gradient through the choice). As τ → 0 the relaxed sample tends to that one-hot for fixed noise.
    """
    check_real("temperature (0 = hard Gumbel-max)", temperature, 0.0)
    perturbed = torch.log_softmax(logits, dim=-1) + gumbel
    if temperature == 0:
        return F.one_hot(perturbed.argmax(-1), logits.shape[-1]).to(logits.dtype)
    return torch.softmax(perturbed / temperature, dim=-1)


# -- tensor-level bounds and estimators ----------------------------------------------------------
def m2_supervised_bound(log_likelihood: torch.Tensor, kl_z: torch.Tensor, log_p_y: torch.Tensor,
                        log_q_y: torch.Tensor, alpha: float, dim: int = 0) -> torch.Tensor:
    """Eq. 8 of the seminar thesis: E_q(z|x,y)[log p(x|y,z)] − KL(q(z|x,y) ‖ p(z)) + log p(y) + α log q(y|x).

    ``log_likelihood`` holds log p(x|y,z^s) for reparameterised z^s ~ q(z|x,y) with the samples along
    ``dim`` (their mean is the reconstruction term); ``kl_z``, ``log_p_y``, ``log_q_y`` are per example.
    """
    _check_alpha(alpha)
    return log_likelihood.mean(dim) - kl_z + log_p_y + alpha * log_q_y


def enumerated_unsupervised_bound(log_q_y: torch.Tensor, per_class_bound: torch.Tensor,
                                  dim: int = -1) -> torch.Tensor:
    """Eq. 9 of the seminar thesis: Σ_y q(y|x) L(x, y) + H(q(y|x)) = Σ_y q(y|x)(L(x, y) − log q(y|x)).

    ``log_q_y``: normalised, finite log q(y|x) (a log_softmax of finite logits); ``per_class_bound``:
    L(x, y) = E_q(z|x,y)[log p(x,y,z)/q(z|x,y)] for every class; both with the classes along ``dim``.
    Classes whose q(y|x) underflows to 0 contribute 0.
    """
    log_q_y, per_class_bound = torch.broadcast_tensors(log_q_y, per_class_bound)
    return (torch.exp(log_q_y) * (per_class_bound - log_q_y)).sum(dim)


def supervised_log_weights(log_q_yz: torch.Tensor, log_q_z: torch.Tensor) -> torch.Tensor:
    """Eq. 17 of the seminar thesis: log w^s = log q(y, z^s|x) − log q(z^s|x)."""
    return log_q_yz - log_q_z


def log_q_y_lower_bound(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Eq. 19 as written: (1/S) Σ_s log w^s.

    Its expectation is E_q(z|x)[log q(y|x,z)] for every S: a lower bound on log q(y|x) (Jensen) that
    does NOT tighten as S grows — more samples only reduce its variance.
    """
    return log_w.mean(dim)


def log_q_y_iw_bound(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Importance-weighted form of Eq. 19: log((1/S) Σ_s w^s).

    Its expectation is non-decreasing in S and tends to log q(y|x) (an IWAE bound on log q(y|x)).
    """
    return log_mean_exp(log_w, dim=dim)


def _supervised_generative_term(log_p_xyz, log_q_yz, log_q_z, alpha, dim):
    """(Eq. 18, log w^s): Σ_s (w^s / (S·Z)) log(p(x,y,z^s)/q(y,z^s|x)), the self-normalised expectation,
    and the log-weights of Eq. 17 it uses, after checking ``alpha``."""
    _check_alpha(alpha)
    log_w = supervised_log_weights(log_q_yz, log_q_z)
    return (self_normalised_weights(log_w, dim=dim) * (log_p_xyz - log_q_yz)).sum(dim), log_w


def supervised_is_estimator(log_p_xyz: torch.Tensor, log_q_yz: torch.Tensor, log_q_z: torch.Tensor,
                            alpha: float, dim: int = 0) -> torch.Tensor:
    """Eq. 20 of the seminar thesis, exactly as written:

        L̂_S = (1/S) Σ_s [ (w^s/Z) log(p(x,y,z^s)/q(y,z^s|x)) + (1 + α) log w^s ],
        w^s = q(y,z^s|x)/q(z^s|x)  (Eq. 17),  Z = (1/S) Σ_s w^s,  z^s ~ q(z|x).

    Inputs are log p(x,y,z^s), log q(y,z^s|x) and log q(z^s|x) (the proposal's log-density) with the
    samples along ``dim``; returns one estimate per example. The first part is the self-normalised
    estimate (Eq. 13/18) of E_q(z|x,y)[log p(x,y,z)/q(y,z|x)]; the second is (1+α)·Eq. 19, whose
    expectation is (1+α) E_q(z|x)[log q(y|x,z)] ≤ (1+α) log q(y|x) for every S (see
    :func:`supervised_iw_estimator` for the form that tightens). Gradients flow through all three
    inputs, including through the normalised weights.
    """
    generative, log_w = _supervised_generative_term(log_p_xyz, log_q_yz, log_q_z, alpha, dim)
    return generative + (1.0 + alpha) * log_q_y_lower_bound(log_w, dim=dim)


def supervised_iw_estimator(log_p_xyz: torch.Tensor, log_q_yz: torch.Tensor, log_q_z: torch.Tensor,
                            alpha: float, dim: int = 0) -> torch.Tensor:
    """Importance-weighted variant of Eq. 20: the Eq. 18 term plus (1 + α)·log((1/S) Σ_s w^s).

    Both parts are consistent, so the estimate tends to the Eq. 16 objective
    (1+α) log q(y|x) + E_q(z|x,y)[log p(x,y,z)/q(y,z|x)] as S → ∞ (bias O(1/S)).
    """
    generative, log_w = _supervised_generative_term(log_p_xyz, log_q_yz, log_q_z, alpha, dim)
    return generative + (1.0 + alpha) * log_q_y_iw_bound(log_w, dim=dim)


# -- model level ---------------------------------------------------------------------------------
def _check_alpha(alpha) -> None:
    """A finite real number; a one-element tensor (e.g. one run's α under ``torch.func.vmap``) is checked
    for its shape only, its value being the caller's to check (``TrainConfig`` does)."""
    if isinstance(alpha, torch.Tensor):
        if alpha.numel() != 1:
            raise ValueError(f"alpha must be a scalar, got a tensor of shape {tuple(alpha.shape)}")
        return
    check_real("alpha", alpha)


def checked_input(model, x: torch.Tensor, validate: bool = True, *, needs_order: bool = True) -> torch.Tensor:
    """``x`` for ``model``: with ``validate``, ``model.check_input(x)`` where the model has it (shape, dtype,
    the observation model's support: once per call); otherwise its shape [B, D] only (under ``vmap``).
    ``needs_order``: the caller branches on ``model.order`` (the M2/SSVAE bounds), so it is checked too."""
    if needs_order:
        check_choice("model.order", getattr(model, "order", None), ORDERS)
    if validate and hasattr(model, "check_input"):
        return model.check_input(x)
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"x must be a [B, D] tensor, got {getattr(x, 'shape', type(x).__name__)}")
    return x


def _labels(y: torch.Tensor, n_classes: int, x: torch.Tensor,
            validate: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(index [B], one-hot [B, C]) from integer labels [B] or one-hot floats [B, C]. ``validate=False``
    skips the checks that read values (range, exact one-hot), which ``torch.func.vmap`` cannot trace."""
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"y must be a tensor of integer labels [B], got {type(y).__name__}")
    batch = x.shape[0]
    if not y.is_floating_point():
        if y.shape != (batch,):
            raise ValueError(f"integer labels y must have shape [B] = [{batch}], got {tuple(y.shape)}")
        if validate and y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
            raise ValueError(f"labels must lie in [0, {n_classes - 1}], got min {int(y.min())}, "
                             f"max {int(y.max())}")
        index = y.long().to(x.device)
        return index, F.one_hot(index, n_classes).to(x.dtype)
    if y.shape != (batch, n_classes):
        raise ValueError(f"floating-point y must be one-hot of shape [B, C] = [{batch}, {n_classes}], "
                         f"got {tuple(y.shape)}; pass integer labels [B] otherwise")
    index = y.argmax(-1)
    onehot = F.one_hot(index, n_classes).to(x.dtype)
    if validate and not torch.equal(onehot, y.to(x.dtype)):
        raise ValueError("floating-point y must be exactly one-hot (0/1 entries, one 1 per row)")
    return index, onehot


def noise(kind: str, given: torch.Tensor | None, shape: tuple, like: torch.Tensor,
          generator: torch.Generator | None) -> torch.Tensor:
    """``given`` ("normal" eps or "gumbel" noise of ``shape``) checked and moved to ``like``'s device and
    dtype, or fresh noise drawn from ``generator`` (on its device, then moved) when None: the one place the
    bounds take their noise."""
    if given is None:
        if kind == "normal":
            device = generator.device if generator is not None else like.device
            given = torch.randn(shape, generator=generator, device=device, dtype=like.dtype)
        else:
            given = standard_gumbel(shape, dtype=like.dtype, generator=generator)
    elif tuple(given.shape) != tuple(shape):
        name, dims = ("eps", "Dz") if kind == "normal" else ("gumbel", "C")
        raise ValueError(f"{name} must have shape {list(shape)} ([n_samples, B, {dims}]), "
                         f"got {list(given.shape)}")
    return given.to(device=like.device, dtype=like.dtype)


def reparameterise(mu: torch.Tensor, log_sigma: torch.Tensor, n_samples: int, eps: torch.Tensor | None,
                   generator: torch.Generator | None) -> torch.Tensor:
    """z = mu + sigma·eps (Eq. 2) with ``eps`` ``[S, B, Dz]`` from :func:`noise`, broadcast over mu's leading
    dims (mu ``[..., B, Dz]``): the path-wise sample every bound takes its gradient through."""
    return mu + torch.exp(log_sigma) * noise("normal", eps, (n_samples, *mu.shape[-2:]), mu, generator)


def _shared(model, x: torch.Tensor) -> dict:
    """``features=`` for the heads of a model whose heads share one layer (``model.shares_features``,
    e.g. models.SSVAE), so that layer runs once per call; nothing for other models."""
    return {"features": model.features(x)} if getattr(model, "shares_features", False) else {}


def _class_onehots(n_classes: int, like: torch.Tensor) -> torch.Tensor:
    """Every class as a one-hot, shape [C, 1, 1, C] (class dim first, singleton sample and batch dims:
    the label's share of each layer is computed once per class and broadcast over the batch)."""
    return torch.eye(n_classes, dtype=like.dtype, device=like.device)[:, None, None, :]


def _check_beta(beta) -> None:
    """β is a number >= 0, or a tensor (a learned β, ``TrainConfig.learn_beta``)."""
    if not torch.is_tensor(beta):
        check_real("beta", beta, 0.0)


def _gather_class(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values[..., B, C] at the class ``index`` [B] -> [..., B]."""
    idx = index.expand(values.shape[:-1]).unsqueeze(-1)
    return values.gather(-1, idx).squeeze(-1)


def supervised_is_terms(model, x: torch.Tensor, y: torch.Tensor, *, n_samples: int = 1,
                        proposal: str | None = None, beta: float = 1.0, eps: torch.Tensor | None = None,
                        gumbel: torch.Tensor | None = None, generator: torch.Generator | None = None,
                        validate: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three log-densities of Eq. 17–20 at z^s ~ proposal: (log p(x,y,z^s), log q(y,z^s|x),
    log q_prop(z^s|x)), each ``[S, B]``; log w^s = log q(y,z^s|x) − log q_prop(z^s|x).

    Proposals:
    * ``label_first``, ``"conditional"`` (default): z^s ~ q(z|x, y_observed). Then
      log w^s = log q(y|x) for every sample (Eq. 22) and Eq. 20 reduces to the M2 bound (Eq. 16 ≡ 7).
    * ``label_first``, ``"marginal"``: the mixture q(z|x) = Σ_k q(k|x) q(z|x,k); k^s is drawn by
      Gumbel-max from ``gumbel`` (not reparameterised: no gradient flows through the choice of k, only
      through z^s given k and through the densities), then z^s ~ q(z|x,k^s). Then w^s = q(y|x,z^s).
    * ``style_first`` (default ``"marginal"``): z^s ~ q(z|x), the encoder's own marginal; q(z|x,y) is
      not available, so ``"conditional"`` is refused.

    ``beta`` ≠ 1 weights the style's share log p(z^s) − log q(z^s|·) of log(p(x,y,z^s)/q(y,z^s|x)) by β
    (the β-VAE weighting, Eq. 3), by adding (β − 1)(log p(z^s) − log q(z^s|·)) to log p(x,y,z^s); the
    weights w^s do not change.
    """
    x = checked_input(model, x, validate)
    n_samples = check_int("n_samples", n_samples)
    _check_beta(beta)
    n_classes, batch = model.n_classes, x.shape[0]
    index, onehot = _labels(y, n_classes, x, validate)
    log_p_y = model.log_prior_y()[index]                                              # [B]
    shared = _shared(model, x)

    if model.order == "style_first":
        if proposal not in (None, "marginal"):
            raise ValueError("style_first models sample z from q(z|x) (proposal='marginal'); "
                             f"q(z|x,y) is not available, got proposal={proposal!r}")
        mu, log_sigma = model.encode_marginal(x, **shared)                              # [B, Dz]
        z = reparameterise(mu, log_sigma, n_samples, eps, generator)                    # [S, B, Dz]
        log_q_z = log_q_style = gaussian_log_density(z, mu, log_sigma)                  # [S, B]
        # here log_q_y is log q(y|x,z^s), the label given the style: [S, B]
        log_q_y = _gather_class(torch.log_softmax(model.classify_style(x, z, **shared), -1), index)
    else:
        proposal = "conditional" if proposal is None else proposal
        check_choice("proposal", proposal, PROPOSALS)
        log_q_all = torch.log_softmax(model.classify(x, **shared), -1)                  # [B, C]
        log_q_y = _gather_class(log_q_all, index)                                       # [B]
        if proposal == "conditional":
            mu, log_sigma = model.encode(x, onehot, **shared)                           # [B, Dz]
            z = reparameterise(mu, log_sigma, n_samples, eps, generator)
            log_q_z = log_q_style = gaussian_log_density(z, mu, log_sigma)              # proposal
        else:
            mu_all, log_sigma_all = model.encode(x, _class_onehots(n_classes, x), **shared)
            dz = mu_all.shape[-1]
            mu_all = torch.broadcast_to(mu_all, (n_classes, 1, batch, dz))[:, 0]         # [C, B, Dz]
            log_sigma_all = torch.broadcast_to(log_sigma_all, (n_classes, 1, batch, dz))[:, 0]
            eps = noise("normal", eps, (n_samples, batch, dz), mu_all, generator)
            gumbel = noise("gumbel", gumbel, (n_samples, batch, n_classes), mu_all, generator)
            component = F.one_hot((log_q_all + gumbel).argmax(-1), n_classes).to(x.dtype)  # [S, B, C]
            mu_k = torch.einsum("sbc,cbd->sbd", component, mu_all)
            log_sigma_k = torch.einsum("sbc,cbd->sbd", component, log_sigma_all)
            z = mu_k + torch.exp(log_sigma_k) * eps                                     # [S, B, Dz]
            log_comp = gaussian_log_density(z.unsqueeze(-2), mu_all.transpose(0, 1),
                                            log_sigma_all.transpose(0, 1))              # [S, B, C]
            log_q_z = torch.logsumexp(log_q_all + log_comp, dim=-1)                     # mixture
            log_q_style = _gather_class(log_comp, index)                                # q(z|x,y)
    log_q_yz = log_q_y + log_q_style
    log_p_z = standard_normal_log_density(z)
    log_p_xyz = model.log_likelihood(x, onehot, z) + log_p_y + log_p_z
    if torch.is_tensor(beta) or beta != 1:
        log_p_xyz = log_p_xyz + (beta - 1.0) * (log_p_z - log_q_style)
    return log_p_xyz, log_q_yz, log_q_z


def supervised_bound(model, x: torch.Tensor, y: torch.Tensor, alpha: float, *, estimator: str = "m2",
                     n_samples: int = 1, proposal: str | None = None, weighted: bool = False, beta: float = 1.0,
                     eps: torch.Tensor | None = None, gumbel: torch.Tensor | None = None,
                     generator: torch.Generator | None = None, validate: bool = True) -> torch.Tensor:
    """Supervised objective L_S(x, y) per example, ``[B]`` (Eq. 6–8 or Eq. 14–20 of the seminar thesis).

    * ``estimator="m2"``: Eq. 8 — MC reconstruction with ``n_samples`` reparameterised z^s ~ q(z|x,y),
      analytic KL, log p(y), α·log q(y|x). ``label_first`` only. Gradient: through z^s (path-wise),
      the analytic KL, and the exact log q(y|x).
    * ``estimator="is"``: Eq. 20 via :func:`supervised_is_estimator` on :func:`supervised_is_terms`
      (see there for ``proposal``); ``weighted=True`` uses :func:`supervised_iw_estimator` instead.
      Gradient: through z^s and all three log-densities, including the self-normalised weights.

    ``y``: integer labels ``[B]`` (int64) or exact one-hot ``[B, C]``. ``beta``: weight of the style's
    KL term (the β-VAE weighting of Eq. 3; 1 gives the bound itself). ``validate=False``: images and
    labels already checked by the caller (the engine checks them once where data enters), so the bound runs under vmap.
    """
    check_choice("estimator", estimator, SUPERVISED_ESTIMATORS)
    _check_alpha(alpha)
    if estimator == "is":   # supervised_is_terms checks x
        terms = supervised_is_terms(model, x, y, n_samples=n_samples, proposal=proposal, beta=beta,
                                    eps=eps, gumbel=gumbel, generator=generator, validate=validate)
        combine = supervised_iw_estimator if weighted else supervised_is_estimator
        return combine(*terms, alpha, dim=0)

    x = checked_input(model, x, validate)
    if model.order != "label_first":
        raise ValueError("estimator='m2' needs q(z|x,y), i.e. a label_first model; "
                         "use estimator='is' for style_first")
    if weighted or proposal not in (None, "conditional"):
        raise ValueError("estimator='m2' samples z from q(z|x,y) and has no weights: "
                         "'proposal' and 'weighted' apply to estimator='is' only")
    n_samples = check_int("n_samples", n_samples)
    _check_beta(beta)
    index, onehot = _labels(y, model.n_classes, x, validate)
    shared = _shared(model, x)
    log_q_y = _gather_class(torch.log_softmax(model.classify(x, **shared), -1), index)
    mu, log_sigma = model.encode(x, onehot, **shared)                                   # [B, Dz]
    z = reparameterise(mu, log_sigma, n_samples, eps, generator)                        # [S, B, Dz]
    log_likelihood = model.log_likelihood(x, onehot, z)                                 # [S, B]
    return m2_supervised_bound(log_likelihood, beta * gaussian_kl(mu, log_sigma),
                               model.log_prior_y()[index], log_q_y, alpha, dim=0)


def unsupervised_bound(model, x: torch.Tensor, *, method: str = "enumerate", temperature: float = 0.5,
                       n_samples: int = 1, beta: float = 1.0, eps: torch.Tensor | None = None,
                       gumbel: torch.Tensor | None = None, generator: torch.Generator | None = None,
                       validate: bool = True) -> torch.Tensor:
    """Unsupervised bound L_U(x) per example, ``[B]`` (Eq. 9 of the seminar thesis).

    ``method="enumerate"`` — exact sum over y:
      * label_first: Σ_y q(y|x)[E_q(z|x,y) log p(x|y,z) − KL(q(z|x,y) ‖ p(z)) + log p(y)] + H(q(y|x)),
        each class with the same ``n_samples`` noise draws and an analytic KL.
      * style_first: z^s ~ q(z|x), then Σ_y q(y|x,z^s)[log p(x|y,z^s) + log p(y) − log q(y|x,z^s)],
        averaged over s, minus the analytic KL(q(z|x) ‖ p(z)) (the exact expectation of
        log p(z) − log q(z|x)).

    ``method="concrete"`` — the paper's implementation: y is a Concrete sample
    ỹ^s = softmax((log q(y|·) + g^s)/τ) at ``temperature`` τ fed to the encoder/decoder, while the
    discrete KL for y is analytic. It estimates
      * label_first: E_g,eps[log p(x|ỹ,z) − KL(q(z|x,ỹ) ‖ p(z))] − KL(q(y|x) ‖ p(y)),  z ~ q(z|x,ỹ);
      * style_first: E_z~q(z|x),g[log p(x|ỹ,z) − KL(q(y|x,z) ‖ p(y))] − KL(q(z|x) ‖ p(z)).
    For τ > 0 this is a surrogate (not Eq. 9); as τ → 0, ỹ → the Gumbel-max one-hot, an exact draw
    y ~ q, so its expectation tends to the enumeration value. ``temperature=0`` uses that hard draw
    (unbiased for Eq. 9; no gradient through the draw, only through the analytic KL for y).
    Gradient for τ > 0: through ỹ (to the classifier), z^s and the analytic KL terms.

    ``beta`` weights every KL(q(z|·) ‖ p(z)) above by β (the β-VAE weighting of Eq. 3; 1 gives Eq. 9).
    ``validate=False``: x already checked by the caller (see :func:`supervised_bound`).
    """
    x = checked_input(model, x, validate)
    check_choice("method", method, UNSUPERVISED_METHODS)
    n_samples = check_int("n_samples", n_samples)
    _check_beta(beta)
    n_classes, batch = model.n_classes, x.shape[0]
    log_p_y = model.log_prior_y()                                                      # [C]
    shared = _shared(model, x)

    if method == "enumerate":
        onehots = _class_onehots(n_classes, x)                                          # [C, 1, 1, C]
        if model.order == "label_first":
            log_q = torch.log_softmax(model.classify(x, **shared), -1)                  # [B, C]
            mu, log_sigma = model.encode(x, onehots, **shared)                          # [C, 1, B, Dz]
            z = reparameterise(mu, log_sigma, n_samples, eps, generator)                # [C, S, B, Dz]
            reconstruction = model.log_likelihood(x, onehots, z).mean(1)                # [C, B]
            kl_z = torch.broadcast_to(beta * gaussian_kl(mu, log_sigma), (n_classes, 1, batch))[:, 0]
            per_class = (reconstruction - kl_z + log_p_y[:, None]).transpose(0, 1)      # [B, C]
            return enumerated_unsupervised_bound(log_q, per_class, dim=-1)
        mu, log_sigma = model.encode_marginal(x, **shared)                              # [B, Dz]
        z = reparameterise(mu, log_sigma, n_samples, eps, generator)                    # [S, B, Dz]
        log_q = torch.log_softmax(model.classify_style(x, z, **shared), -1)             # [S, B, C]
        log_likelihood = model.log_likelihood(x, onehots, z)                            # [C, S, B]
        per_class = log_likelihood.permute(1, 2, 0) + log_p_y                           # [S, B, C]
        inner = enumerated_unsupervised_bound(log_q, per_class, dim=-1)                 # [S, B]
        return inner.mean(0) - beta * gaussian_kl(mu, log_sigma)

    if model.order == "label_first":
        logits = model.classify(x, **shared)                                            # [B, C]
        gumbel = noise("gumbel", gumbel, (n_samples, batch, n_classes), logits, generator)
        y_relaxed = relaxed_one_hot(logits, temperature, gumbel)                        # [S, B, C]
        mu, log_sigma = model.encode(x, y_relaxed, **shared)                            # [S, B, Dz]
        z = reparameterise(mu, log_sigma, n_samples, eps, generator)
        per_sample = model.log_likelihood(x, y_relaxed, z) - beta * gaussian_kl(mu, log_sigma)  # [S, B]
        return per_sample.mean(0) - categorical_kl(logits, log_p_y)
    mu, log_sigma = model.encode_marginal(x, **shared)                                  # [B, Dz]
    z = reparameterise(mu, log_sigma, n_samples, eps, generator)                        # [S, B, Dz]
    logits = model.classify_style(x, z, **shared)                                       # [S, B, C]
    gumbel = noise("gumbel", gumbel, (n_samples, batch, n_classes), logits, generator)
    y_relaxed = relaxed_one_hot(logits, temperature, gumbel)
    per_sample = model.log_likelihood(x, y_relaxed, z) - categorical_kl(logits, log_p_y)
    return per_sample.mean(0) - beta * gaussian_kl(mu, log_sigma)


# -- the characteristic-capturing VAE (Joy et al. 2021; models.CCVAE) ------------------------------
def characteristic_terms(model, x: torch.Tensor, n_samples: int = 1, eps: torch.Tensor | None = None,
                         generator: torch.Generator | None = None, validate: bool = True) -> dict:
    """The log-densities of Joy et al. (2021)'s bounds at z^s = mu + sigma·eps^s ~ q(z|x), ``eps [S, B, Dz]``:
    ``log_px`` log p(x|z^s) and ``log_qz`` log q(z^s|x), each ``[S, B]``; ``log_pz_y`` log p(z^s|y) =
    log p(z_c^s|y) + log N(z_s^s; 0, I) and ``log_qy`` log q(y|z_c^s), each ``[S, B, C]`` (every class)."""
    x = checked_input(model, x, validate, needs_order=False)
    mu, log_sigma = model.encode_latent(x)                                          # [B, Dz]
    z = reparameterise(mu, log_sigma, n_samples, eps, generator)                    # [S, B, Dz]
    d_c = model.characteristic_dim
    prior_mu, prior_log_sigma = model.conditional_prior()                            # [C, Dc]
    log_pz_y = (gaussian_log_density(z[..., None, :d_c], prior_mu, prior_log_sigma)
                + standard_normal_log_density(z[..., d_c:])[..., None])              # [S, B, C]
    return {"log_px": model.log_likelihood(x, z), "log_qz": gaussian_log_density(z, mu, log_sigma),
            "log_pz_y": log_pz_y, "log_qy": torch.log_softmax(model.classify_latent(z), -1)}


def characteristic_supervised_bound(model, x: torch.Tensor, y: torch.Tensor, alpha: float = 0.0, *,
                                    n_samples: int = 8, eps: torch.Tensor | None = None,
                                    generator: torch.Generator | None = None, validate: bool = True) -> torch.Tensor:
    """Eq. 4 of Joy et al. (2021), the bound on log p(x, y) of the CCVAE, plus ``alpha`` log q(y|x) (an
    extra classification weight, the role of α in Eq. 6 of the seminar thesis; 0 is the paper's bound), ``[B]``:

        E_q(z|x)[ q(y|z_c)/q(y|x) · log( p(x|z) p(z|y) / (q(y|z_c) q(z|x)) ) ] + log q(y|x) + log p(y),

    i.e. the ELBO under q(z|x, y) = q(y|z_c) q(z|x) / q(y|x). The S samples z^s ~ q(z|x) give both
    q(y|x) ≈ (1/S) Σ_s q(y|z_c^s) and the expectation, whose weights q(y|z_c^s)/q(y|x) are then
    self-normalised (softmax over s): a consistent estimator (bias O(1/S)), like Eq. 20's."""
    _check_alpha(alpha)
    terms = characteristic_terms(model, x, check_int("n_samples", n_samples), eps, generator, validate)
    index, _ = _labels(y, model.n_classes, x, validate)
    log_qy, log_pz_y = _gather_class(terms["log_qy"], index), _gather_class(terms["log_pz_y"], index)
    log_qy_x = log_mean_exp(log_qy, dim=0)                                          # [B]
    weights = torch.softmax(log_qy, dim=0)                                           # [S, B], sums to 1
    inner = terms["log_px"] + log_pz_y - log_qy - terms["log_qz"]
    return (weights * inner).sum(0) + (1.0 + alpha) * log_qy_x + model.log_prior_y()[index]


def characteristic_unsupervised_bound(model, x: torch.Tensor, *, n_samples: int = 1,
                                      eps: torch.Tensor | None = None, generator: torch.Generator | None = None,
                                      validate: bool = True) -> torch.Tensor:
    """Eq. 5 of Joy et al. (2021), the bound on log p(x) of the CCVAE with y summed out exactly, ``[B]``:

        E_q(z|x)[ log p(x|z) − log q(z|x) + Σ_y q(y|z_c) (log p(z|y) + log p(y) − log q(y|z_c)) ],

    estimated with S samples z^s ~ q(z|x) (unbiased)."""
    terms = characteristic_terms(model, x, check_int("n_samples", n_samples), eps, generator, validate)
    q_y = terms["log_qy"].exp()
    per_class = terms["log_pz_y"] + model.log_prior_y() - terms["log_qy"]
    return (terms["log_px"] - terms["log_qz"] + (q_y * per_class).sum(-1)).mean(0)


def combined_objective(sup_bounds: torch.Tensor | None, unsup_bounds: torch.Tensor | None,
                       gamma: float) -> torch.Tensor:
    """Eq. 10 of the seminar thesis: Σ_{x ∈ D_U} L_U(x) + γ Σ_{(x,y) ∈ D_S} L_S(x, y) (sums, not means).

    Either set may be ``None`` or empty (a batch without labelled or unlabelled images). Dividing by a
    batch size, if wanted, is the caller's choice.
    """
    check_real("gamma", gamma, 0.0)
    if sup_bounds is None and unsup_bounds is None:
        raise ValueError("combined_objective needs at least one of sup_bounds, unsup_bounds")
    if sup_bounds is None:
        return unsup_bounds.sum()
    weighted = gamma * sup_bounds.sum()
    return weighted if unsup_bounds is None else unsup_bounds.sum() + weighted


def supervision_rate(gamma: float, n_labelled: int, n_unlabelled: int) -> float:
    """ρ = γM / (N + γM), the share of the Eq. 10 weight on the labelled set (thesis §3.4.1), with
    M = ``n_labelled`` and N = ``n_unlabelled``."""
    check_real("gamma", gamma, 0.0)
    check_int("n_labelled", n_labelled, low=0)
    check_int("n_unlabelled", n_unlabelled, low=0)
    denominator = n_unlabelled + gamma * n_labelled
    if denominator == 0:
        raise ValueError("supervision_rate is undefined when N + gamma*M = 0 "
                         f"(gamma={gamma}, n_labelled={n_labelled}, n_unlabelled={n_unlabelled})")
    return gamma * n_labelled / denominator
