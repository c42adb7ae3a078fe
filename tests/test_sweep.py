"""Many runs at once: the stacked model, batched training == sequential training, grouping and chunking
(grids: test_grid.py; results folders and run_sweep: test_store.py).

Tolerances: stacked and single models compute the same float32 arithmetic except that matrix products
are batched (another summation order), so single-step values agree to a few float32 roundings
(unit roundoff 6e-8; rtol 1e-5 allows ~100 of them). After training, each of the ~20 Adam steps turns
those roundings into a parameter change of at most ~lr·(relative gradient rounding), and the
evaluation sums thousands of terms, so histories and weights are compared at rtol 1e-4 (atol 1e-6 for
weights near zero): 1,000 times the expected rounding, while a wrong noise draw, label, α, γ or
batch changes these values at the 1e-2 level.
"""
import dataclasses

import pytest
import torch

from ssvae_lib import data as data_mod
from ssvae_lib import objectives, sweep
from ssvae_lib import train as T
from ssvae_lib.models import SSVAE
from ssvae_lib.sweep import StackedSSVAE
from tiny_run import tiny_config
from ssvae_lib.train import TrainConfig

HISTORY_KEYS = ("train_loss", "test_accuracy", "test_elbo", "test_log_likelihood")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one intra-op thread avoids the cost of waking a thread pool for every small
    operation (4x faster on a shared 2-core machine); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


tiny = tiny_config


# ---------------------------------------------------------------------------------------------------
# the stacked model
# ---------------------------------------------------------------------------------------------------
def close(a, b, rtol=1e-5, atol=1e-5):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("order", ["label_first", "style_first"])
def test_stacked_model_equals_each_model(order):
    runs, b, C, Dz = 3, 5, 10, 4
    torch.manual_seed(0)
    models = [SSVAE(12, 8, C, Dz, order=order) for _ in range(runs)]
    stacked = StackedSSVAE(models)
    x = torch.rand(runs * b, 12)
    y = torch.randint(0, C, (runs * b,))
    z = torch.randn(2, runs * b, Dz)                                # samples first, as objectives pass it
    every_class = torch.eye(C)[:, None, None, :]                     # [C, 1, 1, C]: shared by every run
    z_per_class = torch.randn(C, 2, runs * b, Dz)
    rows = lambda r: slice(r * b, (r + 1) * b)                       # noqa: E731
    for r, m in enumerate(models):
        close(stacked.classify(x)[rows(r)], m.classify(x[rows(r)]))
        close(stacked.decode(y, z)[:, rows(r)], m.decode(y[rows(r)], z[:, rows(r)]))
        close(stacked.log_likelihood(x, every_class, z_per_class)[..., rows(r)],
              m.log_likelihood(x[rows(r)], every_class, z_per_class[..., rows(r), :]))
        if order == "label_first":
            for got, want in zip(stacked.encode(x, every_class), m.encode(x[rows(r)], every_class)):
                close(got[..., rows(r), :], want.expand(C, 1, b, Dz))
        else:
            for got, want in zip(stacked.encode_marginal(x), m.encode_marginal(x[rows(r)])):
                close(got[rows(r)], want)
            close(stacked.classify_style(x, z)[:, rows(r)], m.classify_style(x[rows(r)], z[:, rows(r)]))
    view = stacked.subset([2, 0])                                    # runs 2 and 0, in that order
    close(view.classify(x[:2 * b])[:b], models[2].classify(x[:b]))
    close(view.classify(x[:2 * b])[b:], models[0].classify(x[b:2 * b]))
    for name, value in stacked.run_state_dict(1).items():
        assert torch.equal(value, models[1].state_dict()[name])


def test_stacked_model_rejects_mixed_architectures_and_bad_batches():
    with pytest.raises(ValueError, match="architecture"):
        StackedSSVAE([SSVAE(12, 8, 10, 4), SSVAE(12, 16, 10, 4)])
    stacked = StackedSSVAE([SSVAE(12, 8, 10, 4), SSVAE(12, 8, 10, 4)])
    with pytest.raises(ValueError, match="multiple of the 2 stacked runs"):
        stacked.classify(torch.rand(5, 12))


@pytest.mark.parametrize("objective, order", [("m2", "label_first"), ("ssvae", "label_first"),
                                              ("ssvae", "style_first")])
def test_supervised_bounds_with_per_example_alpha(objective, order):
    """Eq. 8 and Eq. 20 are affine in α: per-example α gives objectives.supervised_bound at each α."""
    torch.manual_seed(1)
    model = SSVAE(12, 8, 10, 4, order=order)
    config = TrainConfig(objective=objective, order=order, n_samples=3)
    x, y = torch.rand(6, 12), torch.randint(0, 10, (6,))
    eps = torch.randn(3, 6, 4)
    alphas = torch.tensor([0.0, 0.1, 1.0, 10.0, 50.0, 100.0])
    got = sweep.supervised_bounds(model, config, x, y, alphas, eps)
    estimator = "m2" if objective == "m2" else "is"
    for i, a in enumerate(alphas.tolist()):
        want = objectives.supervised_bound(model, x, y, a, estimator=estimator, n_samples=3, eps=eps)[i]
        close(got[i], want)


# ---------------------------------------------------------------------------------------------------
# batched evaluation == train.evaluate run by run
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["label_first", "style_first"])
@pytest.mark.parametrize("shared_images", [False, True])
def test_evaluate_runs_equals_evaluate_run_by_run(order, shared_images):
    """Several evaluation batches (37 images in batches of 16, IWAE on the first 20) computed in passes of
    7 images per run: the noise must be drawn in train.evaluate's order for every run."""
    runs, n, D = 3, 37, 12
    torch.manual_seed(0)
    models = [SSVAE(D, 8, 10, 4, order=order) for _ in range(runs)]
    x = torch.rand(1 if shared_images else runs, n, D).expand(runs, -1, -1)
    y = torch.randint(0, 10, (runs, n))
    generators = [torch.Generator().manual_seed(100 + r) for r in range(runs)]
    got = sweep.evaluate_runs(StackedSSVAE(models), x, y, generators, iwae_samples=3, iwae_examples=20,
                              rows=7, batch_size=16)
    for r, model in enumerate(models):
        want = T.evaluate(model, x[r], y[r], iwae_samples=3, iwae_examples=20, batch_size=16,
                          generator=torch.Generator().manual_seed(100 + r))
        assert got[r] == pytest.approx(want, rel=1e-5), r
    assert len({g["elbo"] for g in got}) == runs        # different models and noise: different values


def test_evaluate_runs_checks_its_inputs():
    stacked = StackedSSVAE([SSVAE(12, 8, 10, 4), SSVAE(12, 8, 10, 4)])
    with pytest.raises(ValueError, match="do not match"):
        sweep.evaluate_runs(stacked, torch.rand(3, 5, 12), torch.zeros(3, 5, dtype=torch.long),
                            [torch.Generator()] * 3)


# ---------------------------------------------------------------------------------------------------
# batched training == sequential training
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("objective, order, labelling, shift", [
    ("m2", "label_first", "fixed", 0), ("ssvae", "label_first", "fixed", 0), ("ssvae", "style_first", "fixed", 0),
    ("m2", "label_first", "thesis", 0), ("ssvae", "style_first", "thesis", 0),
    ("m2", "label_first", "fixed", 1), ("ssvae", "style_first", "thesis", 2)])
def test_stacked_training_equals_sequential_training(digits, objective, order, labelling, shift):
    protocol = "per_epoch" if labelling == "thesis" else "fixed"
    beta = 2.0 if labelling == "thesis" else 1.0     # a shared, not per-run, field: β-weighted KL of z
    configs = [tiny(objective=objective, order=order, labelling=labelling, corruption_protocol=protocol,
                    beta=beta, augment_shift=shift, **kw)
               for kw in (dict(seed=0, alpha=0.5, n_labelled=300),
                          dict(seed=1, alpha=20.0, n_labelled=100, corruption_rate=0.2, gamma=0.5),
                          dict(seed=2, alpha=5.0, n_labelled=50))]
    if labelling == "thesis":  # the point of this case: steps supervised for some runs, not for others
        masks = [data_mod.thesis_labelled_batches(600, c.n_labelled, 64, c.seed) for c in configs]
        assert any(len(set(step)) > 1 for step in zip(*masks))
    outcomes = sweep.train_runs(configs, dataset=digits, scores=False, progress=False)
    for config, outcome in zip(configs, outcomes):
        reference = T.train(config, dataset=digits, progress=False)
        assert outcome.error is None and len(outcome.history) == len(reference.history) == 2
        for got, want in zip(outcome.history, reference.history):
            for key in HISTORY_KEYS:
                assert got[key] == pytest.approx(want[key], rel=1e-4), (config.seed, key)
        for name, value in reference.model.state_dict().items():
            torch.testing.assert_close(outcome.model.state_dict()[name], value, rtol=1e-4, atol=1e-6)


def test_a_diverging_run_stops_alone(digits, monkeypatch):
    """A run whose loss turns non-finite is reported and stopped; the runs beside it are unaffected."""
    build = T.build_model

    def poisoned(config, input_dim, n_classes):
        model = build(config, input_dim, n_classes)
        if config.seed == 1:
            with torch.no_grad():
                model.decoder_out.bias.fill_(float("nan"))
        return model

    configs = [tiny(seed=0, epochs=1), tiny(seed=1, epochs=1)]
    alone = sweep.train_runs(configs[:1], dataset=digits, scores=False, progress=False)[0]
    monkeypatch.setattr(sweep.train_mod, "build_model", poisoned)
    good, bad = sweep.train_runs(configs, dataset=digits, scores=False, progress=False)
    assert bad.error is not None and "non-finite loss at epoch 1, step 1" in bad.error and bad.history == []
    assert good.error is None
    for key in HISTORY_KEYS:
        assert good.history[0][key] == pytest.approx(alone.history[0][key], rel=1e-4)


def test_train_runs_refuses_runs_that_cannot_share_a_model(digits):
    with pytest.raises(ValueError, match="cannot share a stacked model"):
        sweep.train_runs([tiny(), tiny(hidden_dim=16)], dataset=digits, progress=False)


def test_leakage_scores_of_the_posterior_mean_are_recorded(digits, monkeypatch):
    seen = {}

    def fake(z, y):
        seen["z"], seen["y"] = z, y
        return {"fake_score": 0.25}

    monkeypatch.setattr(sweep.metrics, "leakage_scores", fake)
    config = tiny(epochs=1)
    outcome = sweep.train_runs([config], dataset=digits, progress=False)[0]
    assert outcome.scores == {"fake_score": 0.25}
    x_test = digits.x_test[:config.max_test]
    torch.testing.assert_close(seen["z"], outcome.model.infer_style(x_test))
    assert torch.equal(seen["y"], digits.y_test[:config.max_test])
    assert sweep.train_runs([config], dataset=digits, scores=False, progress=False)[0].scores is None


# ---------------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------------
# grouping, chunking
# ---------------------------------------------------------------------------------------------------
def test_runs_are_grouped_by_what_they_share():
    configs = [tiny(seed=0), tiny(seed=1, alpha=3.0, corruption_rate=0.1, n_labelled=100), tiny(hidden_dim=16),
               tiny(n_labelled=10)]                                  # 10 labels: smaller labelled batches
    groups = sweep.plan(configs)
    assert [len(g) for g in groups] == [2, 1, 1]


def test_chunk_size_follows_the_memory_budget(monkeypatch):
    config = TrainConfig()
    per_run = sweep.bytes_per_run(config, 784, 10)
    assert sweep.runs_per_chunk(config, 784, 10, "cpu") == min(sweep.CPU_MAX_RUNS, sweep.CPU_MEMORY_BUDGET // per_run)
    monkeypatch.setattr(sweep, "CPU_MEMORY_BUDGET", 3 * per_run + 1)
    monkeypatch.setattr(sweep, "CPU_MAX_RUNS", 100)
    assert sweep.runs_per_chunk(config, 784, 10, "cpu") == 3
    assert sweep.runs_per_chunk(config, 784, 10, "cpu", max_runs=2) == 2
    monkeypatch.setattr(sweep, "CPU_MAX_RUNS", 2)
    assert sweep.runs_per_chunk(config, 784, 10, "cpu") == 2
    assert sweep.runs_per_chunk(config, 784, 10, "cpu", max_runs=5) == 3     # the budget still holds
    monkeypatch.setattr(sweep, "CPU_MEMORY_BUDGET", 1)
    assert sweep.runs_per_chunk(config, 784, 10, "cpu") == 1
    enumerated = sweep.bytes_per_run(dataclasses.replace(config, objective="m2"), 784, 10)
    assert enumerated > sweep.bytes_per_run(dataclasses.replace(config, objective="ssvae"), 784, 10)
