"""The characteristic-capturing VAE (models.CCVAE) and its bounds (Joy et al. 2021 Eq. 4-5), checked against
toy.CharacteristicToy: a linear-Gaussian CCVAE whose log p(x, y), log p(x) are exact and whose bounds'
expectations are computed by Gauss-Hermite quadrature. The library model is made equal to the toy (ReLU pairs
represent its linear maps exactly: relu(h) - relu(-h) = h; toy_experiments.ccvae_from_toy)."""
import math

import pytest
import torch

from ssvae_lib import data, engine, latent, metrics, objectives, toy, toy_experiments
from ssvae_lib.config import TrainConfig
from ssvae_lib.models import CCVAE

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64
D, DZ = 3, 2          # pixels; latent units z = (z_c, z_s), one each


@pytest.fixture(scope="module")
def shapes_small():
    return data.load_dataset("shapes")


def make_toy(seed: int = 0, classifier_scale: float = 1.0, **overrides) -> toy.CharacteristicToy:
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=g, dtype=F64)

    params = dict(pi=torch.full((3,), 1 / 3, dtype=F64), prior_mu=r(3, 1, scale=1.5),
                  prior_log_sigma=r(3, 1, scale=0.2), W=r(D, DZ), b=r(D, scale=0.3), s=0.7,
                  A=r(DZ, D, scale=0.5), c=r(DZ, scale=0.3), log_sigma_q=torch.tensor([-0.4, -0.2], dtype=F64),
                  U=classifier_scale * r(3, 1), v=r(3, scale=0.3))
    return toy.CharacteristicToy(**{**params, **overrides})


def library_model(t: toy.CharacteristicToy) -> CCVAE:
    return toy_experiments.ccvae_from_toy(t)


def images(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=F64)


def replicated(fn, x, y, n_reps, n_samples, seed):
    """``fn(x, y, eps)`` for ``n_reps`` independent noise draws: (mean [B], standard error [B])."""
    x_rep, y_rep = x.repeat(n_reps, 1), y.repeat(n_reps)
    eps = torch.randn(n_samples, len(x_rep), DZ, generator=torch.Generator().manual_seed(seed), dtype=F64)
    values = fn(x_rep, y_rep, eps).view(n_reps, len(x))
    return values.mean(0), values.std(0) / math.sqrt(n_reps)


def test_quadrature_bounds_lie_below_the_exact_log_densities():
    t, x = make_toy(), images(8)
    for y in range(3):
        labels = torch.full((8,), y)
        gap = t.log_joint_xy(x)[:, y] - t.supervised_bound(x, labels)
        assert (gap > 1e-6).all()
    assert (t.log_marginal(x) - t.unsupervised_bound(x) > 1e-6).all()
    # the rule has converged: 60 and 120 nodes per dimension agree
    finer = make_toy()
    finer.n_nodes = 120
    assert torch.allclose(finer.supervised_bound(x, torch.zeros(8, dtype=torch.long)),
                          t.supervised_bound(x, torch.zeros(8, dtype=torch.long)), atol=1e-10)


def test_unsupervised_bound_is_unbiased_for_eq5():
    t, x = make_toy(), images()
    model = library_model(t)
    mean, se = replicated(lambda xr, yr, eps: objectives.characteristic_unsupervised_bound(model, xr, eps=eps),
                          x, torch.zeros(len(x), dtype=torch.long), 4000, 1, seed=2)
    exact = t.unsupervised_bound(x)
    assert ((mean - exact).abs() < 4 * se).all(), (mean - exact, se)


def test_supervised_bound_converges_to_eq4():
    # Self-normalised weights: a bias O(1/S). Measured on this toy with 4,000 replications: at most 0.14 nats
    # at S = 10 (4.4 standard errors), 0.033 at S = 50, so about 1.4/S; at S = 1,000 that is 1.4e-3, below half
    # of the smallest standard error of 200 replications (3.8e-3), and the tolerance adds 2e-3 for it.
    t, x, y = make_toy(), images(), torch.tensor([0, 1, 2, 1])
    model = library_model(t)
    exact = t.supervised_bound(x, y)
    for alpha in (0.0, 2.0):
        extra = alpha * torch.logsumexp(  # α log q(y|x), with q(y|x) by quadrature
            t._at_nodes(x)["log_w"][:, None] + toy._pick(t._at_nodes(x)["log_qy"], y), dim=0)
        mean, se = replicated(lambda xr, yr, eps: objectives.characteristic_supervised_bound(
            model, xr, yr, alpha, n_samples=1000, eps=eps), x, y, 200, 1000, seed=3)
        assert ((mean - exact - extra).abs() < 4 * se + 2e-3).all(), (mean - exact - extra, se)


def test_supervised_bound_is_exact_when_q_is_the_posterior():
    # A classifier that ignores z_c (U = 0) and q(z|x) = p(z|x, y=1), possible when W has orthogonal
    # columns: Eq. 4 equals log p(x, y=1) for every noise draw (zero variance).
    W = torch.tensor([[1.0, 0.0], [0.0, 0.5], [0.0, 0.0]], dtype=F64)
    t = make_toy(W=W, U=torch.zeros(3, 1, dtype=F64))
    x = images()
    cov = t.exact_posterior(x, 1)[1]
    assert torch.allclose(cov, torch.diag(torch.diagonal(cov)))
    # p(z|x, y) has mean ((x - b) W / s² + μ_y / σ_y²) cov: linear in x, so A, c follow
    means, variances = t._prior_moments()
    A = (W / t.s ** 2 @ cov).T
    c = (-t.b @ W / t.s ** 2 + means[1] / variances[1]) @ cov
    t = make_toy(W=W, U=torch.zeros(3, 1, dtype=F64), A=A, c=c, log_sigma_q=0.5 * torch.log(torch.diagonal(cov)))
    assert torch.allclose(x @ t.A.T + t.c, t.exact_posterior(x, 1)[0])
    model = library_model(t)
    y = torch.ones(len(x), dtype=torch.long)
    for seed in range(3):
        eps = torch.randn(4, len(x), DZ, generator=torch.Generator().manual_seed(seed), dtype=F64)
        bound = objectives.characteristic_supervised_bound(model, x, y, 0.0, n_samples=4, eps=eps)
        assert torch.allclose(bound, t.log_joint_xy(x)[:, 1], atol=1e-10, rtol=0)
    assert torch.allclose(t.supervised_bound(x, y), t.log_joint_xy(x)[:, 1], atol=1e-10, rtol=0)


def test_a_dropped_term_is_detected():
    # Eq. 5 without the label's entropy term moves the estimate far outside the tolerance used above.
    t, x = make_toy(), images()
    model = library_model(t)
    eps = torch.randn(1, 4000 * len(x), DZ, generator=torch.Generator().manual_seed(2), dtype=F64)
    terms = objectives.characteristic_terms(model, x.repeat(4000, 1), 1, eps)
    q_y = terms["log_qy"].exp()
    without_entropy = (terms["log_px"] - terms["log_qz"]
                       + (q_y * (terms["log_pz_y"] + model.log_prior_y())).sum(-1)).view(4000, len(x))
    se = without_entropy.std(0) / math.sqrt(4000)
    assert ((without_entropy.mean(0) - t.unsupervised_bound(x)).abs() > 10 * se).all()


def test_iwae_estimate_of_a_ccvae_is_a_normalised_density():
    # exp of the K = 1 estimate is unbiased for p(x): its average over many draws gives log p(x).
    t, x = make_toy(), images()
    model = library_model(t)
    n = 200_000
    eps = torch.randn(n, len(x), DZ, generator=torch.Generator().manual_seed(4), dtype=F64)
    big = metrics.iwae_log_likelihood(model, x, n, eps=eps)           # log of the mean of n weights
    log_w = metrics.iwae_log_likelihood(model, x.repeat(n, 1), 1, eps=eps.reshape(1, -1, DZ)).view(n, len(x))
    ratio = torch.exp(log_w - t.log_marginal(x))                       # w / p(x), mean 1
    se = ratio.std(0) / math.sqrt(n)
    assert ((big - t.log_marginal(x)).abs() < 4 * se).all(), (big - t.log_marginal(x), se)


def test_intervene_sets_z_c_to_the_class_mean_and_keeps_z_s():
    t = make_toy()
    model = library_model(t)
    x = images(5)
    y = torch.tensor([0, 1, 2, 0, 1])
    expected = torch.cat([t.prior_mu[y], (x @ t.A.T + t.c)[:, 1:]], 1) @ t.W.T + t.b
    assert torch.allclose(model.intervene(x, y), expected, atol=1e-12)
    assert torch.allclose(model.infer_style(x), (x @ t.A.T + t.c)[:, 1:], atol=1e-12)


def test_config_refuses_what_the_ccvae_has_not():
    with pytest.raises(ValueError, match="characteristic_dim"):
        TrainConfig(characteristic_dim=3)                       # an m2 run with a ccvae-only field
    with pytest.raises(ValueError, match="beta"):
        TrainConfig(objective="ccvae", beta=4.0)
    with pytest.raises(ValueError, match="characteristic_dim"):
        TrainConfig(objective="ccvae", characteristic_dim=0)


def test_ccvae_trains_in_the_engine_and_stacked_runs_equal_single_runs(shapes_small):
    common = dict(dataset="shapes", objective="ccvae", n_labelled=200, batch_size=64, epochs=2, n_samples=4,
                  iwae_examples=200, iwae_samples=2, hidden_dim=32, style_dim=3, max_train=400, max_test=200,
                  device="cpu")
    configs = [TrainConfig(**common, alpha=a, seed=s) for a, s in ((0.0, 0), (5.0, 1))]
    stacked = engine.train_runs(configs, dataset=shapes_small, progress=False, scores=False)
    for config, run in zip(configs, stacked):
        single = engine.train_runs([config], dataset=shapes_small, progress=False, scores=False)[0]
        assert run.error is None and isinstance(run.model, CCVAE)
        for a, b in zip(run.history, single.history):
            for key in ("train_loss", "accuracy", "elbo", "log_likelihood"):
                # float32 round-off of the vectorised run: measured at most 8e-8 relative
                assert math.isclose(a[key], b[key], rel_tol=1e-6), (key, a[key], b[key])
        last = run.history[-1]
        # on the same 200 test images IWAE (K = 2) is at least Eq. 5 in expectation (measured: 5.4 and 6.8 nats
        # per image above it, so no slack is needed)
        assert last["log_likelihood"] >= last["elbo"]


def test_characteristic_path_passes_through_every_class_mean():
    model = library_model(make_toy())
    x = images(5)
    path = latent.characteristic_path(model, x, steps=4)                   # [5, 2*4 + 1, D]
    assert path.shape == (5, 9, D)
    for y in range(3):
        assert torch.allclose(path[:, 4 * y], model.intervene(x, torch.full((5,), y)), atol=1e-12)
    # half-way between m_0 and m_1 the decoder (linear here) gives the mean of the two images
    assert torch.allclose(path[:, 2], 0.5 * (path[:, 0] + path[:, 4]), atol=1e-12)
    with pytest.raises(ValueError, match="steps"):
        latent.characteristic_path(model, x, steps=0)


def test_a_trained_ccvae_is_saved_and_loaded(shapes_small, tmp_path):
    from ssvae_lib import train
    config = TrainConfig(dataset="shapes", objective="ccvae", n_labelled=100, epochs=1, n_samples=2, hidden_dim=16,
                         style_dim=2, max_train=200, max_test=100, iwae_examples=20, iwae_samples=2, device="cpu")
    result = train.train(config, dataset=shapes_small, progress=False)
    path = train.save(result, tmp_path / "ccvae.pt")
    loaded = train.load(path, config)
    assert isinstance(loaded.model, CCVAE) and loaded.model.config() == result.model.config()
    x = shapes_small.x_test[:8]
    assert torch.equal(loaded.model.classify(x), result.model.classify(x))
    with pytest.raises(train.CheckpointError, match="objective"):
        train.load(path, TrainConfig(dataset="shapes"))
