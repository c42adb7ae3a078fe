"""Tests of ssvae_lib.likelihoods (observation models p(x|y,z)) against closed forms, high-precision mpmath
values, torch.distributions and numerical integration over [0, 1]."""
import math

import mpmath
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import ContinuousBernoulli as TorchContinuousBernoulli
from torch.distributions import Normal

from ssvae_lib import likelihoods as L
from ssvae_lib import objectives
from ssvae_lib.likelihoods import (OBSERVATION_MODELS, Bernoulli, ContinuousBernoulli, Gaussian,
                                   build_observation_model)

F64 = torch.float64
mpmath.mp.dps = 50


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _logit(p):
    return math.log(p) - math.log1p(-p)


def _mp_log_norm(l):
    """log C = log(2 artanh(1−2λ)/(1−2λ)) from λ = σ(l) (the paper's form, not ours), with 50 digits
    beyond the 1 − λ ≈ e^{−|l|} that λ must resolve."""
    with mpmath.workdps(50 + int(abs(l) / 2.3)):
        lam = 1 / (1 + mpmath.exp(-mpmath.mpf(l)))
        return +(mpmath.log(2) if l == 0 else mpmath.log(2 * mpmath.atanh(1 - 2 * lam) / (1 - 2 * lam)))


def _mp_mean(l):
    """E[x] = λ/(2λ−1) + 1/(2 artanh(1−2λ)) (½ at λ = ½), with the working precision of _mp_log_norm."""
    with mpmath.workdps(50 + int(abs(l) / 2.3)):
        lam = 1 / (1 + mpmath.exp(-mpmath.mpf(l)))
        return +(mpmath.mpf(0.5) if l == 0 else lam / (2 * lam - 1) + 1 / (2 * mpmath.atanh(1 - 2 * lam)))


def _integral_over_unit_interval(model, logits, n=200_001):
    """∫₀¹ p(x|l) dx by the trapezoid rule, one value per logit (x [n, 1] against out [L, 1, 1])."""
    grid = torch.linspace(0.0, 1.0, n, dtype=F64)
    out = torch.tensor(logits, dtype=F64).reshape(-1, 1, 1)
    return torch.trapezoid(torch.exp(model.log_prob(grid[:, None], out)), grid, dim=-1)


def _one_of_each():
    """One of each kind, with non-default settings where there are any."""
    return [Bernoulli(), ContinuousBernoulli(), Gaussian(0.3),
            Gaussian(0.5, learned=True, n_pixels=5, var_floor=1e-2)]


# ------------------------------------------------------------------------------------------------
# registry and configs
# ------------------------------------------------------------------------------------------------
def test_names_build_and_config_round_trip():
    assert OBSERVATION_MODELS == ("bernoulli", "continuous_bernoulli", "gaussian")
    for name, cls in zip(OBSERVATION_MODELS, (Bernoulli, ContinuousBernoulli, Gaussian)):
        assert type(build_observation_model(name)) is cls and cls.name == name and cls.params_per_pixel == 1
    g = _gen(0)
    x, out = torch.rand(3, 5, generator=g, dtype=F64), torch.randn(3, 5, generator=g, dtype=F64)
    for model in _one_of_each():
        model = model.double()
        if getattr(model, "learned", False):
            with torch.no_grad():
                model.log_sigma.copy_(torch.linspace(-1.0, 0.5, 5, dtype=F64))
        rebuilt = build_observation_model(model.config()).double()
        rebuilt.load_state_dict(model.state_dict())
        assert rebuilt.config() == model.config() and type(rebuilt) is type(model)
        torch.testing.assert_close(rebuilt.log_prob(x, out), model.log_prob(x, out), rtol=0, atol=0)
    assert Gaussian().config() == {"name": "gaussian", "sigma": 1.0, "learned": False, "n_pixels": None,
                                   "var_floor": 0.0}
    assert Gaussian(learned=True, n_pixels=4).var_floor == 1e-3      # a learned σ gets a floor by default


def test_bad_specs_name_the_allowed_values():
    with pytest.raises(ValueError, match="allowed: bernoulli, continuous_bernoulli, gaussian"):
        build_observation_model("poisson")
    with pytest.raises(ValueError, match="unknown observation model None"):
        build_observation_model({"sigma": 1.0})
    with pytest.raises(TypeError, match="name or a config dict"):
        build_observation_model(3)
    with pytest.raises(TypeError):
        build_observation_model({"name": "bernoulli", "sigma": 1.0})


def test_tensor_helpers_live_once_and_objectives_re_exports_them():
    assert objectives.bernoulli_log_likelihood is L.bernoulli_log_likelihood
    assert objectives.gaussian_log_likelihood is L.gaussian_log_likelihood


# ------------------------------------------------------------------------------------------------
# Bernoulli
# ------------------------------------------------------------------------------------------------
def test_bernoulli_matches_torch_and_broadcasts_over_leading_dims():
    g = _gen(1)
    x = (torch.rand(4, 6, generator=g) > 0.5).to(F64)
    out = 4 * torch.randn(3, 4, 6, generator=g, dtype=F64)                  # [S, B, D]
    model = Bernoulli()
    lp = model.log_prob(x, out)
    assert lp.shape == (3, 4)
    torch.testing.assert_close(lp, TorchBernoulli(logits=out).log_prob(x.expand(3, 4, 6)).sum(-1),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(model.mean(out), torch.sigmoid(out), rtol=0, atol=0)


def test_bernoulli_grey_level_density_is_not_normalised():
    """∫₀¹ exp(x l − softplus(l)) dx = tanh(l/2)/l: 0.381 at l = 2, so grey-level Bernoulli
    'likelihoods' are not densities; the missing factor is exactly the continuous Bernoulli's C."""
    logits = [-5.0, 2.0, 0.5]
    integral = _integral_over_unit_interval(Bernoulli(), logits)
    closed = torch.tensor([math.tanh(l / 2) / l for l in logits], dtype=F64)
    torch.testing.assert_close(integral, closed, rtol=0, atol=1e-9)
    assert abs(float(integral[1]) - 1.0) > 0.05
    torch.testing.assert_close(-torch.log(integral),
                               L.continuous_bernoulli_log_normaliser(torch.tensor(logits, dtype=F64)),
                               rtol=0, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# continuous Bernoulli
# ------------------------------------------------------------------------------------------------
EDGE, EDGE32 = 0.1, 0.5                                   # series windows of the module: float64, float32
MP_LOGITS = [0.0, 1e-12, 1e-6, _logit(0.5 + 1e-4), -_logit(0.5 + 1e-4), 0.05, EDGE - 1e-9, EDGE,
             EDGE + 1e-9, -EDGE, 0.3, EDGE32 - 1e-6, EDGE32 + 1e-6, -EDGE32, 1.0, -2.5, 10.0, 30.0, -30.0,
             100.0, -100.0, 700.0]


def test_continuous_bernoulli_normaliser_and_mean_match_high_precision_values():
    """Both branches (series for |l| < 0.1, closed form outside) and their seams, against the paper's form
    in λ evaluated by mpmath: float64 to a few ulps."""
    l = torch.tensor(MP_LOGITS, dtype=F64)
    log_norm = torch.tensor([float(_mp_log_norm(v)) for v in MP_LOGITS], dtype=F64)
    mean = torch.tensor([float(_mp_mean(v)) for v in MP_LOGITS], dtype=F64)
    torch.testing.assert_close(L.continuous_bernoulli_log_normaliser(l), log_norm, rtol=4e-16, atol=4e-16)
    torch.testing.assert_close(ContinuousBernoulli().mean(l), mean, rtol=4e-16, atol=4e-16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_continuous_bernoulli_gradients_are_finite_and_exact(dtype):
    """d log C/dl = 1/l − 1/sinh l (0 at l = 0), dE[x]/dl = 1/l² − e^l/(e^l − 1)² (1/12 at 0)."""
    l = torch.tensor(MP_LOGITS[:-1], dtype=dtype, requires_grad=True)
    g_norm, = torch.autograd.grad(L.continuous_bernoulli_log_normaliser(l).sum(), l)
    g_mean, = torch.autograd.grad(L.continuous_bernoulli_mean(l).sum(), l)
    assert torch.isfinite(g_norm).all() and torch.isfinite(g_mean).all()
    with mpmath.workdps(60):
        ls = [mpmath.mpf(v) for v in MP_LOGITS[:-1]]
        ref_norm = [0.0 if v == 0 else float(1 / v - 1 / mpmath.sinh(v)) for v in ls]
        ref_mean = [1 / 12 if v == 0 else float(1 / v ** 2 - mpmath.exp(v) / mpmath.expm1(v) ** 2) for v in ls]
    tol = 1e-12 if dtype == F64 else 1e-5
    torch.testing.assert_close(g_norm, torch.tensor(ref_norm, dtype=dtype), rtol=tol, atol=tol)
    torch.testing.assert_close(g_mean, torch.tensor(ref_mean, dtype=dtype), rtol=tol, atol=tol)
    assert float(g_norm[0]) == 0.0 and float(g_mean[0]) == pytest.approx(1 / 12, rel=1e-6)


def test_continuous_bernoulli_integrates_to_one():
    logits = [0.0, _logit(0.5 - 1e-4), _logit(0.5 + 1e-4), -EDGE, EDGE, 0.7, -3.0, 30.0, -30.0]
    integral = _integral_over_unit_interval(ContinuousBernoulli(), logits)
    torch.testing.assert_close(integral, torch.ones(len(logits), dtype=F64), rtol=0, atol=1e-8)
    # and its mean is ∫ x p(x) dx
    grid = torch.linspace(0.0, 1.0, 200_001, dtype=F64)
    out = torch.tensor(logits, dtype=F64).reshape(-1, 1, 1)
    first_moment = torch.trapezoid(grid * torch.exp(ContinuousBernoulli().log_prob(grid[:, None], out)), grid)
    torch.testing.assert_close(first_moment, ContinuousBernoulli().mean(out).reshape(-1), rtol=0, atol=1e-8)


def test_continuous_bernoulli_matches_torch_distributions():
    """torch uses a series only for λ in (0.499, 0.501) and works from λ, which loses digits for large |l|
    (at l = 30 its 1 − λ keeps 3 digits): tight away from both, loose inside its window and at ±30."""
    g = _gen(2)
    x = torch.rand(7, 1, generator=g, dtype=F64)
    x[0], x[1] = 0.0, 1.0
    model = ContinuousBernoulli()
    for logits, tol in (([-10.0, -1.3, -0.02, 0.01, 0.5, 4.0, 10.0], 1e-12),
                        ([-3e-3, -1e-4, 0.0, 1e-4, 3e-3], 1e-9),
                        ([-30.0, 30.0], 1e-4)):
        out = torch.tensor(logits, dtype=F64).reshape(-1, 1, 1)
        reference = TorchContinuousBernoulli(logits=out)
        torch.testing.assert_close(model.log_prob(x, out), reference.log_prob(x).sum(-1), rtol=0, atol=tol)
        torch.testing.assert_close(model.mean(out), reference.mean, rtol=0, atol=tol)


# ------------------------------------------------------------------------------------------------
# Gaussian
# ------------------------------------------------------------------------------------------------
def test_fixed_sigma_gaussian_is_the_normal_and_sigma_scales_like_one_over_beta():
    g = _gen(3)
    x, mu = torch.rand(4, 6, generator=g, dtype=F64), torch.randn(2, 4, 6, generator=g, dtype=F64)
    d = 6
    for sigma in (0.1, 1.0, 2.5):
        model = Gaussian(sigma)
        lp = model.log_prob(x, mu)
        torch.testing.assert_close(lp, Normal(mu, sigma).log_prob(x).sum(-1), rtol=0, atol=1e-11)
        sq = (x - mu).pow(2).sum(-1)
        closed = -sq / (2 * sigma ** 2) - d * math.log(sigma) - d / 2 * math.log(2 * math.pi)
        torch.testing.assert_close(lp, closed, rtol=0, atol=1e-11)
        # the reconstruction part is 1/σ² times the σ = 1 one (the role of 1/β)
        recon_1 = Gaussian(1.0).log_prob(x, mu) + d / 2 * math.log(2 * math.pi)
        torch.testing.assert_close(lp + d * math.log(sigma) + d / 2 * math.log(2 * math.pi),
                                   recon_1 / sigma ** 2, rtol=0, atol=1e-10)
    torch.testing.assert_close(Gaussian(0.3).mean(mu), mu, rtol=0, atol=0)


def test_learned_sigma_matches_normal_and_gets_gradients():
    g = _gen(4)
    model = Gaussian(0.7, learned=True, n_pixels=5, var_floor=1e-3).double()
    assert isinstance(model.log_sigma, torch.nn.Parameter) and model.log_sigma.shape == (5,)
    torch.testing.assert_close(model.log_sigma.detach(), torch.full((5,), math.log(0.7), dtype=F64))
    with torch.no_grad():
        model.log_sigma.copy_(torch.randn(5, generator=g, dtype=F64))
    x, mu = torch.rand(3, 5, generator=g, dtype=F64), torch.rand(2, 3, 5, generator=g, dtype=F64)
    lp = model.log_prob(x, mu)
    scale = torch.sqrt(torch.exp(2 * model.log_sigma.detach()) + 1e-3)
    torch.testing.assert_close(lp, Normal(mu, scale).log_prob(x).sum(-1), rtol=0, atol=1e-12)
    grad, = torch.autograd.grad(lp.sum(), model.log_sigma)
    assert torch.isfinite(grad).all() and (grad != 0).all()


def test_learned_sigma_without_floor_is_unbounded_and_a_floor_caps_it():
    """Thesis §4.2.3: at x = μ, log p = −D log σ − (D/2) log 2π → ∞ as σ → 0; with a floor v it is
    ≤ −½ D log(2π v), reached as σ → 0."""
    d = 4
    x = torch.rand(2, d, generator=_gen(5), dtype=F64)
    unfloored = Gaussian(learned=True, n_pixels=d, var_floor=0.0).double()
    floored = Gaussian(learned=True, n_pixels=d, var_floor=1e-3).double()
    cap = -0.5 * d * math.log(2 * math.pi * 1e-3)
    values, capped = [], []
    for log_sigma in (-1.0, -10.0, -100.0, -300.0):
        with torch.no_grad():
            unfloored.log_sigma.fill_(log_sigma)
            floored.log_sigma.fill_(log_sigma)
        values.append(unfloored.log_prob(x, x))
        torch.testing.assert_close(values[-1], torch.full((2,), d * (-log_sigma - 0.5 * math.log(2 * math.pi)),
                                                          dtype=F64), rtol=1e-14, atol=0)
        capped.append(floored.log_prob(x, x))
        assert (capped[-1] <= cap).all()
    assert all((a < b).all() for a, b in zip(values, values[1:])) and float(values[-1][0].detach()) > 1100
    torch.testing.assert_close(capped[-1], torch.full((2,), cap, dtype=F64), rtol=0, atol=1e-12)
    # the cap holds anywhere, not only at x = μ
    mu = torch.rand(3, 2, d, generator=_gen(6), dtype=F64)
    assert (floored.log_prob(x, mu) <= cap).all()


@pytest.mark.parametrize("kwargs, arg", [
    ({"sigma": 0.0}, "sigma"), ({"sigma": -1.0}, "sigma"), ({"sigma": math.nan}, "sigma"),
    ({"sigma": math.inf}, "sigma"), ({"sigma": True}, "sigma"), ({"sigma": "1"}, "sigma"),
    ({"var_floor": -1e-3}, "var_floor"), ({"var_floor": math.nan}, "var_floor"),
    ({"var_floor": math.inf}, "var_floor"),
    ({"learned": True}, "n_pixels"), ({"learned": True, "n_pixels": 0}, "n_pixels"),
    ({"learned": True, "n_pixels": -3}, "n_pixels"), ({"learned": True, "n_pixels": 2.5}, "n_pixels"),
    ({"learned": True, "n_pixels": True}, "n_pixels"), ({"n_pixels": 5}, "n_pixels"),
    ({"learned": "yes", "n_pixels": 5}, "learned"),
])
def test_gaussian_rejects_bad_arguments_by_name(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        Gaussian(**kwargs)


# ------------------------------------------------------------------------------------------------
# support checks and log-space stability
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", [Bernoulli(), ContinuousBernoulli()], ids=lambda m: m.name)
@pytest.mark.parametrize("bad", [-1e-6, 1.0 + 1e-6, math.nan, math.inf])
def test_unit_interval_models_reject_x_outside_zero_one(model, bad):
    x = torch.tensor([[0.0, 0.5, 1.0, bad]])
    with pytest.raises(ValueError, match=rf"'{model.name}' observation model needs x in \[0, 1\]"):
        model.check(x)
    model.check(x[:, :3])                                           # 0 and 1 themselves are allowed
    model.check(torch.empty(0, 4))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_gaussian_accepts_any_finite_x_and_rejects_the_rest(bad):
    Gaussian().check(torch.tensor([[-5.0, 0.2, 7.0]]))
    with pytest.raises(ValueError, match="'gaussian' observation model needs x finite"):
        Gaussian().check(torch.tensor([[-5.0, bad]]))


def test_extreme_logits_give_the_exact_limits():
    """l = ±100 with x exactly 0 or 1: Bernoulli −softplus(∓l) terms, continuous Bernoulli adds
    log C = log(100/tanh 50) = log 100 in float64."""
    x = torch.tensor([[0.0], [1.0]], dtype=F64)
    out = torch.tensor([[[100.0]], [[-100.0]]], dtype=F64, requires_grad=True)    # [2, 1, 1] against [2, 1]
    bern, cont = Bernoulli().log_prob(x, out), ContinuousBernoulli().log_prob(x, out)
    expected_bern = torch.tensor([[-100.0, -math.exp(-100.0)], [-math.exp(-100.0), -100.0]], dtype=F64)
    torch.testing.assert_close(bern, expected_bern, rtol=1e-15, atol=1e-15)     # −e^{−100} rounds to 0
    torch.testing.assert_close(cont, expected_bern + math.log(100.0), rtol=1e-15, atol=1e-15)
    grad, = torch.autograd.grad(cont.sum(), out)
    assert torch.isfinite(grad).all()


@settings(max_examples=60, deadline=None)
@given(logit=st.floats(-1000.0, 1000.0), x=st.floats(0.0, 1.0), log_sigma=st.floats(-300.0, 300.0),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_log_probs_are_finite_in_log_space(logit, x, log_sigma, dtype):
    xs = torch.tensor([[x, 0.0, 1.0]], dtype=dtype)
    out = torch.tensor([[logit, logit, logit]], dtype=dtype, requires_grad=True)
    gaussian = Gaussian(learned=True, n_pixels=3, var_floor=1e-4).to(dtype)
    with torch.no_grad():
        gaussian.log_sigma.fill_(log_sigma)
    for model in (Bernoulli(), ContinuousBernoulli(), gaussian):
        lp = model.log_prob(xs, out)
        grad, = torch.autograd.grad(lp.sum(), out)
        assert torch.isfinite(lp).all() and torch.isfinite(grad).all(), model.name
        assert torch.isfinite(model.mean(out)).all()
    mean = float(ContinuousBernoulli().mean(out.detach())[0, 0])
    assert 0.0 <= mean <= 1.0
    if abs(logit) <= 50:                     # float32 agrees with float64 to its precision
        l64 = torch.tensor([logit], dtype=F64)
        assert abs(float(L.continuous_bernoulli_log_normaliser(l64))
                   - float(L.continuous_bernoulli_log_normaliser(l64.float()))) <= 1e-6
        assert abs(float(L.continuous_bernoulli_mean(l64)) - float(L.continuous_bernoulli_mean(l64.float()))) <= 1e-6


def test_a_learned_gaussian_is_built_by_name_for_a_number_of_pixels():
    model = build_observation_model("gaussian_learned", n_pixels=5)
    assert isinstance(model, Gaussian) and model.learned and model.log_sigma.shape == (5,)
    assert build_observation_model(model.config()).config() == model.config()
    with pytest.raises(ValueError, match="n_pixels must be a positive int"):
        build_observation_model("gaussian_learned")
