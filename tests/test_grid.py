"""Grids of runs (axes, presets, grid files) and the one parser of command-line values (FIELD=VALUE)."""
import json
from pathlib import Path

import pytest

from ssvae_lib import grid, store
from ssvae_lib.grid import GridSpec


def test_grid_expands_to_the_product_of_its_axes():
    spec = GridSpec("g", alphas=(0.1, 10), n_labelled=(100, None), protocols=("thesis", "corrected"),
                    seeds=(0, 1, 2), epochs=3, dataset="digits", overrides={"hidden_dim": 16})
    configs = spec.configs()
    assert len(configs) == 2 * 2 * 2 * 3
    assert {(c.labelling, c.corruption_protocol) for c in configs} == {("thesis", "per_epoch"), ("fixed", "fixed")}
    assert {c.n_labelled for c in configs} == {100, None}
    assert all(c.hidden_dim == 16 and c.epochs == 3 and c.dataset == "digits" for c in configs)
    assert len({store.run_key(c) for c in configs}) == len(configs)


def test_presets_are_the_thesis_and_paper_grids():
    assert len(grid.preset("thesis-alpha").configs()) == 8 * 4 * 10
    assert len(grid.preset("thesis-noise").configs()) == 6 * 4 * 10
    table = grid.preset("paper-table").configs()
    assert {c.n_labelled for c in table} == {100, 600, 1000, 3000} and len({c.seed for c in table}) == 5
    for name in ("thesis-alpha", "thesis-noise", "paper-table"):
        assert grid.preset(name, fast=True).name == name + "-fast"
    with pytest.raises(ValueError, match="unknown preset"):
        grid.preset("thesis-beta")


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


# ---------------------------------------------------------------------------------------------------
# command-line text -> typed TrainConfig values
# ---------------------------------------------------------------------------------------------------
def test_parse_values_reads_comma_separated_axes():
    assert grid.parse_values("0.1, 10") == (0.1, 10.0)
    assert grid.parse_values("100,all", int) == (100, None)
    with pytest.raises(ValueError, match="not a int"):
        grid.parse_values("1,x", int)


def test_parse_assignments_types_each_field_from_its_annotation():
    assert grid.parse_assignments(["data_root=/some/path", "max_train=none", "alpha=1e-3", "n_labelled=all",
                                   "hidden-dim=64", "device=cpu", "epochs=3"]) == \
        {"data_root": "/some/path", "max_train": None, "alpha": 1e-3, "n_labelled": None, "hidden_dim": 64,
         "device": "cpu", "epochs": 3}
    assert isinstance(grid.parse_assignments(["alpha=2"])["alpha"], float)


@pytest.mark.parametrize("item, match", [
    ("learning_rate=1", "unknown TrainConfig field 'learning_rate'"),
    ("max_train=lots", r"max_train takes int or 'none', got 'lots'"),
    ("epochs=none", r"epochs takes int, got 'none'"),
    ("epochs=2.5", r"epochs takes int, got '2.5'"),
    ("alpha=high", r"alpha takes float, got 'high'"),
    ("alpha", "FIELD=VALUE")])
def test_parse_assignments_names_the_field_and_its_type(item, match):
    with pytest.raises(ValueError, match=match):
        grid.parse_assignments([item])


def test_the_command_line_and_the_benchmark_use_the_one_parser(tmp_path, capsys):
    from ssvae_lib.__main__ import build_parser, main
    args = build_parser().parse_args(["train", "--data-root", "/some/path", "--max-train", "none", "--alpha", "1e-3"])
    assert (args.data_root, args.max_train, args.alpha) == ("/some/path", None, 1e-3)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--epochs", "many"])
    assert "epochs takes int, got 'many'" in capsys.readouterr().err
    assert main(["sweep", "--preset", "thesis-alpha-fast", "--set", "hidden_dim=x", "--out", str(tmp_path)]) == 2
    assert "--set: hidden_dim takes int, got 'x'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    text = (Path(__file__).parents[1] / "benchmarks" / "accuracy.py").read_text()
    assert "from ssvae_lib.grid import parse_assignments" in text


def test_parse_value_reads_booleans(monkeypatch):
    monkeypatch.setattr(grid, "field_type", lambda name: (bool, False))     # TrainConfig has none yet
    assert grid.parse_value("switch", "true") is True and grid.parse_value("switch", "0") is False
    with pytest.raises(ValueError, match="switch takes bool, got 'maybe'"):
        grid.parse_value("switch", "maybe")
