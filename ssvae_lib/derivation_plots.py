"""Figures of the derivation notebooks 01-03 (the ELBO, importance sampling, the supervised estimator),
drawn from the numbers of :mod:`ssvae_lib.toy_experiments`. Each is a bare ``matplotlib.figure.Figure``
(:func:`ssvae_lib.plots.new_figure`, no pyplot state); those that the panels of
:mod:`ssvae_lib.derivation_widgets` redraw use fixed margins instead of ``tight_layout``, which would
double the cost of every redraw.
"""
from __future__ import annotations

import numpy as np

from .plots import as_array, decorate, new_figure

#: What the figures (and the panels' controls) call the estimators of :mod:`ssvae_lib.toy_experiments`.
GRADIENT_LABELS = {"reparameterised": "reparameterised (Eq. 2)", "score_function": "score function"}
IS_ESTIMATOR_LABELS = {"normaliser": "p(x): mean of w (Eq. 12)", "log_normaliser": "log p(x): IWAE bound",
                       "posterior_mean_is": "E[z|x]: normalised p (Eq. 12)",
                       "posterior_mean_snis": "E[z|x]: self-normalised (Eq. 13)"}


def _histogram(ax, values, bins=60, **style):
    """``ax.hist`` of the finite ``values`` (filled outline) that also copes with (nearly) constant data,
    e.g. the estimates of an estimator with zero variance: such data get one bar of a small width."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    style.setdefault("histtype", "stepfilled")      # one polygon, not one patch per bin: fast redraws
    low, high = values.min(), values.max()
    if high - low <= 1e-9 * max(1.0, abs(low), abs(high)):
        half = 1e-3 * max(1.0, abs(low))
        return ax.hist(values, bins=1, range=(low - half, high + half), **style)
    return ax.hist(values, bins=bins, **style)


def _normal_pdf(z, mean, sd):
    """The density of N(mean, sd²) at ``z``."""
    return np.exp(-0.5 * ((z - mean) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))


def _ellipse(ax, mean, cov, n_sd, **style):
    """The n_sd contour of N(mean, cov) in 2-d."""
    values, vectors = np.linalg.eigh(np.asarray(cov, dtype=float))
    angle = np.linspace(0, 2 * np.pi, 200)
    circle = np.stack([np.cos(angle), np.sin(angle)])
    points = np.asarray(mean, dtype=float)[:, None] + n_sd * vectors @ (np.sqrt(values)[:, None] * circle)
    return ax.plot(points[0], points[1], **style)


def elbo_figure(terms: dict, posterior_mean, posterior_cov, q_mean, q_log_sd, fig=None):
    """Left: the prior p(z), the exact posterior p(z|x) and q(z|x) (densities for a 1-d latent, 1- and
    2-sd contours for a 2-d one). Right: Eq. 1 as a waterfall, reconstruction − KL(q ‖ p(z)) = ELBO,
    ELBO + KL(q ‖ p(z|x)) = log p(x), from the dict of :func:`ssvae_lib.toy_experiments.elbo_decomposition`."""
    fig = new_figure(fig, (10, 3.4))
    ax_density, ax_bar = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[1.3, 1]))
    post_mean = np.atleast_1d(np.asarray(posterior_mean, dtype=float))
    post_cov = np.atleast_2d(np.asarray(posterior_cov, dtype=float))
    q_mean = np.atleast_1d(np.asarray(q_mean, dtype=float))
    q_sd = np.exp(np.atleast_1d(np.asarray(q_log_sd, dtype=float)))
    dz = post_mean.size
    densities = (("prior p(z)", np.zeros(dz), np.eye(dz), dict(color="0.6", ls=":")),
                 ("posterior p(z|x)", post_mean, post_cov, dict(color="C0", lw=2)),
                 ("q(z|x)", q_mean, np.diag(q_sd ** 2), dict(color="C3", lw=2, ls="--")))
    one_d = dz == 1
    if one_d:
        sd_post = np.sqrt(post_cov[0, 0])
        low = min(-3.0, post_mean[0] - 4 * sd_post, q_mean[0] - 4 * q_sd[0])
        high = max(3.0, post_mean[0] + 4 * sd_post, q_mean[0] + 4 * q_sd[0])
        z = np.linspace(low, high, 400)
        for label, mean, cov, style in densities:
            ax_density.plot(z, _normal_pdf(z, mean[0], np.sqrt(cov[0, 0])), label=label, **style)
    else:
        for n_sd in (1, 2):
            for label, mean, cov, style in densities:
                _ellipse(ax_density, mean, cov, n_sd, label=label if n_sd == 1 else None, **style)
        ax_density.set_aspect("equal", adjustable="datalim")
    decorate(ax_density, "q(z|x) against the exact posterior", grid=None, xlabel="z" if one_d else "z₁",
             ylabel="density" if one_d else "z₂")
    ax_density.legend(fontsize=8, loc="upper left")

    labels = ["E_q[log p(x|z)]", "−KL(q‖p(z))", "ELBO", "+KL(q‖p(z|x))", "log p(x)"]
    bottoms = [0.0, terms["reconstruction"], 0.0, terms["elbo"], 0.0]
    heights = [terms["reconstruction"], -terms["kl_prior"], terms["elbo"], terms["gap"], terms["log_px"]]
    ax_bar.bar(range(5), heights, bottom=bottoms, color=["C2", "C1", "C3", "C4", "C0"], width=0.6)
    for i, (b, h) in enumerate(zip(bottoms, heights)):        # each value in the middle of its bar
        ax_bar.text(i, b + h / 2, f"{h:+.3f}" if i in (1, 3) else f"{h:.3f}", ha="center", va="center",
                    fontsize=8, bbox=dict(facecolor="white", alpha=0.7, edgecolor="none", pad=1))
    ax_bar.axhline(0.0, color="k", lw=0.8)
    ax_bar.margins(y=0.15)
    ax_bar.set_xticks(range(5), labels, rotation=25, ha="right", fontsize=8)
    decorate(ax_bar, "log p(x) = ELBO + KL(q ‖ p(z|x))   (nats)", grid=None)
    ax_bar.grid(alpha=0.3, axis="y")
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.24, top=0.92, wspace=0.22)
    return fig


def gradient_variance_figure(sizes, exact_variances: dict, current_size: int, estimates: dict,
                             exact_gradient: float, parameter: str = "m₁", fig=None):
    """Left: the exact variance of an S-sample gradient estimate (single-sample variance / S) for each
    estimator on log-log axes, with the Monte Carlo variance at the current S as a dot. Right: the
    histogram of the estimates at the current S against the exact gradient."""
    fig = new_figure(fig, (10, 3.2))
    ax_var, ax_hist = fig.subplots(1, 2)
    sizes = np.asarray(sizes, dtype=float)
    for i, (name, single) in enumerate(exact_variances.items()):
        values = as_array(estimates[name], float)
        label = GRADIENT_LABELS.get(name, name)
        ax_var.plot(sizes, single / sizes, color=f"C{i}", label=f"{label}: exact Var/S")
        ax_var.plot([current_size], [values.var(ddof=1)], "o", color=f"C{i}", ms=7)
        _histogram(ax_hist, values, bins=50, density=True, alpha=0.5, color=f"C{i}", label=label)
    ax_var.axvline(current_size, color="k", lw=0.8, ls=":")
    decorate(ax_var, legend=8, grid="both", xscale="log2", yscale="log", xlabel="number of samples S",
             ylabel=f"variance of ∂ELBO/∂{parameter}")
    ax_hist.axvline(exact_gradient, color="k", lw=1.5, label="exact gradient")
    decorate(ax_hist, f"{len(next(iter(estimates.values())))} independent estimates", legend=8, grid=None,
             xlabel=f"estimate of ∂ELBO/∂{parameter} with S = {current_size}", ylabel="density")
    fig.subplots_adjust(left=0.08, right=0.99, bottom=0.16, top=0.91, wspace=0.2)
    return fig


def importance_sampling_figure(experiment, summary, fig=None):
    """Left: the target p(z|x), the proposal q(z) and the normalised weight w̄(z) = p(z|x)/q(z).
    Right: the histogram of ``summary.estimates`` (a :class:`ssvae_lib.toy_experiments.ReplicateSummary`) with the
    exact value, the mean and a readout of bias, std, ESS and χ²."""
    fig = new_figure(fig, (10, 3.3))
    ax_density, ax_hist = fig.subplots(1, 2)
    mu_p, sd_p = experiment.posterior_mean, experiment.posterior_sd
    mu_q, sd_q = experiment.proposal_mean, experiment.proposal_sd
    z = np.linspace(min(mu_p - 4 * sd_p, mu_q - 3 * sd_q), max(mu_p + 4 * sd_p, mu_q + 3 * sd_q), 400)
    p, q = _normal_pdf(z, mu_p, sd_p), _normal_pdf(z, mu_q, sd_q)
    ax_density.plot(z, p, color="C0", lw=2, label="target p(z|x)")
    ax_density.plot(z, q, color="C3", lw=2, ls="--", label="proposal q(z)")
    ax_weight = ax_density.twinx()
    ax_weight.plot(z, p / q, color="C2", lw=1, label="weight w̄ = p/q")
    ax_weight.set_yscale("log")
    ax_weight.set_ylabel("w̄(z) (log scale)", color="C2", fontsize=8)
    decorate(ax_density, f"shift {experiment.shift:+.2f} sd, scale ×{experiment.scale:.2f}", grid=None,
             xlabel="z", ylabel="density")
    handles = ax_density.get_legend_handles_labels()
    extra = ax_weight.get_legend_handles_labels()
    ax_density.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=8, loc="upper left")

    values = as_array(summary.estimates, float)
    _histogram(ax_hist, values, bins=60, density=True, color="C7", alpha=0.7)
    ax_hist.axvline(summary.exact, color="k", lw=2, label="exact value")
    ax_hist.axvline(summary.mean, color="C3", lw=1.5, ls="--", label="mean of estimates")
    chi2 = "∞" if not np.isfinite(summary.chi_square) else f"{summary.chi_square:.3g}"
    predicted = "n/a" if not np.isfinite(summary.predicted_bias) else f"{summary.predicted_bias:+.4f}"
    text = (f"bias {summary.bias:+.4f} ± {summary.standard_error:.4f}\nfirst-order bias {predicted}\n"
            f"std {summary.std:.4f}\nESS {summary.mean_ess:.1f} of {summary.n_samples}\nχ²(p‖q) {chi2}")
    ax_hist.text(0.98, 0.97, text, transform=ax_hist.transAxes, ha="right", va="top", fontsize=8,
                 bbox=dict(facecolor="white", alpha=0.8, edgecolor="0.8"))
    decorate(ax_hist, f"{len(values)} replicates", grid=None, ylabel="density of the estimates",
             xlabel=f"{IS_ESTIMATOR_LABELS.get(summary.estimator, summary.estimator)}, K = {summary.n_samples}")
    ax_hist.legend(fontsize=8, loc="upper left")
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.16, top=0.91, wspace=0.3)
    return fig


def sorted_weights_figure(weights: dict, fig=None):
    """Normalised importance weights of one K-sample draw per proposal, sorted from the largest down
    (log-log): a flat curve means many samples count, a steep head means a few dominate."""
    ax = new_figure(fig, (5.5, 3.2)).subplots()
    for label, w in weights.items():
        values = np.sort(as_array(w, float))[::-1]
        ax.plot(np.arange(1, len(values) + 1), values, label=label)
    decorate(ax, legend=8, grid="both", xscale="log", yscale="log", xlabel="rank", ylabel="normalised weight w̃")
    ax.figure.tight_layout()
    return ax.figure


def bias_law_figure(sizes, biases, standard_errors, predicted, slope: float, label: str = "", fig=None):
    """|bias| against the number of samples K on log-log axes: Monte Carlo means ± 2 SE, the closed-form
    prediction, and the fitted slope (−1 for a 1/K law)."""
    ax = new_figure(fig, (5.5, 3.4)).subplots()
    sizes, biases = np.asarray(sizes, dtype=float), np.abs(np.asarray(biases, dtype=float))
    ses = np.asarray(standard_errors, dtype=float)
    ax.errorbar(sizes, biases, yerr=2 * ses, fmt="o", color="C0", capsize=3, label=f"Monte Carlo {label}")
    ax.plot(sizes, np.abs(np.asarray(predicted, dtype=float)), color="C3", label="closed-form prediction")
    decorate(ax, f"fitted slope {slope:.2f} (a 1/K law has slope −1)", legend=8, grid="both", xscale="log2",
             yscale="log", xlabel="number of samples K", ylabel="|bias|")
    ax.figure.tight_layout()
    return ax.figure


def supervised_tightening_figure(sizes, means: dict, standard_errors: dict, reference, fig=None):
    """The climax of notebook 03. Left: Eq. 19 as written (mean of log w) stays at E_q(z|x)[log q(y|x,z)]
    for every S, while log-mean-exp of w rises to log q(y|x). Right: Eq. 20 as written converges to its
    own limit, the importance-weighted form to the Eq. 16 objective. Means ± 2 SE over replicates;
    ``reference`` is a :class:`ssvae_lib.toy_experiments.SupervisedEstimatorReference`."""
    fig = new_figure(fig, (11, 3.6))
    axes = fig.subplots(1, 2)
    sizes_arr = np.asarray(sizes, dtype=float)
    panels = (
        (axes[0], (("eq19", "Eq. 19 as written: mean of log w", "C3"),
                   ("eq19_iw", "log of the mean of w", "C0")),
         (("log q(y|x)", reference.log_q_y, "C0"),
          ("E_q(z|x)[log q(y|x,z)]", reference.expected_log_w, "C3")), "estimate of log q(y|x)"),
        (axes[1], (("as_written", "Eq. 20 as written", "C3"), ("weighted", "importance-weighted Eq. 20", "C0")),
         (("Eq. 16 (the objective)", reference.eq16, "C0"),
          ("limit of Eq. 20 as written", reference.limit_as_written, "C3")), "supervised objective L_S"),
    )
    for ax, curves, lines, ylabel in panels:
        for name, label, colour in curves:
            m, se = np.asarray(means[name], dtype=float), np.asarray(standard_errors[name], dtype=float)
            ax.errorbar(sizes_arr, m, yerr=2 * se, fmt="o-", color=colour, ms=4, capsize=2, label=label)
            predicted = [reference.predicted_mean(name, int(s)) for s in sizes_arr]
            ax.plot(sizes_arr, predicted, color=colour, lw=0.8, ls=":")
        top = max(value for _, value, _ in lines)
        for label, value, colour in lines:
            ax.axhline(value, color=colour, lw=1.2, ls="--", alpha=0.7)
            above = value == top            # the upper line is labelled above, the lower one below
            ax.annotate(f"exact: {label}", (sizes_arr[-1], value), xytext=(0, 4 if above else -4),
                        textcoords="offset points", ha="right", va="bottom" if above else "top",
                        fontsize=8, color=colour)
        decorate(ax, xscale="log2", xlabel="number of samples S", ylabel=ylabel)
        ax.margins(y=0.12)
        ax.legend(fontsize=8, loc="center right")
    axes[0].set_title("averaging log w does not tighten; log-mean-exp does", fontsize=9)
    axes[1].set_title(f"α = {reference.alpha:g}: dotted = first-order prediction", fontsize=9)
    fig.tight_layout()
    return fig


def supervised_estimator_figure(estimates: dict, reference, n_samples: int, fig=None):
    """Histograms of the supervised estimates at one S (from :func:`ssvae_lib.toy_experiments.supervised_estimates`)
    against their S → ∞ limits (dashed): left the two forms of Eq. 20, with the exact Eq. 16 objective;
    right the two estimates of log q(y|x), with the exact log q(y|x)."""
    fig = new_figure(fig, (11, 3.3))
    axes = fig.subplots(1, 2)
    panels = ((axes[0], (("as_written", "Eq. 20 as written", "C3", "its limit"),
                         ("weighted", "importance-weighted", "C0", "exact Eq. 16")),
               f"supervised objective, S = {n_samples}, α = {reference.alpha:g}"),
              (axes[1], (("eq19", "mean of log w (Eq. 19)", "C3", "E_q(z|x)[log q(y|x,z)]"),
                         ("eq19_iw", "log of the mean of w", "C0", "exact log q(y|x)")),
               f"estimate of log q(y|x), S = {n_samples}"))
    for ax, curves, title in panels:
        for name, label, colour, limit_label in curves:
            values = as_array(estimates[name], float)
            _histogram(ax, values, bins=60, density=True, alpha=0.45, color=colour, label=label)
            ax.axvline(reference.target(name), color=colour, lw=2, ls="--", label=f"{limit_label} (S → ∞)")
        decorate(ax, title, grid=None)
        ax.legend(fontsize=7, loc="upper left")
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.1, top=0.91, wspace=0.15)
    return fig
