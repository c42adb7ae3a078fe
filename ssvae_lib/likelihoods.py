"""Observation models p(x|y,z): how the decoder's output becomes a density over the pixels.

The decoder of the SSVAE (Eq. 4 of the seminar thesis) returns ``params_per_pixel`` numbers per pixel,
``out [..., B, D]``; an observation model turns them into log p(x|y,z) summed over pixels (the
reconstruction term of Eq. 1 and 8) and into the pixel means E[x] shown as images:

* :class:`Bernoulli` — logits; the cross-entropy, a probability only for binary x;
* :class:`ContinuousBernoulli` — logits; normalised on [0, 1] (Loaiza-Ganem & Cunningham 2019);
* :class:`Gaussian` — the mean (identity link); fixed σ, or a learned σ per pixel with a variance floor
  (thesis §4.2.3).

``x [B, D]`` broadcasts against ``out``; results drop the pixel dim. :func:`build_observation_model`
rebuilds a model from its name or its ``config()``; learned parameters live in its ``state_dict``.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_int, check_real

__all__ = ["ObservationModel", "Bernoulli", "ContinuousBernoulli", "Gaussian", "OBSERVATION_MODELS", "OBSERVATIONS",
           "build_observation_model", "bernoulli_log_likelihood", "gaussian_log_likelihood",
           "continuous_bernoulli_log_normaliser", "continuous_bernoulli_mean"]

_LOG_2PI = math.log(2.0 * math.pi)
# |l| below which the series below are used: their truncation error there is under 1e-16 (float64) or
# 1e-8 (narrower types, whose closed forms lose more to cancellation in the gradient near 0)
_TAYLOR = {torch.float64: 0.1}
_TAYLOR_DEFAULT = 0.5


# -- tensor level --------------------------------------------------------------------------------
def bernoulli_log_likelihood(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log p(x|·) = Σ_d x_d log σ(l_d) + (1 − x_d) log σ(−l_d) from logits, summed over the last dim.

    Written as x·l − softplus(l), finite for any finite logits; x may be fractional (grey levels).
    """
    return (x * logits - F.softplus(logits)).sum(-1)


def gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor | float,
                            var_floor: float = 0.0) -> torch.Tensor:
    """log N(x; mean, (sigma² + var_floor) I) summed over the last dimension.

    Thesis §4.2.3 (Mattei & Frellsen): with a learned variance and ``var_floor=0`` the likelihood is
    unbounded as sigma → 0 at a reconstructed point. A positive ``var_floor`` bounds it above by
    −½·D·log(2π·var_floor). The variance is formed in log space (logaddexp), so any finite
    ``log_sigma`` gives a finite value when ``var_floor > 0``.
    """
    check_real("var_floor", var_floor, 0.0)
    log_sigma = torch.as_tensor(log_sigma, dtype=mean.dtype, device=mean.device)
    log_var = 2.0 * log_sigma
    if var_floor > 0.0:
        log_var = torch.logaddexp(log_var, torch.full_like(log_var, math.log(var_floor)))
    x, mean, log_var = torch.broadcast_tensors(x, mean, log_var)
    return (-0.5 * ((x - mean).pow(2) * torch.exp(-log_var) + log_var + _LOG_2PI)).sum(-1)


def _split(logits: torch.Tensor):
    """The series-window mask and |l| set to 1 inside it (so the unused branch's gradient stays finite)."""
    a = logits.abs()
    small = a < _TAYLOR.get(logits.dtype, _TAYLOR_DEFAULT)
    return small, torch.where(small, torch.ones_like(a), a)


def continuous_bernoulli_log_normaliser(logits: torch.Tensor) -> torch.Tensor:
    """log C(λ), λ = σ(l), elementwise (Loaiza-Ganem & Cunningham 2019): C = 2 artanh(1−2λ)/(1−2λ), 2 at ½.

    Since 2 artanh(1−2λ) = log((1−λ)/λ) = −l and 1−2λ = −tanh(l/2), C = l / tanh(l/2), even in l.
    Near l = 0, with u = l/2: log(u coth u) = log cosh u − log(sinh u / u)
    = u²/3 − 7u⁴/90 + 62u⁶/2835 − 127u⁸/18900 + O(u¹⁰), i.e. log C = log 2 + l²/12 − 7l⁴/1440 + ...
    """
    small, a = _split(logits)
    direct = torch.log(a / torch.tanh(0.5 * a))
    s = logits.pow(2)
    taylor = math.log(2.0) + s * (1 / 12 + s * (-7 / 1440 + s * (31 / 90720 - s * (127 / 4838400))))
    return torch.where(small, taylor, direct)


def continuous_bernoulli_mean(logits: torch.Tensor) -> torch.Tensor:
    """E[x] = λ/(2λ−1) + 1/(2 artanh(1−2λ)) = 1/(1 − e^{−l}) − 1/l, ½ at l = 0 (Loaiza-Ganem & Cunningham).

    For l < 0 the mirror image 1 − E(|l|) = 1/|l| − e^{−|l|}/(1 − e^{−|l|}) avoids overflow; near 0 the
    series ½ + l/12 − l³/720 + l⁵/30240 − l⁷/1209600 (Bernoulli numbers of l/(1 − e^{−l})).
    """
    small, a = _split(logits)
    q = 1.0 / -torch.expm1(-a)                       # 1 / (1 − e^{−|l|})
    direct = torch.where(logits >= 0, q - 1.0 / a, 1.0 / a - torch.exp(-a) * q)
    s = logits.pow(2)
    taylor = 0.5 + logits * (1 / 12 + s * (-1 / 720 + s * (1 / 30240 - s / 1209600)))
    return torch.where(small, taylor, direct)


# -- observation models --------------------------------------------------------------------------
class ObservationModel(nn.Module):
    """p(x | decoder output): ``log_prob(x, out)`` summed over pixels, ``mean(out)`` = E[x], ``check(x)``."""
    name: str = ""
    params_per_pixel: int = 1
    support: str = "x in [0, 1]"
    _low, _high = 0.0, 1.0

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def config(self) -> dict:
        """Constructor kwargs plus ``"name"``: ``build_observation_model(config())`` rebuilds the model."""
        return {"name": self.name}

    def check(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` if x leaves the support (one min/max per call: once per batch)."""
        if x.numel() == 0:
            return
        lo, hi = (float(v) for v in torch.aminmax(x.detach()))
        if not (self._low <= lo and hi <= self._high and math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"the {self.name!r} observation model needs {self.support}; "
                             f"got values from {lo:.6g} to {hi:.6g}")

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")


class Bernoulli(ObservationModel):
    """Σ_d x_d l_d − softplus(l_d) from logits l; E[x] = σ(l).

    For grey levels x ∈ (0, 1) this is the cross-entropy, NOT a normalised density on [0, 1]:
    ∫₀¹ exp(x l − softplus(l)) dx = tanh(l/2)/l = 1/C(σ(l)) ≠ 1; only binary x give probabilities.
    :class:`ContinuousBernoulli` adds the missing log C.
    """
    name = "bernoulli"

    def log_prob(self, x, out):
        return bernoulli_log_likelihood(x, out)

    def mean(self, out):
        return torch.sigmoid(out)


class ContinuousBernoulli(ObservationModel):
    """log p(x|λ) = x log λ + (1−x) log(1−λ) + log C(λ), λ = σ(l), normalised on [0, 1]
    (Loaiza-Ganem & Cunningham 2019); stable in l (see :func:`continuous_bernoulli_log_normaliser`)."""
    name = "continuous_bernoulli"

    def log_prob(self, x, out):
        return bernoulli_log_likelihood(x, out) + continuous_bernoulli_log_normaliser(out).sum(-1)

    def mean(self, out):
        return continuous_bernoulli_mean(out)


class Gaussian(ObservationModel):
    """N(x; μ, (σ² + v) I) with μ = the decoder output (identity link) and v = ``var_floor``.

    Fixed σ (``learned=False``, v = 0): log p = −‖x−μ‖²/(2σ²) − D log σ − (D/2) log 2π, so 1/σ² weighs
    the reconstruction against the KL as 1/β does (Eq. 3). Learned σ: ``log_sigma``, an ``nn.Parameter
    [n_pixels]`` initialised at log ``sigma``; with v = 0, log p at x = μ is unbounded as σ → 0 (thesis
    §4.2.3), with v > 0 it is at most −½ D log(2π v). ``var_floor=None``: 0 if fixed, 1e-3 if learned.
    """
    name = "gaussian"
    support = "x finite (any real value)"
    _low, _high = -math.inf, math.inf

    def __init__(self, sigma: float = 1.0, *, learned: bool = False, n_pixels: int | None = None,
                 var_floor: float | None = None):
        super().__init__()
        self.sigma = check_real("sigma", sigma, 0.0, open_interval=True)
        if not isinstance(learned, bool):
            raise ValueError(f"learned must be True or False, got {learned!r}")
        if not learned and n_pixels is not None:
            raise ValueError(f"n_pixels is used only with learned=True (got n_pixels={n_pixels!r})")
        self.learned, self.n_pixels = learned, (check_int("n_pixels", n_pixels) if learned else None)
        default_floor = 1e-3 if learned else 0.0
        self.var_floor = check_real("var_floor", default_floor if var_floor is None else var_floor, 0.0)
        log_sigma = math.log(self.sigma)
        self.log_sigma = nn.Parameter(torch.full((self.n_pixels,), log_sigma)) if learned else log_sigma

    def log_prob(self, x, out):
        return gaussian_log_likelihood(x, out, self.log_sigma, self.var_floor)

    def mean(self, out):
        return out

    def config(self):
        return {"name": self.name, "sigma": self.sigma, "learned": self.learned,
                "n_pixels": self.n_pixels, "var_floor": self.var_floor}


_MODELS = {cls.name: cls for cls in (Bernoulli, ContinuousBernoulli, Gaussian)}
OBSERVATION_MODELS = tuple(_MODELS)
# The names a config may give: the models with their defaults, and a Gaussian with a learned σ per pixel.
OBSERVATIONS = OBSERVATION_MODELS + ("gaussian_learned",)


def build_observation_model(spec: str | Mapping, n_pixels: int | None = None) -> ObservationModel:
    """An observation model from a name of ``OBSERVATIONS`` (defaults; ``"gaussian_learned"`` needs
    ``n_pixels``) or a ``config()`` dict (name plus kwargs)."""
    if spec == "gaussian_learned":
        return Gaussian(learned=True, n_pixels=n_pixels)
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif isinstance(spec, Mapping):
        kwargs = dict(spec)
        name = kwargs.pop("name", None)
    else:
        raise TypeError(f"spec must be a name or a config dict, got {type(spec).__name__}")
    if name not in _MODELS:
        raise ValueError(f"unknown observation model {name!r}; allowed: {', '.join(OBSERVATIONS)}")
    return _MODELS[name](**kwargs)
