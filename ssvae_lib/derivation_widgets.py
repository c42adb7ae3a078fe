"""Interactive panels of the derivation notebooks 01-03 (ipywidgets).

Each panel is wiring only: its controls feed one call into :mod:`ssvae_lib.toy_experiments` (which
computes) and one into :mod:`ssvae_lib.derivation_plots` (which draws). Every redraw stores the computed numbers in
``panel.result`` and the drawing in ``panel.figure`` (a ``matplotlib.figure.Figure``) and shows it as
a PNG in the panel, so a panel can be driven from code exactly as a reader drives it by hand
(``panel.n_samples.value = 64``, ``panel.set(shift=1.0, scale=0.5)``; see :class:`ssvae_lib.panels.Panel`)
and a headless run still has a picture to show (``panel.figure``).
Every redraw uses the panel's fixed ``seed``: the same slider values always give the same result.
A notebook builds each panel with the values its checks use (constructor arguments, not a later
``panel.set``): the browser then starts from those values, and no control can send an older one back.
"""
from __future__ import annotations

import functools
import html

import ipywidgets as widgets
import torch

from . import derivation_plots, plots, toy, toy_experiments
from .panels import Panel, control

POWERS_OF_TWO = tuple(2 ** k for k in range(11))          # 1 ... 1024
#: A control of a derivation panel: its description 140 px wide, the whole control 480 px.
_control = functools.partial(control, label_width="140px", width="480px")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


class _DerivationPanel(Panel):
    """What the derivation panels add to :class:`~ssvae_lib.panels.Panel`: a VBox ``widget`` (controls,
    readout, image) that redraws on every control change; each redraw computes ``result``
    (:meth:`compute`), draws ``figure`` from it (:meth:`draw`) and describes it in the readout
    (:meth:`describe`)."""

    def __init__(self, controls: list, seed: int, extra: tuple = ()):
        self.seed = int(seed)
        self.result = None
        self.figure = None
        self.readout = widgets.HTML()
        self.readout.add_class("ssvae-readout")
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.image.add_class("ssvae-derivation-plot")
        self.watch(*controls)
        self.widget = widgets.VBox([widgets.VBox(controls), *extra, self.readout, self.image])

    def render(self) -> None:
        self.result = self.compute()
        if self.figure is not None:
            self.figure.clear()
        self.figure = self.draw(self.result)
        self.image.value = plots.figure_png(self.figure)
        self.readout.value = self.describe(self.result)

    # to be provided by each panel
    def compute(self):
        raise NotImplementedError

    def draw(self, result):
        raise NotImplementedError

    def describe(self, result) -> str:
        raise NotImplementedError


class ElboPanel(_DerivationPanel):
    """Notebook 01: sliders for the mean and log standard deviation of q(z|x) = N(m, diag σ²) on a
    :class:`ssvae_lib.toy.LinearGaussian` (1-d or 2-d latent). Shows q against the exact posterior
    and log p(x) = ELBO + KL(q ‖ p(z|x)) (Eq. 1); ``result`` is :func:`toy_experiments.elbo_decomposition`'s dict.
    The button sets q to the best diagonal Gaussian (:func:`toy_experiments.best_diagonal_gaussian`)."""

    def __init__(self, model: toy.LinearGaussian, x, m=None, log_s=None, seed: int = 0):
        """``m`` and ``log_s`` (default 0, i.e. q = the prior) are where the sliders start; the sliders
        hold them on their steps of 0.001."""
        if not isinstance(model, toy.LinearGaussian) or model.latent_dim not in (1, 2):
            raise ValueError("ElboPanel needs a LinearGaussian with a 1-d or 2-d latent")
        self.model = model
        self.x = torch.as_tensor(x, dtype=model.W.dtype)
        dz = model.latent_dim
        m = [0.0] * dz if m is None else [float(v) for v in m]
        log_s = [0.0] * dz if log_s is None else [float(v) for v in log_s]
        index = ["₁", "₂"] if dz > 1 else [""]
        # steps of 0.001: the best diagonal q (set_best) moved onto the grid changes no printed digit
        self.means = [_control(widgets.FloatSlider, f"mean m{index[j]}", value=m[j], min=-4.0, max=4.0, step=0.001,
                               readout_format=".3f") for j in range(dz)]
        self.log_sds = [_control(widgets.FloatSlider, f"log σ{index[j]}", value=log_s[j], min=-3.0, max=1.5,
                                 step=0.001, readout_format=".3f") for j in range(dz)]
        self.best_button = widgets.Button(description="best diagonal q", layout={"width": "auto"}, tooltip=(
            "set q to the diagonal Gaussian with the largest ELBO"))
        self.best_button.on_click(lambda _: self.set_best())
        super().__init__(self.means + self.log_sds, seed, extra=(self.best_button,))
        self.redraw()

    def q_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(m, log_s) as set by the sliders."""
        dtype = self.model.W.dtype
        return (torch.tensor([s.value for s in self.means], dtype=dtype),
                torch.tensor([s.value for s in self.log_sds], dtype=dtype))

    def set_q(self, m, log_s) -> None:
        """Move the sliders to q = N(m, diag exp(2 log_s)) and redraw once."""
        with self.hold():
            for slider, value in zip(self.means + self.log_sds, [*map(float, m), *map(float, log_s)]):
                slider.value = value
        self.redraw()

    def set_best(self) -> None:
        self.set_q(*toy_experiments.best_diagonal_gaussian(self.model, self.x))

    def compute(self) -> dict:
        return toy_experiments.elbo_decomposition(self.model, self.x, *self.q_parameters())

    def draw(self, result):
        mean, cov = self.model.posterior(self.x)
        m, log_s = self.q_parameters()
        return derivation_plots.elbo_figure(result, mean.numpy(), cov.numpy(), m.numpy(), log_s.numpy())

    def describe(self, r) -> str:
        return (f"log p(x) = {r['log_px']:.4f} = ELBO {r['elbo']:.4f} + KL(q ‖ p(z|x)) {r['gap']:.4f}; "
                f"ELBO = reconstruction {r['reconstruction']:.4f} − KL(q ‖ p(z)) {r['kl_prior']:.4f}")


class GradientVariancePanel(_DerivationPanel):
    """Notebook 01: the reparameterised (Eq. 2) against the score-function gradient of the ELBO at a
    fixed q, as the number of samples S changes. ``result`` maps each estimator of
    :data:`toy_experiments.GRADIENT_ESTIMATORS` to its estimates ``[R]`` of the chosen partial derivative, their
    Monte Carlo variance and the exact variance (single-sample variance / S)."""

    def __init__(self, model: toy.LinearGaussian, x, m, log_s, n_replicates: int = 2000, n_samples: int = 1,
                 seed: int = 0):
        self.model = model
        self.x = torch.as_tensor(x, dtype=model.W.dtype)
        self.m = torch.as_tensor(m, dtype=model.W.dtype)
        self.log_s = torch.as_tensor(log_s, dtype=model.W.dtype)
        self.n_replicates = int(n_replicates)
        dz = model.latent_dim
        self.parameter_names = [f"m{j + 1}" for j in range(dz)] + [f"log σ{j + 1}" for j in range(dz)]
        self.n_samples = _control(widgets.SelectionSlider, "samples S", options=POWERS_OF_TWO, value=n_samples)
        self.parameter = _control(widgets.Dropdown, "derivative", value=0,
                                  options=[(f"∂ELBO/∂{n}", i) for i, n in enumerate(self.parameter_names)])
        self.exact_gradient = toy_experiments.exact_elbo_gradient(model, self.x, self.m, self.log_s)
        self.exact_variance = {name: toy_experiments.exact_gradient_moments(model, self.x, self.m, self.log_s, name)[1]
                               for name in toy_experiments.GRADIENT_ESTIMATORS}
        super().__init__([self.n_samples, self.parameter], seed)
        self.redraw()

    def compute(self) -> dict:
        s, i = int(self.n_samples.value), int(self.parameter.value)
        result = {}
        for k, name in enumerate(toy_experiments.GRADIENT_ESTIMATORS):
            estimates = toy_experiments.elbo_gradient_estimates(self.model, self.x, self.m, self.log_s, s,
                                                                self.n_replicates, name,
                                                                _generator(self.seed + k))[:, i]
            result[name] = dict(estimates=estimates, variance=float(estimates.var()),
                                exact_variance=float(self.exact_variance[name][i]) / s)
        return result

    def draw(self, result):
        i = int(self.parameter.value)
        return derivation_plots.gradient_variance_figure(
            POWERS_OF_TWO, {name: float(self.exact_variance[name][i]) for name in result},
            int(self.n_samples.value), {name: r["estimates"] for name, r in result.items()},
            float(self.exact_gradient[i]), parameter=self.parameter_names[i])

    def describe(self, result) -> str:
        rows = [f"{html.escape(derivation_plots.GRADIENT_LABELS[name])}: variance {r['variance']:.4g} "
                f"(exact {r['exact_variance']:.4g})" for name, r in result.items()]
        ratio = result["score_function"]["exact_variance"] / result["reparameterised"]["exact_variance"]
        return "<br>".join(rows + [f"score-function / reparameterised variance (exact): {ratio:.3g}"])


class ImportanceSamplingPanel(_DerivationPanel):
    """Notebook 02: sliders for the number of samples K and the proposal's shift and scale (in units of
    the posterior's standard deviation); a dropdown for the estimator. ``result`` is the
    :class:`toy_experiments.ReplicateSummary` of R replicates against the exact value."""

    ESTIMATOR_CHOICES = tuple((label, name) for name, label in derivation_plots.IS_ESTIMATOR_LABELS.items())

    def __init__(self, model: toy.LinearGaussian, x, n_replicates: int = 2000, n_samples: int = 16,
                 shift: float = 0.0, scale: float = 1.0, estimator: str = "posterior_mean_snis", seed: int = 0):
        self.model = model
        self.x = torch.as_tensor(x, dtype=model.W.dtype)
        self.n_replicates = int(n_replicates)
        self.experiment = toy_experiments.PosteriorImportanceSampling(model, self.x, shift, scale)   # validates early
        self.n_samples = _control(widgets.SelectionSlider, "samples K", options=POWERS_OF_TWO, value=n_samples)
        self.shift = _control(widgets.FloatSlider, "proposal shift (sd)", value=shift, min=-3.0, max=3.0, step=0.05)
        # linear steps of 0.05, so that the scales a reader types (0.6, 0.7, 1.3) are points of the slider
        self.scale = _control(widgets.FloatSlider, "proposal scale", value=scale, min=0.3, max=3.0, step=0.05,
                              readout_format=".2f")
        self.estimator = _control(widgets.Dropdown, "estimate", options=self.ESTIMATOR_CHOICES, value=estimator)
        super().__init__([self.n_samples, self.shift, self.scale, self.estimator], seed)
        self.redraw()

    def compute(self) -> toy_experiments.ReplicateSummary:
        self.experiment = toy_experiments.PosteriorImportanceSampling(self.model, self.x, self.shift.value,
                                                                      self.scale.value)
        return toy_experiments.replicate_estimates(self.experiment, self.estimator.value,
                                                   int(self.n_samples.value), self.n_replicates,
                                                   _generator(self.seed))

    def draw(self, result):
        return derivation_plots.importance_sampling_figure(self.experiment, result)

    def describe(self, r) -> str:
        chi2 = "∞ (the weights have infinite variance)" if r.chi_square == float("inf") else f"{r.chi_square:.4g}"
        return (f"exact {r.exact:.5f}; mean of {r.estimates.numel()} estimates {r.mean:.5f}; "
                f"bias {r.bias:+.5f} ± {r.standard_error:.5f} (SE); std {r.std:.5f}; "
                f"mean ESS {r.mean_ess:.1f} of K = {r.n_samples}; χ²(p ‖ q) = {chi2}")


class SupervisedEstimatorPanel(_DerivationPanel):
    """Notebook 03: sliders for the number of samples S and for α. Shows R replicates of Eq. 20 as
    written and importance-weighted, and of the two estimates of log q(y|x), against their exact limits
    for a :class:`toy.ToyStyleFirstModel`. ``result`` holds ``estimates`` (dict of ``[R]``, see
    :func:`toy_experiments.supervised_estimates`) and ``reference``
    (:class:`toy_experiments.SupervisedEstimatorReference`).
    The draws for each S are kept, so moving α only recombines them."""

    def __init__(self, model: toy.ToyStyleFirstModel, x, y: int, n_replicates: int = 2000, n_samples: int = 1,
                 alpha: float = 1.0, seed: int = 0):
        if not isinstance(model, toy.ToyStyleFirstModel):
            raise ValueError("SupervisedEstimatorPanel needs a ToyStyleFirstModel")
        self.model, self.x, self.y = model, x, int(y)
        self.n_replicates = int(n_replicates)
        self._terms = {}
        self.reference = toy_experiments.supervised_estimator_reference(model, x, y, 0.0)     # any α: see with_alpha
        self.n_samples = _control(widgets.SelectionSlider, "samples S", options=POWERS_OF_TWO[:9], value=n_samples)
        self.alpha = _control(widgets.FloatSlider, "α (alpha)", value=alpha, min=0.0, max=100.0, step=0.5)
        super().__init__([self.n_samples, self.alpha], seed)
        self.redraw()

    def terms(self, n_samples: int):
        """The Eq. 17-20 log-densities for S = ``n_samples`` (drawn once per S with the panel's seed)."""
        if n_samples not in self._terms:
            self._terms[n_samples] = toy_experiments.draw_supervised_terms(
                self.model, self.x, self.y, n_samples, self.n_replicates,
                generator=_generator(self.seed + n_samples))
        return self._terms[n_samples]

    def compute(self) -> dict:
        s, alpha = int(self.n_samples.value), float(self.alpha.value)
        return dict(estimates=toy_experiments.supervised_estimates(self.terms(s), alpha),
                    reference=self.reference.with_alpha(alpha))

    def draw(self, result):
        return derivation_plots.supervised_estimator_figure(result["estimates"], result["reference"],
                                                            int(self.n_samples.value))

    def describe(self, result) -> str:
        ref, rows = result["reference"], []
        for name, label, target, target_name in (
                ("as_written", "Eq. 20 as written", ref.eq16, "Eq. 16"),
                ("weighted", "importance-weighted Eq. 20", ref.eq16, "Eq. 16"),
                ("eq19", "Eq. 19 (mean of log w)", ref.log_q_y, "log q(y|x)"),
                ("eq19_iw", "log of mean of w", ref.log_q_y, "log q(y|x)")):
            values = result["estimates"][name]
            rows.append(f"{label}: mean {float(values.mean()):.4f}, std {float(values.std()):.4f}, "
                        f"error against {target_name} {float(values.mean()) - target:+.4f}")
        return "<br>".join([f"exact Eq. 16 = {ref.eq16:.4f}, exact log q(y|x) = {ref.log_q_y:.4f}"] + rows)
