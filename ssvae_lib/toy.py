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

Shapes: x is ``[B, D]`` (or with extra leading dims where stated); everything follows the dtype of the
parameters (float64 recommended for exact comparisons).
"""
from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["LinearGaussian", "DiscreteContinuousToy", "ToyLabelFirstModel", "ToyStyleFirstModel",
           "gauss_hermite"]

_LOG_2PI = math.log(2.0 * math.pi)


# ------------------------------------------------------------------------------------------------
# small helpers (deliberately independent of objectives.py, so the toy is a separate reference)
# ------------------------------------------------------------------------------------------------
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
    return -0.5 * solved.pow(2).sum(-1) - half_log_det - 0.5 * cov.shape[-1] * _LOG_2PI


def _diag_kl_to_standard(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    return 0.5 * (mu.pow(2) + torch.exp(2 * log_sigma) - 1.0 - 2.0 * log_sigma).sum(-1)


def _isotropic_log_density(x: torch.Tensor, mean: torch.Tensor, s: float) -> torch.Tensor:
    d = x.shape[-1]
    return -0.5 * ((x - mean) / s).pow(2).sum(-1) - d * math.log(s) - 0.5 * d * _LOG_2PI


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
    log_w = np.log(w) - 0.5 * math.log(2.0 * math.pi)
    grids = np.meshgrid(*([t] * dim), indexing="ij")
    log_grids = np.meshgrid(*([log_w] * dim), indexing="ij")
    nodes = np.stack([g.reshape(-1) for g in grids], axis=-1)
    log_weights = np.sum([g.reshape(-1) for g in log_grids], axis=0)
    return torch.as_tensor(nodes, dtype=dtype), torch.as_tensor(log_weights, dtype=dtype)


# ------------------------------------------------------------------------------------------------
# z ~ N(0, I), x|z ~ N(Wz + b, s² I)
# ------------------------------------------------------------------------------------------------
class LinearGaussian:
    """Linear-Gaussian latent variable model with closed-form marginal, posterior and ELBO (Eq. 1)."""

    def __init__(self, W, b, s):
        self.W = _tensor(W, "W", 2)
        self.b = _tensor(b, "b", 1, dtype=self.W.dtype)
        self.s = _positive_scalar(s, "s")
        if self.b.shape[0] != self.W.shape[0]:
            raise ValueError(f"b must have D = {self.W.shape[0]} entries (rows of W), got {self.b.shape[0]}")
        self.data_dim, self.latent_dim = self.W.shape

    def marginal_covariance(self) -> torch.Tensor:
        """W Wᵀ + s² I, the covariance of p(x) = N(b, W Wᵀ + s² I)."""
        eye = torch.eye(self.data_dim, dtype=self.W.dtype)
        return self.W @ self.W.T + self.s ** 2 * eye

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) = log N(x; b, W Wᵀ + s² I), shape ``x.shape[:-1]``."""
        return _mvn_log_density(_check_x(x, self.data_dim), self.b, self.marginal_covariance())

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact p(z|x) = N(mean, cov): cov = (I + WᵀW/s²)⁻¹, mean = cov Wᵀ (x − b)/s².

        Returns (mean ``[..., Dz]``, cov ``[Dz, Dz]``; the covariance does not depend on x)."""
        _check_x(x, self.data_dim)
        eye = torch.eye(self.latent_dim, dtype=self.W.dtype)
        cov = torch.linalg.inv(eye + self.W.T @ self.W / self.s ** 2)
        mean = (x - self.b) @ self.W @ cov / self.s ** 2
        return mean, cov

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x, z) = log N(x; Wz + b, s² I) + log N(z; 0, I); x and z broadcast."""
        log_prior = -0.5 * z.pow(2).sum(-1) - 0.5 * self.latent_dim * _LOG_2PI
        return _isotropic_log_density(x, z @ self.W.T + self.b, self.s) + log_prior

    def elbo(self, x: torch.Tensor, m: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
        """Closed-form ELBO (Eq. 1) of q(z|x) = N(m, diag exp(2 log_s)):

        E_q[log p(x|z)] − KL(q ‖ N(0, I)), with
        E_q[log p(x|z)] = log N(x; W m + b, s² I) − Σ_j exp(2 log_s_j)·‖W_{:,j}‖² / (2 s²).
        """
        _check_x(x, self.data_dim)
        column_norms = self.W.pow(2).sum(0)
        expected_loglik = (_isotropic_log_density(x, m @ self.W.T + self.b, self.s)
                           - 0.5 * (torch.exp(2 * log_s) * column_norms).sum(-1) / self.s ** 2)
        return expected_loglik - _diag_kl_to_standard(m, log_s)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x ``[n, D]``, z ``[n, Dz]``) from the model."""
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=self.W.dtype)
        x = z @ self.W.T + self.b + self.s * torch.randn(n, self.data_dim, generator=generator,
                                                         dtype=self.W.dtype)
        return x, z


# ------------------------------------------------------------------------------------------------
# y ~ Cat(π), z ~ N(0, I), x|y,z ~ N(Wz + U e_y + b, s² I)
# ------------------------------------------------------------------------------------------------
class DiscreteContinuousToy:
    """The M2 generative model (Eq. 4) with a linear-Gaussian decoder: every posterior is exact."""

    def __init__(self, pi, W, U, b, s):
        self.W = _tensor(W, "W", 2)
        dtype = self.W.dtype
        self.pi = _tensor(pi, "pi", 1, dtype=dtype)
        self.U = _tensor(U, "U", 2, dtype=dtype)
        self.b = _tensor(b, "b", 1, dtype=dtype)
        self.s = _positive_scalar(s, "s")
        self.data_dim, self.latent_dim = self.W.shape
        self.n_classes = self.pi.shape[0]
        if (self.pi <= 0).any() or abs(float(self.pi.sum()) - 1.0) > 1e-9:
            raise ValueError("pi must be positive class probabilities summing to 1")
        if self.U.shape != (self.data_dim, self.n_classes):
            raise ValueError(f"U must have shape [D, C] = [{self.data_dim}, {self.n_classes}], "
                             f"got {tuple(self.U.shape)}")
        if self.b.shape != (self.data_dim,):
            raise ValueError(f"b must have shape [{self.data_dim}], got {tuple(self.b.shape)}")

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
        log_prior_z = -0.5 * z.pow(2).sum(-1) - 0.5 * self.latent_dim * _LOG_2PI
        return self.log_likelihood(x, onehot, z) + (onehot * self.log_prior_y()).sum(-1) + log_prior_z

    def marginal_covariance(self) -> torch.Tensor:
        """W Wᵀ + s² I: p(x|y) = N(U e_y + b, W Wᵀ + s² I)."""
        return self.W @ self.W.T + self.s ** 2 * torch.eye(self.data_dim, dtype=self.W.dtype)

    # -- exact answers -----------------------------------------------------------------------------
    def log_joint_xy_all(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x, y) for every class, ``[..., C]``: log π_y + log N(x; U e_y + b, W Wᵀ + s² I)."""
        _check_x(x, self.data_dim)
        means = self.U.T + self.b                                                      # [C, D]
        log_px_given_y = _mvn_log_density(x.unsqueeze(-2), means, self.marginal_covariance())
        return log_px_given_y + self.log_prior_y()

    def log_joint_xy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Exact log p(x, y) for integer labels y ``[...]``."""
        return self.log_joint_xy_all(x).gather(-1, y.long().unsqueeze(-1)).squeeze(-1)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) = logsumexp_y log p(x, y)."""
        return torch.logsumexp(self.log_joint_xy_all(x), dim=-1)

    def log_posterior_y(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(y|x), ``[..., C]``."""
        return torch.log_softmax(self.log_joint_xy_all(x), dim=-1)

    def posterior_z_covariance(self) -> torch.Tensor:
        """Cov of p(z|x, y) = (I + WᵀW/s²)⁻¹ (the same for every x and y)."""
        eye = torch.eye(self.latent_dim, dtype=self.W.dtype)
        return torch.linalg.inv(eye + self.W.T @ self.W / self.s ** 2)

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
        g = self.generative
        self._parameter_names = tuple(params)
        for name, (value, shape) in params.items():
            t = torch.as_tensor(value, dtype=g.W.dtype)
            if tuple(t.shape) != shape:
                raise ValueError(f"{name} must have shape {list(shape)}, got {list(t.shape)}")
            setattr(self, name, t)


# ------------------------------------------------------------------------------------------------
# q(y|x) q(z|x,y): the M2 order
# ------------------------------------------------------------------------------------------------
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
                    encoder_weight=(encoder_weight, (Dz, D)), encoder_label_weight=(encoder_label_weight, (Dz, C)),
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
        y = y.long().unsqueeze(-1)
        return self.exact_class_bounds(x).gather(-1, y).squeeze(-1) + alpha * log_q.gather(-1, y).squeeze(-1)

    def exact_unsupervised_bound(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 9 in closed form: Σ_y q(y|x)(L(x, y) − log q(y|x)), ``[B]``."""
        log_q = torch.log_softmax(self.classify(x), -1)
        return (torch.exp(log_q) * (self.exact_class_bounds(x) - log_q)).sum(-1)


# ------------------------------------------------------------------------------------------------
# q(z|x) q(y|x,z): the label predicted from the style
# ------------------------------------------------------------------------------------------------
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
        log_sigma = 0.5 * torch.log(torch.diagonal(cov)) + math.log(_positive_scalar(sigma_scale, "sigma_scale"))
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
        log_q_y = log_q.gather(-1, y.long().expand(log_q.shape[:-1]).unsqueeze(-1)).squeeze(-1)
        return (torch.exp(log_w)[:, None] * log_q_y).sum(0)

    def expectation_given_label(self, x: torch.Tensor, y: torch.Tensor, fn,
                                n_nodes: int | None = None) -> torch.Tensor:
        """E_q(z|x,y)[fn(z)] = ∫ q(z|x) q(y|x,z) fn(z) dz / q(y|x), ``[B]``; ``fn`` maps z ``[N, B, Dz]``
        to ``[N, B]``. Used for the Eq. 16 objective and the estimators' first-order bias."""
        z, log_w, log_q = self._log_q_y_given_z_at_nodes(x, n_nodes)
        log_q_y = log_q.gather(-1, y.long().expand(log_q.shape[:-1]).unsqueeze(-1)).squeeze(-1)  # [N, B]
        log_joint_weight = log_w[:, None] + log_q_y
        weights = torch.softmax(log_joint_weight, dim=0)
        return (weights * fn(z)).sum(0)

    def log_p_over_q(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x, y, z) − log q(y, z|x) at z ``[..., B, Dz]`` (the integrand of Eq. 16 and 18)."""
        g = self.generative
        mu, log_sigma = self.encode_marginal(x)
        log_q_z = (-0.5 * ((z - mu) * torch.exp(-log_sigma)).pow(2) - log_sigma - 0.5 * _LOG_2PI).sum(-1)
        log_q = torch.log_softmax(self.classify_style(x, z), -1)
        log_q_y = log_q.gather(-1, y.long().expand(log_q.shape[:-1]).unsqueeze(-1)).squeeze(-1)
        return g.log_joint(x, y, z) - log_q_z - log_q_y

    def exact_supervised_bound(self, x: torch.Tensor, y: torch.Tensor, alpha: float,
                               n_nodes: int | None = None) -> torch.Tensor:
        """Eq. 16: (1 + α) log q(y|x) + E_q(z|x,y)[log p(x,y,z) − log q(y,z|x)], ``[B]``.

        The limit of the importance-weighted estimator (``weighted=True``) as S → ∞."""
        log_q_y = self.exact_log_q_y(x, n_nodes).gather(-1, y.long().unsqueeze(-1)).squeeze(-1)
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


# ================================================================================================
# Experiments on the toys for the derivation notebooks (01 ELBO, 02 importance sampling,
# 03 supervised estimator): exact references and replicated Monte Carlo estimates.
# ================================================================================================

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


def _diag_log_density(z: torch.Tensor, m: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
    return (-0.5 * ((z - m) * torch.exp(-log_s)).pow(2) - log_s - 0.5 * _LOG_2PI).sum(-1)


def _check_count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


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
    kl_prior = float(_diag_kl_to_standard(m, log_s))
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
    eye = torch.eye(model.latent_dim, dtype=model.W.dtype)
    precision = eye + model.W.T @ model.W / model.s ** 2
    return mean, -0.5 * torch.log(torch.diagonal(precision))


def beta_vae_objective(model: LinearGaussian, x, m, log_s, beta: float) -> float:
    """Eq. 3 of the seminar thesis: E_q[log p(x|z)] − β KL(q(z|x) ‖ p(z)), in closed form."""
    beta = float(beta)
    if not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    terms = elbo_decomposition(model, x, m, log_s)
    return terms["reconstruction"] - beta * terms["kl_prior"]


def elbo_monte_carlo_terms(model: LinearGaussian, x, m, log_s, n_samples: int,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """log p(x, z^s) − log q(z^s|x) at z^s = m + exp(log_s)·ε^s (Eq. 2), ε^s ~ N(0, I), shape ``[S]``;
    their mean is the Monte Carlo estimate of the ELBO (Eq. 1)."""
    x, m, log_s = _single_x(model, x), _latent_vector(model, m, "m"), _latent_vector(model, log_s, "log_s")
    eps = torch.randn(_check_count(n_samples, "n_samples"), model.latent_dim, generator=generator,
                      dtype=model.W.dtype)
    z = m + torch.exp(log_s) * eps
    return model.log_joint(x, z) - _diag_log_density(z, m, log_s)


def elbo_gradient_per_sample(model: LinearGaussian, x, m, log_s, eps: torch.Tensor,
                             estimator: str) -> torch.Tensor:
    """Single-sample estimates of ∇_(m, log_s) ELBO at noise ``eps`` ``[..., Dz]``, shape ``[..., 2·Dz]``
    (the m-part first). With z = m + exp(log_s)·ε and f(z) = log p(x, z) − log q(z|x):

    * ``"reparameterised"`` (Eq. 2): the gradient of f(m + exp(log_s)·ε) with ε held fixed;
    * ``"score_function"``: f(z)·∇ log q(z|x) with z held fixed (unbiased because E_q[∇ log q] = 0).
    """
    if estimator not in GRADIENT_ESTIMATORS:
        raise ValueError(f"estimator must be one of {GRADIENT_ESTIMATORS}, got {estimator!r}")
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
            objective = model.log_joint(x, z) - _diag_log_density(z, m_rep, log_s_rep)
        else:
            with torch.no_grad():
                z = m + torch.exp(log_s) * eps
                f = model.log_joint(x, z) - _diag_log_density(z, m, log_s)
            objective = f * _diag_log_density(z, m_rep, log_s_rep)
        grad_m, grad_log_s = torch.autograd.grad(objective.sum(), (m_rep, log_s_rep))
    return torch.cat([grad_m, grad_log_s], dim=-1)


def elbo_gradient_estimates(model: LinearGaussian, x, m, log_s, n_samples: int, n_replicates: int,
                            estimator: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n_replicates`` independent S-sample estimates of ∇_(m, log_s) ELBO, shape ``[R, 2·Dz]``."""
    s, r = _check_count(n_samples, "n_samples"), _check_count(n_replicates, "n_replicates")
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
        shift = float(shift)
        if not math.isfinite(shift):
            raise ValueError(f"shift must be a finite number, got {shift!r}")
        self.shift, self.scale = shift, _positive_scalar(scale, "scale")
        mean, cov = model.posterior(self.x)
        self.posterior_mean, self.posterior_sd = float(mean[0]), math.sqrt(float(cov[0, 0]))
        self.proposal_mean = self.posterior_mean + shift * self.posterior_sd
        self.proposal_sd = scale * self.posterior_sd
        self.log_normaliser = float(model.log_marginal(self.x))

    # -- densities and draws ---------------------------------------------------------------------
    def log_proposal(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * ((z - self.proposal_mean) / self.proposal_sd) ** 2 - math.log(self.proposal_sd) \
            - 0.5 * _LOG_2PI

    def log_posterior(self, z: torch.Tensor) -> torch.Tensor:
        """The normalised target log p(z|x)."""
        return -0.5 * ((z - self.posterior_mean) / self.posterior_sd) ** 2 - math.log(self.posterior_sd) \
            - 0.5 * _LOG_2PI

    def log_unnormalised_target(self, z: torch.Tensor) -> torch.Tensor:
        """log p̃(z) = log p(x, z) = log p(z|x) + log p(x)."""
        return self.model.log_joint(self.x, z.unsqueeze(-1))

    def sample(self, n_samples: int, n_replicates: int,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z ~ q, shape ``[K, R]`` (samples first, replicates second), and the log-weights
        log w = log p̃(z) − log q(z), same shape."""
        k, r = _check_count(n_samples, "n_samples"), _check_count(n_replicates, "n_replicates")
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
        from .estimators import (importance_sampling_estimate, iwae_bound, log_mean_exp,
                                 self_normalised_estimate)
        if estimator == "normaliser":
            return torch.exp(log_mean_exp(log_w))
        if estimator == "log_normaliser":
            return iwae_bound(log_w)
        if estimator == "posterior_mean_is":
            return importance_sampling_estimate(self.log_posterior(z), self.log_proposal(z), z)
        if estimator == "posterior_mean_snis":
            return self_normalised_estimate(log_w, z)
        raise ValueError(f"estimator must be one of {IS_ESTIMATORS}, got {estimator!r}")

    def exact(self, estimator: str) -> float:
        """The value the estimator targets: p(x), log p(x) or the posterior mean E[z|x]."""
        if estimator not in IS_ESTIMATORS:
            raise ValueError(f"estimator must be one of {IS_ESTIMATORS}, got {estimator!r}")
        if estimator == "normaliser":
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
        log_moment = (k * (-0.5 * _LOG_2PI - math.log(self.posterior_sd))
                      + (1.0 - k) * (-0.5 * _LOG_2PI - math.log(self.proposal_sd))
                      + 0.5 * (_LOG_2PI - math.log(precision)) - 0.5 * a * c * delta ** 2 / precision)
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
        if estimator in ("normaliser", "posterior_mean_is"):
            return 0.0, 0.0
        m2 = self.weight_moment(2)
        if estimator in IS_ESTIMATORS and math.isinf(m2):
            return math.nan, math.nan                  # no finite expansion: heavy-tailed weights
        if estimator == "log_normaliser":
            v = m2 - 1.0
            mu3 = self.weight_moment(3) - 3.0 * m2 + 2.0
            return -0.5 * v, mu3 / 3.0 - 0.75 * v ** 2
        if estimator == "posterior_mean_snis":
            return -m2 * (self._tilted(2)[1] - self.posterior_mean), math.nan
        raise ValueError(f"estimator must be one of {IS_ESTIMATORS}, got {estimator!r}")

    def predicted_bias(self, estimator: str, n_samples: int, order: int = 1) -> float:
        """c₁/K (``order=1``) or c₁/K + c₂/K² (``order=2``) from :meth:`bias_coefficients`."""
        k = _check_count(n_samples, "n_samples")
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order!r}")
        c1, c2 = self.bias_coefficients(estimator)
        return c1 / k if order == 1 else c1 / k + c2 / k ** 2

    def predicted_variance(self, estimator: str, n_samples: int) -> float:
        """Var(estimate) to first order in 1/K (exact for the Eq. 12 estimates): Var_q of the
        per-sample term divided by K; ``inf`` when the weights have no finite second moment."""
        k = _check_count(n_samples, "n_samples")
        m2 = self.weight_moment(2)
        if math.isinf(m2):
            return math.inf
        _, t_mean, t_var = self._tilted(2)
        mu = self.posterior_mean
        per_sample = {"normaliser": math.exp(2 * self.log_normaliser) * (m2 - 1.0),
                      "log_normaliser": m2 - 1.0,
                      "posterior_mean_is": m2 * (t_var + t_mean ** 2) - mu ** 2,
                      "posterior_mean_snis": m2 * (t_var + (t_mean - mu) ** 2)}
        if estimator not in per_sample:
            raise ValueError(f"estimator must be one of {IS_ESTIMATORS}, got {estimator!r}")
        return per_sample[estimator] / k

    def expected_ess_fraction(self, n_samples: int) -> float:
        """E[ESS]/K for Kish's ESS = (Σ w)²/Σ w², to first order: 1/(1 + χ²) + c/K (delta method,
        with E_q[w̄^k] for k ≤ 4); ``nan`` when the fourth moment is infinite."""
        k = _check_count(n_samples, "n_samples")
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
    from .estimators import effective_sample_size
    if estimator not in IS_ESTIMATORS:
        raise ValueError(f"estimator must be one of {IS_ESTIMATORS}, got {estimator!r}")
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
    from .objectives import supervised_is_terms
    x, y = _one_observation(model, x, y)
    r = _check_count(n_replicates, "n_replicates")
    return supervised_is_terms(model, x.expand(r, -1), y.expand(r), n_samples=n_samples, proposal=proposal,
                               generator=generator)


def supervised_estimates(terms, alpha: float) -> dict[str, torch.Tensor]:
    """The four estimates of notebook 03 from :func:`draw_supervised_terms`, each ``[R]``:
    ``as_written`` (Eq. 20), ``weighted`` (Eq. 18 + (1+α)·log-mean-exp of w), ``eq19`` (Eq. 19 as
    written: the mean of log w) and ``eq19_iw`` (log of the mean of w)."""
    from . import objectives as O
    log_w = O.supervised_log_weights(terms[1], terms[2])
    return dict(as_written=O.supervised_is_estimator(*terms, alpha),
                weighted=O.supervised_iw_estimator(*terms, alpha),
                eq19=O.log_q_y_lower_bound(log_w), eq19_iw=O.log_q_y_iw_bound(log_w))


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
        s = _check_count(n_samples, "n_samples")
        values = dict(
            as_written=self.limit_as_written + self.snis_coefficient / s,
            weighted=self.eq16 + self.snis_coefficient / s - (1 + self.alpha) * self.weight_variance / (2 * s),
            eq19=self.expected_log_w,
            eq19_iw=self.log_q_y - self.weight_variance / (2 * s))
        if estimate not in values:
            raise ValueError(f"estimate must be one of {SUPERVISED_ESTIMATES}, got {estimate!r}")
        return values[estimate]

    def target(self, estimate: str) -> float:
        """What the estimate converges to as S → ∞."""
        values = dict(as_written=self.limit_as_written, weighted=self.eq16, eq19=self.expected_log_w,
                      eq19_iw=self.log_q_y)
        if estimate not in values:
            raise ValueError(f"estimate must be one of {SUPERVISED_ESTIMATES}, got {estimate!r}")
        return values[estimate]


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
