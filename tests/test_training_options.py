"""The training options of notebook 08: a Gaussian decoder's σ, pretraining without labels, and the
learned β of L-VAE (supporting document 003, Eq. 6)."""
import math

import pytest
import torch

from ssvae_lib import engine
from ssvae_lib import train as T
from ssvae_lib.likelihoods import Gaussian
from tiny_run import tiny_config as tiny


def test_sigma_and_the_variance_floor_reach_the_gaussian_decoder():
    fixed = T.build_model(tiny(observation="gaussian", sigma=0.2), 64, 10).observation
    assert isinstance(fixed, Gaussian) and fixed.sigma == 0.2 and not fixed.learned and fixed.var_floor == 0.0
    learned = T.build_model(tiny(observation="gaussian_learned", sigma=0.5, var_floor=0.0), 64, 10).observation
    assert learned.learned and learned.var_floor == 0.0
    torch.testing.assert_close(learned.log_sigma.detach(), torch.full((64,), math.log(0.5)))
    assert T.build_model(tiny(observation="gaussian_learned"), 64, 10).observation.var_floor == 1e-3


@pytest.mark.parametrize("fields, message", [
    (dict(sigma=0.5), "apply to Gaussian observations only"),
    (dict(observation="gaussian", sigma=0.0), "sigma must be a finite number > 0"),
    (dict(observation="gaussian_learned", var_floor=-1e-3), "var_floor must be None or a finite number >= 0"),
    (dict(pretrain_epochs=2), r"pretrain_epochs must be an integer in \[0, epochs\)"),
    (dict(learn_beta=True, beta=8.0), "beta must be 1 when learn_beta is set"),
])
def test_bad_option_values_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        tiny(**fields)


def test_pretraining_epochs_ignore_the_labels(digits):
    """During the first ``pretrain_epochs`` the labelled term has weight 0: the run is the γ = 0 run; after
    them the labels count."""
    pretrained = T.train(tiny(pretrain_epochs=1), dataset=digits, progress=False)
    unlabelled = T.train(tiny(gamma=0.0), dataset=digits, progress=False)
    labelled = T.train(tiny(), dataset=digits, progress=False)
    first, second = pretrained.history
    assert first["train_loss"] == pytest.approx(unlabelled.history[0]["train_loss"], rel=1e-6)
    assert first["accuracy"] == unlabelled.history[0]["accuracy"]
    assert first["train_loss"] != pytest.approx(labelled.history[0]["train_loss"], rel=1e-3)
    assert second["train_loss"] != pytest.approx(unlabelled.history[1]["train_loss"], rel=1e-3)


def _reconstruction_and_kl(model, config, inputs):
    """The L-VAE split of the fixed-β loss: KL = loss(β=1) − loss(β=0), reconstruction = loss(β=0)."""
    fixed = lambda beta: float(engine.step_terms(  # noqa: E731
        model, T.TrainConfig(**{**config.to_dict(), "learn_beta": False, "beta": beta}), inputs).detach().sum())
    return fixed(0.0), fixed(1.0) - fixed(0.0)


def test_the_learned_beta_loss_is_lvae_eq6(digits):
    """With s = exp(log_loss_weights): loss = R/s₀ + KL/s₁ + s₀ + s₁ (R and KL of the fixed-β loss), and
    its gradient in log s vanishes exactly at s₀ = √R, s₁ = √KL, where β̂ = s₀/s₁ = √(R/KL)."""
    config = tiny(learn_beta=True)
    torch.manual_seed(0)
    model = T.build_model(config, 64, 10)
    assert [n for n, _ in model.named_parameters()].count("log_loss_weights") == 1
    x = digits.x_train
    inputs = {**engine.draw_step_noise(config, model, 64, 25, torch.Generator().manual_seed(1)),
              "x_u": x[:64], "x_l": x[64:89], "y_l": digits.y_train[64:89], "alpha": config.alpha,
              "gamma": config.gamma}
    reconstruction, kl = _reconstruction_and_kl(model, config, inputs)
    assert reconstruction > 0 and kl > 0
    with torch.no_grad():
        model.log_loss_weights.copy_(torch.tensor([0.3, -0.2]))
    s0, s1 = math.exp(0.3), math.exp(-0.2)
    loss = engine.step_terms(model, config, inputs).sum()
    assert float(loss.detach()) == pytest.approx(reconstruction / s0 + kl / s1 + s0 + s1, rel=1e-5)
    assert model.learned_beta() == pytest.approx(s0 / s1)
    with torch.no_grad():
        model.log_loss_weights.copy_(torch.tensor([0.5 * math.log(reconstruction), 0.5 * math.log(kl)]))
    model.zero_grad()
    engine.step_terms(model, config, inputs).sum().backward()
    # K is the difference of two float32 losses of size R: its round-off (~1e-7 R) sets the tolerance
    torch.testing.assert_close(model.log_loss_weights.grad, torch.zeros(2), atol=1e-6 * reconstruction, rtol=0)
    assert model.learned_beta() == pytest.approx(math.sqrt(reconstruction / kl), rel=1e-5)


def test_a_learned_beta_run_records_its_beta_and_trains_like_its_stack(digits):
    configs = [tiny(learn_beta=True, seed=s) for s in (0, 1)]
    together = engine.train_runs(configs, dataset=digits, scores=False, progress=False)
    alone = T.train(configs[1], dataset=digits, progress=False)
    for got, want in zip(together[1].history, alone.history):
        assert got["learned_beta"] == pytest.approx(want["learned_beta"], rel=1e-5)
        assert got["accuracy"] == pytest.approx(want["accuracy"], rel=1e-4)
    assert all(h["learned_beta"] != 1.0 for h in alone.history)
