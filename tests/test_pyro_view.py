"""Pyro's ELBOs of the M2 program equal the library's hand-written bounds within Monte Carlo error, and the
comparison notices a dropped term."""
from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from ssvae_lib import data, pyro_view
from ssvae_lib.models import SSVAE


@pytest.fixture(scope="module")
def batch():
    ds = data.load_dataset("digits")
    torch.manual_seed(0)
    model = SSVAE(input_dim=64, hidden_dim=32, n_classes=10, style_dim=3).eval()
    return model, (ds.x_test[:32] > 0.5).float(), ds.y_test[:32]


def model_without_label_prior(model, x, y=None):
    """m2_model with log p(y) left out (y still enumerated or observed, with a flat weight of 1)."""
    with pyro.plate("images", x.shape[0], dim=-1):
        z = pyro.sample("z", dist.Normal(x.new_zeros(model.style_dim), 1.0).to_event(1))
        y = pyro.sample("y", dist.OneHotCategorical(logits=torch.zeros(model.n_classes)).mask(False), obs=y)
        pyro.sample("x", dist.Bernoulli(logits=model.decode(y, z)).to_event(1), obs=x)


@pytest.mark.parametrize("labelled", [True, False], ids=["Eq. 8 (y observed)", "Eq. 9 (y enumerated)"])
def test_pyro_elbo_is_the_library_bound(batch, labelled):
    model, x, y = batch
    result = pyro_view.compare_with_library(model, x, y if labelled else None, particles=100, replicates=10)
    assert abs(result["z"]) < 4, result
    assert result["pyro_se"] < 0.05 and result["library_se"] < 0.05    # the check has power


@pytest.mark.parametrize("labelled", [True, False])
def test_the_comparison_fails_when_a_term_is_dropped(batch, labelled):
    model, x, y = batch
    result = pyro_view.compare_with_library(model, x, y if labelled else None, particles=100, replicates=10,
                                            program=model_without_label_prior)
    assert abs(result["z"]) > 20, result
    # log p(y) = -log 10 per image was left out: the ELBO moves up by log 10, within Monte Carlo error
    standard_error = (result["pyro_se"] ** 2 + result["library_se"] ** 2) ** 0.5
    assert abs(result["pyro"] - result["library"] - math.log(10)) < 4 * standard_error
