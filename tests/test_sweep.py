"""Sweeps: grid specs, the stacked model, batched training == sequential training, resumable results,
the command line and the sweep figures.

Tolerances: stacked and single models compute the same float32 arithmetic except that matrix products
are batched (another summation order), so single-step values agree to a few float32 roundings
(unit roundoff 6e-8; rtol 1e-5 allows ~100 of them). After training, each of the ~20 Adam steps turns
those roundings into a parameter change of at most ~lr·(relative gradient rounding), and the
evaluation sums thousands of terms, so histories and weights are compared at rtol 1e-4 (atol 1e-6 for
weights near zero): 1,000 times the expected rounding, while a wrong noise draw, label, α, γ or
batch changes these values at the 1e-2 level.
"""
import dataclasses
import json

import numpy as np
import pytest
import torch

from ssvae_lib import data as data_mod
from ssvae_lib import objectives, plots, sweep
from ssvae_lib import train as T
from ssvae_lib.__main__ import main
from ssvae_lib.models import SSVAE
from ssvae_lib.sweep import GridSpec, StackedSSVAE
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
# grids, presets, grouping, chunking
# ---------------------------------------------------------------------------------------------------
def test_grid_expands_to_the_product_of_its_axes():
    spec = GridSpec("g", alphas=(0.1, 10), n_labelled=(100, None), protocols=("thesis", "corrected"),
                    seeds=(0, 1, 2), epochs=3, dataset="digits", overrides={"hidden_dim": 16})
    configs = spec.configs()
    assert len(configs) == 2 * 2 * 2 * 3
    assert {(c.labelling, c.corruption_protocol) for c in configs} == {("thesis", "per_epoch"), ("fixed", "fixed")}
    assert {c.n_labelled for c in configs} == {100, None}
    assert all(c.hidden_dim == 16 and c.epochs == 3 and c.dataset == "digits" for c in configs)
    assert len({sweep.run_key(c) for c in configs}) == len(configs)


def test_presets_are_the_thesis_and_paper_grids():
    assert len(sweep.preset("thesis-alpha").configs()) == 8 * 4 * 10
    assert len(sweep.preset("thesis-noise").configs()) == 6 * 4 * 10
    table = sweep.preset("paper-table").configs()
    assert {c.n_labelled for c in table} == {100, 600, 1000, 3000} and len({c.seed for c in table}) == 5
    for name in ("thesis-alpha", "thesis-noise", "paper-table"):
        assert sweep.preset(name, fast=True).name == name + "-fast"
    with pytest.raises(ValueError, match="unknown preset"):
        sweep.preset("thesis-beta")


@pytest.mark.parametrize("bad, match", [
    (dict(alphas=()), "alphas is empty"), (dict(seeds=(0, 0)), "repeats"),
    (dict(overrides={"alpha": 1.0}), "grid axes"), (dict(overrides={"learning_rate": 1}), "unknown TrainConfig"),
    (dict(protocols=("daily",)), "protocol must be"), (dict(alphas=(-1.0,)), "alpha must be"),
    (dict(name="a/b"), "plain word")])
def test_grid_spec_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        GridSpec(**bad)


def test_grid_spec_from_json_and_toml(tmp_path):
    spec = GridSpec("g", alphas=(0.5, 2.0), n_labelled=(10, None), seeds=(3,), overrides={"max_train": 100})
    (tmp_path / "g.json").write_text(json.dumps(spec.to_dict()))
    assert GridSpec.from_file(tmp_path / "g.json") == spec
    (tmp_path / "g.toml").write_text('name = "g"\nalphas = [0.5, 2.0]\nn_labelled = [10, "all"]\nseeds = [3]\n'
                                     '[overrides]\nmax_train = 100\n')
    assert GridSpec.from_file(tmp_path / "g.toml") == spec
    with pytest.raises(ValueError, match="unknown keys"):
        GridSpec.from_dict({"alpha": [1.0]})


def test_parsing_helpers():
    assert sweep.parse_values("0.1, 10") == (0.1, 10.0)
    assert sweep.parse_values("100,all", int) == (100, None)
    with pytest.raises(ValueError, match="not a int"):
        sweep.parse_values("1,x", int)
    assert sweep.parse_assignments(["max_train=400", "n_labelled=all", "device=cpu"]) == \
        {"max_train": 400, "n_labelled": None, "device": "cpu"}
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        sweep.parse_assignments(["learning_rate=1"])


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


# ---------------------------------------------------------------------------------------------------
# results: resumable sweeps, the command line, figures and the table
# ---------------------------------------------------------------------------------------------------
SMALL = dict(dataset="digits", epochs=1, seeds=(0, 1), alphas=(1.0, 30.0),
             overrides=dict(hidden_dim=16, style_dim=4, n_samples=2, iwae_samples=2, iwae_examples=50,
                            max_train=300, max_test=100, batch_size=100, labelled_batch_size=20, device="cpu"))


def test_sweep_records_each_run_and_resumes(tmp_path, digits, monkeypatch):
    spec = GridSpec("small", n_labelled=(50,), **SMALL)
    calls = []
    train_runs = sweep.train_runs
    monkeypatch.setattr(sweep, "train_runs", lambda configs, **kw: calls.append(len(configs)) or
                        train_runs(configs, **kw))
    rows = sweep.run_sweep(spec, tmp_path, scores=False, progress=False, max_runs=3,
                           datasets={"digits": digits})
    assert calls == [3, 1] and len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert len(list((tmp_path / "records").glob("*.json"))) == 4
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 5 and "accuracy" in csv_lines[0]
    record = json.loads((tmp_path / "records" / f"{rows[0]['key']}.json").read_text())
    assert record["config"] == dataclasses.asdict(spec.configs()[0]) and len(record["history"]) == 1

    calls.clear()
    again = sweep.run_sweep(spec, tmp_path, scores=False, progress=False, datasets={"digits": digits})
    assert calls == [] and again == rows                              # everything was already there
    (tmp_path / "records" / f"{rows[2]['key']}.json").unlink()           # as if the run had been in flight
    sweep.run_sweep(spec, tmp_path, scores=False, progress=False, datasets={"digits": digits})
    assert calls == [1]
    assert [r["key"] for r in sweep.load_grids(tmp_path)["small"]] == [r["key"] for r in rows]


def test_command_line_sweep_and_figures(tmp_path):
    spec = GridSpec("cli", n_labelled=(50, 100), **SMALL)
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_dict()))
    results, figures = tmp_path / "results", tmp_path / "figures"
    assert main(["sweep", "--spec", str(tmp_path / "spec.json"), "--out", str(results), "--no-scores",
                 "--seeds", "0", "--dry-run"]) == 0
    assert not (results / "records").exists()
    assert main(["sweep", "--spec", str(tmp_path / "spec.json"), "--out", str(results), "--no-scores"]) == 0
    assert main(["figures", "--results", str(results), "--out", str(figures)]) == 0
    for name in ("cli_panels.png", "cli_panels.pdf", "cli_curves.png", "cli_accuracy.md", "cli_accuracy.csv"):
        assert (figures / name).stat().st_size > 0
    assert main(["sweep", "--preset", "paper-table", "--spec", "x.json"]) == 2   # a clear error, no traceback
    assert main(["figures", "--results", str(tmp_path / "empty")]) == 2


def rows_for_table():
    rows = []
    for m, accuracies in ((100, (0.9, 0.8)), (600, (0.95,))):
        for seed, acc in enumerate(accuracies):
            rows.append(dict(dataset="mnist-t10k", objective="ssvae", protocol="corrected", alpha=50.0,
                             corruption_rate=0.0, n_labelled=m, seed=seed, accuracy=acc, status="ok"))
    rows.append({**rows[0], "status": "failed", "accuracy": 0.1})      # failed runs are left out
    return rows


def test_accuracy_table_mean_and_std_over_seeds():
    long_rows, markdown = plots.accuracy_table(rows_for_table())
    # By hand: 90 % and 80 % -> mean 85.0, sample std sqrt(((5)^2 + (5)^2) / 1) = 7.07; one seed -> std 0.
    assert "| MNIST-10k | ssvae | corrected | 50 | 0 | 85.0 ± 7.1 (2) | 95.0 ± 0.0 (1) |" in markdown
    assert "| MNIST (full) | paper: SSVAE (Narayanaswamy et al. 2017) |  |  |  | 90.3 | 96.2 |" in markdown
    first = long_rows[0]
    assert first["n_seeds"] == 2 and first["accuracy_mean"] == pytest.approx(85.0)
    assert first["accuracy_std"] == pytest.approx(50 ** 0.5)


def test_sweep_panels_one_line_per_labelled_set_size():
    rows = []
    for m in (100, 1000):
        for alpha in (0.1, 10.0, 100.0):
            for seed in (0, 1):
                rows.append(dict(n_labelled=m, alpha=alpha, corruption_rate=0.0, seed=seed, status="ok",
                                 accuracy=0.5 + seed / 10, elbo=-100.0, best_single_dim_probe_above_chance=0.1))
    assert plots.sweep_axis(rows) == "alpha"
    fig = plots.sweep_panels(rows, "alpha")
    axes = fig.axes
    assert len(axes) == 6
    accuracy_axis = axes[3]                                           # bottom left
    assert len(accuracy_axis.containers) == 2                         # one error-bar line per M
    means = accuracy_axis.containers[0].lines[0].get_ydata()
    np.testing.assert_allclose(means, [0.55, 0.55, 0.55])
    assert any(t.get_text() == "not computed" for t in axes[2].texts)  # a score that is absent
    with pytest.raises(ValueError, match="x must be one of"):
        plots.sweep_panels(rows, "seed")
