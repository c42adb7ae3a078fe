"""The engine: R runs of the one model vectorised with torch.func equal each model alone; batched
evaluation equals evaluation run by run; training R runs together equals training each alone; the
noise order is the one the objectives draw; a diverging run stops alone; chunking.

Tolerances: vectorised and single models compute the same float32 arithmetic except that matrix
products are batched (another summation order), so single-step values agree to a few float32 roundings
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
from ssvae_lib import engine, objectives
from ssvae_lib import train as T
from ssvae_lib.engine import Runs
from ssvae_lib.models import SSVAE
from ssvae_lib.train import TrainConfig
from tiny_run import tiny_config as tiny

HISTORY_KEYS = ("train_loss", "accuracy", "elbo", "log_likelihood")


pytestmark = pytest.mark.usefixtures("one_thread")


def close(a, b, rtol=1e-5, atol=1e-5):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------------
# R runs of the one model
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["label_first", "style_first"])
def test_vectorised_runs_equal_each_model(order):
    n_runs, b, C, Dz = 3, 5, 10, 4
    torch.manual_seed(0)
    models = [SSVAE(12, 8, C, Dz, order=order) for _ in range(n_runs)]
    runs = Runs(models)
    x, y = torch.rand(n_runs, b, 12), torch.eye(C)[torch.randint(0, C, (n_runs, b))]   # one-hot labels
    z = torch.randn(n_runs, 2, b, Dz)                                # samples first, as objectives pass it
    every_class = torch.eye(C)[:, None, None, :].expand(n_runs, C, 1, 1, C)
    z_per_class = torch.randn(n_runs, C, 2, b, Dz)
    inputs = dict(x=x, y=y, z=z, every_class=every_class, z_per_class=z_per_class)
    got = runs.map(lambda m, i: m.classify(i["x"]), range(n_runs), inputs)
    decoded = runs.map(lambda m, i: m.decode(i["y"], i["z"]), range(n_runs), inputs)
    likelihood = runs.map(lambda m, i: m.log_likelihood(i["x"], i["every_class"], i["z_per_class"]),
                          range(n_runs), inputs)
    for r, m in enumerate(models):
        close(got[r], m.classify(x[r]))
        close(decoded[r], m.decode(y[r], z[r]))
        close(likelihood[r], m.log_likelihood(x[r], every_class[r], z_per_class[r]))
    picked = runs.map(lambda m, i: m.classify(i["x"]), [2, 0], {"x": x[[2, 0]]})   # runs 2 and 0, in that order
    close(picked[0], models[2].classify(x[2]))
    close(picked[1], models[0].classify(x[0]))
    for name, value in runs.model(1).state_dict().items():
        assert torch.equal(value, models[1].state_dict()[name])


def test_runs_reject_mixed_architectures():
    with pytest.raises(ValueError, match="architecture"):
        Runs([SSVAE(12, 8, 10, 4), SSVAE(12, 16, 10, 4)])
    with pytest.raises(ValueError, match="at least one"):
        Runs([])


@pytest.mark.parametrize("objective, order", [("m2", "label_first"), ("ssvae", "label_first"),
                                              ("ssvae", "style_first")])
def test_step_terms_with_per_run_alpha_and_gamma(objective, order):
    """Each run's α and γ reach its own supervised term: vectorised terms equal the objectives' bounds."""
    torch.manual_seed(1)
    models = [SSVAE(12, 8, 10, 4, order=order) for _ in range(3)]
    config = TrainConfig(objective=objective, order=order, n_samples=3, batch_size=6)
    x, y, eps = torch.rand(3, 6, 12), torch.randint(0, 10, (3, 6)), torch.randn(3, 3, 6, 4)
    alpha, gamma = torch.tensor([0.1, 10.0, 50.0]), torch.tensor([1.0, 0.5, 0.25])
    got = Runs(models).map(lambda m, i: engine.step_terms(m, config, i), range(3),
                           dict(x_l=x, y_l=y, l_eps=eps, alpha=alpha, gamma=gamma))
    estimator = "m2" if objective == "m2" else "is"
    for r, m in enumerate(models):
        bound = objectives.supervised_bound(m, x[r], y[r], float(alpha[r]), estimator=estimator, n_samples=3,
                                            eps=eps[r])
        close(got[r], torch.stack([torch.tensor(0.0), -gamma[r] * bound.sum() / 6]))


@pytest.mark.parametrize("objective, order", [("m2", "label_first"), ("ssvae", "label_first"),
                                              ("ssvae", "style_first")])
def test_step_noise_is_drawn_in_the_order_the_objectives_draw_it(objective, order):
    """draw_step_noise is the one definition of the noise order: a step with noise drawn inside the
    objectives from a generator equals the same step with that noise drawn up front."""
    torch.manual_seed(2)
    model = SSVAE(12, 8, 10, 4, order=order)
    config = TrainConfig(objective=objective, order=order, n_samples=3, batch_size=5)
    x_u, x_l, y_l = torch.rand(5, 12), torch.rand(4, 12), torch.randint(0, 10, (4,))
    inside = T.bounds(model, config, x_u, None, generator=torch.Generator().manual_seed(7))
    inside_l = T.bounds(model, config, x_l, y_l, generator=torch.Generator().manual_seed(8))
    noise = engine.draw_step_noise(config, model, 5, None, torch.Generator().manual_seed(7))
    noise_l = engine.draw_step_noise(config, model, None, 4, torch.Generator().manual_seed(8))
    close(T.bounds(model, config, x_u, None, noise=noise), inside, rtol=0, atol=0)
    close(T.bounds(model, config, x_l, y_l, noise=noise_l), inside_l, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------
# batched evaluation == evaluation run by run
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["label_first", "style_first"])
def test_evaluate_runs_equals_evaluate_run_by_run(order):
    """Several evaluation batches (37 images in batches of 16, IWAE on the first 20) computed in passes of
    7 images per run: the noise must be drawn in the same order for every run."""
    n_runs, n, D = 3, 37, 12
    torch.manual_seed(0)
    models = [SSVAE(D, 8, 10, 4, order=order) for _ in range(n_runs)]
    x, y = torch.rand(n_runs, n, D), torch.randint(0, 10, (n_runs, n))
    generators = [torch.Generator().manual_seed(100 + r) for r in range(n_runs)]
    got = engine.evaluate_runs(Runs(models), x, y, generators, iwae_samples=3, iwae_examples=20, rows=7,
                               batch_size=16)
    for r, model in enumerate(models):
        want = T.evaluate(model, x[r], y[r], iwae_samples=3, iwae_examples=20, batch_size=16,
                          generator=torch.Generator().manual_seed(100 + r))
        assert got[r] == pytest.approx(want, rel=1e-5), r
    assert len({g["elbo"] for g in got}) == n_runs        # different models and noise: different values


def test_evaluate_runs_checks_its_inputs():
    runs = Runs([SSVAE(12, 8, 10, 4), SSVAE(12, 8, 10, 4)])
    with pytest.raises(ValueError, match="do not match"):
        engine.evaluate_runs(runs, torch.rand(3, 5, 12), torch.zeros(3, 5, dtype=torch.long),
                             [torch.Generator()] * 3)


# ---------------------------------------------------------------------------------------------------
# training R runs together == training each alone
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("objective, order, labelling, shift, binarize", [
    ("m2", "label_first", "fixed", 0, False), ("ssvae", "label_first", "fixed", 0, False),
    ("ssvae", "style_first", "fixed", 0, False), ("m2", "label_first", "thesis", 0, False),
    ("ssvae", "style_first", "thesis", 0, False), ("m2", "label_first", "fixed", 1, False),
    ("ssvae", "style_first", "thesis", 2, False), ("m2", "label_first", "fixed", 1, True),
    ("ssvae", "style_first", "thesis", 0, True)])
def test_runs_trained_together_equal_runs_trained_alone(digits, objective, order, labelling, shift, binarize):
    protocol = "per_epoch" if labelling == "thesis" else "fixed"
    beta = 2.0 if labelling == "thesis" else 1.0     # a shared, not per-run, field: β-weighted KL of z
    configs = [tiny(objective=objective, order=order, labelling=labelling, corruption_protocol=protocol,
                    beta=beta, augment_shift=shift, binarize=binarize, **kw)
               for kw in (dict(seed=0, alpha=0.5, n_labelled=300),
                          dict(seed=1, alpha=20.0, n_labelled=100, corruption_rate=0.2, gamma=0.5),
                          dict(seed=2, alpha=5.0, n_labelled=50))]
    if labelling == "thesis":  # the point of this case: steps supervised for some runs, not for others
        masks = [data_mod.thesis_labelled_batches(600, c.n_labelled, 64, c.seed) for c in configs]
        assert any(len(set(step)) > 1 for step in zip(*masks))
    outcomes = engine.train_runs(configs, dataset=digits, scores=False, progress=False)
    for config, outcome in zip(configs, outcomes):
        reference = T.train(config, dataset=digits, progress=False)
        assert outcome.error is None and len(outcome.history) == len(reference.history) == 2
        for got, want in zip(outcome.history, reference.history):
            assert got["split"] == want["split"] == "test"
            for key in HISTORY_KEYS:
                assert got[key] == pytest.approx(want[key], rel=1e-4), (config.seed, key)
        for name, value in reference.model.state_dict().items():
            torch.testing.assert_close(outcome.model.state_dict()[name], value, rtol=1e-4, atol=1e-6)


def test_binarised_runs_train_on_fresh_draws_and_are_scored_on_one_fixed_binarisation(digits):
    grey = T.train(tiny(epochs=1), dataset=digits, progress=False)
    run = T.train(tiny(epochs=1, binarize=True), dataset=digits, progress=False)
    assert run.history[0]["train_loss"] != grey.history[0]["train_loss"]   # trained on other pixels
    fixed = data_mod.binarized(digits.x_test)[:200]           # tiny: the first 200 test images
    assert set(fixed.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(fixed, data_mod.binarized(digits.x_test)[:200])   # the same draw every time
    again = T.evaluate(run.model, fixed, digits.y_test[:200], iwae_samples=4, iwae_examples=60,
                       generator=torch.Generator().manual_seed(run.config.seed + engine.EVAL_SEED_OFFSET))
    for key in ("accuracy", "elbo", "log_likelihood"):
        assert run.history[0][key] == pytest.approx(again[key], rel=1e-5), key
    assert "not a log-likelihood" in T.scored_as(grey.config)
    assert T.scored_as(run.config).startswith("log-likelihood (a log-probability) of binarised pixels")


def test_the_supervised_estimator_option_selects_eq20_or_its_importance_weighted_fix(digits):
    config = tiny(objective="ssvae", order="style_first", supervised_estimator="importance_weighted")
    torch.manual_seed(0)
    model = T.build_model(config, 64, 10)
    x, y = digits.x_train[:8], digits.y_train[:8]
    seeded = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    got = engine.bounds(model, config, x, y, generator=seeded())
    want = objectives.supervised_bound(model, x, y, config.alpha, estimator="is", n_samples=config.n_samples,
                                       weighted=True, generator=seeded())
    torch.testing.assert_close(got, want)
    as_written = engine.bounds(model, dataclasses.replace(config, supervised_estimator="as_written"), x, y,
                               generator=seeded())
    torch.testing.assert_close(as_written, objectives.supervised_bound(
        model, x, y, config.alpha, estimator="is", n_samples=config.n_samples, generator=seeded()))
    assert (as_written < got).all()     # Eq. 20 as written: the mean of log w, below the log of the mean


def poison(monkeypatch, seeds):
    """Runs with these seeds start with NaN decoder biases: their loss is non-finite at the first step."""
    build = engine.build_model

    def poisoned(config, input_dim, n_classes):
        model = build(config, input_dim, n_classes)
        if config.seed in seeds:
            with torch.no_grad():
                model.decoder_out.bias.fill_(float("nan"))
        return model

    monkeypatch.setattr(engine, "build_model", poisoned)


def test_a_diverging_run_stops_alone(digits, monkeypatch):
    """A run whose loss turns non-finite is reported and stopped; the runs beside it are unaffected."""
    configs = [tiny(seed=0, epochs=1), tiny(seed=1, epochs=1)]
    alone = engine.train_runs(configs[:1], dataset=digits, scores=False, progress=False)[0]
    poison(monkeypatch, {1})
    good, bad = engine.train_runs(configs, dataset=digits, scores=False, progress=False)
    assert bad.error is not None and "non-finite loss at epoch 1, step 1" in bad.error and bad.history == []
    assert good.error is None
    for key in HISTORY_KEYS:
        assert good.history[0][key] == pytest.approx(alone.history[0][key], rel=1e-4)


def test_when_every_run_diverges_each_is_reported(digits, monkeypatch):
    poison(monkeypatch, {0, 1})
    outcomes = engine.train_runs([tiny(seed=0), tiny(seed=1)], dataset=digits, progress=False)
    assert [o.error is not None and "step 1" in o.error for o in outcomes] == [True, True]
    assert all(o.history == [] and o.scores is None for o in outcomes)


def test_train_keeps_the_run_when_the_loss_turns_non_finite(digits):
    """The error names the epoch, step and term, and keeps the model and the complete epochs."""
    class Poison(T.Callback):
        every_n_steps = 1

        def on_step(self, state):
            if state.step == 13:                       # in epoch 2 (10 steps per epoch)
                with torch.no_grad():
                    state.model.decoder_out.bias.fill_(float("nan"))

    with pytest.raises(T.DivergenceError, match="epoch 2, step 14: term.s. unsupervised, supervised") as caught:
        T.train(tiny(epochs=3), [Poison()], dataset=digits, progress=False)
    result = caught.value.result
    assert isinstance(result.model, SSVAE) and [r["epoch"] for r in result.history] == [1]


def test_runs_that_cannot_share_a_stack_are_refused(digits):
    with pytest.raises(ValueError, match="cannot be trained together"):
        engine.train_runs([tiny(), tiny(hidden_dim=16)], dataset=digits, progress=False)
    with pytest.raises(ValueError, match="callbacks watch a single run"):
        engine.train_runs([tiny(seed=0), tiny(seed=1)], dataset=digits, progress=False, callbacks=[T.Callback()])


def test_leakage_scores_of_the_posterior_mean_are_recorded(digits, monkeypatch):
    seen = {}

    def fake(z, y):
        seen["z"], seen["y"] = z, y
        return {"fake_score": 0.25}

    monkeypatch.setattr(engine.metrics, "leakage_scores", fake)
    config = tiny(epochs=1)
    outcome = engine.train_runs([config], dataset=digits, progress=False)[0]
    assert outcome.scores == {"fake_score": 0.25}
    x_test = digits.x_test[:config.max_test]
    torch.testing.assert_close(seen["z"], outcome.model.infer_style(x_test))
    assert torch.equal(seen["y"], digits.y_test[:config.max_test])
    assert engine.train_runs([config], dataset=digits, scores=False, progress=False)[0].scores is None


def test_old_history_records_are_upgraded():
    old = {"epoch": 3, "train_loss": 90.0, "validation_accuracy": 0.9, "validation_elbo": -100.0}
    assert engine.upgrade_record(old) == {"split": "validation", "epoch": 3, "train_loss": 90.0,
                                          "accuracy": 0.9, "elbo": -100.0}
    assert engine.upgrade_record({"epoch": 1, "test_accuracy": 0.5})["split"] == "test"
    new = {"epoch": 1, "split": "test", "accuracy": 0.5}
    assert engine.upgrade_record(new) is new


# ---------------------------------------------------------------------------------------------------
# grouping and chunking
# ---------------------------------------------------------------------------------------------------
def test_runs_are_grouped_by_what_they_share():
    configs = [tiny(seed=0), tiny(seed=1, alpha=3.0, corruption_rate=0.1, n_labelled=100), tiny(hidden_dim=16),
               tiny(n_labelled=10)]                                  # 10 labels: smaller labelled batches
    groups = engine.plan(configs)
    assert [len(g) for g in groups] == [2, 1, 1]


def test_chunk_size_follows_the_memory_budget(monkeypatch):
    config = TrainConfig()
    per_run = engine.bytes_per_run(config, 784, 10)
    assert engine.runs_per_chunk(config, 784, 10, "cpu") == min(engine.CPU_MAX_RUNS,
                                                                 engine.CPU_MEMORY_BUDGET // per_run)
    monkeypatch.setattr(engine, "CPU_MEMORY_BUDGET", 3 * per_run + 1)
    monkeypatch.setattr(engine, "CPU_MAX_RUNS", 100)
    assert engine.runs_per_chunk(config, 784, 10, "cpu") == 3
    assert engine.runs_per_chunk(config, 784, 10, "cpu", max_runs=2) == 2
    monkeypatch.setattr(engine, "CPU_MAX_RUNS", 2)
    assert engine.runs_per_chunk(config, 784, 10, "cpu") == 2
    assert engine.runs_per_chunk(config, 784, 10, "cpu", max_runs=5) == 3     # the budget still holds
    monkeypatch.setattr(engine, "CPU_MEMORY_BUDGET", 1)
    assert engine.runs_per_chunk(config, 784, 10, "cpu") == 1
    enumerated = engine.bytes_per_run(dataclasses.replace(config, objective="m2"), 784, 10)
    assert enumerated > engine.bytes_per_run(dataclasses.replace(config, objective="ssvae"), 784, 10)


def test_fit_is_seeded_and_stops_on_a_non_finite_loss():
    def run(seed, poison_epoch=None):
        torch.manual_seed(seed)
        model = torch.nn.Linear(3, 1)
        x = torch.randn(40, 3, generator=torch.Generator().manual_seed(1))

        def loss(rows, generator):
            value = (model(x[rows]) + torch.randn(len(rows), 1, generator=generator)).pow(2).mean()
            return value * float("nan") if poison_epoch and len(history_seen) >= poison_epoch else value

        history_seen = []
        return engine.fit(model, loss, 40, epochs=3, batch_size=16, lr=0.01, seed=seed,
                          evaluate=lambda g: history_seen.append(1) or {"w": float(model.weight.detach().sum())})

    first, again, other = run(0), run(0), run(1)
    assert [h["train_loss"] for h in first] == [h["train_loss"] for h in again]
    assert [h["epoch"] for h in first] == [1, 2, 3] and first[-1]["w"] == again[-1]["w"]
    assert first[0]["train_loss"] != other[0]["train_loss"]
    with pytest.raises(engine.DivergenceError, match="non-finite loss at epoch 2"):
        run(0, poison_epoch=1)
