"""Tests of ssvae_lib.toy: every closed form is checked against an independent route
(torch.distributions, Gaussian conditioning, Bayes' rule, trapezoidal integration) or a Monte Carlo
estimate within 4 standard errors."""
import math

import pytest
import torch
from torch.distributions import (Categorical, MixtureSameFamily, MultivariateNormal, Normal,
                                 kl_divergence)

from ssvae_lib import toy
from ssvae_lib.toy import (DiscreteContinuousToy, LinearGaussian, ToyLabelFirstModel, ToyStyleFirstModel,
                           gauss_hermite)

F64 = torch.float64


def _t(values):
    return torch.tensor(values, dtype=F64)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _orthogonal_columns(d, dz, scales, seed):
    q, _ = torch.linalg.qr(torch.randn(d, dz, generator=_gen(seed), dtype=F64))
    return q * _t(scales)


@pytest.fixture(scope="module")
def linear():
    """A linear-Gaussian model with a full (non-diagonal) posterior covariance."""
    W = torch.randn(4, 2, generator=_gen(0), dtype=F64)
    return LinearGaussian(W, _t([0.1, -0.2, 0.3, 0.0]), 0.7)


@pytest.fixture(scope="module")
def linear_diagonal():
    """Orthogonal columns of W: the posterior covariance is diagonal, so a diagonal q can be exact."""
    return LinearGaussian(_orthogonal_columns(4, 2, [1.5, 0.6], seed=1), _t([0.0, 0.5, -0.5, 1.0]), 0.5)


@pytest.fixture(scope="module")
def mixture():
    g = _gen(2)
    return DiscreteContinuousToy(_t([0.5, 0.3, 0.2]), _orthogonal_columns(4, 2, [1.5, 0.7], seed=3),
                                 torch.randn(4, 3, generator=g, dtype=F64),
                                 0.3 * torch.randn(4, generator=g, dtype=F64), 0.5)


@pytest.fixture(scope="module")
def mixture_1d():
    """Dz = 1, the class offsets partly along W: y and z compete to explain x."""
    return DiscreteContinuousToy(_t([0.4, 0.35, 0.25]), _t([[1.0], [0.5], [0.0]]),
                                 _t([[-1.0, 0.2, 1.0], [0.5, -0.6, 0.3], [0.4, 0.0, -0.4]]),
                                 torch.zeros(3, dtype=F64), 0.6)


# ------------------------------------------------------------------------------------------------
# LinearGaussian
# ------------------------------------------------------------------------------------------------
def test_linear_gaussian_log_marginal_matches_torch(linear):
    x, _ = linear.sample(6, _gen(4))
    reference = MultivariateNormal(linear.b, linear.W @ linear.W.T + 0.49 * torch.eye(4, dtype=F64))
    assert torch.allclose(linear.log_marginal(x), reference.log_prob(x), atol=1e-12, rtol=0)


def test_linear_gaussian_posterior_matches_gaussian_conditioning(linear):
    x, _ = linear.sample(5, _gen(5))
    mean, cov = linear.posterior(x)
    sigma_x = linear.W @ linear.W.T + linear.s ** 2 * torch.eye(4, dtype=F64)
    gain = linear.W.T @ torch.linalg.inv(sigma_x)                         # Cov(z, x) Cov(x)^-1
    assert torch.allclose(mean, (x - linear.b) @ gain.T, atol=1e-12)
    assert torch.allclose(cov, torch.eye(2, dtype=F64) - gain @ linear.W, atol=1e-12)


def test_elbo_is_below_log_marginal_with_gap_equal_to_kl(linear):
    """log p(x) − ELBO(q) = KL(q ‖ p(z|x)) exactly, for random diagonal q (Eq. 1)."""
    g = _gen(6)
    x, _ = linear.sample(8, g)
    m = torch.randn(8, 2, generator=g, dtype=F64)
    log_s = 0.5 * torch.randn(8, 2, generator=g, dtype=F64)
    elbo = linear.elbo(x, m, log_s)
    gap = linear.log_marginal(x) - elbo
    post_mean, post_cov = linear.posterior(x)
    q = MultivariateNormal(m, torch.diag_embed(torch.exp(2 * log_s)))
    kl = kl_divergence(q, MultivariateNormal(post_mean, post_cov))
    assert (gap > 0).all()
    assert torch.allclose(gap, kl, atol=1e-10, rtol=0)


def test_kl_to_prior_matches_torch(linear):
    g = _gen(16)
    m = torch.randn(5, 2, generator=g, dtype=F64)
    log_s = 0.5 * torch.randn(5, 2, generator=g, dtype=F64)
    q = MultivariateNormal(m, torch.diag_embed(torch.exp(2 * log_s)))
    prior = MultivariateNormal(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64))
    assert torch.allclose(linear.kl_to_prior(m, log_s), kl_divergence(q, prior), atol=1e-12, rtol=0)


def test_elbo_equals_log_marginal_at_the_exact_posterior(linear_diagonal):
    x, _ = linear_diagonal.sample(6, _gen(7))
    mean, cov = linear_diagonal.posterior(x)
    assert torch.allclose(cov, torch.diag(torch.diagonal(cov)), atol=1e-14)
    log_s = 0.5 * torch.log(torch.diagonal(cov)).expand(6, 2)
    gap = linear_diagonal.log_marginal(x) - linear_diagonal.elbo(x, mean, log_s)
    assert gap.abs().max() < 1e-6


def test_monte_carlo_elbo_matches_closed_form(linear):
    g = _gen(8)
    x = linear.sample(1, g)[0][0]
    m, log_s = _t([0.3, -0.4]), _t([-0.3, -0.6])
    z = m + torch.exp(log_s) * torch.randn(20000, 2, generator=g, dtype=F64)
    log_q = Normal(m, torch.exp(log_s)).log_prob(z).sum(-1)
    values = linear.log_joint(x, z) - log_q
    se = float(values.std()) / math.sqrt(values.numel())
    assert abs(float(values.mean()) - float(linear.elbo(x, m, log_s))) <= 4 * se


def test_linear_gaussian_rejects_bad_parameters():
    with pytest.raises(ValueError, match="W must have 2"):
        LinearGaussian(_t([1.0, 2.0]), _t([0.0, 0.0]), 1.0)
    with pytest.raises(ValueError, match="s must be"):
        LinearGaussian(_t([[1.0]]), _t([0.0]), 0.0)
    with pytest.raises(ValueError, match="b must have"):
        LinearGaussian(_t([[1.0]]), _t([0.0, 1.0]), 1.0)
    with pytest.raises(ValueError, match=r"x must be a tensor \[\.\.\., 1\]"):
        LinearGaussian(_t([[1.0]]), _t([0.0]), 1.0).log_marginal(_t([[1.0, 2.0]]))


def test_sampling_is_reproducible(linear, mixture):
    assert all(torch.equal(a, b) for a, b in zip(linear.sample(3, _gen(9)), linear.sample(3, _gen(9))))
    assert all(torch.equal(a, b) for a, b in zip(mixture.sample(3, _gen(9)), mixture.sample(3, _gen(9))))


# ------------------------------------------------------------------------------------------------
# DiscreteContinuousToy
# ------------------------------------------------------------------------------------------------
def test_log_joint_xy_by_bayes_identity(mixture):
    """log p(x, y) = log p(x, y, z) − log p(z|x, y) for any z (an independent route to the marginal)."""
    g = _gen(10)
    x, y, _ = mixture.sample(5, g)
    mean, cov = mixture.posterior_z(x, y)
    for _ in range(3):
        z = torch.randn(5, 2, generator=g, dtype=F64)
        identity = mixture.log_joint(x, y, z) - MultivariateNormal(mean, cov).log_prob(z)
        assert torch.allclose(mixture.log_joint_xy(x, y), identity, atol=1e-10, rtol=0)


def test_log_marginal_and_label_posteriors(mixture):
    x, _, _ = mixture.sample(6, _gen(11))
    components = MultivariateNormal(mixture.U.T + mixture.b, mixture.marginal_covariance())
    reference = MixtureSameFamily(Categorical(probs=mixture.pi), components).log_prob(x)
    assert torch.allclose(mixture.log_marginal(x), reference, atol=1e-12, rtol=0)
    assert torch.allclose(torch.logsumexp(mixture.log_posterior_y(x), -1), torch.zeros(6, dtype=F64),
                          atol=1e-12)
    z = torch.randn(4, 6, 2, generator=_gen(12), dtype=F64)
    joint = torch.stack([mixture.log_joint(x, torch.full((6,), c), z) for c in range(3)], -1)
    assert torch.allclose(mixture.log_posterior_y_given_z(x, z), torch.log_softmax(joint, -1), atol=1e-12)


def test_discrete_continuous_rejects_bad_parameters(mixture):
    W, U, b = mixture.W, mixture.U, mixture.b
    with pytest.raises(ValueError, match="summing to 1"):
        DiscreteContinuousToy(_t([0.5, 0.3, 0.1]), W, U, b, 0.5)
    with pytest.raises(ValueError, match="U must have shape"):
        DiscreteContinuousToy(_t([0.5, 0.5]), W, U, b, 0.5)
    with pytest.raises(ValueError, match="s must be"):
        DiscreteContinuousToy(mixture.pi, W, U, b, -1.0)


# ------------------------------------------------------------------------------------------------
# recognition models, label_first
# ------------------------------------------------------------------------------------------------
def test_exact_posterior_recognition_model_equals_the_posterior(mixture):
    x, y, _ = mixture.sample(6, _gen(13))
    model = ToyLabelFirstModel.exact_posterior(mixture)
    assert torch.allclose(torch.log_softmax(model.classify(x), -1), mixture.log_posterior_y(x), atol=1e-10)
    onehot = torch.nn.functional.one_hot(y, 3).to(F64)
    mu, log_sigma = model.encode(x, onehot)
    mean, cov = mixture.posterior_z(x, y)
    assert torch.allclose(mu, mean, atol=1e-12)
    assert torch.allclose(torch.exp(2 * log_sigma), torch.diagonal(cov).expand(6, 2), atol=1e-12)


def test_exact_posterior_needs_orthogonal_columns(mixture):
    W = mixture.W.clone()
    W[:, 1] += 0.5 * W[:, 0]
    skewed = DiscreteContinuousToy(mixture.pi, W, mixture.U, mixture.b, mixture.s)
    with pytest.raises(ValueError, match="non-diagonal"):
        ToyLabelFirstModel.exact_posterior(skewed)


def test_label_first_closed_forms(mixture):
    """At the exact posterior Eq. 9 = log p(x) and Eq. 8 (α = 0) = log p(x, y). For another q the gap of
    Eq. 9 is KL(q(y,z|x) ‖ p(y,z|x)) = Σ_y q(y|x)[log q(y|x)/p(y|x) + KL(q(z|x,y) ‖ p(z|x,y))]."""
    x, y, _ = mixture.sample(6, _gen(14))
    exact = ToyLabelFirstModel.exact_posterior(mixture)
    assert torch.allclose(exact.exact_unsupervised_bound(x), mixture.log_marginal(x), atol=1e-10, rtol=0)
    assert torch.allclose(exact.exact_supervised_bound(x, y, 0.0), mixture.log_joint_xy(x, y), atol=1e-10)

    q = ToyLabelFirstModel.perturbed_posterior(mixture, 0.3, _gen(15))
    log_q = torch.log_softmax(q.classify(x), -1)
    eye = torch.eye(3, dtype=F64)[:, None, :]
    mu, log_sigma = q.encode(x, eye)                                              # [C, B, Dz]
    post_mean = torch.stack([mixture.posterior_z(x, torch.full((6,), c))[0] for c in range(3)])
    kl_z = kl_divergence(MultivariateNormal(mu, torch.diag_embed(torch.exp(2 * log_sigma))),
                         MultivariateNormal(post_mean, mixture.posterior_z_covariance())).T   # [B, C]
    gap = (torch.exp(log_q) * (log_q - mixture.log_posterior_y(x) + kl_z)).sum(-1)
    assert torch.allclose(mixture.log_marginal(x) - q.exact_unsupervised_bound(x), gap, atol=1e-10, rtol=0)
    sup_gap = mixture.log_joint_xy(x, y) - q.exact_supervised_bound(x, y, 0.0)
    assert torch.allclose(sup_gap, kl_z.gather(-1, y[:, None])[:, 0], atol=1e-10, rtol=0)
    # α only adds α log q(y|x)
    alpha_part = q.exact_supervised_bound(x, y, 2.5) - q.exact_supervised_bound(x, y, 0.0)
    assert torch.allclose(alpha_part, 2.5 * log_q.gather(-1, y[:, None])[:, 0], atol=1e-12)


def test_recognition_parameters_are_validated(mixture):
    exact = ToyLabelFirstModel.exact_posterior(mixture)
    params = exact.parameters()
    params[0] = params[0][:, :2]
    with pytest.raises(ValueError, match="classifier_weight must have shape"):
        ToyLabelFirstModel(mixture, *params)
    with pytest.raises(ValueError, match="DiscreteContinuousToy"):
        ToyLabelFirstModel(None, *exact.parameters())


# ------------------------------------------------------------------------------------------------
# quadrature and recognition models, style_first
# ------------------------------------------------------------------------------------------------
def test_gauss_hermite_integrates_gaussian_moments():
    t, log_w = gauss_hermite(10, 1)
    w = torch.exp(log_w)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-14)
    for power, moment in ((2, 1.0), (4, 3.0), (6, 15.0), (8, 105.0), (3, 0.0)):
        assert float((w * t[:, 0] ** power).sum()) == pytest.approx(moment, abs=1e-11)
    t2, log_w2 = gauss_hermite(6, 2)
    w2 = torch.exp(log_w2)
    assert float((w2 * t2[:, 0] ** 2 * t2[:, 1] ** 2).sum()) == pytest.approx(1.0, abs=1e-12)
    assert float((w2 * t2[:, 0] ** 4 * t2[:, 1] ** 2).sum()) == pytest.approx(3.0, abs=1e-12)
    with pytest.raises(ValueError, match="too many"):
        gauss_hermite(200, 3)


def test_style_first_bayes_classifier_is_exact(mixture_1d):
    model = ToyStyleFirstModel.approximate_posterior(mixture_1d, sigma_scale=1.3)
    x, _, _ = mixture_1d.sample(5, _gen(16))
    z = torch.randn(7, 5, 1, generator=_gen(17), dtype=F64)
    assert torch.allclose(torch.log_softmax(model.classify_style(x, z), -1),
                          mixture_1d.log_posterior_y_given_z(x, z), atol=1e-12)


def test_style_first_quadrature_matches_trapezoidal_rule(mixture_1d):
    """log q(y|x) and the Eq. 16 expectation by Gauss–Hermite (the default 200 nodes) vs a trapezoidal
    rule with 40 001 points on mu ± 14 sigma: two unrelated rules for smooth, Gaussian-tailed integrands.
    Required agreement 1e-9, far below any Monte Carlo standard error these references are used with."""
    model = ToyStyleFirstModel.approximate_posterior(mixture_1d, sigma_scale=1.3)
    x, y, _ = mixture_1d.sample(4, _gen(18))
    mu, log_sigma = model.encode_marginal(x)
    sigma = torch.exp(log_sigma)
    grid = torch.linspace(-14.0, 14.0, 40001, dtype=F64)
    z = (mu + sigma * grid[:, None, None])                                       # [N, B, 1]
    log_density = Normal(mu, sigma).log_prob(z)[..., 0]                          # [N, B]
    step = float(grid[1] - grid[0]) * sigma[:, 0]                                # dz per example
    trapezoid = torch.full((40001, 1), 1.0, dtype=F64)
    trapezoid[0] = trapezoid[-1] = 0.5
    log_q = torch.log_softmax(model.classify_style(x, z), -1)                    # [N, B, C]
    log_rule = torch.log(trapezoid * step)
    reference = torch.logsumexp(log_rule[..., None] + log_density[..., None] + log_q, dim=0)
    assert torch.allclose(model.exact_log_q_y(x), reference, atol=1e-9, rtol=0)
    f = model.log_p_over_q(x, y, z)
    log_joint_weight = log_rule + log_density + log_q.gather(-1, y.expand(40001, 4)[..., None])[..., 0]
    expectation = (torch.softmax(log_joint_weight, 0) * f).sum(0)
    by_quadrature = model.expectation_given_label(x, y, lambda nodes: model.log_p_over_q(x, y, nodes))
    assert torch.allclose(by_quadrature, expectation, atol=1e-9, rtol=0)


def test_style_first_exact_bounds_are_ordered(mixture_1d):
    model = ToyStyleFirstModel.approximate_posterior(mixture_1d, sigma_scale=1.3)
    x, y, _ = mixture_1d.sample(6, _gen(19))
    assert (model.exact_unsupervised_bound(x) < mixture_1d.log_marginal(x)).all()
    eq16 = model.exact_supervised_bound(x, y, 0.0)
    assert (eq16 < mixture_1d.log_joint_xy(x, y)).all()
    limit = model.exact_is_estimator_limit(x, y, 1.0)
    jensen_gap = (model.exact_log_q_y(x).gather(-1, y[:, None])[:, 0]
                  - model.expected_log_q_y_given_z(x, y))
    assert (jensen_gap > 0).all()
    assert torch.allclose(model.exact_supervised_bound(x, y, 1.0) - limit, 2.0 * jensen_gap, atol=1e-12)


def test_module_exports():
    assert set(toy.__all__) == {"LinearGaussian", "DiscreteContinuousToy", "ToyLabelFirstModel",
                                "ToyStyleFirstModel", "gauss_hermite"}
