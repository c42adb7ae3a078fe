"""Tests of ssvae_lib.weak: weak supervision from pairs (Locatello et al. 2020, Ada-GVAE).

Exact references come from the linear-Gaussian toy (``toy.LinearGaussian``): a ``models.VAE`` in float64
whose ReLU layers represent linear maps exactly (relu(h) − relu(−h) = h) is that toy's decoder with a
chosen linear-Gaussian q(z|x). Deterministic identities are checked to 1e-9 nats; Monte Carlo means of
the one-sample bounds against closed forms within 4 standard errors (and, to show the checks have power,
a wrong closed form lies more than 20 standard errors away).
"""
import dataclasses
import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from ssvae_lib import objectives
from ssvae_lib import weak as W
from ssvae_lib.data import load_dataset
from ssvae_lib.models import VAE
from ssvae_lib.toy import LinearGaussian
from ssvae_lib.toy_experiments import set_linear_gaussian


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shapes():
    return load_dataset("shapes")


F64 = torch.float64
D, DZ, SIGMA_X = 5, 3, 0.7
N_DRAWS = 20_000


# ------------------------------------------------------------------------------------------------
# the pairs
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3])
def test_pairs_differ_in_exactly_k_factors_within_the_training_split(shapes, k):
    pairs = W.weak_pairs(shapes, 400, k=k, seed=3)
    assert pairs.dtype == torch.int64 and pairs.shape == (400, 2)
    assert int(pairs.min()) >= 0 and int(pairs.max()) < shapes.n_train
    f = shapes.factors_train
    differ = f[pairs[:, 0].numpy()] != f[pairs[:, 1].numpy()]
    assert (differ.sum(1) == k).all()
    assert differ.any(0).all()                         # every factor is among the changed ones somewhere
    if k == 1:                                         # and roughly equally often (each 1/5 of 400 = 80)
        assert (np.abs(differ.sum(0) - 80) < 4 * math.sqrt(400 * 0.2 * 0.8)).all()


def test_pairs_are_reproducible_per_seed_and_differ_across_seeds(shapes):
    assert torch.equal(W.weak_pairs(shapes, 50, k=2, seed=5), W.weak_pairs(shapes, 50, k=2, seed=5))
    assert not torch.equal(W.weak_pairs(shapes, 50, k=2, seed=5), W.weak_pairs(shapes, 50, k=2, seed=6))
    assert W.weak_pairs(shapes, 0).shape == (0, 2)


@pytest.mark.parametrize("kwargs", [dict(n_pairs=-1), dict(n_pairs=2.5), dict(n_pairs=10, k=0),
                                    dict(n_pairs=10, k=5), dict(n_pairs=10, k=True), dict(n_pairs=10, seed=-1)])
def test_bad_pair_arguments_raise(shapes, kwargs):
    with pytest.raises(ValueError):
        W.weak_pairs(shapes, **kwargs)


def test_pairs_need_factors(shapes):
    no_factors = dataclasses.replace(shapes, factors_train=None, factors_test=None)
    with pytest.raises(ValueError, match="generative factors"):
        W.weak_pairs(no_factors, 10)


def test_pairs_that_cannot_exist_raise_instead_of_looping(shapes):
    few = dataclasses.replace(shapes, x_train=shapes.x_train[:2], y_train=shapes.y_train[:2],
                              factors_train=shapes.factors_train[[0, -1]])     # differ in more than 1 factor
    with pytest.raises(ValueError, match="found only 0 of 3 pairs"):
        W.weak_pairs(few, 3, k=1)


def test_pair_cycle_visits_every_pair_once_per_pass():
    cycle = W._pair_cycle(10, 4, np.random.default_rng(0))
    drawn = np.concatenate([next(cycle) for _ in range(5)])            # 20 = two full passes
    assert sorted(drawn[:10]) == list(range(10)) and sorted(drawn[10:]) == list(range(10))
    assert not np.array_equal(drawn[:10], drawn[10:])                  # reshuffled per pass


# ------------------------------------------------------------------------------------------------
# the adaptive average
# ------------------------------------------------------------------------------------------------
def _reference_delta(mu1, ls1, mu2, ls2):
    return kl_divergence(Normal(mu1, ls1.exp()), Normal(mu2, ls2.exp()))


def test_unit_kl_and_mask_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu1, ls1, mu2, ls2 = (torch.randn(7, 6, generator=g, dtype=F64) for _ in range(4))
    delta = _reference_delta(mu1, ls1, mu2, ls2)
    assert torch.allclose(objectives.gaussian_kl_between(mu1, ls1, mu2, ls2), delta, rtol=1e-12, atol=1e-12)
    tau = 0.5 * (delta.max(-1, keepdim=True).values + delta.min(-1, keepdim=True).values)
    *_, shared = W.adaptive_average(mu1, ls1, mu2, ls2)
    assert shared.dtype == torch.bool and torch.equal(shared, delta < tau)
    assert shared.any(1).all() and (~shared).any(1).all()          # the min is below τ, the max above


def _constructed_pair():
    """Units 0–2 close (δ < 0.1), units 3–4 far apart (δ > 10), for two pairs in a batch."""
    mu1 = torch.tensor([[0.1, -0.3, 0.5, 2.0, -1.0], [0.0, 1.0, -1.0, 0.5, 0.5]], dtype=F64)
    ls1 = torch.tensor([[-0.2, 0.1, -0.5, -1.0, -0.3], [0.0, 0.0, -0.4, -0.5, -0.7]], dtype=F64)
    mu2 = mu1 + torch.tensor([[0.1, -0.05, 0.08, -5.0, 6.0], [-0.12, 0.0, 0.1, 5.5, -4.0]], dtype=F64)
    ls2 = ls1 + torch.tensor([[0.1, -0.08, 0.0, 0.3, -0.2], [0.05, 0.12, -0.1, 0.0, 0.2]], dtype=F64)
    return mu1, ls1, mu2, ls2


def test_adaptive_average_of_a_constructed_case():
    mu1, ls1, mu2, ls2 = _constructed_pair()
    delta = _reference_delta(mu1, ls1, mu2, ls2)
    assert (delta[:, :3] < 0.1).all() and (delta[:, 3:] > 10).all()
    m1, l1, m2, l2, shared = W.adaptive_average(mu1, ls1, mu2, ls2)
    expected = torch.tensor([[True, True, True, False, False]] * 2)
    assert torch.equal(shared, expected)
    mean = (mu1[:, :3] + mu2[:, :3]) / 2
    log_sd = 0.5 * torch.log((ls1[:, :3].exp() ** 2 + ls2[:, :3].exp() ** 2) / 2)
    for m, l in ((m1, l1), (m2, l2)):
        assert torch.allclose(m[:, :3], mean, rtol=0, atol=1e-14)
        assert torch.allclose(l[:, :3], log_sd, rtol=0, atol=1e-14)
    assert torch.equal(m1[:, 3:], mu1[:, 3:]) and torch.equal(l1[:, 3:], ls1[:, 3:])
    assert torch.equal(m2[:, 3:], mu2[:, 3:]) and torch.equal(l2[:, 3:], ls2[:, 3:])


def test_identical_units_are_shared_and_kept_and_all_equal_deltas_share_nothing():
    mu1, ls1, mu2, ls2 = _constructed_pair()
    mu2, ls2 = torch.cat([mu1[:, :3], mu2[:, 3:]], 1), torch.cat([ls1[:, :3], ls2[:, 3:]], 1)
    m1, l1, m2, l2, shared = W.adaptive_average(mu1, ls1, mu2, ls2)
    assert torch.equal(shared, torch.tensor([[True, True, True, False, False]] * 2))
    assert torch.allclose(m2[:, :3], mu1[:, :3], atol=1e-15) and torch.allclose(l2[:, :3], ls1[:, :3], atol=1e-15)
    *_, none = W.adaptive_average(mu1, ls1, mu1.clone(), ls1.clone())     # δ = 0 everywhere: τ = 0, δ < τ never
    assert not none.any()


def test_gradients_flow_through_the_averages_only_in_shared_units():
    mu1, ls1, mu2, ls2 = (t.clone().requires_grad_() for t in _constructed_pair())
    m1, l1, _, _, _ = W.adaptive_average(mu1, ls1, mu2, ls2)
    grad_mu2, grad_ls2 = torch.autograd.grad(m1.sum() + l1.sum(), (mu2, ls2))
    var1, var2 = (2 * ls1).exp().detach(), (2 * ls2).exp().detach()
    assert torch.allclose(grad_mu2[:, :3], torch.full((2, 3), 0.5, dtype=F64)) and (grad_mu2[:, 3:] == 0).all()
    assert torch.allclose(grad_ls2[:, :3], (var2 / (var1 + var2))[:, :3]) and (grad_ls2[:, 3:] == 0).all()


def test_adaptive_average_rejects_mismatched_shapes():
    a = torch.zeros(2, 3)
    with pytest.raises(ValueError):
        W.adaptive_average(a, a, a, torch.zeros(2, 4))
    with pytest.raises(ValueError):
        W.adaptive_average(*(torch.zeros(3),) * 4)


# ------------------------------------------------------------------------------------------------
# exact values from the linear-Gaussian toy
# ------------------------------------------------------------------------------------------------
def _toy():
    """z ~ N(0, I_3), x|z ~ N(Wz + b, 0.7² I_5) with orthogonal columns of W (diagonal exact posterior)."""
    g = torch.Generator().manual_seed(11)
    q, _ = torch.linalg.qr(torch.randn(D, DZ, generator=g, dtype=F64))
    weight = q * torch.tensor([1.5, 0.8, 1.2], dtype=F64)
    return LinearGaussian(weight, 0.3 * torch.randn(D, generator=g, dtype=F64), SIGMA_X)


def _linear_vae(toy, A, c, ell, L=None):
    """A float64 ``VAE`` equal to the toy's decoder with q(z|x) = N(Ax + c, diag exp(2(Lx + ell)))."""
    model = VAE(input_dim=D, hidden_dim=2 * max(D, DZ), latent_dim=DZ,
                observation=dict(name="gaussian", sigma=SIGMA_X)).double()
    return set_linear_gaussian(model, toy.W, toy.b, A, c, ell, L)


def _chosen_q(toy):
    """A q(z|x) near the exact posterior (so the one-sample bounds have small variance), but not it."""
    A, c, ell = _exact_q(toy)
    g = torch.Generator().manual_seed(12)
    return (A + 0.1 * torch.randn(DZ, D, generator=g, dtype=F64), c + 0.1 * torch.randn(DZ, generator=g, dtype=F64),
            ell + torch.tensor([0.2, -0.3, 0.1], dtype=F64))


def _exact_q(toy):
    cov = toy.posterior_z_covariance()
    assert torch.allclose(cov, torch.diag(torch.diagonal(cov)), atol=1e-14)            # diagonal: W ⟂ columns
    A = cov @ toy.W.T / SIGMA_X ** 2
    return A, -A @ toy.b, 0.5 * torch.log(torch.diagonal(cov))


def _data(toy, n=4, seed=13):
    return toy.sample(n, torch.Generator().manual_seed(seed))[0]


def _repeated_draws(fn, x_list, seed=14):
    """``fn(*x repeated N_DRAWS times, *eps)`` reshaped [N_DRAWS, B]: mean and standard error per example."""
    g = torch.Generator().manual_seed(seed)
    rep = [x.repeat(N_DRAWS, 1) for x in x_list]
    eps = [torch.randn(len(rep[0]), DZ, generator=g, dtype=F64) for _ in x_list]
    with torch.no_grad():
        values = fn(*rep, *eps).reshape(N_DRAWS, -1)
    return values.mean(0), values.std(0) / math.sqrt(N_DRAWS)


def test_the_constructed_vae_is_the_toy():
    toy = _toy()
    A, c, ell = _chosen_q(toy)
    model, x = _linear_vae(toy, A, c, ell), _data(toy)
    mu, log_sigma = model.encode_latent(x)
    assert torch.allclose(mu, x @ A.T + c, atol=1e-13) and torch.allclose(log_sigma, ell.expand(4, DZ), atol=1e-14)
    z = torch.randn(6, 4, DZ, dtype=F64)
    assert torch.allclose(model.decode(z), z @ toy.W.T + toy.b, atol=1e-13)


def test_vae_bound_per_draw_is_the_one_sample_formula():
    toy = _toy()
    A, c, ell = _chosen_q(toy)
    model, x = _linear_vae(toy, A, c, ell), _data(toy)
    eps = torch.randn(1, 4, DZ, generator=torch.Generator().manual_seed(2), dtype=F64)
    m, sd = x @ A.T + c, ell.exp().expand(4, DZ)
    z = m + sd * eps[0]
    log_lik = Normal(z @ toy.W.T + toy.b, SIGMA_X).log_prob(x).sum(-1)
    kl = kl_divergence(Normal(m, sd), Normal(0.0, 1.0)).sum(-1)
    for beta in (1.0, 0.0, 2.5):
        bound = W.vae_bound(model, x, beta=beta, eps=eps)
        assert bound.shape == (4,)
        assert torch.allclose(bound, log_lik - beta * kl, rtol=0, atol=1e-9)
    assert torch.equal(W.vae_bound(model, x, eps=eps[0]), W.vae_bound(model, x, eps=eps))       # [B, Dz] eps
    # (d) the KL is in the bound, weighted by β: dropping it changes the value by KL > 0.5 nat per image
    assert (W.vae_bound(model, x, beta=0.0, eps=eps) - W.vae_bound(model, x, eps=eps) - kl).abs().max() < 1e-9
    assert (kl > 0.5).all()


@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_vae_bound_mean_is_the_toy_elbo(beta):
    toy = _toy()
    A, c, ell = _chosen_q(toy)
    model, x = _linear_vae(toy, A, c, ell), _data(toy)
    mean, se = _repeated_draws(lambda xs, eps: W.vae_bound(model, xs, beta=beta, eps=eps), [x])
    m, log_s = x @ A.T + c, ell.expand(4, DZ)
    kl = toy.kl_to_prior(m, log_s)
    reconstruction = toy.elbo(x, m, log_s) + kl
    exact = reconstruction - beta * kl
    assert (se < 0.05).all()
    assert ((mean - exact).abs() < 4 * se).all(), (mean, exact, se)
    # (d) power: without the KL, or with β applied wrongly, the bound is many standard errors away
    for wrong in (reconstruction, reconstruction - (1.0 if beta != 1.0 else 2.0) * kl):
        assert ((mean - wrong).abs() > 10 * se).all()


def test_vae_bound_at_the_exact_posterior_is_log_marginal():
    toy = _toy()
    A, c, ell = _exact_q(toy)
    assert (ell > -6).all() and (ell < 2).all()                  # inside the model's log_sigma_range
    model, x = _linear_vae(toy, A, c, ell), _data(toy)
    log_px = toy.log_marginal(x)
    mean_post, _ = toy.posterior(x)
    mu, log_sigma = model.encode_latent(x)
    assert torch.allclose(mu, mean_post, atol=1e-12)
    assert torch.allclose(toy.elbo(x, mu, log_sigma), log_px, atol=1e-9)
    # per draw: L(x; eps) + log p(z) − log q(z|x) + KL(q ‖ p) = log p(x|z) + log p(z) − log p(z|x) = log p(x)
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        eps = torch.randn(1, 4, DZ, generator=g, dtype=F64)
        q = Normal(mu, log_sigma.exp())
        z = mu + log_sigma.exp() * eps[0]
        bound = W.vae_bound(model, x, eps=eps)
        correction = (Normal(0.0, 1.0).log_prob(z) - q.log_prob(z)).sum(-1) \
            + kl_divergence(q, Normal(0.0, 1.0)).sum(-1)
        assert torch.allclose(bound + correction, log_px, rtol=0, atol=1e-9)
    mean, se = _repeated_draws(lambda xs, eps: W.vae_bound(model, xs, eps=eps), [x])
    assert ((mean - log_px).abs() < 4 * se).all()


def test_vae_bound_uses_a_given_posterior_and_checks_its_arguments():
    toy = _toy()
    A, c, ell = _chosen_q(toy)
    model, x = _linear_vae(toy, A, c, ell), _data(toy)
    eps = torch.randn(1, 4, DZ, dtype=F64)
    mu, log_sigma = model.encode_latent(x)
    assert torch.equal(W.vae_bound(model, x, eps=eps, posterior=(mu, log_sigma)), W.vae_bound(model, x, eps=eps))
    assert not torch.allclose(W.vae_bound(model, x, eps=eps, posterior=(mu + 1, log_sigma)),
                              W.vae_bound(model, x, eps=eps))
    for bad in (dict(beta=-1.0), dict(beta=float("nan")), dict(eps=torch.zeros(2, 4, DZ, dtype=F64))):
        with pytest.raises(ValueError):
            W.vae_bound(model, x, **bad)
    with pytest.raises(ValueError):
        W.vae_bound(model, x[0])
    a, b = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert torch.equal(W.vae_bound(model, x, generator=a), W.vae_bound(model, x, generator=b))


def _pair_inputs(toy, A):
    """Four pairs: x_2 = x_1 + v with A v = 4 in the changed unit(s), 0.5 in absolute value elsewhere."""
    x1 = _data(toy, 4, seed=15)
    targets = torch.tensor([[4.0, 0.5, -0.5], [0.5, -4.0, 0.5], [-0.5, 0.5, 4.0], [4.0, -0.5, -4.5]], dtype=F64)
    x2 = x1 + targets @ torch.linalg.pinv(A).T
    expected_shared = torch.tensor([[False, True, True], [True, False, True], [True, True, False],
                                    [False, True, False]])
    return x1, x2, expected_shared


def test_pair_bound_mean_is_the_sum_of_toy_elbos_under_the_averaged_posteriors():
    toy = _toy()
    A, c, ell = _chosen_q(toy)
    L = 0.05 * torch.randn(DZ, D, generator=torch.Generator().manual_seed(16), dtype=F64)
    model = _linear_vae(toy, A, c, ell, L)
    x1, x2, expected_shared = _pair_inputs(toy, A)
    m1, m2 = x1 @ A.T + c, x2 @ A.T + c
    l1, l2 = x1 @ L.T + ell, x2 @ L.T + ell
    assert torch.allclose(model.encode_latent(x2)[1], l2, atol=1e-13)       # inside log_sigma_range: no clamp
    delta = _reference_delta(m1, l1, m2, l2)
    tau = 0.5 * (delta.max(-1, keepdim=True).values + delta.min(-1, keepdim=True).values)
    assert torch.equal(delta < tau, expected_shared)
    mean = torch.where(expected_shared, (m1 + m2) / 2, 0.0)
    log_sd = torch.where(expected_shared, 0.5 * torch.log((torch.exp(2 * l1) + torch.exp(2 * l2)) / 2), 0.0)
    a1, a2 = torch.where(expected_shared, mean, m1), torch.where(expected_shared, mean, m2)
    s1, s2 = torch.where(expected_shared, log_sd, l1), torch.where(expected_shared, log_sd, l2)
    exact = toy.elbo(x1, a1, s1) + toy.elbo(x2, a2, s2)
    unaveraged = toy.elbo(x1, m1, l1) + toy.elbo(x2, m2, l2)

    mean_pair, se = _repeated_draws(lambda a, b, e1, e2: W.pair_bound(model, a, b, eps1=e1, eps2=e2), [x1, x2])
    assert ((mean_pair - exact).abs() < 4 * se).all(), (mean_pair, exact, se)
    # power: the posteriors before averaging give a bound rejected at χ²_4 > 25² (about 4 expected)
    assert float((((mean_pair - unaveraged) / se) ** 2).sum()) > 25 ** 2


def test_pair_bound_noise_order_and_shapes():
    toy = _toy()
    A, c, ell = _chosen_q(toy)
    model = _linear_vae(toy, A, c, ell)
    x1, x2, _ = _pair_inputs(toy, A)
    g = torch.Generator().manual_seed(5)
    e1, e2 = torch.randn(1, 4, DZ, generator=g, dtype=F64), torch.randn(1, 4, DZ, generator=g, dtype=F64)
    given = W.pair_bound(model, x1, x2, eps1=e1, eps2=e2, beta=0.5)
    drawn = W.pair_bound(model, x1, x2, generator=torch.Generator().manual_seed(5), beta=0.5)
    assert given.shape == (4,) and torch.equal(given, drawn)
    with pytest.raises(ValueError):
        W.pair_bound(model, x1, x2[:3])


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------
def _small(shapes):
    return dataclasses.replace(shapes, x_test=shapes.x_test[:200], y_test=shapes.y_test[:200],
                               factors_test=shapes.factors_test[:200])


TINY = dict(max_train=300, epochs=2, n_pairs=50, pairs_per_step=16, batch_size=64, hidden_dim=32, latent_dim=4,
            seed=2)


def _without_times(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def test_training_is_reproducible_and_its_pairs_are_weak_pairs(shapes):
    small = _small(shapes)
    config = W.WeakConfig(**TINY)
    first, second = W.train_weak(config, small), W.train_weak(config, small)
    assert len(first.history) == 2 and _without_times(first.history) == _without_times(second.history)
    assert all(math.isfinite(v) for v in first.history[-1].values())
    assert math.isfinite(first.final("test_elbo")) and first.final("test_elbo") < 0
    for a, b in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)
    assert first.pairs.shape == (50, 2) and torch.equal(first.pairs, second.pairs)
    f = shapes.factors_train
    assert ((f[first.pairs[:, 0].numpy()] != f[first.pairs[:, 1].numpy()]).sum(1) == 1).all()


def test_pairs_enter_the_loss_and_no_pairs_is_a_beta_vae(shapes):
    small = _small(shapes)
    with_pairs = W.train_weak(W.WeakConfig(**TINY), small)
    no_pairs = W.train_weak(W.WeakConfig(**{**TINY, "n_pairs": 0}), small)
    no_weight = W.train_weak(W.WeakConfig(**{**TINY, "gamma": 0.0}), small)
    assert no_pairs.pairs.shape == (0, 2) and math.isfinite(no_pairs.final("test_elbo"))
    assert _without_times(no_pairs.history) == _without_times(no_weight.history)
    assert with_pairs.history[0]["train_loss"] != no_pairs.history[0]["train_loss"]


@pytest.mark.parametrize("bad", [dict(n_pairs=-1), dict(k=0), dict(k=5), dict(beta=-0.5), dict(gamma=float("inf")),
                                 dict(pairs_per_step=0), dict(epochs=0), dict(batch_size=1.5), dict(lr=0.0),
                                 dict(hidden_dim=0), dict(latent_dim=-2), dict(max_train=0), dict(seed=-1)])
def test_bad_weak_configs_raise(bad):
    with pytest.raises(ValueError, match="WeakConfig"):
        W.WeakConfig(**bad)


def test_training_needs_factors(shapes):
    with pytest.raises(ValueError, match="generative factors"):
        W.train_weak(W.WeakConfig(**TINY), dataclasses.replace(shapes, factors_train=None, factors_test=None))
