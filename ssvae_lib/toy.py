"""Small models with exact answers, used to check every estimator and objective of the seminar thesis.

* :class:`LinearGaussian` — z ~ N(0, I), x|z ~ N(Wz + b, s²I): exact log p(x), posterior p(z|x) and the
  ELBO (Eq. 1) of any diagonal Gaussian q(z|x) in closed form.
* :class:`DiscreteContinuousToy` — the M2 generative model (Eq. 4) made linear-Gaussian:
  y ~ Cat(π), z ~ N(0, I), x|y,z ~ N(Wz + U e_y + b, s²I); exact log p(x, y), log p(x), p(y|x),
  p(z|x, y) and p(y|x, z).
* Recognition models for that toy implementing the model interface of :mod:`ssvae_lib.objectives`
  (plain tensors as parameters, linear in x and y/z):
  :class:`ToyLabelFirstModel` — q(y|x) q(z|x,y) (Eq. 5), which contains the exact posterior when W has
  orthogonal columns, with closed-form bounds (Eq. 8, 9);
  :class:`ToyStyleFirstModel` — q(z|x) q(y|x,z), whose log q(y|x) and Eq. 16 objective are computed by
  Gauss–Hermite quadrature over z (200 nodes per latent dimension by default: errors near 1e-11 for
  the 1-d toys of the tests, where the rule is checked against a trapezoidal rule; use Dz ≤ 2).
* :class:`CharacteristicToy` — Joy et al. (2021)'s CCVAE made linear-Gaussian: y ~ Cat(π),
  z_c|y ~ N(m_y, diag s_y²), z_s ~ N(0, I), x|z ~ N(Wz + b, s²I), with a linear-Gaussian q(z|x) and a
  softmax q(y|z_c) linear in z_c: exact log p(x, y) and log p(x), and the expectations of its two bounds
  (Joy et al. Eq. 4–5) by Gauss–Hermite quadrature over z.

The experiments of the derivation notebooks that run the code under test on these toys (replicated
Monte Carlo estimates, importance sampling, the supervised estimator) are in
:mod:`ssvae_lib.toy_experiments`; this module imports none of the code it checks.

Shapes: x is ``[B, D]`` (or with extra leading dims where stated); everything follows the dtype of the
parameters (float64 recommended for exact comparisons).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["LinearGaussian", "DiscreteContinuousToy", "ToyLabelFirstModel", "ToyStyleFirstModel",
           "gauss_hermite"]

LOG_2PI = math.log(2.0 * math.pi)   # used by toy_experiments too


# -- small helpers (deliberately independent of objectives.py, so the toy is a separate reference) ---
def _tensor(value, name: str, ndim: int, dtype=None) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=dtype)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite")
    return t


def _positive_scalar(value, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return value


def _mvn_log_density(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, cov) for a full covariance via its Cholesky factor; x, mean broadcast [..., D]."""
    chol = torch.linalg.cholesky(cov)
    diff = (x - mean).unsqueeze(-1)
    solved = torch.linalg.solve_triangular(chol, diff, upper=False).squeeze(-1)
    half_log_det = torch.log(torch.diagonal(chol)).sum()
    return -0.5 * solved.pow(2).sum(-1) - half_log_det - 0.5 * cov.shape[-1] * LOG_2PI


def _diag_kl_to_standard(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(2 log_sigma)) ‖ N(0, I)), summed over the last dim."""
    return 0.5 * (mu.pow(2) + torch.exp(2 * log_sigma) - 1.0 - 2.0 * log_sigma).sum(-1)


def diag_log_density(z: torch.Tensor, m: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
    """log N(z; m, diag exp(2 log_s)), summed over the last dim."""
    return (-0.5 * ((z - m) * torch.exp(-log_s)).pow(2) - log_s - 0.5 * LOG_2PI).sum(-1)


def _standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) = log p(z), summed over the last dim."""
    return -0.5 * z.pow(2).sum(-1) - 0.5 * z.shape[-1] * LOG_2PI


def _isotropic_log_density(x: torch.Tensor, mean: torch.Tensor, s: float) -> torch.Tensor:
    d = x.shape[-1]
    return -0.5 * ((x - mean) / s).pow(2).sum(-1) - d * math.log(s) - 0.5 * d * LOG_2PI


def _pick(values: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """values ``[..., C]`` at the integer labels ``y`` (broadcast over the leading dims) -> ``[...]``."""
    return values.gather(-1, y.long().expand(values.shape[:-1]).unsqueeze(-1)).squeeze(-1)


def _check_x(x: torch.Tensor, data_dim: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != data_dim:
        raise ValueError(f"x must be a tensor [..., {data_dim}], got {getattr(x, 'shape', type(x).__name__)}")
    return x


@functools.lru_cache(maxsize=32)
def _hermegauss(n_nodes: int):
    """Probabilists' Gauss–Hermite nodes and weights (an eigenproblem: computed once per size)."""
    return np.polynomial.hermite_e.hermegauss(n_nodes)


def gauss_hermite(n_nodes: int, dim: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensor-product Gauss–Hermite rule for E_{N(0, I_dim)}[f]: nodes ``[N, dim]``, log-weights ``[N]``
    with logsumexp(log-weights) = 0, N = n_nodes**dim. Exact for polynomials of degree < 2·n_nodes."""
    if int(n_nodes) < 1 or int(dim) < 1:
        raise ValueError(f"n_nodes and dim must be positive integers, got {n_nodes!r}, {dim!r}")
    if n_nodes ** dim > 2_000_000:
        raise ValueError(f"n_nodes**dim = {n_nodes ** dim} nodes is too many; use dim <= 3 or fewer nodes")
    t, w = _hermegauss(int(n_nodes))
    log_w = np.log(w) - 0.5 * LOG_2PI
    grids = np.meshgrid(*([t] * dim), indexing="ij")
    log_grids = np.meshgrid(*([log_w] * dim), indexing="ij")
    nodes = np.stack([g.reshape(-1) for g in grids], axis=-1)
    log_weights = np.sum([g.reshape(-1) for g in log_grids], axis=0)
    return torch.as_tensor(nodes, dtype=dtype), torch.as_tensor(log_weights, dtype=dtype)


# -- the linear-Gaussian decoder both toys share: x = W z (+ U e_y) + b + s·noise, z ~ N(0, I) ---
class _LinearDecoder:
    """W ``[D, Dz]``, b ``[D]`` and s > 0, and what follows from them alone."""

    def __init__(self, W, b, s):
        self.W = _tensor(W, "W", 2)
        self.b = _tensor(b, "b", 1, dtype=self.W.dtype)
        self.s = _positive_scalar(s, "s")
        if self.b.shape[0] != self.W.shape[0]:
            raise ValueError(f"b must have D = {self.W.shape[0]} entries (rows of W), got {self.b.shape[0]}")
        self.data_dim, self.latent_dim = self.W.shape

    def marginal_covariance(self) -> torch.Tensor:
        """W Wᵀ + s² I, the covariance of p(x) (of p(x|y) for the discrete + continuous toy)."""
        return self.W @ self.W.T + self.s ** 2 * torch.eye(self.data_dim, dtype=self.W.dtype)

    def posterior_precision(self) -> torch.Tensor:
        """I + WᵀW/s², the precision of p(z|x) (of p(z|x, y)); the same for every x (and y)."""
        return torch.eye(self.latent_dim, dtype=self.W.dtype) + self.W.T @ self.W / self.s ** 2

    def posterior_z_covariance(self) -> torch.Tensor:
        """Cov of p(z|x) (of p(z|x, y)) = (I + WᵀW/s²)⁻¹."""
        return torch.linalg.inv(self.posterior_precision())


# -- z ~ N(0, I), x|z ~ N(Wz + b, s² I) ----------------------------------------------------------
class LinearGaussian(_LinearDecoder):
    """Linear-Gaussian latent variable model with closed-form marginal, posterior and ELBO (Eq. 1)."""

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) = log N(x; b, W Wᵀ + s² I), shape ``x.shape[:-1]``."""
        return _mvn_log_density(_check_x(x, self.data_dim), self.b, self.marginal_covariance())

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact p(z|x) = N(mean, cov): cov = (I + WᵀW/s²)⁻¹, mean = cov Wᵀ (x − b)/s².

        Returns (mean ``[..., Dz]``, cov ``[Dz, Dz]``; the covariance does not depend on x)."""
        _check_x(x, self.data_dim)
        cov = self.posterior_z_covariance()
        return (x - self.b) @ self.W @ cov / self.s ** 2, cov

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x, z) = log N(x; Wz + b, s² I) + log N(z; 0, I); x and z broadcast."""
        return _isotropic_log_density(x, z @ self.W.T + self.b, self.s) + _standard_normal_log_density(z)

    def kl_to_prior(self, m: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
        """KL(N(m, diag exp(2 log_s)) ‖ N(0, I)) = KL(q(z|x) ‖ p(z)), the regulariser of Eq. 1."""
        return _diag_kl_to_standard(m, log_s)

    def elbo(self, x: torch.Tensor, m: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
        """Closed-form ELBO (Eq. 1) of q(z|x) = N(m, diag exp(2 log_s)):

        E_q[log p(x|z)] − KL(q ‖ N(0, I)), with
        E_q[log p(x|z)] = log N(x; W m + b, s² I) − Σ_j exp(2 log_s_j)·‖W_{:,j}‖² / (2 s²).
        """
        _check_x(x, self.data_dim)
        column_norms = self.W.pow(2).sum(0)
        expected_loglik = (_isotropic_log_density(x, m @ self.W.T + self.b, self.s)
                           - 0.5 * (torch.exp(2 * log_s) * column_norms).sum(-1) / self.s ** 2)
        return expected_loglik - self.kl_to_prior(m, log_s)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x ``[n, D]``, z ``[n, Dz]``) from the model."""
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=self.W.dtype)
        x = z @ self.W.T + self.b + self.s * torch.randn(n, self.data_dim, generator=generator,
                                                         dtype=self.W.dtype)
        return x, z


# -- y ~ Cat(π), z ~ N(0, I), x|y,z ~ N(Wz + U e_y + b, s² I) ------------------------------------
class DiscreteContinuousToy(_LinearDecoder):
    """The M2 generative model (Eq. 4) with a linear-Gaussian decoder: every posterior is exact."""

    def __init__(self, pi, W, U, b, s):
        super().__init__(W, b, s)
        self.pi = _tensor(pi, "pi", 1, dtype=self.W.dtype)
        self.U = _tensor(U, "U", 2, dtype=self.W.dtype)
        self.n_classes = self.pi.shape[0]
        if (self.pi <= 0).any() or abs(float(self.pi.sum()) - 1.0) > 1e-9:
            raise ValueError("pi must be positive class probabilities summing to 1")
        if self.U.shape != (self.data_dim, self.n_classes):
            raise ValueError(f"U must have shape [D, C] = [{self.data_dim}, {self.n_classes}], "
                             f"got {tuple(self.U.shape)}")

    # -- the generative model ----------------------------------------------------------------------
    def log_prior_y(self) -> torch.Tensor:
        """log p(y) = log π, ``[C]``."""
        return torch.log(self.pi)

    def _onehot(self, y: torch.Tensor) -> torch.Tensor:
        if not y.is_floating_point():
            return F.one_hot(y.long(), self.n_classes).to(self.W.dtype)
        return y

    def decoder_mean(self, y_onehot: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """W z + U y + b, broadcast over leading dims; y may be one-hot, relaxed or integer."""
        return z @ self.W.T + self._onehot(y_onehot) @ self.U.T + self.b

    def log_likelihood(self, x: torch.Tensor, y_onehot: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|y,z) = log N(x; W z + U y + b, s² I), summed over the D coordinates."""
        return _isotropic_log_density(x, self.decoder_mean(y_onehot, z), self.s)

    def log_joint(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x, y, z) = log p(x|y,z) + log p(y) + log p(z) (Eq. 4)."""
        onehot = self._onehot(y)
        return (self.log_likelihood(x, onehot, z) + (onehot * self.log_prior_y()).sum(-1)
                + _standard_normal_log_density(z))

    # -- exact answers -----------------------------------------------------------------------------
    def log_joint_xy_all(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x, y) for every class, ``[..., C]``: log π_y + log N(x; U e_y + b, W Wᵀ + s² I)."""
        _check_x(x, self.data_dim)
        means = self.U.T + self.b                                                      # [C, D]
        log_px_given_y = _mvn_log_density(x.unsqueeze(-2), means, self.marginal_covariance())
        return log_px_given_y + self.log_prior_y()

    def log_joint_xy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Exact log p(x, y) for integer labels y ``[...]``."""
        return _pick(self.log_joint_xy_all(x), y)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) = logsumexp_y log p(x, y)."""
        return torch.logsumexp(self.log_joint_xy_all(x), dim=-1)

    def log_posterior_y(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(y|x), ``[..., C]``."""
        return torch.log_softmax(self.log_joint_xy_all(x), dim=-1)

    def posterior_z(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact p(z|x, y) = N(mean, cov), mean = cov Wᵀ (x − U e_y − b)/s²; (mean ``[..., Dz]``, cov)."""
        _check_x(x, self.data_dim)
        cov = self.posterior_z_covariance()
        residual = x - self._onehot(y) @ self.U.T - self.b
        return residual @ self.W @ cov / self.s ** 2, cov

    def log_posterior_y_given_z(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Exact log p(y|x, z) ∝ log π_y + log N(x; W z + U e_y + b, s² I), ``[..., B, C]``."""
        residual = (x - z @ self.W.T - self.b).unsqueeze(-2) - self.U.T                 # [..., B, C, D]
        logits = -0.5 * residual.pow(2).sum(-1) / self.s ** 2 + self.log_prior_y()
        return torch.log_softmax(logits, dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None):
        """(x ``[n, D]``, y ``[n]``, z ``[n, Dz]``) from the model."""
        y = torch.multinomial(self.pi, n, replacement=True, generator=generator)
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=self.W.dtype)
        noise = torch.randn(n, self.data_dim, generator=generator, dtype=self.W.dtype)
        return self.decoder_mean(y, z) + self.s * noise, y, z


class _ToyRecognition:
    """Shared part of the toy recognition models: the generative half of the model interface."""

    order: str = ""

    def __init__(self, generative: DiscreteContinuousToy):
        if not isinstance(generative, DiscreteContinuousToy):
            raise ValueError("generative must be a DiscreteContinuousToy")
        self.generative = generative
        self.n_classes = generative.n_classes

    def log_prior_y(self) -> torch.Tensor:
        return self.generative.log_prior_y()

    def log_likelihood(self, x: torch.Tensor, y_onehot: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|y,z) of the toy (Gaussian with variance s²), broadcast over leading dims."""
        return self.generative.log_likelihood(x, y_onehot, z)

    def parameters(self) -> list[torch.Tensor]:
        return [getattr(self, name) for name in self._parameter_names]

    def requires_grad_(self, flag: bool = True):
        for p in self.parameters():
            p.requires_grad_(flag)
        return self

    def _store(self, **params):
        self._parameter_names = tuple(params)
        for name, (value, shape) in params.items():
            t = torch.as_tensor(value, dtype=self.generative.W.dtype)
            if tuple(t.shape) != shape:
                raise ValueError(f"{name} must have shape {list(shape)}, got {list(t.shape)}")
            setattr(self, name, t)


# -- q(y|x) q(z|x,y): the M2 order ---------------------------------------------------------------
class ToyLabelFirstModel(_ToyRecognition):
    """q(y|x) = Cat(softmax(A x + a)), q(z|x,y) = N(B x + E y + c, diag exp(2 L y)) (Eq. 5), for the toy.

    Parameters (plain tensors): ``classifier_weight`` A ``[C, D]``, ``classifier_bias`` a ``[C]``,
    ``encoder_weight`` B ``[Dz, D]``, ``encoder_label_weight`` E ``[Dz, C]``, ``encoder_bias`` c ``[Dz]``,
    ``encoder_log_sigma`` L ``[C, Dz]`` (one log-sd row per class; y may be relaxed).
    """

    order = "label_first"

    def __init__(self, generative: DiscreteContinuousToy, classifier_weight, classifier_bias,
                 encoder_weight, encoder_label_weight, encoder_bias, encoder_log_sigma):
        super().__init__(generative)
        C, D, Dz = generative.n_classes, generative.data_dim, generative.latent_dim
        self._store(classifier_weight=(classifier_weight, (C, D)), classifier_bias=(classifier_bias, (C,)),
                    encoder_weight=(encoder_weight, (Dz, D)),
                    encoder_label_weight=(encoder_label_weight, (Dz, C)),
                    encoder_bias=(encoder_bias, (Dz,)), encoder_log_sigma=(encoder_log_sigma, (C, Dz)))

    @classmethod
    def exact_posterior(cls, generative: DiscreteContinuousToy) -> "ToyLabelFirstModel":
        """The recognition model equal to the true posterior: q(y|x) = p(y|x), q(z|x,y) = p(z|x,y).

        Possible because log p(y|x) is linear in x up to a y-independent term, and p(z|x,y) is Gaussian
        with a mean linear in (x, y); its covariance must be diagonal, i.e. W must have orthogonal
        columns (ValueError otherwise).
        """
        g = generative
        gram = g.W.T @ g.W
        off_diagonal = gram - torch.diag(torch.diagonal(gram))
        if off_diagonal.abs().max() > 1e-10 * max(1.0, float(gram.abs().max())):
            raise ValueError("p(z|x,y) has a non-diagonal covariance (W's columns are not orthogonal); "
                             "a diagonal q(z|x,y) cannot equal it")
        cov = g.posterior_z_covariance()
        precision_x = torch.linalg.inv(g.marginal_covariance())
        means = g.U.T + g.b                                                              # [C, D]
        classifier_weight = g.U.T @ precision_x                                          # [C, D]
        classifier_bias = g.log_prior_y() - 0.5 * ((means @ precision_x) * means).sum(-1)
        encoder_weight = cov @ g.W.T / g.s ** 2                                          # [Dz, D]
        log_sigma = 0.5 * torch.log(torch.diagonal(cov))
        return cls(g, classifier_weight, classifier_bias, encoder_weight,
                   -encoder_weight @ g.U, -encoder_weight @ g.b,
                   log_sigma.expand(g.n_classes, g.latent_dim).clone())

    @classmethod
    def perturbed_posterior(cls, generative: DiscreteContinuousToy, scale: float,
                            generator: torch.Generator | None = None) -> "ToyLabelFirstModel":
        """The exact posterior with every parameter moved by ``scale``·N(0, 1) noise: a generic q."""
        exact = cls.exact_posterior(generative)
        moved = [p + scale * torch.randn(p.shape, generator=generator, dtype=p.dtype)
                 for p in exact.parameters()]
        return cls(generative, *moved)

    # -- the recognition interface -----------------------------------------------------------------
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y|x), ``[..., C]``."""
        return x @ self.classifier_weight.T + self.classifier_bias

    def encode(self, x: torch.Tensor, y_onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log_sigma) of q(z|x,y), broadcast over y's leading dims: ``[..., B, Dz]``."""
        mu = x @ self.encoder_weight.T + y_onehot @ self.encoder_label_weight.T + self.encoder_bias
        log_sigma = y_onehot @ self.encoder_log_sigma
        return torch.broadcast_tensors(mu, log_sigma)

    # -- closed forms ------------------------------------------------------------------------------
    def exact_class_bounds(self, x: torch.Tensor) -> torch.Tensor:
        """L(x, y) = E_q(z|x,y)[log p(x,y,z) − log q(z|x,y)] for every class, ``[B, C]`` (Eq. 7 without α):

        E_q[log p(x|y,z)] = log N(x; W m_y + U e_y + b, s² I) − Σ_j σ_yj² ‖W_{:,j}‖² / (2 s²),
        minus KL(N(m_y, σ_y²) ‖ N(0, I)), plus log π_y.
        """
        g = self.generative
        eye = torch.eye(self.n_classes, dtype=g.W.dtype)[:, None, :]                     # [C, 1, C]
        mu, log_sigma = self.encode(x, eye)                                              # [C, B, Dz]
        column_norms = g.W.pow(2).sum(0)
        expected_loglik = (g.log_likelihood(x, eye, mu)
                           - 0.5 * (torch.exp(2 * log_sigma) * column_norms).sum(-1) / g.s ** 2)
        bounds = expected_loglik - _diag_kl_to_standard(mu, log_sigma) + g.log_prior_y()[:, None]
        return bounds.T

    def exact_supervised_bound(self, x: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
        """Eq. 8 in closed form: L(x, y) + α log q(y|x), ``[B]`` (y: integer labels)."""
        log_q = torch.log_softmax(self.classify(x), -1)
        return _pick(self.exact_class_bounds(x), y) + alpha * _pick(log_q, y)

    def exact_unsupervised_bound(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 9 in closed form: Σ_y q(y|x)(L(x, y) − log q(y|x)), ``[B]``."""
        log_q = torch.log_softmax(self.classify(x), -1)
        return (torch.exp(log_q) * (self.exact_class_bounds(x) - log_q)).sum(-1)


# -- q(z|x) q(y|x,z): the label predicted from the style -----------------------------------------
class ToyStyleFirstModel(_ToyRecognition):
    """q(z|x) = N(B x + c, diag exp(2 l)), q(y|x,z) = Cat(softmax(F z + G x + h)), for the toy.

    Parameters: ``encoder_weight`` B ``[Dz, D]``, ``encoder_bias`` c ``[Dz]``, ``encoder_log_sigma`` l
    ``[Dz]``, ``classifier_style_weight`` F ``[C, Dz]``, ``classifier_weight`` G ``[C, D]``,
    ``classifier_bias`` h ``[C]``. Exact quantities integrate over z ~ q(z|x) with a Gauss–Hermite rule
    of ``n_nodes`` per latent dimension.
    """

    order = "style_first"

    def __init__(self, generative: DiscreteContinuousToy, encoder_weight, encoder_bias, encoder_log_sigma,
                 classifier_style_weight, classifier_weight, classifier_bias, n_nodes: int = 200):
        super().__init__(generative)
        C, D, Dz = generative.n_classes, generative.data_dim, generative.latent_dim
        self._store(encoder_weight=(encoder_weight, (Dz, D)), encoder_bias=(encoder_bias, (Dz,)),
                    encoder_log_sigma=(encoder_log_sigma, (Dz,)),
                    classifier_style_weight=(classifier_style_weight, (C, Dz)),
                    classifier_weight=(classifier_weight, (C, D)), classifier_bias=(classifier_bias, (C,)))
        self.n_nodes = int(n_nodes)
        gauss_hermite(self.n_nodes, Dz)  # validates the size of the rule early

    @classmethod
    def approximate_posterior(cls, generative: DiscreteContinuousToy, sigma_scale: float = 1.0,
                              n_nodes: int = 200) -> "ToyStyleFirstModel":
        """A natural member of the family: q(y|x,z) = the exact p(y|x,z) (Bayes' rule, linear in x, z),
        and q(z|x) = p(z|x, y) with U e_y replaced by its prior mean U π (y unknown), its standard
        deviations multiplied by ``sigma_scale``. q(z|x) is Gaussian while p(z|x) is a mixture, so this
        q is not exact: the bounds are strict."""
        g = generative
        cov = g.posterior_z_covariance()
        encoder_weight = cov @ g.W.T / g.s ** 2
        encoder_bias = -encoder_weight @ (g.b + g.U @ g.pi)
        sigma_scale = _positive_scalar(sigma_scale, "sigma_scale")
        log_sigma = 0.5 * torch.log(torch.diagonal(cov)) + math.log(sigma_scale)
        # p(y|x,z) logits: log π_y + u_yᵀ(x − W z − b)/s² − ½‖u_y‖²/s²
        classifier_style_weight = -g.U.T @ g.W / g.s ** 2
        classifier_weight = g.U.T / g.s ** 2
        classifier_bias = g.log_prior_y() - (g.U.T @ g.b) / g.s ** 2 - 0.5 * g.U.pow(2).sum(0) / g.s ** 2
        return cls(g, encoder_weight, encoder_bias, log_sigma, classifier_style_weight, classifier_weight,
                   classifier_bias, n_nodes=n_nodes)

    # -- the recognition interface -----------------------------------------------------------------
    def encode_marginal(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log_sigma) of q(z|x), ``[..., B, Dz]``."""
        mu = x @ self.encoder_weight.T + self.encoder_bias
        return mu, self.encoder_log_sigma.expand(mu.shape)

    def classify_style(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Logits of q(y|x,z), broadcast over z's leading dims: ``[..., B, C]``."""
        return z @ self.classifier_style_weight.T + x @ self.classifier_weight.T + self.classifier_bias

    # -- exact quantities by quadrature ------------------------------------------------------------
    def quadrature(self, x: torch.Tensor, n_nodes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Nodes z_n ``[N, B, Dz]`` and log-weights ``[N]`` with Σ_n exp(lw_n) f(z_n) ≈ E_q(z|x)[f]."""
        mu, log_sigma = self.encode_marginal(x)
        t, log_w = gauss_hermite(n_nodes or self.n_nodes, self.generative.latent_dim, dtype=mu.dtype)
        return mu + torch.exp(log_sigma) * t[:, None, :], log_w

    def _log_q_y_given_z_at_nodes(self, x, n_nodes):
        z, log_w = self.quadrature(x, n_nodes)
        return z, log_w, torch.log_softmax(self.classify_style(x, z), -1)                # [N, B, C]

    def exact_log_q_y(self, x: torch.Tensor, n_nodes: int | None = None) -> torch.Tensor:
        """log q(y|x) = log ∫ q(z|x) q(y|x,z) dz for every class, ``[B, C]`` (the target of Eq. 19)."""
        _, log_w, log_q = self._log_q_y_given_z_at_nodes(x, n_nodes)
        return torch.logsumexp(log_w[:, None, None] + log_q, dim=0)

    def expected_log_q_y_given_z(self, x: torch.Tensor, y: torch.Tensor,
                                 n_nodes: int | None = None) -> torch.Tensor:
        """E_q(z|x)[log q(y|x,z)], ``[B]``: the expectation of Eq. 19 as written, for every S."""
        _, log_w, log_q = self._log_q_y_given_z_at_nodes(x, n_nodes)
        return (torch.exp(log_w)[:, None] * _pick(log_q, y)).sum(0)

    def expectation_given_label(self, x: torch.Tensor, y: torch.Tensor, fn,
                                n_nodes: int | None = None) -> torch.Tensor:
        """E_q(z|x,y)[fn(z)] = ∫ q(z|x) q(y|x,z) fn(z) dz / q(y|x), ``[B]``; ``fn`` maps z ``[N, B, Dz]``
        to ``[N, B]``. Used for the Eq. 16 objective and the estimators' first-order bias."""
        z, log_w, log_q = self._log_q_y_given_z_at_nodes(x, n_nodes)
        weights = torch.softmax(log_w[:, None] + _pick(log_q, y), dim=0)                   # [N, B]
        return (weights * fn(z)).sum(0)

    def log_p_over_q(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x, y, z) − log q(y, z|x) at z ``[..., B, Dz]`` (the integrand of Eq. 16 and 18)."""
        log_q_z = diag_log_density(z, *self.encode_marginal(x))
        log_q_y = _pick(torch.log_softmax(self.classify_style(x, z), -1), y)
        return self.generative.log_joint(x, y, z) - log_q_z - log_q_y

    def exact_supervised_bound(self, x: torch.Tensor, y: torch.Tensor, alpha: float,
                               n_nodes: int | None = None) -> torch.Tensor:
        """Eq. 16: (1 + α) log q(y|x) + E_q(z|x,y)[log p(x,y,z) − log q(y,z|x)], ``[B]``.

        The limit of the importance-weighted estimator (``weighted=True``) as S → ∞."""
        log_q_y = _pick(self.exact_log_q_y(x, n_nodes), y)
        expectation = self.expectation_given_label(x, y, lambda z: self.log_p_over_q(x, y, z), n_nodes)
        return (1.0 + alpha) * log_q_y + expectation

    def exact_is_estimator_limit(self, x: torch.Tensor, y: torch.Tensor, alpha: float,
                                 n_nodes: int | None = None) -> torch.Tensor:
        """The S → ∞ limit of Eq. 20 as written: E_q(z|x,y)[log p/q(y,z|x)] + (1+α) E_q(z|x)[log q(y|x,z)].

        Below :meth:`exact_supervised_bound` by (1+α)·(log q(y|x) − E_q(z|x)[log q(y|x,z)]) ≥ 0."""
        expectation = self.expectation_given_label(x, y, lambda z: self.log_p_over_q(x, y, z), n_nodes)
        return expectation + (1.0 + alpha) * self.expected_log_q_y_given_z(x, y, n_nodes)

    def exact_unsupervised_bound(self, x: torch.Tensor, n_nodes: int | None = None) -> torch.Tensor:
        """Eq. 9 for this order: E_q(z|x)[Σ_y q(y|x,z)(log p(x|y,z) + log p(y) − log q(y|x,z))]
        − KL(q(z|x) ‖ p(z)), ``[B]``."""
        g = self.generative
        z, log_w, log_q = self._log_q_y_given_z_at_nodes(x, n_nodes)                   # log_q [N, B, C]
        eye = torch.eye(self.n_classes, dtype=g.W.dtype)
        log_lik = g.log_likelihood(x, eye[:, None, None, :], z).permute(1, 2, 0)         # [N, B, C]
        inner = (torch.exp(log_q) * (log_lik + g.log_prior_y() - log_q)).sum(-1)         # [N, B]
        mu, log_sigma = self.encode_marginal(x)
        return (torch.exp(log_w)[:, None] * inner).sum(0) - _diag_kl_to_standard(mu, log_sigma)


# -- Joy et al. (2021)'s CCVAE, linear-Gaussian -------------------------------------------------------
class CharacteristicToy(_LinearDecoder):
    """y ~ Cat(π), z = (z_c, z_s) with z_c|y ~ N(m_y, diag exp(2 log s_y)) and z_s ~ N(0, I),
    x|z ~ N(Wz + b, s²I); recognition q(z|x) = N(Ax + c, diag exp(2 ℓ)) and q(y|z_c) = softmax(U z_c + v).
    ``prior_mu``, ``prior_log_sigma``: ``[C, Dc]``; ``W [D, Dc + Ds]``; ``A [Dz, D]``; ``U [C, Dc]``."""

    def __init__(self, pi, prior_mu, prior_log_sigma, W, b, s, A, c, log_sigma_q, U, v, n_nodes: int = 60):
        super().__init__(W, b, s)
        dtype = self.W.dtype
        self.log_pi = torch.log(_tensor(pi, "pi", 1, dtype))
        self.prior_mu = _tensor(prior_mu, "prior_mu", 2, dtype)
        self.prior_log_sigma = _tensor(prior_log_sigma, "prior_log_sigma", 2, dtype)
        self.A, self.c = _tensor(A, "A", 2, dtype), _tensor(c, "c", 1, dtype)
        self.log_sigma_q = _tensor(log_sigma_q, "log_sigma_q", 1, dtype)
        self.U, self.v = _tensor(U, "U", 2, dtype), _tensor(v, "v", 1, dtype)
        self.n_classes, self.characteristic_dim = self.prior_mu.shape
        self.n_nodes = n_nodes

    def _prior_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``[C, Dz]`` and variances ``[C, Dz]`` of p(z|y) = N((m_y, 0), diag(s_y², 1))."""
        d_s = self.latent_dim - self.characteristic_dim
        return F.pad(self.prior_mu, (0, d_s)), F.pad(torch.exp(2 * self.prior_log_sigma), (0, d_s), value=1.0)

    def log_joint_xy(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x, y) = log π_y + log N(x; W μ_y + b, W Σ_y Wᵀ + s²I) for every y, ``[..., C]``."""
        _check_x(x, self.data_dim)
        means, variances = self._prior_moments()
        noise_cov = self.s ** 2 * torch.eye(self.data_dim, dtype=self.W.dtype)
        return torch.stack([self.log_pi[y] + _mvn_log_density(x, self.W @ means[y] + self.b,
                                                              (self.W * variances[y]) @ self.W.T + noise_cov)
                            for y in range(self.n_classes)], dim=-1)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) = log Σ_y p(x, y)."""
        return torch.logsumexp(self.log_joint_xy(x), dim=-1)

    def _at_nodes(self, x: torch.Tensor) -> dict:
        """The bounds' integrands at the Gauss–Hermite nodes z_n of q(z|x): log-weights ``[N]`` and
        log p(x|z) − log q(z|x) ``[N, B]``, log p(z|y) and log q(y|z_c) ``[N, B, C]``."""
        mean = x @ self.A.T + self.c                                                   # [B, Dz]
        t, log_w = gauss_hermite(self.n_nodes, self.latent_dim, dtype=self.W.dtype)
        z = mean + torch.exp(self.log_sigma_q) * t[:, None, :]                         # [N, B, Dz]
        d_c = self.characteristic_dim
        log_pz_y = (diag_log_density(z[..., None, :d_c], self.prior_mu, self.prior_log_sigma)
                    + _standard_normal_log_density(z[..., d_c:])[..., None])
        return {"log_w": log_w,
                "log_px_over_qz": (_isotropic_log_density(x, z @ self.W.T + self.b, self.s)
                                   - diag_log_density(z, mean, self.log_sigma_q)),
                "log_pz_y": log_pz_y, "log_qy": torch.log_softmax(z[..., :d_c] @ self.U.T + self.v, -1)}

    def supervised_bound(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Joy et al. Eq. 4 by quadrature, ``[B]``:
        E_q(z|x)[q(y|z_c)/q(y|x) · log(p(x|z)p(z|y)/(q(y|z_c)q(z|x)))] + log q(y|x) + log p(y),
        with q(y|x) = ∫ q(y|z_c) q(z|x) dz."""
        n = self._at_nodes(x)
        log_qy, log_pz_y = _pick(n["log_qy"], y), _pick(n["log_pz_y"], y)              # [N, B]
        log_qy_x = torch.logsumexp(n["log_w"][:, None] + log_qy, dim=0)                # [B]
        weights = torch.exp(n["log_w"][:, None] + log_qy - log_qy_x)                   # q(z|x,y) at the nodes
        inner = n["log_px_over_qz"] + log_pz_y - log_qy
        return (weights * inner).sum(0) + log_qy_x + self.log_pi[y]

    def unsupervised_bound(self, x: torch.Tensor) -> torch.Tensor:
        """Joy et al. Eq. 5 by quadrature, ``[B]``:
        E_q(z|x)[log p(x|z) − log q(z|x) + Σ_y q(y|z_c)(log p(z|y) + log p(y) − log q(y|z_c))]."""
        n = self._at_nodes(x)
        per_class = n["log_pz_y"] + self.log_pi - n["log_qy"]
        inner = n["log_px_over_qz"] + (torch.exp(n["log_qy"]) * per_class).sum(-1)
        return (torch.exp(n["log_w"])[:, None] * inner).sum(0)

    def exact_posterior(self, x: torch.Tensor, y: int) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z|x, y) for one class ``y`` = N(mean ``[B, Dz]``, cov ``[Dz, Dz]``), Gaussian since p(z|y) is."""
        means, variances = self._prior_moments()
        cov = torch.linalg.inv(torch.diag(1.0 / variances[y]) + self.W.T @ self.W / self.s ** 2)
        return ((x - self.b) @ self.W / self.s ** 2 + means[y] / variances[y]) @ cov, cov
