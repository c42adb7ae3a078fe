import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from ssvae_lib import latent, train
from ssvae_lib.models import SSVAE
from tiny_run import tiny_config


@pytest.fixture(params=["label_first", "style_first"])
def model(request):
    torch.manual_seed(0)
    return SSVAE(input_dim=12, hidden_dim=16, n_classes=4, style_dim=3, order=request.param)


def test_shapes_and_broadcasting(model):
    x = torch.rand(5, 12)
    assert model.classify(x).shape == (5, 4)
    z = torch.randn(7, 5, 3)                       # [S, B, Dz]
    y = torch.arange(4)[:, None, None] % 4          # [C, 1, 1] labels
    y_onehot = F.one_hot(y, 4).float()              # [C, 1, 1, C]
    ll = model.log_likelihood(x, y_onehot, z[None])  # [C, S, B]
    assert ll.shape == (4, 7, 5)
    # broadcasting gives the same numbers as an explicit loop
    for k in range(4):
        for s in range(7):
            expect = model.log_likelihood(x, F.one_hot(torch.full((5,), k), 4).float(), z[s])
            torch.testing.assert_close(ll[k, s], expect)
    if model.order == "label_first":
        mu, log_sigma = model.encode(x, y_onehot[:, 0])   # [C, 1, C] -> [C, B, Dz]
        assert mu.shape == log_sigma.shape == (4, 5, 3)
        with pytest.raises(ValueError, match="style_first"):
            model.classify_style(x, z)
    else:
        mu, log_sigma = model.encode_marginal(x)
        assert mu.shape == (5, 3)
        assert model.classify_style(x, z).shape == (7, 5, 4)
        with pytest.raises(ValueError, match="encode_marginal"):
            model.encode(x, torch.zeros(5, dtype=torch.long))


def test_log_likelihood_is_bernoulli(model):
    x = torch.rand(3, 12).round()
    y = torch.tensor([0, 1, 3])
    z = torch.randn(3, 3)
    logits = model.decode(y, z)
    expect = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)
    torch.testing.assert_close(model.log_likelihood(x, y, z), expect)


@pytest.mark.parametrize("observation", ["bernoulli", "continuous_bernoulli", "gaussian", "gaussian_learned"])
def test_each_observation_model_is_the_models_likelihood(observation):
    """log p(x|y,z) of the model (with the one-product shortcut for the Bernoulli models, broadcast over
    classes and samples) equals the observation model's closed form applied to the decoder's output."""
    torch.manual_seed(0)
    model = SSVAE(input_dim=12, hidden_dim=16, n_classes=4, style_dim=3, observation=observation)
    x, z = torch.rand(5, 12), torch.randn(2, 5, 3)
    every_class = torch.eye(4)[:, None, None, :]
    reference = {"bernoulli": lambda l: x * torch.log(torch.sigmoid(l)) + (1 - x) * torch.log(torch.sigmoid(-l)),
                 "continuous_bernoulli": lambda l: torch.distributions.ContinuousBernoulli(logits=l).log_prob(x),
                 "gaussian": lambda m: torch.distributions.Normal(m, 1.0).log_prob(x),
                 "gaussian_learned": lambda m: torch.distributions.Normal(
                     m, (model.observation.log_sigma.exp() ** 2 + model.observation.var_floor).sqrt()).log_prob(x)}
    want = reference[observation](model.decode(every_class, z[None])).sum(-1)
    # float32 sums of 12 terms of size ~1 computed in two orders: agreement to ~1e-5 expected; torch's own
    # continuous Bernoulli switches to a Taylor form near λ = 1/2 (about 1e-5 away from the exact value)
    torch.testing.assert_close(model.log_likelihood(x, every_class, z[None]), want, rtol=1e-5, atol=1e-4)
    rebuilt = SSVAE(**model.config())
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.log_likelihood(x, every_class, z[None]), want, rtol=1e-5, atol=1e-4)
    assert model.generate(every_class, z[None]).shape == (4, 2, 5, 12)


def test_the_observation_model_checks_the_data_where_it_enters(digits):
    """Pixels in 0-255 are no Bernoulli observations: training refuses them before the first step."""
    grey_255 = dataclasses.replace(digits, x_train=digits.x_train * 255)
    with pytest.raises(ValueError, match="'bernoulli' observation model needs x in \\[0, 1\\]"):
        train.train(tiny_config(epochs=1), dataset=grey_255, progress=False)
    result = train.train(tiny_config(epochs=1, observation="gaussian"), dataset=grey_255, progress=False)
    assert math.isfinite(result.final("elbo"))


def test_log_sigma_is_clamped():
    model = SSVAE(input_dim=4, hidden_dim=4, n_classes=2, style_dim=2, log_sigma_range=(-1.0, 0.5))
    with torch.no_grad():
        model.style_head.bias.fill_(100.0)
    _, log_sigma = model.encode(torch.rand(2, 4), torch.tensor([0, 1]))
    assert float(log_sigma.detach().max()) == 0.5


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="order"):
        SSVAE(order="sideways")
    model = SSVAE(input_dim=4, hidden_dim=4, n_classes=2, style_dim=2)
    with pytest.raises(ValueError, match="4 features"):
        model.classify(torch.rand(2, 5))
    with pytest.raises(ValueError, match="labels must lie"):
        model.decode(torch.tensor([2]), torch.zeros(1, 2))


def test_uniform_label_prior(model):
    torch.testing.assert_close(model.log_prior_y().exp().sum(), torch.tensor(1.0))
    assert math.isclose(float(model.log_prior_y()[0]), -math.log(4), rel_tol=1e-6)


def test_latent_operations(model):
    x = torch.rand(2, 12)
    assert latent.analogies(model, x).shape == (2, 4, 12)
    grid = latent.style_grid(model, y=1, dims=(0, 2), values=[-1.0, 0.0, 1.0])
    assert grid.shape == (3, 3, 12)
    # the middle of the grid is the prior mean, i.e. decode(y=1, z=0)
    torch.testing.assert_close(grid[1, 1], latent.decode_style(model, 1, [0.0, 0.0, 0.0]))
    assert latent.interpolate(model, x[0], x[1], y=2, steps=5).shape == (5, 12)
    assert latent.prior_samples(model, n_per_class=3).shape == (4, 3, 12)
    assert model.reconstruct(x).shape == (2, 12)
    with pytest.raises(ValueError):
        latent.style_grid(model, y=9)
    with pytest.raises(ValueError):
        latent.decode_style(model, 0, [0.0])


@pytest.mark.parametrize("order", ["label_first", "style_first"])
def test_heads_reuse_precomputed_features(order):
    """objectives.py computes the shared layer once and hands it to every head: same values either way."""
    torch.manual_seed(0)
    m = SSVAE(12, 8, 10, 4, order=order)
    x, z = torch.rand(5, 12), torch.randn(3, 5, 4)
    h = m.features(x)
    assert m.shares_features
    assert torch.equal(m.classify(x, features=h), m.classify(x))
    if order == "label_first":
        y = torch.randint(0, 10, (5,))
        assert all(torch.equal(a, b) for a, b in zip(m.encode(x, y, features=h), m.encode(x, y)))
    else:
        assert all(torch.equal(a, b) for a, b in zip(m.encode_marginal(x, features=h), m.encode_marginal(x)))
        assert torch.equal(m.classify_style(x, z, features=h), m.classify_style(x, z))
