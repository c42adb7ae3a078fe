"""Health indicators of the style code z (supporting document 004, §"indicators"): how much each unit of
z is used, and how much z says about the image.

* :func:`kl_per_dimension` — KL(q(z_j|x) ‖ N(0, 1)) averaged over images, per unit: a unit whose KL is ~0
  carries nothing (posterior collapse of that unit);
* :func:`active_units` — the units whose posterior mean varies across images, Var_x(E_q[z_j|x]) > 0.01
  (Burda et al. 2016, §5.2);
* :func:`mutual_information` — I(x; z) of the encoder, E_x E_q(z|x)[log q(z|x) − log q(z)] with q(z) the
  aggregate posterior (1/N) Σ_n q(z|x_n) of the N images; at most log N.

All take the Gaussian posterior's ``mu`` and ``log_sigma`` (``[N, Dz]``); :func:`diagnose` reads them off a
model (``model.style_posterior``: q(z|x, y) with the given or predicted labels, or q(z|x) in the
style-first order). :class:`DiagnosticsCallback` adds them to every epoch's record of a training run
(notebook 08's live panel; ``plots.diagnostics_figure`` draws them).
"""
from __future__ import annotations

import math

import torch

from .checks import check_int, check_real
from .engine import Callback
from .objectives import gaussian_kl, gaussian_log_density

ACTIVE_THRESHOLD = 0.01          # Burda et al. 2016: a unit is active when Var_x E[z_j|x] exceeds this


def _check_posterior(mu: torch.Tensor, log_sigma: torch.Tensor) -> None:
    if mu.ndim != 2 or mu.shape != log_sigma.shape or len(mu) == 0:
        raise ValueError(f"mu and log_sigma must both be [N, Dz] with N >= 1, got {tuple(mu.shape)} and "
                         f"{tuple(log_sigma.shape)}")


def kl_per_dimension(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """Mean over images of KL(N(μ_j, σ_j²) ‖ N(0, 1)) = ½(σ_j² + μ_j² − 1) − log σ_j, per unit:
    ``[Dz]``. Their sum is the KL term of the ELBO (Eq. 1), averaged over the images."""
    _check_posterior(mu, log_sigma)
    return gaussian_kl(mu[..., None], log_sigma[..., None]).mean(0)        # each unit its own 1-d KL


def active_units(mu: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> int:
    """How many units have Var over images of their posterior mean above ``threshold``."""
    if mu.ndim != 2 or len(mu) < 2:
        raise ValueError(f"mu must be [N, Dz] with N >= 2 images, got {tuple(mu.shape)}")
    check_real("threshold", threshold, low=0.0)
    return int((mu.var(0) > threshold).sum())


def mutual_information(mu: torch.Tensor, log_sigma: torch.Tensor, n_samples: int = 1,
                       generator: torch.Generator | None = None) -> float:
    """I(x; z) in nats for the encoder q(z|x) and the empirical distribution of the N images:
    E_n E_{z ~ q(z|x_n)}[log q(z|x_n) − log (1/N) Σ_m q(z|x_m)], by ``n_samples`` draws per image
    (the mixture is exact; only the outer expectation is sampled). Between 0 (z ignores x) and log N, up to
    the Monte Carlo error of that expectation."""
    _check_posterior(mu, log_sigma)
    check_int("n_samples", n_samples)
    eps = torch.randn((n_samples, *mu.shape), generator=generator, dtype=mu.dtype).to(mu.device)
    z = mu + torch.exp(log_sigma) * eps                                                 # [S, N, Dz]
    log_q = gaussian_log_density(z[:, :, None, :], mu, log_sigma)  # log q(z_{s,n}|x_m), all pairs: [S, N, M]
    own = torch.diagonal(log_q, dim1=1, dim2=2)                                        # [S, N]
    aggregate = torch.logsumexp(log_q, dim=-1) - math.log(len(mu))
    return float((own - aggregate).mean())


def diagnose(model, x: torch.Tensor, y: torch.Tensor | None = None, n_samples: int = 1,
             generator: torch.Generator | None = None) -> dict:
    """The three indicators of the model's style code on images ``x`` (and labels ``y``; the predicted ones
    when None): per-unit KL, its sum, the number of active units, I(x; z) and its ceiling log N."""
    with torch.no_grad():
        mu, log_sigma = model.style_posterior(model.check_input(x), y)
    kl = kl_per_dimension(mu, log_sigma)
    return {"kl_per_dimension": kl.tolist(), "kl_total": float(kl.sum()), "active_units": active_units(mu),
            "mutual_information": mutual_information(mu, log_sigma, n_samples, generator),
            "mutual_information_ceiling": math.log(len(mu))}


class DiagnosticsCallback(Callback):
    """After every epoch, :func:`diagnose` on the images ``x`` (e.g. 500 test images), with the labels the
    model predicts, merged into the epoch's history record: ``kl_per_dimension``, ``kl_total``,
    ``active_units``, ``mutual_information`` (one posterior draw per image, seeded: the same every epoch)."""

    def __init__(self, x: torch.Tensor, seed: int = 0):
        self.x, self.seed = x, seed

    def on_epoch_end(self, state):
        found = diagnose(state.model, self.x, generator=torch.Generator(self.x.device).manual_seed(self.seed))
        state.history[-1].update({k: v for k, v in found.items() if k != "mutual_information_ceiling"})
