"""Monte Carlo estimators in log space (seminar thesis §2.4, Eq. 11–13, and the IWAE bound).

Every function takes log-weights ``log_w`` with the samples along ``dim`` (default 0, the ``S``/``K`` of
the shape convention ``[S, B, ...]``) and reduces that dimension. Nothing here exponentiates a raw
log-weight: the largest weight is factored out first, so log-weights anywhere in ±700 (or beyond) give
finite results in float32 and float64. All functions are differentiable; gradients flow into ``log_w``
(and ``f``) wherever those carry them.
"""
from __future__ import annotations

import math

import torch

__all__ = ["log_mean_exp", "importance_sampling_estimate", "self_normalised_weights",
           "self_normalised_estimate", "effective_sample_size", "iwae_bound", "log_log_slope",
           "mean_and_standard_error"]


def _check_samples(log_w: torch.Tensor, dim: int, name: str = "log_w") -> int:
    """Validate a log-weight tensor; return the number of samples along ``dim``."""
    if not isinstance(log_w, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(log_w).__name__}")
    if not log_w.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of log-weights, got dtype {log_w.dtype}")
    if log_w.dim() == 0:
        raise ValueError(f"{name} must have a sample dimension; got a scalar")
    if not -log_w.dim() <= dim < log_w.dim():
        raise ValueError(f"dim={dim} is out of range for {name} with shape {tuple(log_w.shape)}")
    n = log_w.shape[dim]
    if n == 0:
        raise ValueError(f"{name} needs at least one sample along dim={dim}, got shape {tuple(log_w.shape)}")
    return n


def log_mean_exp(log_w: torch.Tensor, dim: int = 0, keepdim: bool = False) -> torch.Tensor:
    """log((1/K) Σ_k exp(log_w_k)) along ``dim``, computed as logsumexp − log K (stable in log space)."""
    n = _check_samples(log_w, dim)
    return torch.logsumexp(log_w, dim=dim, keepdim=keepdim) - math.log(n)


def importance_sampling_estimate(log_p: torch.Tensor, log_q: torch.Tensor, f: torch.Tensor,
                                 dim: int = 0) -> torch.Tensor:
    """Eq. 12 of the seminar thesis: (1/K) Σ_k f(x_k) p(x_k)/q(x_k) with x_k ~ q.

    Unbiased for E_p[f] when ``log_p`` is a *normalised* log-density. The weights are rescaled by their
    maximum before exponentiation, so only a genuinely unrepresentable result overflows.
    """
    log_w = log_p - log_q
    _check_samples(log_w, dim)
    log_w, f = torch.broadcast_tensors(log_w, f)
    shift = log_w.amax(dim=dim, keepdim=True).detach()
    return (f * torch.exp(log_w - shift)).mean(dim=dim) * torch.exp(shift.squeeze(dim))


def self_normalised_weights(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """w_k / Σ_j w_j along ``dim`` (Eq. 13 of the seminar thesis), i.e. a softmax of the log-weights.

    Non-negative and summing to one; invariant to adding a constant to every log-weight, which is why
    an unnormalised target p̃ = Z·p suffices.
    """
    _check_samples(log_w, dim)
    return torch.softmax(log_w, dim=dim)


def self_normalised_estimate(log_w: torch.Tensor, f: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Eq. 13 of the seminar thesis: Σ_k w̃_k f(x_k) / Σ_k w̃_k, with w̃ = p̃/q for an unnormalised p̃.

    Consistent for E_p[f]; biased for finite K with bias of order 1/K.
    """
    log_w, f = torch.broadcast_tensors(log_w, f)
    return (self_normalised_weights(log_w, dim=dim) * f).sum(dim=dim)


def effective_sample_size(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Kish's effective sample size (Σ w)² / Σ w², between 1 and K, from log-weights.

    Computed as exp(2·logsumexp(log_w) − logsumexp(2·log_w)), which never forms a raw weight.
    """
    _check_samples(log_w, dim)
    return torch.exp(2.0 * torch.logsumexp(log_w, dim=dim) - torch.logsumexp(2.0 * log_w, dim=dim))


def iwae_bound(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Importance-weighted bound log((1/K) Σ_k w_k) with w_k = p(x, z_k)/q(z_k|x), z_k ~ q (Burda et al.).

    A lower bound on log p(x) in expectation for every K, non-decreasing in K, tending to log p(x).
    With K = 1 it is the single-sample ELBO (Eq. 1 of the seminar thesis).
    """
    return log_mean_exp(log_w, dim=dim)


def log_log_slope(sizes, values, standard_errors) -> tuple[float, float]:
    """Slope b of log|value| ≈ a + b·log(size) by weighted least squares, and its standard error.

    Used to read a bias law such as bias ∝ K⁻¹ (slope −1) off Monte Carlo means: the weight of each
    point is 1/σ², with σ = SE/|value| the delta-method standard error of log|value|. All values must
    be non-zero and all standard errors positive.
    """
    sizes, values, ses = (torch.as_tensor(v, dtype=torch.float64).reshape(-1) for v in
                          (sizes, values, standard_errors))
    if not sizes.numel() == values.numel() == ses.numel() or sizes.numel() < 2:
        raise ValueError("sizes, values and standard_errors must have the same length >= 2")
    if (sizes <= 0).any() or (values == 0).any() or (ses <= 0).any():
        raise ValueError("sizes must be > 0, values non-zero and standard errors > 0")
    u, v = torch.log(sizes), torch.log(values.abs())
    weight = (values.abs() / ses) ** 2
    u_bar = (weight * u).sum() / weight.sum()
    v_bar = (weight * v).sum() / weight.sum()
    spread = (weight * (u - u_bar) ** 2).sum()
    slope = (weight * (u - u_bar) * (v - v_bar)).sum() / spread
    return float(slope), float(1.0 / torch.sqrt(spread))


def mean_and_standard_error(values: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo mean of independent replicates along ``dim`` and its standard error std/√R.

    The checks of the notebooks and tests compare ``|mean − exact|`` with 4 standard errors (a false
    alarm about once in 16,000 checks for a normally distributed mean).
    """
    n = _check_samples(values, dim, "values")
    if n < 2:
        raise ValueError(f"a standard error needs at least 2 replicates along dim={dim}, got {n}")
    return values.mean(dim), values.std(dim) / math.sqrt(n)
