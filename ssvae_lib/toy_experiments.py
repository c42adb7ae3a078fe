"""Experiments on the toys of :mod:`ssvae_lib.toy` for the derivation notebooks 01-03 and their panels.

* 01 ELBO: the terms of Eq. 1 for a diagonal Gaussian q(z|x) on a :class:`~ssvae_lib.toy.LinearGaussian`,
  the best diagonal q, the β-VAE objective (Eq. 3), Monte Carlo ELBO terms, and reparameterised against
  score-function gradient estimates (Eq. 2) with their exact moments.
* 02 importance sampling: :class:`PosteriorImportanceSampling` of a 1-d posterior (Eq. 11-13, IWAE, ESS,
  χ²) with closed-form weight moments and biases, and :func:`replicate_estimates` over R replicates.
* 03 supervised estimator: R draws of the Eq. 17-20 terms (:func:`draw_supervised_terms`, which calls
  :func:`ssvae_lib.objectives.supervised_is_terms`), the four estimates of the notebook
  (:func:`supervised_estimates`) and their exact references by quadrature
  (:func:`supervised_estimator_reference`).
* 09 characteristic capturing and weak supervision: :func:`set_linear_gaussian` gives a ``models.VAE`` (or
  CCVAE) the weights of a linear-Gaussian toy; :func:`ccvae_from_toy` is the library's ``models.CCVAE`` made a
  :class:`~ssvae_lib.toy.CharacteristicToy`, so its bounds can be checked against the toy's.

The toys themselves import nothing they check; this module runs the code under test
(:mod:`ssvae_lib.estimators`, :mod:`ssvae_lib.objectives`) on them.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from . import objectives
from .checks import check_choice, check_int, check_real
from .estimators import (effective_sample_size, importance_sampling_estimate, iwae_bound, log_mean_exp,
                         self_normalised_estimate)
from .models import CCVAE, VAE
from .toy import (LOG_2PI, CharacteristicToy, LinearGaussian, ToyStyleFirstModel, diag_log_density,
                  gauss_hermite)

__all__ = ["GRADIENT_ESTIMATORS", "IS_ESTIMATORS", "SUPERVISED_ESTIMATES", "gaussian_kl_diagonal_to_full",
           "elbo_decomposition", "best_diagonal_gaussian", "beta_vae_objective", "elbo_monte_carlo_terms",
           "elbo_gradient_per_sample", "elbo_gradient_estimates", "exact_elbo_gradient",
           "exact_gradient_moments", "PosteriorImportanceSampling", "ReplicateSummary", "replicate_estimates",
           "draw_supervised_terms", "supervised_estimates", "SupervisedEstimatorReference",
           "supervised_estimator_reference", "set_linear_gaussian", "ccvae_from_toy"]

GRADIENT_ESTIMATORS = ("reparameterised", "score_function")
IS_ESTIMATORS = ("normaliser", "log_normaliser", "posterior_mean_is", "posterior_mean_snis")
SUPERVISED_ESTIMATES = ("as_written", "weighted", "eq19", "eq19_iw")


def _latent_vector(model: LinearGaussian, value, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=model.W.dtype)
    if t.shape != (model.latent_dim,) or not torch.isfinite(t).all():
        raise ValueError(f"{name} must be a finite vector of length Dz = {model.latent_dim}, "
                         f"got shape {tuple(t.shape)}")
    return t


def _single_x(model, x) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=model.W.dtype)
    if t.shape != (model.data_dim,):
        raise ValueError(f"x must be one observation of shape [{model.data_dim}], got {tuple(t.shape)}")
    return t


def _normal_log_density(z: torch.Tensor, mean: float, sd: float) -> torch.Tensor:
    """log N(z; mean, sd²) of a 1-d normal, elementwise."""
    return -0.5 * ((z - mean) / sd) ** 2 - math.log(sd) - 0.5 * LOG_2PI


def gaussian_kl_diagonal_to_full(m: torch.Tensor, log_s: torch.Tensor, mean: torch.Tensor,
                                 cov: torch.Tensor) -> torch.Tensor:
    """KL(N(m, diag exp(2 log_s)) ‖ N(mean, cov)) for a full covariance ``cov`` ``[Dz, Dz]``:

    ½ [tr(cov⁻¹ S) + (mean − m)ᵀ cov⁻¹ (mean − m) − Dz + log|cov| − log|S|],  S = diag exp(2 log_s).
    In notebook 01 this is the gap log p(x) − ELBO = KL(q(z|x) ‖ p(z|x)) (Eq. 1)."""
    chol = torch.linalg.cholesky(cov)
    precision_diag = torch.diagonal(torch.cholesky_inverse(chol))
    diff = (mean - m).unsqueeze(-1)
    mahalanobis = torch.linalg.solve_triangular(chol, diff, upper=False).squeeze(-1).pow(2).sum(-1)
    trace = (precision_diag * torch.exp(2 * log_s)).sum(-1)
    log_det_cov = 2 * torch.log(torch.diagonal(chol)).sum()
    return 0.5 * (trace + mahalanobis - cov.shape[-1] + log_det_cov - 2 * log_s.sum(-1))


def elbo_decomposition(model: LinearGaussian, x, m, log_s) -> dict[str, float]:
    """Eq. 1 term by term for q(z|x) = N(m, diag exp(2 log_s)) on the linear-Gaussian model, one x:

    ``reconstruction`` E_q[log p(x|z)], ``kl_prior`` KL(q ‖ p(z)), ``elbo`` = reconstruction − kl_prior,
    ``log_px`` the exact log p(x) and ``gap`` = KL(q ‖ p(z|x)), computed independently of the ELBO
    (so ``log_px = elbo + gap`` is a check, not a definition)."""
    x, m, log_s = _single_x(model, x), _latent_vector(model, m, "m"), _latent_vector(model, log_s, "log_s")
    kl_prior = float(model.kl_to_prior(m, log_s))
    elbo = float(model.elbo(x, m, log_s))
    mean, cov = model.posterior(x)
    return dict(reconstruction=elbo + kl_prior, kl_prior=kl_prior, elbo=elbo,
                log_px=float(model.log_marginal(x)),
                gap=float(gaussian_kl_diagonal_to_full(m, log_s, mean, cov)))


def best_diagonal_gaussian(model: LinearGaussian, x) -> tuple[torch.Tensor, torch.Tensor]:
    """(m, log_s) of the diagonal Gaussian q(z|x) with the largest ELBO (Eq. 1): m is the posterior
    mean and σ_j² = 1/Λ_jj with Λ = I + WᵀW/s² the posterior precision (the mean-field solution). It
    equals p(z|x) only when Λ is diagonal; otherwise a gap KL(q ‖ p(z|x)) > 0 remains."""
    mean, _ = model.posterior(_single_x(model, x))
    return mean, -0.5 * torch.log(torch.diagonal(model.posterior_precision()))


def beta_vae_objective(model: LinearGaussian, x, m, log_s, beta: float) -> float:
    """Eq. 3 of the seminar thesis: E_q[log p(x|z)] − β KL(q(z|x) ‖ p(z)), in closed form."""
    beta = check_real("beta", beta, low=0.0)
    terms = elbo_decomposition(model, x, m, log_s)
    return terms["reconstruction"] - beta * terms["kl_prior"]


def elbo_monte_carlo_terms(model: LinearGaussian, x, m, log_s, n_samples: int,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """log p(x, z^s) − log q(z^s|x) at z^s = m + exp(log_s)·ε^s (Eq. 2), ε^s ~ N(0, I), shape ``[S]``;
    their mean is the Monte Carlo estimate of the ELBO (Eq. 1)."""
    x, m, log_s = _single_x(model, x), _latent_vector(model, m, "m"), _latent_vector(model, log_s, "log_s")
    eps = torch.randn(check_int("n_samples", n_samples), model.latent_dim, generator=generator,
                      dtype=model.W.dtype)
    z = m + torch.exp(log_s) * eps
    return model.log_joint(x, z) - diag_log_density(z, m, log_s)


def elbo_gradient_per_sample(model: LinearGaussian, x, m, log_s, eps: torch.Tensor,
                             estimator: str) -> torch.Tensor:
    """Single-sample estimates of ∇_(m, log_s) ELBO at noise ``eps`` ``[..., Dz]``, shape ``[..., 2·Dz]``
    (the m-part first). With z = m + exp(log_s)·ε and f(z) = log p(x, z) − log q(z|x):

    * ``"reparameterised"`` (Eq. 2): the gradient of f(m + exp(log_s)·ε) with ε held fixed;
    * ``"score_function"``: f(z)·∇ log q(z|x) with z held fixed (unbiased because E_q[∇ log q] = 0).
    """
    check_choice("estimator", estimator, GRADIENT_ESTIMATORS)
    x, m, log_s = _single_x(model, x), _latent_vector(model, m, "m"), _latent_vector(model, log_s, "log_s")
    eps = torch.as_tensor(eps, dtype=model.W.dtype)
    if eps.dim() < 1 or eps.shape[-1] != model.latent_dim:
        raise ValueError(f"eps must have shape [..., {model.latent_dim}], got {tuple(eps.shape)}")
    shape = eps.shape
    m_rep = m.expand(shape).clone().requires_grad_(True)          # one leaf per sample: per-sample grads
    log_s_rep = log_s.expand(shape).clone().requires_grad_(True)
    with torch.enable_grad():
        if estimator == "reparameterised":
            z = m_rep + torch.exp(log_s_rep) * eps
            objective = model.log_joint(x, z) - diag_log_density(z, m_rep, log_s_rep)
        else:
            with torch.no_grad():
                z = m + torch.exp(log_s) * eps
                f = model.log_joint(x, z) - diag_log_density(z, m, log_s)
            objective = f * diag_log_density(z, m_rep, log_s_rep)
        grad_m, grad_log_s = torch.autograd.grad(objective.sum(), (m_rep, log_s_rep))
    return torch.cat([grad_m, grad_log_s], dim=-1)


def elbo_gradient_estimates(model: LinearGaussian, x, m, log_s, n_samples: int, n_replicates: int,
                            estimator: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n_replicates`` independent S-sample estimates of ∇_(m, log_s) ELBO, shape ``[R, 2·Dz]``."""
    s, r = check_int("n_samples", n_samples), check_int("n_replicates", n_replicates)
    eps = torch.randn(r, s, model.latent_dim, generator=generator, dtype=model.W.dtype)
    return elbo_gradient_per_sample(model, x, m, log_s, eps, estimator).mean(1)


def exact_elbo_gradient(model: LinearGaussian, x, m, log_s) -> torch.Tensor:
    """∇_(m, log_s) of the closed-form ELBO (Eq. 1), shape ``[2·Dz]``: what both estimators target."""
    x = _single_x(model, x)
    m = _latent_vector(model, m, "m").clone().requires_grad_(True)
    log_s = _latent_vector(model, log_s, "log_s").clone().requires_grad_(True)
    with torch.enable_grad():
        grads = torch.autograd.grad(model.elbo(x, m, log_s), (m, log_s))
    return torch.cat(grads)


def exact_gradient_moments(model: LinearGaussian, x, m, log_s, estimator: str,
                           n_nodes: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean and variance of a *single-sample* gradient estimate, each ``[2·Dz]``; an S-sample
    average has variance ``variance / S``. Both estimators are polynomials of degree ≤ 4 in ε, so a
    Gauss–Hermite rule with ``n_nodes`` ≥ 5 per dimension integrates their first two moments exactly."""
    nodes, log_w = gauss_hermite(n_nodes, model.latent_dim, dtype=model.W.dtype)
    grads = elbo_gradient_per_sample(model, x, m, log_s, nodes, estimator)
    weights = torch.exp(log_w)[:, None]
    mean = (weights * grads).sum(0)
    return mean, (weights * (grads - mean).pow(2)).sum(0)


# -- importance sampling of a 1-d posterior (Eq. 11–13, IWAE, ESS, χ²) ---------------------------
class PosteriorImportanceSampling:
    """Importance sampling of the posterior p(z|x) of a :class:`LinearGaussian` with a 1-d latent, with
    the Gaussian proposal q = N(μ + shift·σ, (scale·σ)²), where N(μ, σ²) is the exact posterior.

    The unnormalised target is p̃(z) = p(x, z), whose normaliser is Z = p(x). With the normalised
    weight w̄ = p(z|x)/q(z) = w/Z, every quantity the notebook needs has a closed form:
    E_q[w̄^k] = ∫ p^k q^(1−k) dz (finite only when k/σ_p² > (k − 1)/σ_q²), χ²(p ‖ q) = E_q[w̄²] − 1,
    and the first-order (delta-method) biases of the estimators below.
    """

    def __init__(self, model: LinearGaussian, x, shift: float = 0.0, scale: float = 1.0):
        if not isinstance(model, LinearGaussian) or model.latent_dim != 1:
            raise ValueError("PosteriorImportanceSampling needs a LinearGaussian with a 1-d latent")
        self.model, self.x = model, _single_x(model, x)
        self.shift = check_real("shift", shift)
        self.scale = check_real("scale", scale, 0.0, open_interval=True)
        mean, cov = model.posterior(self.x)
        self.posterior_mean, self.posterior_sd = float(mean[0]), math.sqrt(float(cov[0, 0]))
        self.proposal_mean = self.posterior_mean + self.shift * self.posterior_sd
        self.proposal_sd = self.scale * self.posterior_sd
        self.log_normaliser = float(model.log_marginal(self.x))

    # -- densities and draws ---------------------------------------------------------------------
    def log_proposal(self, z: torch.Tensor) -> torch.Tensor:
        return _normal_log_density(z, self.proposal_mean, self.proposal_sd)

    def log_posterior(self, z: torch.Tensor) -> torch.Tensor:
        """The normalised target log p(z|x)."""
        return _normal_log_density(z, self.posterior_mean, self.posterior_sd)

    def log_unnormalised_target(self, z: torch.Tensor) -> torch.Tensor:
        """log p̃(z) = log p(x, z) = log p(z|x) + log p(x)."""
        return self.model.log_joint(self.x, z.unsqueeze(-1))

    def sample(self, n_samples: int, n_replicates: int,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z ~ q, shape ``[K, R]`` (samples first, replicates second), and the log-weights
        log w = log p̃(z) − log q(z), same shape."""
        k, r = check_int("n_samples", n_samples), check_int("n_replicates", n_replicates)
        z = self.proposal_mean + self.proposal_sd * torch.randn(k, r, generator=generator,
                                                                dtype=self.model.W.dtype)
        return z, self.log_unnormalised_target(z) - self.log_proposal(z)

    def estimates(self, estimator: str, z: torch.Tensor, log_w: torch.Tensor) -> torch.Tensor:
        """One estimate per replicate ``[R]`` from draws ``[K, R]`` of :meth:`sample`:

        * ``"normaliser"`` — Eq. 12 with f = 1 applied to p̃: (1/K) Σ w_k, unbiased for Z = p(x);
        * ``"log_normaliser"`` — log((1/K) Σ w_k), the IWAE bound on log p(x) (L_1 = the ELBO);
        * ``"posterior_mean_is"`` — Eq. 12 with the *normalised* p(z|x) and f(z) = z: unbiased;
        * ``"posterior_mean_snis"`` — Eq. 13 with p̃ and f(z) = z: consistent, bias O(1/K).
        """
        if check_choice("estimator", estimator, IS_ESTIMATORS) == "normaliser":
            return torch.exp(log_mean_exp(log_w))
        if estimator == "log_normaliser":
            return iwae_bound(log_w)
        if estimator == "posterior_mean_is":
            return importance_sampling_estimate(self.log_posterior(z), self.log_proposal(z), z)
        return self_normalised_estimate(log_w, z)

    def exact(self, estimator: str) -> float:
        """The value the estimator targets: p(x), log p(x) or the posterior mean E[z|x]."""
        if check_choice("estimator", estimator, IS_ESTIMATORS) == "normaliser":
            return math.exp(self.log_normaliser)
        if estimator == "log_normaliser":
            return self.log_normaliser
        return self.posterior_mean

    # -- closed forms ---------------------------------------------------------------------------
    def _tilted(self, k: float) -> tuple[float, float, float]:
        """(log E_q[w̄^k], mean, variance) of the normalised density ∝ p^k q^(1−k); inf if divergent."""
        a = k / self.posterior_sd ** 2
        c = (1.0 - k) / self.proposal_sd ** 2
        precision = a + c
        if precision <= 0:
            return math.inf, math.nan, math.nan
        delta = self.posterior_mean - self.proposal_mean
        log_moment = (k * (-0.5 * LOG_2PI - math.log(self.posterior_sd))
                      + (1.0 - k) * (-0.5 * LOG_2PI - math.log(self.proposal_sd))
                      + 0.5 * (LOG_2PI - math.log(precision)) - 0.5 * a * c * delta ** 2 / precision)
        mean = (a * self.posterior_mean + c * self.proposal_mean) / precision
        return log_moment, mean, 1.0 / precision

    def weight_moment(self, k: float) -> float:
        """E_q[w̄^k] = ∫ p(z|x)^k q(z)^(1−k) dz; ``inf`` when the integral diverges (k/σ_p² ≤ (k−1)/σ_q²)."""
        log_moment = self._tilted(k)[0]
        return math.inf if log_moment == math.inf else math.exp(log_moment)

    def chi_square(self) -> float:
        """χ²(p ‖ q) = E_q[w̄²] − 1 = Var_q(w̄): K·Var(Ẑ/Z) for the Eq. 12 estimate of Z."""
        return self.weight_moment(2) - 1.0

    def bias_coefficients(self, estimator: str) -> tuple[float, float]:
        """(c₁, c₂) with E[estimate] − exact ≈ c₁/K + c₂/K² (delta method):

        * Eq. 12 estimates are unbiased: (0, 0);
        * IWAE: c₁ = −χ²/2, c₂ = μ₃/3 − 3χ⁴/4 with μ₃ = E_q[(w̄ − 1)³];
        * Eq. 13 with f(z) = z: c₁ = −E_q[w̄²(z − E[z|x])]; c₂ is not derived (``nan``).

        ``nan`` where χ² is infinite. The expansion describes K ≫ 1 + χ²; for smaller K it can be far off.
        """
        if check_choice("estimator", estimator, IS_ESTIMATORS) in ("normaliser", "posterior_mean_is"):
            return 0.0, 0.0
        m2 = self.weight_moment(2)
        if math.isinf(m2):
            return math.nan, math.nan                  # no finite expansion: heavy-tailed weights
        if estimator == "log_normaliser":
            v = m2 - 1.0
            mu3 = self.weight_moment(3) - 3.0 * m2 + 2.0
            return -0.5 * v, mu3 / 3.0 - 0.75 * v ** 2
        return -m2 * (self._tilted(2)[1] - self.posterior_mean), math.nan       # posterior_mean_snis

    def predicted_bias(self, estimator: str, n_samples: int, order: int = 1) -> float:
        """c₁/K (``order=1``) or c₁/K + c₂/K² (``order=2``) from :meth:`bias_coefficients`."""
        k, order = check_int("n_samples", n_samples), check_choice("order", order, (1, 2))
        c1, c2 = self.bias_coefficients(estimator)
        return c1 / k if order == 1 else c1 / k + c2 / k ** 2

    def predicted_variance(self, estimator: str, n_samples: int) -> float:
        """Var(estimate) to first order in 1/K (exact for the Eq. 12 estimates): Var_q of the
        per-sample term divided by K; ``inf`` when the weights have no finite second moment."""
        k = check_int("n_samples", n_samples)
        m2 = self.weight_moment(2)
        if math.isinf(m2):
            return math.inf
        _, t_mean, t_var = self._tilted(2)
        mu = self.posterior_mean
        per_sample = {"normaliser": math.exp(2 * self.log_normaliser) * (m2 - 1.0),
                      "log_normaliser": m2 - 1.0,
                      "posterior_mean_is": m2 * (t_var + t_mean ** 2) - mu ** 2,
                      "posterior_mean_snis": m2 * (t_var + (t_mean - mu) ** 2)}
        return per_sample[check_choice("estimator", estimator, IS_ESTIMATORS)] / k

    def expected_ess_fraction(self, n_samples: int) -> float:
        """E[ESS]/K for Kish's ESS = (Σ w)²/Σ w², to first order: 1/(1 + χ²) + c/K (delta method,
        with E_q[w̄^k] for k ≤ 4); ``nan`` when the fourth moment is infinite."""
        k = check_int("n_samples", n_samples)
        m2, m3, m4 = (self.weight_moment(j) for j in (2, 3, 4))
        if math.isinf(m4):
            return math.nan
        c = (m2 - 1.0) / m2 - 2.0 * (m3 - m2) / m2 ** 2 + (m4 - m2 ** 2) / m2 ** 3
        return 1.0 / m2 + c / k


@dataclasses.dataclass
class ReplicateSummary:
    """R replicates of one estimator: the estimates and their summary against the exact value."""

    estimator: str
    n_samples: int
    estimates: torch.Tensor
    exact: float
    mean: float
    std: float
    standard_error: float
    bias: float
    mean_ess: float
    chi_square: float
    predicted_bias: float
    predicted_std: float


def replicate_estimates(experiment: PosteriorImportanceSampling, estimator: str, n_samples: int,
                        n_replicates: int, generator: torch.Generator | None = None) -> ReplicateSummary:
    """Run ``estimator`` (see :meth:`PosteriorImportanceSampling.estimates`) R times with K samples each
    and summarise: mean, std, standard error of the mean, bias against the exact value, the mean
    effective sample size, and the first-order closed-form predictions of bias and std (valid for
    K ≫ 1 + χ²; ``nan``/``inf`` when χ² is infinite)."""
    check_choice("estimator", estimator, IS_ESTIMATORS)
    z, log_w = experiment.sample(n_samples, n_replicates, generator)
    values = experiment.estimates(estimator, z, log_w)
    exact = experiment.exact(estimator)
    mean = float(values.mean())
    std = float(values.std()) if values.numel() > 1 else 0.0
    return ReplicateSummary(estimator=estimator, n_samples=int(n_samples), estimates=values, exact=exact,
                            mean=mean, std=std, standard_error=std / math.sqrt(values.numel()),
                            bias=mean - exact, mean_ess=float(effective_sample_size(log_w).mean()),
                            chi_square=experiment.chi_square(),
                            predicted_bias=experiment.predicted_bias(estimator, n_samples),
                            predicted_std=math.sqrt(experiment.predicted_variance(estimator, n_samples)))


# -- the supervised estimator (Eq. 16–20) on the discrete + continuous toy -----------------------
def _one_observation(model, x, y) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(x, dtype=model.generative.W.dtype).reshape(1, -1)
    if x.shape[1] != model.generative.data_dim:
        raise ValueError(f"x must be one observation with D = {model.generative.data_dim} entries, "
                         f"got {x.shape[1]}")
    y = torch.as_tensor(y).reshape(-1).long()
    if y.numel() != 1 or not 0 <= int(y) < model.n_classes:
        raise ValueError(f"y must be one label in [0, {model.n_classes - 1}], got {y.tolist()}")
    return x, y


def draw_supervised_terms(model, x, y, n_samples: int, n_replicates: int, proposal: str | None = None,
                          generator: torch.Generator | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """R independent draws of the Eq. 17–20 log-densities for one labelled pair (x, y): the output of
    :func:`ssvae_lib.objectives.supervised_is_terms` with x repeated R times, each ``[S, R]``."""
    x, y = _one_observation(model, x, y)
    r = check_int("n_replicates", n_replicates)
    return objectives.supervised_is_terms(model, x.expand(r, -1), y.expand(r), n_samples=n_samples,
                                          proposal=proposal, generator=generator)


def supervised_estimates(terms, alpha: float) -> dict[str, torch.Tensor]:
    """The four estimates of notebook 03 from :func:`draw_supervised_terms`, each ``[R]``:
    ``as_written`` (Eq. 20), ``weighted`` (Eq. 18 + (1+α)·log-mean-exp of w), ``eq19`` (Eq. 19 as
    written: the mean of log w) and ``eq19_iw`` (log of the mean of w)."""
    log_w = objectives.supervised_log_weights(terms[1], terms[2])
    return dict(as_written=objectives.supervised_is_estimator(*terms, alpha),
                weighted=objectives.supervised_iw_estimator(*terms, alpha),
                eq19=objectives.log_q_y_lower_bound(log_w), eq19_iw=objectives.log_q_y_iw_bound(log_w))


@dataclasses.dataclass(frozen=True)
class SupervisedEstimatorReference:
    """Exact values for the supervised estimator of a :class:`ToyStyleFirstModel` at one (x, y), by
    quadrature (see :func:`supervised_estimator_reference`)."""

    alpha: float
    eq16: float                 # the Eq. 16 objective, target of the importance-weighted form
    limit_as_written: float     # S → ∞ limit of Eq. 20 as written
    log_q_y: float              # log q(y|x), target of log-mean-exp of w
    expected_log_w: float       # E_q(z|x)[log q(y|x,z)]: mean of Eq. 19 as written, for every S
    snis_coefficient: float     # Eq. 18's bias ≈ snis_coefficient / S
    weight_variance: float      # Var_q(z|x)(w / q(y|x)); log-mean-exp gap ≈ weight_variance / (2S)

    def with_alpha(self, alpha: float) -> "SupervisedEstimatorReference":
        """The same references for another α: only the (1 + α)-weighted terms of Eq. 16 and of the
        as-written limit change, by (α' − α)·log q(y|x) and (α' − α)·E_q(z|x)[log q(y|x,z)]."""
        delta = float(alpha) - self.alpha
        return dataclasses.replace(self, alpha=float(alpha), eq16=self.eq16 + delta * self.log_q_y,
                                   limit_as_written=self.limit_as_written + delta * self.expected_log_w)

    def predicted_mean(self, estimate: str, n_samples: int) -> float:
        """Expected value of an estimate of :func:`supervised_estimates` with S samples, to first order
        in 1/S (exact for ``eq19``)."""
        s = check_int("n_samples", n_samples)
        values = dict(
            as_written=self.limit_as_written + self.snis_coefficient / s,
            weighted=(self.eq16 + self.snis_coefficient / s
                      - (1 + self.alpha) * self.weight_variance / (2 * s)),
            eq19=self.expected_log_w,
            eq19_iw=self.log_q_y - self.weight_variance / (2 * s))
        return values[check_choice("estimate", estimate, SUPERVISED_ESTIMATES)]

    def target(self, estimate: str) -> float:
        """What the estimate converges to as S → ∞."""
        values = dict(as_written=self.limit_as_written, weighted=self.eq16, eq19=self.expected_log_w,
                      eq19_iw=self.log_q_y)
        return values[check_choice("estimate", estimate, SUPERVISED_ESTIMATES)]


def supervised_estimator_reference(model: ToyStyleFirstModel, x, y, alpha: float,
                                   n_nodes: int | None = None) -> SupervisedEstimatorReference:
    """Exact references for Eq. 16–20 at one (x, y) of a style-first toy. With the normalised weight
    w̄ = q(y|x,z)/q(y|x), z ~ q(z|x): the self-normalised Eq. 18 has first-order bias
    −E_q(z|x)[w̄²(f − E_q(z|x,y) f)]/S for f = log p(x,y,z)/q(y,z|x), and log-mean-exp of w falls short
    of log q(y|x) by ≈ Var(w̄)/(2S)."""
    if not isinstance(model, ToyStyleFirstModel):
        raise ValueError("supervised_estimator_reference needs a ToyStyleFirstModel")
    x, y = _one_observation(model, x, y)
    alpha = float(alpha)
    z, log_nodes = model.quadrature(x, n_nodes)                                        # [N, 1, Dz]
    node_w = torch.exp(log_nodes)[:, None]
    w = torch.softmax(model.classify_style(x, z), -1)[..., int(y)]                     # q(y|x,z) [N, 1]
    w_bar = w / (node_w * w).sum(0)
    f = model.log_p_over_q(x, y, z)
    mean_f = (node_w * w_bar * f).sum(0)
    return SupervisedEstimatorReference(
        alpha=alpha,
        eq16=float(model.exact_supervised_bound(x, y, alpha, n_nodes)),
        limit_as_written=float(model.exact_is_estimator_limit(x, y, alpha, n_nodes)),
        log_q_y=float(model.exact_log_q_y(x, n_nodes)[0, int(y)]),
        expected_log_w=float(model.expected_log_q_y_given_z(x, y, n_nodes)),
        snis_coefficient=-float((node_w * w_bar ** 2 * (f - mean_f)).sum()),
        weight_variance=float((node_w * (w_bar - 1.0) ** 2).sum()))


# -- 09: the VAE and the CCVAE as linear-Gaussian toys ---------------------------------------------------
@torch.no_grad()
def set_linear_gaussian(model: VAE, W, b, A, c, log_sigma, log_sigma_weight=None) -> VAE:
    """Set every weight of a float64 ``models.VAE`` (or ``CCVAE``; ``hidden_dim`` ≥ 2·max(D, Dz)) so that
    its decoder mean is Wz + b and q(z|x) = N(Ax + c, diag exp(2(Lx + ℓ))), ℓ = ``log_sigma``, L =
    ``log_sigma_weight`` (default 0): the ReLU layers carry these linear maps with the pair trick
    relu(h) − relu(−h) = h (hidden units [h, −h]). Everything else (a CCVAE's classifier and prior) is
    zeroed."""
    d, dz = model.input_dim, model.latent_dim
    eye_x, eye_z = torch.eye(d, dtype=torch.float64), torch.eye(dz, dtype=torch.float64)
    L = torch.zeros(dz, d, dtype=torch.float64) if log_sigma_weight is None else log_sigma_weight
    for p in model.parameters():
        p.zero_()
    model.hidden.weight[:2 * d] = torch.cat([eye_x, -eye_x])                            # h = relu([x, −x])
    model.latent_head.weight[:, :2 * d] = torch.cat([torch.cat([A, -A], 1), torch.cat([L, -L], 1)])
    model.latent_head.bias.copy_(torch.cat([c, log_sigma]))                             # mu = Ax + c
    model.decoder_in.weight[:2 * dz] = torch.cat([eye_z, -eye_z])                        # relu([z, −z])
    model.decoder_out.weight[:, :2 * dz] = torch.cat([W, -W], 1)                         # mean = Wz + b
    model.decoder_out.bias.copy_(b)
    return model


def ccvae_from_toy(t: CharacteristicToy) -> CCVAE:
    """A float64 ``models.CCVAE`` computing exactly the densities of the toy ``t``
    (:func:`set_linear_gaussian`, the observation model Gaussian with the toy's s, the classifier and
    conditional prior the toy's)."""
    d, dz = t.W.shape
    model = CCVAE(input_dim=d, hidden_dim=2 * max(d, dz), n_classes=t.n_classes,
                  characteristic_dim=t.characteristic_dim, style_dim=dz - t.characteristic_dim,
                  observation=dict(name="gaussian", sigma=t.s)).double()
    set_linear_gaussian(model, t.W, t.b, t.A, t.c, t.log_sigma_q)
    with torch.no_grad():
        model.classifier.weight.copy_(t.U)
        model.classifier.bias.copy_(t.v)
        model.prior_mu.copy_(t.prior_mu)
        model.prior_log_sigma.copy_(t.prior_log_sigma)
    return model
