"""Tests of ssvae_lib.estimators (seminar thesis §2.4, Eq. 11–13, and the IWAE bound).

Exact references come from the 1-d linear-Gaussian toy (exact posterior and log p(x)); every Monte Carlo
tolerance is 4 standard errors of the quantity compared (a false alarm rate of about 6e-5 per check).
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ssvae_lib import estimators as E
from ssvae_lib.toy import LinearGaussian, gauss_hermite

F64 = torch.float64
LOG_RANGE = st.floats(min_value=-700.0, max_value=700.0, allow_nan=False, allow_infinity=False)
log_weight_arrays = arrays(np.float64, st.integers(1, 40), elements=LOG_RANGE)
DTYPES = st.sampled_from([torch.float32, torch.float64])


def _mean_and_se(values: torch.Tensor) -> tuple[float, float]:
    return float(values.mean()), float(values.std() / math.sqrt(values.numel()))


def _normal_log_density(z, mean, sd):
    return -0.5 * ((z - mean) / sd) ** 2 - math.log(sd) - 0.5 * math.log(2 * math.pi)


# ------------------------------------------------------------------------------------------------
# exact behaviour
# ------------------------------------------------------------------------------------------------
def test_log_mean_exp_matches_naive_formula_and_respects_dim():
    log_w = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    for dim in (0, 1, -1):
        naive = torch.log(torch.exp(log_w).mean(dim))
        assert torch.allclose(E.log_mean_exp(log_w, dim=dim), naive, atol=1e-13, rtol=0)
    kept = E.log_mean_exp(log_w, dim=1, keepdim=True)
    assert kept.shape == (5, 1, 4)
    assert torch.equal(E.iwae_bound(log_w, dim=2), E.log_mean_exp(log_w, dim=2))
    single = torch.tensor([[-3.5, 2.0]], dtype=F64)
    assert torch.equal(E.log_mean_exp(single, dim=0), single[0])


def test_log_mean_exp_gradient_is_the_self_normalised_weights():
    log_w = torch.tensor([0.3, -1.2, 2.0, 0.0], dtype=F64, requires_grad=True)
    E.log_mean_exp(log_w).backward()
    assert torch.allclose(log_w.grad, E.self_normalised_weights(log_w.detach()), atol=1e-15)


def test_effective_sample_size_exact_values():
    assert float(E.effective_sample_size(torch.zeros(7, dtype=F64))) == pytest.approx(7.0, abs=1e-12)
    dominated = torch.tensor([700.0, -700.0, -700.0, 0.0], dtype=F64)
    assert float(E.effective_sample_size(dominated)) == pytest.approx(1.0, abs=1e-12)
    two_equal = torch.tensor([600.0, 600.0, -600.0, -650.0, -700.0], dtype=F64)
    assert float(E.effective_sample_size(two_equal)) == pytest.approx(2.0, abs=1e-12)
    # weights (1, 2, 3): (6)^2 / (1 + 4 + 9) = 36 / 14
    log_w = torch.log(torch.tensor([1.0, 2.0, 3.0], dtype=F64)) + 123.0
    assert float(E.effective_sample_size(log_w)) == pytest.approx(36.0 / 14.0, abs=1e-12)


def test_self_normalised_estimate_with_known_weights():
    weights = torch.tensor([1.0, 3.0, 4.0], dtype=F64)
    f = torch.tensor([2.0, -1.0, 0.5], dtype=F64)
    expected = (1 * 2.0 + 3 * -1.0 + 4 * 0.5) / 8.0
    for shift in (0.0, 650.0, -650.0):   # an unnormalised target changes nothing (Eq. 13)
        est = E.self_normalised_estimate(torch.log(weights) + shift, f)
        # adding 650 to a log-weight costs its last bits (ulp(650) ≈ 1e-13): allow 64 ulps of 650
        assert float(est) == pytest.approx(expected, abs=64 * torch.finfo(F64).eps * 650)


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(0, 3), "at least one sample"),
    (torch.zeros(4, dtype=torch.int64), "floating-point"),
    (torch.tensor(1.0), "sample dimension"),
])
def test_bad_log_weights_raise_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        E.log_mean_exp(bad)
    with pytest.raises(ValueError, match=message):
        E.effective_sample_size(bad)


def test_dim_out_of_range_raises():
    with pytest.raises(ValueError, match="out of range"):
        E.self_normalised_weights(torch.zeros(3, 2), dim=2)


# ------------------------------------------------------------------------------------------------
# numerical stability over ±700 (hypothesis)
# ------------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(values=log_weight_arrays, dtype=DTYPES, shift=LOG_RANGE)
def test_log_space_functions_are_finite_and_consistent(values, dtype, shift):
    log_w = torch.as_tensor(values, dtype=dtype)
    k = log_w.numel()
    # rounding allowance: a few dozen ulps of the largest magnitude involved (not a statistical tolerance)
    rounding = 64 * torch.finfo(dtype).eps * (1.0 + float(log_w.abs().max()) + abs(shift))
    lme = E.log_mean_exp(log_w)
    assert torch.isfinite(lme)
    assert float(log_w.min()) - rounding <= float(lme) <= float(log_w.max()) + rounding
    # equivariance: log mean exp(log_w + c) = log mean exp(log_w) + c, without overflow
    shifted = E.log_mean_exp(log_w + shift)
    assert torch.isfinite(shifted)
    assert abs(float(shifted) - (float(lme) + shift)) <= rounding
    weights = E.self_normalised_weights(log_w)
    assert torch.isfinite(weights).all() and (weights >= 0).all()
    assert abs(float(weights.sum()) - 1.0) <= 64 * torch.finfo(dtype).eps * k
    ess = E.effective_sample_size(log_w)
    assert torch.isfinite(ess)
    assert 1.0 - 4 * rounding <= float(ess) <= k * (1.0 + 4 * rounding)
    assert torch.isfinite(E.iwae_bound(log_w))


@settings(max_examples=60, deadline=None)
@given(values=log_weight_arrays, dtype=DTYPES, data=st.data())
def test_self_normalised_estimate_is_finite_and_a_convex_combination(values, dtype, data):
    log_w = torch.as_tensor(values, dtype=dtype)
    f_values = data.draw(arrays(np.float64, log_w.numel(), elements=st.floats(-1e3, 1e3)))
    f = torch.as_tensor(f_values, dtype=dtype)
    est = E.self_normalised_estimate(log_w, f)
    assert torch.isfinite(est)
    slack = 64 * torch.finfo(dtype).eps * 1e3 * log_w.numel()
    assert float(f.min()) - slack <= float(est) <= float(f.max()) + slack


@settings(max_examples=40, deadline=None)
@given(values=arrays(np.float64, st.integers(1, 40), elements=st.floats(-300, 300)), dtype=DTYPES)
def test_importance_sampling_estimate_is_finite_where_representable(values, dtype):
    # float32 cannot hold exp(300); keep the weights representable there, test the full range in float64
    log_w = torch.as_tensor(values if dtype == torch.float64 else np.clip(values, -80, 80), dtype=dtype)
    est = E.importance_sampling_estimate(log_w, torch.zeros_like(log_w), torch.ones_like(log_w))
    assert torch.isfinite(est)
    assert float(est) == pytest.approx(float(torch.exp(log_w.double()).mean()), rel=1e-4)


# ------------------------------------------------------------------------------------------------
# statistical behaviour on the linear-Gaussian toy (exact posterior and log p(x))
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def problem():
    """1-d toy, an observation x, its exact posterior N(m_p, s_p²) and a mismatched proposal q."""
    model = LinearGaussian(torch.tensor([[1.2]], dtype=F64), torch.tensor([0.0], dtype=F64), 0.8)
    x = torch.tensor([1.5], dtype=F64)
    mean, cov = model.posterior(x)
    m_p, s_p = float(mean[0]), math.sqrt(float(cov[0, 0]))
    return dict(model=model, x=x, m_p=m_p, s_p=s_p, m_q=m_p + 0.5 * s_p, s_q=1.3 * s_p)


def _draw(problem, k, r, seed):
    g = torch.Generator().manual_seed(seed)
    return problem["m_q"] + problem["s_q"] * torch.randn(k, r, generator=g, dtype=F64)


def test_importance_sampling_eq12_is_unbiased_for_the_posterior_mean(problem):
    z = _draw(problem, 8, 20000, seed=1)
    log_p = _normal_log_density(z, problem["m_p"], problem["s_p"])      # normalised target p(z|x)
    log_q = _normal_log_density(z, problem["m_q"], problem["s_q"])
    est = E.importance_sampling_estimate(log_p, log_q, z)
    mean, se = _mean_and_se(est)
    assert abs(mean - problem["m_p"]) <= 4 * se


def test_self_normalised_bias_shrinks_like_one_over_k(problem):
    """Eq. 13 with the unnormalised target p(x, z) (no normalising constant needed).

    The bias at each K is measured with a control variate: Eq. 12 with the normalised posterior is
    unbiased, so E[SNIS(f̃) − IS(f̃)] is the SNIS bias, with f̃ = z − E_p[z] (E_p[z] known exactly), and
    the paired difference has a standard deviation of order 1/K instead of 1/√K. We fit
    log|bias_K| = a + slope·log K + c/K (the c/K term absorbs the next order of the bias expansion) by
    weighted least squares and require |slope + 1| ≤ 4 standard errors of the fitted slope. The leading
    coefficient K·bias_K → −E_q[w̄²(f̃)] (delta method, w̄ = p/q) is checked at the largest K.
    """
    model, x, m_p, s_p = problem["model"], problem["x"], problem["m_p"], problem["s_p"]
    ks = np.array([4, 8, 16, 32, 64, 128, 256])
    replicates = 4000
    bias, se = [], []
    for i, k in enumerate(ks):
        z = _draw(problem, int(k), replicates, seed=10 + i)
        log_q = _normal_log_density(z, problem["m_q"], problem["s_q"])
        f_centred = z - m_p
        snis = E.self_normalised_estimate(model.log_joint(x, z.unsqueeze(-1)) - log_q, f_centred)
        plain = E.importance_sampling_estimate(_normal_log_density(z, m_p, s_p), log_q, f_centred)
        b, s = _mean_and_se(snis - plain)
        bias.append(b)
        se.append(s)
    bias, se = np.array(bias), np.array(se)
    assert (np.abs(bias) > 4 * se).all(), "bias not resolved: the slope fit would be meaningless"
    y, sy = np.log(np.abs(bias)), se / np.abs(bias)
    design = np.stack([np.ones(len(ks)), np.log(ks), 1.0 / ks], axis=1)
    w = 1.0 / sy ** 2
    cov = np.linalg.inv(design.T @ (design * w[:, None]))
    coef = cov @ design.T @ (w * y)
    slope, slope_se = coef[1], math.sqrt(cov[1, 1])
    print(f"\nSNIS bias vs K: slope {slope:.3f} ± {slope_se:.3f} (expected -1)")
    assert abs(slope + 1.0) <= 4 * slope_se

    t, log_weights = gauss_hermite(80, 1)
    zq = problem["m_q"] + problem["s_q"] * t[:, 0]
    w_bar = torch.exp(_normal_log_density(zq, m_p, s_p) - _normal_log_density(zq, problem["m_q"], problem["s_q"]))
    leading = -float((torch.exp(log_weights) * w_bar ** 2 * (zq - m_p)).sum())
    k_last = ks[-1]
    # the next-order term c/K is about 0.5/256 relative here, far inside the 4-SE band of 7 %
    assert abs(k_last * bias[-1] - leading) <= 4 * k_last * se[-1]


def test_iwae_is_non_decreasing_in_k_and_tends_to_log_marginal(problem):
    """IWAE_K on nested sample sets (IWAE_K uses the first K of the same 256 draws), so differences
    between K are paired. Checks: every increase is ≥ −4 SE (non-decreasing in expectation), the first
    one is significantly positive, IWAE_K ≤ log p(x) + 4 SE, and at K = 256 the gap equals the
    first-order value Var_q(w̄)/(2K) within 4 SE (higher orders are O(K⁻²) ≈ 1e-6 here, below the SE)."""
    model, x = problem["model"], problem["x"]
    log_px = float(model.log_marginal(x))
    replicates = 2000
    z = _draw(problem, 256, replicates, seed=99)
    log_w = model.log_joint(x, z.unsqueeze(-1)) - _normal_log_density(z, problem["m_q"], problem["s_q"])
    ks = [1, 2, 4, 16, 64, 256]
    bounds = {k: E.iwae_bound(log_w[:k]) for k in ks}
    for k in ks:
        mean, se = _mean_and_se(bounds[k])
        assert mean <= log_px + 4 * se
    for k_small, k_large in zip(ks, ks[1:]):
        diff_mean, diff_se = _mean_and_se(bounds[k_large] - bounds[k_small])
        assert diff_mean >= -4 * diff_se
        if k_small == 1:
            assert diff_mean > 4 * diff_se
    t, log_weights = gauss_hermite(80, 1)
    zq = problem["m_q"] + problem["s_q"] * t[:, 0]
    log_p = _normal_log_density(zq, problem["m_p"], problem["s_p"])
    w_bar = torch.exp(log_p - _normal_log_density(zq, problem["m_q"], problem["s_q"]))
    var_w = float((torch.exp(log_weights) * (w_bar - 1.0) ** 2).sum())
    mean, se = _mean_and_se(bounds[256])
    assert abs((log_px - mean) - var_w / (2 * 256)) <= 4 * se
