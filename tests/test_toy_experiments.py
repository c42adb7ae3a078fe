"""Tests of the toy experiments behind the derivation notebooks 01-03 (ssvae_lib.toy_experiments) and of
the small estimator helpers they use. Closed forms are checked against independent routes
(torch.distributions, trapezoidal integration, hand-derived gradients); Monte Carlo checks compare a mean
of R replicates with its exact value within 4 standard errors (a false alarm about once in 16,000), and
sample variances within 4 standard errors of the variance, computed from exact fourth moments."""
import math

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from ssvae_lib import estimators, objectives, toy, toy_experiments

F64 = torch.float64


def _t(values):
    return torch.tensor(values, dtype=F64)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _assert_within_4se(values, expected, what=""):
    mean, se = estimators.mean_and_standard_error(values)
    mean, se = float(mean), float(se)
    assert abs(mean - expected) <= 4 * se, f"{what}: {mean:.5f} vs {expected:.5f} (SE {se:.5f})"


@pytest.fixture(scope="module")
def linear_1d():
    return toy.LinearGaussian(_t([[1.0], [0.6]]), _t([0.0, 0.0]), 0.8), _t([1.2, 0.4])


@pytest.fixture(scope="module")
def linear_2d():
    """Non-orthogonal columns: a correlated posterior."""
    model = toy.LinearGaussian(_t([[1.0, 0.5], [0.6, -0.2], [0.3, 0.8]]), _t([0.1, -0.2, 0.0]), 0.7)
    return model, _t([1.0, 0.2, -0.5])


# ------------------------------------------------------------------------------------------------
# notebook 01: the ELBO, its gap and its gradients
# ------------------------------------------------------------------------------------------------
def test_gaussian_kl_diagonal_to_full_matches_torch(linear_2d):
    model, x = linear_2d
    mean, cov = model.posterior(x)
    for m, log_s in [([0.3, -0.2], [-0.5, 0.1]), ([2.0, 1.0], [0.4, -1.0])]:
        m, log_s = _t(m), _t(log_s)
        expected = kl_divergence(MultivariateNormal(m, torch.diag(torch.exp(2 * log_s))), MultivariateNormal(mean, cov))
        assert float(toy_experiments.gaussian_kl_diagonal_to_full(m, log_s, mean, cov)) == pytest.approx(
            float(expected), abs=1e-12)


def test_elbo_decomposition_identities(linear_2d):
    model, x = linear_2d
    for m, log_s in [([0.3, -0.2], [-0.5, 0.1]), ([-1.0, 2.0], [0.3, -1.2])]:
        terms = toy_experiments.elbo_decomposition(model, x, m, log_s)
        assert terms["log_px"] == pytest.approx(terms["elbo"] + terms["gap"], abs=1e-10)
        assert terms["gap"] > 0
        assert terms["kl_prior"] == pytest.approx(float(objectives.gaussian_kl(_t(m), _t(log_s))), abs=1e-12)
        assert terms["reconstruction"] - terms["kl_prior"] == pytest.approx(terms["elbo"], abs=1e-12)
    with pytest.raises(ValueError, match="length Dz = 2"):
        toy_experiments.elbo_decomposition(model, x, [0.0], [0.0])
    with pytest.raises(ValueError, match="one observation"):
        toy_experiments.elbo_decomposition(model, x[:2], [0.0, 0.0], [0.0, 0.0])


def test_best_diagonal_gaussian_is_the_mean_field_optimum(linear_1d, linear_2d):
    model, x = linear_1d                         # 1-d: the posterior itself, gap 0
    m, log_s = toy_experiments.best_diagonal_gaussian(model, x)
    mean, cov = model.posterior(x)
    assert torch.allclose(m, mean) and torch.allclose(torch.exp(2 * log_s), torch.diagonal(cov))
    assert toy_experiments.elbo_decomposition(model, x, m, log_s)["gap"] == pytest.approx(0.0, abs=1e-12)
    model, x = linear_2d                         # correlated: a stationary point with a positive gap
    m, log_s = toy_experiments.best_diagonal_gaussian(model, x)
    assert toy_experiments.exact_elbo_gradient(model, x, m, log_s).abs().max() < 1e-10
    best = toy_experiments.elbo_decomposition(model, x, m, log_s)
    assert best["gap"] > 0.01
    for delta in ([0.05, 0, 0, 0], [0, -0.05, 0, 0], [0, 0, 0.05, 0], [0, 0, 0, -0.05]):
        d = _t(delta)
        assert toy_experiments.elbo_decomposition(model, x, m + d[:2], log_s + d[2:])["elbo"] < best["elbo"]


def test_beta_vae_objective_and_the_fixed_variance_equivalence(linear_1d):
    model, x = linear_1d
    q = ([0.3], [-0.5])
    terms = toy_experiments.elbo_decomposition(model, x, *q)
    assert toy_experiments.beta_vae_objective(model, x, *q, 1.0) == pytest.approx(terms["elbo"], abs=1e-12)
    assert toy_experiments.beta_vae_objective(model, x, *q, 3.0) == pytest.approx(
        terms["reconstruction"] - 3 * terms["kl_prior"])
    # β·ELBO with σ² = β σ_ref² minus L_β with σ_ref² is the same constant for every q (derived by hand)
    s_ref, beta = 0.5, 3.0
    ref = toy.LinearGaussian(model.W, model.b, s_ref)
    wide = toy.LinearGaussian(model.W, model.b, math.sqrt(beta) * s_ref)
    constant = model.data_dim / 2 * (math.log(2 * math.pi * s_ref ** 2)
                                     - beta * math.log(2 * math.pi * beta * s_ref ** 2))
    for q in [([0.3], [-0.5]), ([-2.0], [1.0]), ([0.9], [-2.0])]:
        diff = (beta * toy_experiments.beta_vae_objective(wide, x, *q, 1.0)
                - toy_experiments.beta_vae_objective(ref, x, *q, beta))
        assert diff == pytest.approx(constant, abs=1e-10)
    with pytest.raises(ValueError, match="beta"):
        toy_experiments.beta_vae_objective(model, x, *q, -1.0)


def test_elbo_monte_carlo_terms_average_to_the_closed_form(linear_2d):
    model, x = linear_2d
    m, log_s = _t([0.3, -0.2]), _t([-0.5, 0.1])
    values = toy_experiments.elbo_monte_carlo_terms(model, x, m, log_s, 20000, _gen(0))
    assert values.shape == (20000,)
    _assert_within_4se(values, float(model.elbo(x, m, log_s)), "MC ELBO")
    # and exp of the terms averages to p(x) (Step 1 of notebook 01)
    _assert_within_4se(torch.exp(values), math.exp(float(model.log_marginal(x))), "mean of w")


def test_per_sample_gradients_match_hand_derived_formulas(linear_2d):
    """Reparameterised: ∂/∂m = g(z) = Wᵀ(x − b − Wz)/s² − z and ∂/∂log σ = g(z)·σε + 1; score function:
    f(z)·ε/σ and f(z)·(ε² − 1), with f = log p(x, z) − log q(z|x)."""
    model, x = linear_2d
    m, log_s = _t([0.3, -0.2]), _t([-0.5, 0.1])
    eps = torch.randn(7, 2, generator=_gen(1), dtype=F64)
    sigma = torch.exp(log_s)
    z = m + sigma * eps
    g = (x - model.b - z @ model.W.T) @ model.W / model.s ** 2 - z
    reparam = toy_experiments.elbo_gradient_per_sample(model, x, m, log_s, eps, "reparameterised")
    assert torch.allclose(reparam, torch.cat([g, g * sigma * eps + 1], -1), atol=1e-12)
    f = model.log_joint(x, z) - objectives.gaussian_log_density(z, m, log_s)
    score = toy_experiments.elbo_gradient_per_sample(model, x, m, log_s, eps, "score_function")
    assert torch.allclose(score, torch.cat([f[:, None] * eps / sigma, f[:, None] * (eps ** 2 - 1)], -1), atol=1e-12)
    with pytest.raises(ValueError, match="estimator"):
        toy_experiments.elbo_gradient_per_sample(model, x, m, log_s, eps, "pathwise")
    with pytest.raises(ValueError, match="eps"):
        toy_experiments.elbo_gradient_per_sample(model, x, m, log_s, eps[:, :1], "reparameterised")


@pytest.mark.parametrize("estimator", toy_experiments.GRADIENT_ESTIMATORS)
def test_gradient_estimators_are_unbiased_with_the_exact_variance(linear_2d, estimator):
    model, x = linear_2d
    m, log_s = _t([0.3, -0.2]), _t([-0.5, 0.1])
    exact = toy_experiments.exact_elbo_gradient(model, x, m, log_s)
    mean_1, var_1 = toy_experiments.exact_gradient_moments(model, x, m, log_s, estimator)
    assert torch.allclose(mean_1, exact, atol=1e-10)                        # exactly unbiased
    mean_20, var_20 = toy_experiments.exact_gradient_moments(model, x, m, log_s, estimator, n_nodes=20)
    assert torch.allclose(var_1, var_20, rtol=1e-10)                         # the rule is exact already
    # fourth central moment of one term (degree ≤ 16 polynomial: exact with 20 nodes)
    nodes, log_w = toy.gauss_hermite(20, 2)
    per = toy_experiments.elbo_gradient_per_sample(model, x, m, log_s, nodes, estimator)
    mu4 = (torch.exp(log_w)[:, None] * (per - mean_20) ** 4).sum(0)
    s, r = 4, 20000
    estimates = toy_experiments.elbo_gradient_estimates(model, x, m, log_s, s, r, estimator, _gen(2))
    assert estimates.shape == (r, 4)
    for j in range(4):
        _assert_within_4se(estimates[:, j], float(exact[j]), f"{estimator} component {j}")
        var_s = var_1[j] / s                                                 # variance of an S-sample mean
        mu4_s = mu4[j] / s ** 3 + 3 * (s - 1) * var_1[j] ** 2 / s ** 3       # its fourth central moment
        se_var = math.sqrt((mu4_s - var_s ** 2) / r)
        assert abs(float(estimates[:, j].var()) - float(var_s)) < 4 * se_var
    assert (toy_experiments.exact_gradient_moments(model, x, m, log_s, "score_function")[1]
            > toy_experiments.exact_gradient_moments(model, x, m, log_s, "reparameterised")[1]).all()


# ------------------------------------------------------------------------------------------------
# notebook 02: importance sampling of a 1-d posterior
# ------------------------------------------------------------------------------------------------
def _grid_integral(fn, lo=-12.0, hi=12.0, n=4001):
    z = torch.linspace(lo, hi, n, dtype=F64)
    return float(torch.trapezoid(fn(z), z))


@pytest.mark.parametrize("shift, scale", [(0.0, 1.0), (1.0, 1.4), (-0.5, 0.9), (2.0, 1.0)])
def test_weight_moments_and_bias_coefficients_match_quadrature(linear_1d, shift, scale):
    """Every closed form against the trapezoidal rule on [−12, 12] (spectrally accurate for these smooth,
    Gaussian-shaped integrands; scale > sqrt(2/3) keeps the third moment finite)."""
    model, x = linear_1d
    e = toy_experiments.PosteriorImportanceSampling(model, x, shift, scale)

    def tilted(k, f=lambda z: 1.0):      # ∫ p^k q^(1−k) f, formed in log space (no 0·inf in the tails)
        return _grid_integral(lambda z: torch.exp(k * e.log_posterior(z) + (1 - k) * e.log_proposal(z)) * f(z))

    for k in (2, 3):
        assert e.weight_moment(k) == pytest.approx(tilted(k), rel=1e-7)
    chi2 = e.chi_square()
    assert chi2 == pytest.approx(tilted(2) - 1, abs=1e-7)
    mu = e.posterior_mean
    assert e.bias_coefficients("posterior_mean_snis")[0] == pytest.approx(-tilted(2, lambda z: z - mu), abs=1e-7)
    mu3 = tilted(3) - 3 * tilted(2) + 2                                  # E_q[(w̄ − 1)³], expanded
    assert e.bias_coefficients("log_normaliser") == pytest.approx((-chi2 / 2, mu3 / 3 - 0.75 * chi2 ** 2), abs=1e-6)
    assert e.bias_coefficients("normaliser") == (0.0, 0.0)
    # the Eq. 12 variances are exact: Var_q(w̄ f)/K
    var_is = tilted(2, lambda z: z ** 2) - mu ** 2
    assert e.predicted_variance("posterior_mean_is", 8) == pytest.approx(var_is / 8, rel=1e-6)
    assert e.predicted_variance("normaliser", 8) == pytest.approx(math.exp(2 * e.log_normaliser) * chi2 / 8, rel=1e-9)


def test_a_proposal_narrower_than_one_over_sqrt2_has_infinite_chi_square(linear_1d):
    model, x = linear_1d
    narrow = toy_experiments.PosteriorImportanceSampling(model, x, 0.0, 0.70)
    assert math.isinf(narrow.chi_square()) and math.isinf(narrow.predicted_variance("normaliser", 4))
    assert all(math.isnan(c) for c in narrow.bias_coefficients("log_normaliser"))
    assert math.isnan(narrow.expected_ess_fraction(10))
    assert math.isfinite(toy_experiments.PosteriorImportanceSampling(model, x, 0.0, 0.72).chi_square())
    for delta in (0.5, 1.0, 2.0):                                   # same width: χ² = exp(δ²) − 1
        chi2 = toy_experiments.PosteriorImportanceSampling(model, x, delta, 1.0).chi_square()
        assert chi2 == pytest.approx(math.expm1(delta ** 2))


def test_posterior_importance_sampling_validates_its_input(linear_1d, linear_2d):
    model, x = linear_1d
    with pytest.raises(ValueError, match="1-d latent"):
        toy_experiments.PosteriorImportanceSampling(*linear_2d)
    with pytest.raises(ValueError, match="scale"):
        toy_experiments.PosteriorImportanceSampling(model, x, 0.0, 0.0)
    with pytest.raises(ValueError, match="shift"):
        toy_experiments.PosteriorImportanceSampling(model, x, float("nan"), 1.0)
    e = toy_experiments.PosteriorImportanceSampling(model, x)
    with pytest.raises(ValueError, match="estimator"):
        e.exact("median")
    with pytest.raises(ValueError, match="n_samples"):
        e.sample(0, 3)
    z, log_w = e.sample(5, 3, _gen(0))
    assert z.shape == log_w.shape == (5, 3)
    with pytest.raises(ValueError, match="estimator"):
        e.estimates("median", z, log_w)


def test_replicated_estimators_match_their_exact_expectations(linear_1d):
    model, x = linear_1d
    e = toy_experiments.PosteriorImportanceSampling(model, x, 1.0, 1.4)
    r = 10000
    for i, name in enumerate(["normaliser", "posterior_mean_is"]):              # Eq. 12: unbiased at K = 4
        s = toy_experiments.replicate_estimates(e, name, 4, r, _gen(10 + i))
        assert abs(s.bias) < 4 * s.standard_error and s.predicted_bias == 0.0
    k = 128                 # Eq. 13: first-order bias; the O(1/K²) remainder is far below one SE at K = 128
    s = toy_experiments.replicate_estimates(e, "posterior_mean_snis", k, r, _gen(12))
    assert abs(s.bias - e.predicted_bias("posterior_mean_snis", k)) < 4 * s.standard_error
    k = 64                  # IWAE: second-order prediction; the O(1/K³) remainder is negligible here
    s = toy_experiments.replicate_estimates(e, "log_normaliser", k, r, _gen(13))
    assert abs(s.bias - e.predicted_bias("log_normaliser", k, order=2)) < 4 * s.standard_error
    assert s.bias < 0
    first, again = (toy_experiments.replicate_estimates(e, "log_normaliser", 8, 50, _gen(14)) for _ in range(2))
    assert torch.equal(again.estimates, first.estimates)                          # same seed, same numbers


def test_effective_sample_size_fraction_matches_the_delta_method(linear_1d):
    model, x = linear_1d
    e = toy_experiments.PosteriorImportanceSampling(model, x, 1.0, 1.4)
    k = 64
    _, log_w = e.sample(k, 20000, _gen(20))
    _assert_within_4se(estimators.effective_sample_size(log_w) / k, e.expected_ess_fraction(k), "ESS / K")
    assert e.expected_ess_fraction(10 ** 9) == pytest.approx(1 / (1 + e.chi_square()), rel=1e-6)


def test_log_log_slope_recovers_power_laws():
    sizes = np.array([2, 4, 8, 16, 32])
    slope, slope_se = estimators.log_log_slope(sizes, 0.3 / sizes, 0.01 * 0.3 / sizes)
    assert slope == pytest.approx(-1.0, abs=1e-12)
    u = np.log(sizes)                                                   # equal relative errors 0.01
    assert slope_se == pytest.approx(0.01 / math.sqrt(((u - u.mean()) ** 2).sum()), rel=1e-10)
    assert estimators.log_log_slope(sizes, -2.0 * sizes ** -0.5, 0.1 * np.ones(5))[0] == pytest.approx(-0.5)
    with pytest.raises(ValueError):
        estimators.log_log_slope([1, 2], [0.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError):
        estimators.log_log_slope([1], [1.0], [1.0])


def test_mean_and_standard_error():
    values = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 4.0]], dtype=F64)
    mean, se = estimators.mean_and_standard_error(values)
    assert torch.allclose(mean, torch.tensor([3.0, 4.0], dtype=F64))
    assert torch.allclose(se, torch.tensor([2.0, 2.0], dtype=F64) / math.sqrt(3))
    with pytest.raises(ValueError, match="at least 2"):
        estimators.mean_and_standard_error(values[:1])


# ------------------------------------------------------------------------------------------------
# notebook 03: the supervised estimator
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def style_model():
    generative = toy.DiscreteContinuousToy(_t([0.4, 0.35, 0.25]), _t([[1.0], [0.5], [0.0]]),
                                           _t([[-1.0, 0.2, 1.0], [0.5, -0.6, 0.3], [0.4, 0.0, -0.4]]),
                                           torch.zeros(3, dtype=F64), 0.6)
    return toy.ToyStyleFirstModel.approximate_posterior(generative, sigma_scale=1.3)


def test_supervised_reference_is_consistent(style_model):
    x, y, alpha = _t([0.3, 0.4, 0.1]), 0, 2.0
    ref = toy_experiments.supervised_estimator_reference(style_model, x, y, alpha)
    x1, y1 = x.reshape(1, -1), torch.tensor([y])
    assert ref.eq16 == pytest.approx(float(style_model.exact_supervised_bound(x1, y1, alpha)))
    assert ref.eq16 - ref.limit_as_written == pytest.approx((1 + alpha) * (ref.log_q_y - ref.expected_log_w), abs=1e-10)
    assert ref.log_q_y > ref.expected_log_w
    for name in toy_experiments.SUPERVISED_ESTIMATES:
        assert ref.predicted_mean(name, 10 ** 9) == pytest.approx(ref.target(name), abs=1e-7)
    assert ref.predicted_mean("eq19", 1) == ref.expected_log_w
    other = toy_experiments.supervised_estimator_reference(style_model, x, y, 7.5)
    moved = ref.with_alpha(7.5)
    for field in ("eq16", "limit_as_written", "log_q_y", "expected_log_w", "snis_coefficient", "weight_variance"):
        assert getattr(moved, field) == pytest.approx(getattr(other, field), abs=1e-10)
    with pytest.raises(ValueError, match="estimate"):
        ref.predicted_mean("other", 4)
    with pytest.raises(ValueError, match="ToyStyleFirstModel"):
        toy_experiments.supervised_estimator_reference(object(), x, y, alpha)
    with pytest.raises(ValueError, match="label"):
        toy_experiments.supervised_estimator_reference(style_model, x, 3, alpha)


def test_supervised_estimates_match_their_first_order_predictions(style_model):
    x, y, alpha = _t([0.3, 0.4, 0.1]), 0, 1.0
    ref = toy_experiments.supervised_estimator_reference(style_model, x, y, alpha)
    one = toy_experiments.supervised_estimates(
        toy_experiments.draw_supervised_terms(style_model, x, y, 1, 10, generator=_gen(0)), alpha)
    assert torch.allclose(one["as_written"], one["weighted"]) and torch.allclose(one["eq19"], one["eq19_iw"])
    terms = toy_experiments.draw_supervised_terms(style_model, x, y, 64, 8000, generator=_gen(1))
    assert all(t.shape == (64, 8000) for t in terms)
    estimates = toy_experiments.supervised_estimates(terms, alpha)
    # at S = 64 the next order (≈ S⁻²) is far below the standard error of 8000 replicates
    for name, values in estimates.items():
        _assert_within_4se(values, ref.predicted_mean(name, 64), name)
