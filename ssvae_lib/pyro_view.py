"""The M2 model and its recognition model written as a Pyro program (a model and a guide) on the library's
own networks, and the check that Pyro's ELBOs of that program are the library's hand-written bounds:

* y observed: ``TraceMeanField_ELBO`` (analytic KL for z) is Eq. 7, the supervised bound Eq. 8 with α = 0;
* y latent: ``TraceEnum_ELBO`` (the guide's y enumerated exactly) is Eq. 9, the unsupervised bound.

Pyro estimates the z terms by its own Monte Carlo draws, so the two agree within Monte Carlo error.
Observations are binary pixels here: Pyro's Bernoulli is a distribution on {0, 1}.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import TraceEnum_ELBO, TraceMeanField_ELBO

from . import objectives
from .estimators import mean_and_standard_error
from .models import SSVAE


def m2_model(model: SSVAE, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """p(x, y, z) = p(y) p(z) p(x | y, z) (Eq. 4) for images ``x [B, D]``; ``y`` (one-hot ``[B, C]``) observed
    when given."""
    with pyro.plate("images", x.shape[0], dim=-1):
        z = pyro.sample("z", dist.Normal(x.new_zeros(model.style_dim), 1.0).to_event(1))
        y = pyro.sample("y", dist.OneHotCategorical(logits=model.log_prior_y()), obs=y)
        pyro.sample("x", dist.Bernoulli(logits=model.decode(y, z)).to_event(1), obs=x)


def m2_guide(model: SSVAE, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """q(y | x) q(z | x, y) (Eq. 5): y drawn (enumerated by ``TraceEnum_ELBO``) only when not observed."""
    with pyro.plate("images", x.shape[0], dim=-1):
        if y is None:
            y = pyro.sample("y", dist.OneHotCategorical(logits=model.classify(x)), infer={"enumerate": "parallel"})
        mu, log_sigma = model.encode(x, y)
        pyro.sample("z", dist.Normal(mu, log_sigma.exp()).to_event(1))


@torch.no_grad()
def pyro_elbo(model: SSVAE, x: torch.Tensor, y: torch.Tensor | None = None, *, particles: int = 100,
              program=m2_model) -> float:
    """Pyro's ELBO of (``program``, :func:`m2_guide`) per image, averaged over ``particles`` draws: the
    mean-field ELBO when labels ``y [B]`` are given, the enumerated one otherwise."""
    onehot = None if y is None else F.one_hot(y, model.n_classes).to(x.dtype)
    elbo = TraceMeanField_ELBO if y is not None else TraceEnum_ELBO
    loss = elbo(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    return -loss.loss(program, m2_guide, model, x, onehot) / x.shape[0]


@torch.no_grad()
def compare_with_library(model: SSVAE, x: torch.Tensor, y: torch.Tensor | None = None, *, particles: int = 100,
                         replicates: int = 10, seed: int = 0, program=m2_model) -> dict:
    """Pyro's ELBO (:func:`pyro_elbo`) and the library's bound (``objectives.supervised_bound`` with α = 0
    when ``y`` is given, Eq. 8; else ``objectives.unsupervised_bound``, Eq. 9), in nats per image, each the
    mean of ``replicates`` estimates of ``particles`` independent draws with its standard error, and ``"z"``:
    their difference in combined standard errors (a few at most when the two are the same bound)."""
    pyro.set_rng_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)     # independent of Pyro's draws
    ours, theirs = [], []
    for _ in range(replicates):
        theirs.append(pyro_elbo(model, x, y, particles=particles, program=program))
        if y is None:
            bound = objectives.unsupervised_bound(model, x, n_samples=particles, generator=generator)
        else:
            bound = objectives.supervised_bound(model, x, y, 0.0, n_samples=particles, generator=generator)
        ours.append(float(bound.mean()))
    (p, p_se), (l, l_se) = (map(float, mean_and_standard_error(torch.tensor(values, dtype=torch.float64)))
                            for values in (theirs, ours))
    return {"pyro": p, "pyro_se": p_se, "library": l, "library_se": l_se,
            "z": (p - l) / max((p_se ** 2 + l_se ** 2) ** 0.5, 1e-12)}
