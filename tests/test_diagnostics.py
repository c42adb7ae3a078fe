"""The style-code indicators against codes with known answers."""
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from ssvae_lib import diagnostics
from ssvae_lib.models import MultiLabelSSVAE, SSVAE

F64 = torch.float64


def test_kl_per_dimension_is_the_closed_form_and_sums_to_the_elbo_kl_term():
    mu = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=F64)
    log_sigma = torch.tensor([[0.0, math.log(2.0)], [0.0, math.log(2.0)]], dtype=F64)
    kl = diagnostics.kl_per_dimension(mu, log_sigma)
    assert kl[0] == pytest.approx(0.5)                                  # ½ μ² with σ = 1
    assert kl[1] == pytest.approx(0.5 * (4 - 1) - math.log(2.0))        # ½(σ² − 1) − log σ with μ = 0
    g = torch.Generator().manual_seed(0)
    mu, log_sigma = torch.randn(50, 6, generator=g, dtype=F64), 0.3 * torch.randn(50, 6, generator=g, dtype=F64)
    reference = kl_divergence(Normal(mu, log_sigma.exp()), Normal(0.0, 1.0)).mean(0)     # torch's own KL
    assert torch.allclose(diagnostics.kl_per_dimension(mu, log_sigma), reference, rtol=1e-12)


def test_active_units_count_the_units_whose_mean_moves_with_the_image():
    g = torch.Generator().manual_seed(1)
    mu = torch.zeros(200, 4, dtype=F64)
    mu[:, 0] = torch.randn(200, generator=g, dtype=F64)                 # varies: active
    mu[:, 1] = 3.0                                                      # constant: inactive whatever its value
    mu[:, 2] = 0.05 * torch.randn(200, generator=g, dtype=F64)          # variance 0.0025 < 0.01: inactive
    mu[:, 3] = 0.5 * torch.randn(200, generator=g, dtype=F64)           # variance 0.25: active
    assert diagnostics.active_units(mu) == 2
    assert diagnostics.active_units(mu, threshold=0.001) == 3
    with pytest.raises(ValueError, match="N >= 2"):
        diagnostics.active_units(mu[:1])


def test_mutual_information_is_zero_for_a_code_that_ignores_the_image_and_log_n_for_one_that_names_it():
    n = 64
    same_mu, log_sigma = torch.zeros(n, 3, dtype=F64), torch.zeros(n, 3, dtype=F64)
    assert diagnostics.mutual_information(same_mu, log_sigma) == pytest.approx(0.0, abs=1e-12)
    apart = torch.zeros(n, 3, dtype=F64)
    apart[:, 0] = 100.0 * torch.arange(n, dtype=F64)                    # every image its own far-away code
    tiny = torch.full((n, 3), math.log(0.01), dtype=F64)
    assert diagnostics.mutual_information(apart, tiny) == pytest.approx(math.log(n), abs=1e-9)


def test_mutual_information_of_a_linear_gaussian_encoder():
    # x ~ N(0, 1), q(z|x) = N(a x, s²): I(x; z) = ½ log(1 + a²/s²); N images approximate p(x)
    g = torch.Generator().manual_seed(2)
    a, s, n = 2.0, 0.5, 3000
    x = torch.randn(n, 1, generator=g, dtype=F64)
    estimate = diagnostics.mutual_information(a * x, torch.full_like(x, math.log(s)), n_samples=4, generator=g)
    # 0.03: about 3 standard deviations of this estimate over seeds (0.0097 over 10 seeds)
    assert estimate == pytest.approx(0.5 * math.log(1 + a ** 2 / s ** 2), abs=0.03)


def test_diagnose_reads_the_style_posterior_of_either_order():
    torch.manual_seed(0)
    x = torch.rand(32, 64)
    for order in ("label_first", "style_first"):
        model = SSVAE(input_dim=64, hidden_dim=16, n_classes=10, style_dim=3, order=order).eval()
        # 64 draws per image: the estimate's standard deviation over seeds is about 0.008 nats here
        report = diagnostics.diagnose(model, x, n_samples=64, generator=torch.Generator().manual_seed(0))
        assert len(report["kl_per_dimension"]) == 3 and 0 <= report["active_units"] <= 3
        assert report["kl_total"] == pytest.approx(sum(report["kl_per_dimension"]))
        assert 0 <= report["mutual_information"] <= report["mutual_information_ceiling"] == pytest.approx(math.log(32))
    two_labels = MultiLabelSSVAE(input_dim=64, hidden_dim=16, label_sizes=(3, 4), style_dim=3).eval()
    assert diagnostics.diagnose(two_labels, x)["active_units"] <= 3
    with pytest.raises(ValueError, match="must both be"):
        diagnostics.kl_per_dimension(torch.zeros(3, 2), torch.zeros(3))


def test_the_callback_adds_the_indicators_to_every_epoch_and_the_figure_draws_them(digits):
    from ssvae_lib import plots, train
    from tiny_run import tiny_config
    callback = diagnostics.DiagnosticsCallback(digits.x_test[:100])
    result = train.train(tiny_config(), [callback], dataset=digits, progress=False)
    again = diagnostics.diagnose(result.model, digits.x_test[:100], generator=torch.Generator().manual_seed(0))
    assert all(set(again) - {"mutual_information_ceiling"} <= set(record) for record in result.history)
    last = result.history[-1]       # the last epoch's record describes the final model exactly
    assert last["kl_per_dimension"] == pytest.approx(again["kl_per_dimension"])
    assert last["mutual_information"] == pytest.approx(again["mutual_information"])
    fig = plots.diagnostics_figure(result.history, title="tiny")
    heat = fig.axes[0].images[0].get_array()
    assert heat.shape == (4, 2) and list(heat[:, -1]) == pytest.approx(last["kl_per_dimension"])   # units x epochs
    units = next(ax for ax in fig.axes if ax.get_title() == plots.DIAGNOSTIC_PANELS[0][1])
    assert list(units.lines[0].get_ydata()) == [h["active_units"] for h in result.history]
    with pytest.raises(ValueError, match="no diagnostics"):
        plots.diagnostics_figure([{"epoch": 1}])
