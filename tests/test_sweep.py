"""Sweeps: grid specs, resumable results, the command line and the sweep figures.

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
from ssvae_lib.sweep import GridSpec
from tiny_run import tiny_config
from ssvae_lib.train import TrainConfig



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
