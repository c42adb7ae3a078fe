"""Results folders: run identity, records and manifests, migration of the first format, failed and
interrupted runs, --dry-run, the sweep and figures commands; the sweep figures and the accuracy table."""
import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ssvae_lib import engine, plots, settings, store
from ssvae_lib.__main__ import build_parser, main
from ssvae_lib.grid import GridSpec
from ssvae_lib.train import TrainConfig

COMMITTED = Path(__file__).parents[1] / "figures" / "sweep"
# The commands of benchmarks/README.md that produced the committed results, and their runs.
README_SWEEPS = (
    "sweep --preset thesis-alpha --name thesis-alpha-mnist10k --protocols thesis,corrected --n-labelled 100,1000 "
    "--seeds 0,1,2 --epochs 10 --dataset mnist-t10k --set iwae_examples=200",
    "sweep --preset paper-table --objectives ssvae --dataset mnist-t10k --name paper-table-mnist10k "
    "--set iwae_examples=200",
    "sweep --preset thesis-alpha --name thesis-alpha-mnist10k-5seeds --protocols thesis,corrected "
    "--n-labelled 100,1000 --seeds 0,1,2,3,4 --epochs 20 --dataset mnist-t10k --set iwae_examples=200",
    "sweep --preset thesis-noise --name thesis-noise-mnist10k-5seeds --protocols thesis,corrected "
    "--n-labelled 100,1000 --seeds 0,1,2,3,4 --epochs 20 --dataset mnist-t10k --set iwae_examples=200")
README_SWEEP_RUNS = {"thesis-alpha-mnist10k": 96, "paper-table-mnist10k": 20, "thesis-alpha-mnist10k-5seeds": 160,
                     "thesis-noise-mnist10k-5seeds": 120}
SMALL = dict(dataset="digits", epochs=1, seeds=(0, 1), alphas=(1.0, 30.0),
             overrides=dict(hidden_dim=16, style_dim=4, n_samples=2, iwae_samples=2, iwae_examples=50,
                            max_train=300, max_test=100, batch_size=100, labelled_batch_size=20, device="cpu"))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fake_training(monkeypatch):
    """engine.train_runs replaced by an instant stand-in (history in the split-field form); returns the
    list of chunks it was called with. A config with ``alpha == 13`` diverges after its first epoch."""
    calls = []

    def train_runs(configs, *, dataset=None, scores=True, progress=True):
        calls.append([c.seed for c in configs])
        outcomes = []
        for c in configs:
            history = [{"epoch": e, "step": 3 * e, "train_loss": 10.0 / e, "split": "test",
                        "accuracy": 0.5 + c.alpha / 100 + c.seed / 50, "elbo": -100.0 + e,
                        "log_likelihood": -90.0 + e} for e in range(1, c.epochs + 1)]
            error = "non-finite loss at epoch 2, step 4: nan; run stopped" if c.alpha == 13 else None
            outcomes.append(engine.RunOutcome(c, history[:1] if error else history, None,
                                             {"whole_z_probe_accuracy": 0.3} if scores and not error else None,
                                             error, "digits", "fake"))
        return outcomes

    monkeypatch.setattr(engine, "train_runs", train_runs)
    return calls


def folder_state(folder: Path) -> dict:
    """Every file under ``folder`` with its content."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def manifest_keys(folder: Path, name: str) -> list[str]:
    return json.loads((folder / "grids" / f"{name}.json").read_text())["keys"]


# ---------------------------------------------------------------------------------------------------
# run identity
# ---------------------------------------------------------------------------------------------------
def test_identity_baseline_is_trainconfigs_defaults_field_by_field():
    """A changed TrainConfig default would silently re-key (or, worse, mis-key) runs: caught here. A new
    field must be entered in the baseline with the value that keeps the old behaviour."""
    defaults = TrainConfig().to_dict()
    for name in defaults:
        assert (name in store.IDENTITY_BASELINE) != (name in store.NOT_IDENTITY), name
    for name, value in store.IDENTITY_BASELINE.items():
        assert name in defaults and defaults[name] == value, name


def test_run_key_depends_only_on_what_changes_the_result(monkeypatch):
    config = TrainConfig(alpha=3.0, seed=2)
    key = store.run_key(config)
    assert store.run_key(dataclasses.replace(config, device="cpu")) == key
    assert store.run_key({**config.to_dict(), "device": "cuda:1"}) == key
    assert store.run_key(dataclasses.replace(config, alpha=3.5)) != key
    assert store.run_key(dataclasses.replace(config, alpha=3)) == key              # 3 and 3.0: one run
    assert store.run_key({"alpha": 3.0, "seed": 2}) == key                          # absent = baseline
    # A field added later at its baseline value leaves every key as it was; another value re-keys.
    monkeypatch.setattr(store, "IDENTITY_BASELINE", {**store.IDENTITY_BASELINE, "new_switch": False})
    assert store.run_key({**config.to_dict(), "new_switch": False}) == key
    assert store.run_key({**config.to_dict(), "new_switch": True}) != key
    monkeypatch.setattr(store, "IDENTITY", "ssvae_lib.run/3")                       # versioned
    assert store.run_key(config) != key


# ---------------------------------------------------------------------------------------------------
# records, manifests, resuming (real training)
# ---------------------------------------------------------------------------------------------------
def test_sweep_records_each_run_and_resumes(tmp_path, digits, monkeypatch):
    spec = GridSpec("small", n_labelled=(50,), **SMALL)
    calls = []
    train_runs = engine.train_runs
    monkeypatch.setattr(engine, "train_runs", lambda configs, **kw: calls.append(len(configs)) or
                        train_runs(configs, **kw))
    rows = store.run_sweep(spec, tmp_path, scores=False, progress=False, max_runs=3,
                           datasets={"digits": digits})
    assert calls == [3, 1] and len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert len(list((tmp_path / "records").glob("*.json"))) == 4
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 5 and "accuracy" in csv_lines[0]
    record = json.loads((tmp_path / "records" / f"{rows[0]['key']}.json").read_text())
    assert record["config"] == dataclasses.asdict(spec.configs()[0]) and len(record["history"]) == 1
    assert record["format"] == store.RECORD_FORMAT and record["key"] == store.run_key(spec.configs()[0])

    calls.clear()
    again = store.run_sweep(spec, tmp_path, scores=False, progress=False, datasets={"digits": digits})
    assert calls == [] and again == rows                              # everything was already there
    (tmp_path / "records" / f"{rows[2]['key']}.json").unlink()           # as if the run had been in flight
    store.run_sweep(spec, tmp_path, scores=False, progress=False, datasets={"digits": digits})
    assert calls == [1]
    assert [r["key"] for r in store.load_grids(tmp_path)["small"]] == [r["key"] for r in rows]
    assert not list(tmp_path.rglob(".*.tmp"))                          # atomic writes leave no temporaries


def test_command_line_sweep_and_figures(tmp_path, capsys):
    spec = GridSpec("cli", n_labelled=(50, 100), **SMALL)
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_dict()))
    results, figures = tmp_path / "results", tmp_path / "figures"
    sweep_cmd = ["sweep", "--spec", str(tmp_path / "spec.json"), "--out", str(results), "--no-scores"]
    assert main(sweep_cmd + ["--seeds", "0", "--dry-run"]) == 0
    assert "4 runs: 0 done, 0 failed, 4 to train in 1 chunk(s)" in capsys.readouterr().out
    assert not results.exists()
    assert main(sweep_cmd) == 0
    assert main(["figures", "--results", str(results), "--out", str(figures)]) == 0
    for name in ("cli_panels.png", "cli_panels.pdf", "cli_curves.png", "cli_accuracy.md", "cli_accuracy.csv"):
        assert (figures / name).stat().st_size > 0
    assert main(["sweep", "--preset", "paper-table", "--spec", "x.json"]) == 2   # a clear error, no traceback
    assert main(["figures", "--results", str(tmp_path / "empty")]) == 1        # missing results: exit 1


def test_default_results_folders():
    assert build_parser().parse_args(["sweep", "--preset", "thesis-alpha"]).out == "runs/sweep"
    assert build_parser().parse_args(["figures"]).results is None       # the committed figures/sweep


# ---------------------------------------------------------------------------------------------------
# the stored layout: manifests only grow, failures touch nothing, interrupted sweeps, failed runs
# ---------------------------------------------------------------------------------------------------
def test_a_failing_command_touches_nothing(tmp_path, fake_training):
    spec = GridSpec("g", **SMALL)
    store.run_sweep(spec, tmp_path, progress=False)
    before = folder_state(tmp_path)
    for bad in (["--seeds", "0,0"], ["--seeds", "x"], ["--alphas", "-1"], ["--set", "hidden_dim=wide"],
                ["--protocols", "daily"]):
        assert main(["sweep", "--preset", "thesis-alpha-fast", "--name", "g", "--out", str(tmp_path)] + bad) == 2
    assert folder_state(tmp_path) == before and fake_training == [[0, 1, 0, 1]]
    assert main(["sweep", "--preset", "thesis-alpha-fast", "--seeds", "0,0", "--out", str(tmp_path / "new")]) == 2
    assert not (tmp_path / "new").exists()


def test_manifest_grows_chunk_by_chunk_and_never_shrinks(tmp_path, fake_training, monkeypatch):
    spec = GridSpec("g", **SMALL)                                     # 4 runs
    keys = [store.run_key(c) for c in spec.configs()]
    seen = []
    write = store.write_json
    monkeypatch.setattr(store, "write_json", lambda path, payload: seen.append(
        (path.name, list(payload["keys"]) if "keys" in payload else None)) or write(path, payload))
    store.run_sweep(spec, tmp_path, progress=False, max_runs=3)
    manifests = [k for name, k in seen if name == "g.json"]
    assert manifests == [keys[:3], keys]                                # after each chunk, never before
    assert [name for name, _ in seen[:3]] == [f"{k}.json" for k in keys[:3]]   # records first
    smaller = dataclasses.replace(spec, seeds=(0,))
    store.run_sweep(smaller, tmp_path, progress=False)                  # fewer runs, same grid name
    assert manifest_keys(tmp_path, "g") == keys


def test_an_interrupted_sweep_keeps_exactly_its_finished_runs(tmp_path, fake_training, monkeypatch, capsys):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(GridSpec("cut", n_labelled=(50, 100), **SMALL).to_dict()))
    results, figures = tmp_path / "results", tmp_path / "figures"
    fake = engine.train_runs

    def interrupted(configs, **kw):
        if len(fake_training) == 1:
            raise KeyboardInterrupt
        return fake(configs, **kw)

    monkeypatch.setattr(engine, "train_runs", interrupted)
    assert main(["sweep", "--spec", str(spec_file), "--out", str(results), "--max-runs", "3"]) == 130
    assert "run the same command to resume" in capsys.readouterr().err
    finished = [r["key"] for r in store.load_records(results).values()]
    assert len(finished) == 3 and sorted(manifest_keys(results, "cut")) == sorted(finished)
    assert len((results / "results.csv").read_text().splitlines()) == 1 + 3
    assert main(["figures", "--results", str(results), "--out", str(figures)]) == 0    # from what exists
    assert (figures / "cut_accuracy.md").exists()
    assert main(["figures", "--results", str(results), "--out", str(figures), "--grid", "other"]) == 1
    monkeypatch.setattr(engine, "train_runs", fake)
    assert main(["sweep", "--spec", str(spec_file), "--out", str(results), "--max-runs", "3"]) == 0
    assert len(manifest_keys(results, "cut")) == 8 and len(fake_training) == 1 + 2


def test_failed_runs_are_recorded_and_count_as_done_unless_retried(tmp_path, fake_training, capsys):
    spec = GridSpec("f", **{**SMALL, "alphas": (1.0, 13.0, 30.0)})    # alpha 13 diverges
    rows = store.run_sweep(spec, tmp_path, progress=False, max_runs=2)
    assert len(fake_training) == 3 and len(rows) == 6                   # the chunks after the failure ran
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["alpha"] for r in failed] == [13.0, 13.0] and all(r["epochs_done"] == 1 for r in failed)
    record = store.load_records(tmp_path)[failed[0]["key"]]
    assert record["error"].startswith("non-finite loss") and len(record["history"]) == 1
    assert len(manifest_keys(tmp_path, "f")) == 6

    fake_training.clear()
    spec_file = tmp_path / "f.json"
    spec_file.write_text(json.dumps(spec.to_dict()))
    command = ["sweep", "--spec", str(spec_file), "--out", str(tmp_path)]
    assert main(command + ["--dry-run"]) == 0
    assert "6 runs: 4 done, 2 failed, 0 to train in 0 chunk(s)" in capsys.readouterr().out
    assert main(command) == 3 and fake_training == []                    # failed = done; still reported
    assert "--retry-failed" in capsys.readouterr().err
    assert main(command + ["--retry-failed", "--dry-run"]) == 0
    assert "2 failed (to retry), 2 to train in 1 chunk(s)" in capsys.readouterr().out
    assert main(command + ["--retry-failed"]) == 3 and fake_training == [[0, 1]]
    assert len(list((tmp_path / "records").glob("*.json"))) == 6         # retried in place, no duplicates


def test_dry_run_counts_and_writes_nothing(tmp_path, fake_training, capsys):
    spec = GridSpec("d", **SMALL)
    store.run_sweep(dataclasses.replace(spec, seeds=(0,)), tmp_path, progress=False)
    spec_file = tmp_path.parent / f"{tmp_path.name}-d.json"
    spec_file.write_text(json.dumps(spec.to_dict()))
    before = folder_state(tmp_path)
    fake_training.clear()
    assert main(["sweep", "--spec", str(spec_file), "--out", str(tmp_path), "--max-runs", "1", "--dry-run"]) == 0
    assert "grid d: 4 runs: 2 done, 0 failed, 2 to train in 2 chunk(s)" in capsys.readouterr().out
    assert folder_state(tmp_path) == before and fake_training == []


def test_figures_refuse_a_grid_without_finished_runs(tmp_path, fake_training, capsys):
    store.run_sweep(GridSpec("bad", **{**SMALL, "alphas": (13.0,)}), tmp_path, progress=False)
    store.run_sweep(GridSpec("good", **SMALL), tmp_path, progress=False)
    out = tmp_path / "figures"
    assert main(["figures", "--results", str(tmp_path), "--out", str(out)]) == 2
    assert "grid bad" in capsys.readouterr().err and not out.exists()
    assert main(["figures", "--results", str(tmp_path), "--out", str(out), "--grid", "good"]) == 0
    assert (out / "good_panels.png").exists() and not (out / "bad_accuracy.md").exists()


def test_result_row_reads_both_history_forms():
    config = TrainConfig(seed=1).to_dict()
    base = {"key": "k", "grid": "g", "status": "ok", "config": config, "scores": None, "chunk_seconds": 1.0}
    old = store.result_row({**base, "history": [{"epoch": 3, "validation_accuracy": 0.7, "validation_elbo": -90.0,
                                                 "validation_log_likelihood": -80.0, "train_loss": 5.0}]})
    new = store.result_row({**base, "history": [{"epoch": 3, "split": "validation", "accuracy": 0.7,
                                                 "elbo": -90.0, "log_likelihood": -80.0, "train_loss": 5.0}]})
    assert old == new and new["eval_split"] == "validation" and new["accuracy"] == 0.7
    assert np.isnan(store.result_row({**base, "history": []})["accuracy"])


# ---------------------------------------------------------------------------------------------------
# migration of the first format (the committed figures/sweep)
# ---------------------------------------------------------------------------------------------------
def first_format_key(config: dict) -> str:
    """The first format's key: a hash of the full config dict of its time."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def old_record(config: TrainConfig, status="ok", epochs=1, drop=()) -> dict:
    values = {k: v for k, v in config.to_dict().items() if k not in drop}
    return {"format": "ssvae_lib.sweep-run/1", "key": first_format_key(values), "grid": "old", "status": status,
            "error": None, "config": values, "scores": None,
            "history": [{"epoch": e, "test_accuracy": 0.5} for e in range(1, epochs + 1)]}


def to_first_format(folder: Path) -> None:
    """Rewrite a results folder as the first format had it: records and manifests under the old keys."""
    old_keys = {}
    for path in sorted((folder / "records").glob("*.json")):
        record = json.loads(path.read_text())
        old_keys[record["key"]] = first_format_key(record["config"])
        record.update(format="ssvae_lib.sweep-run/1", key=old_keys[record["key"]])
        path.unlink()
        store.write_json(folder / "records" / f"{record['key']}.json", record)
    for path in (folder / "grids").glob("*.json"):
        manifest = json.loads(path.read_text())
        manifest.pop("format")
        store.write_json(path, {**manifest, "keys": [old_keys[k] for k in manifest["keys"]]})


def test_migrate_rekeys_records_drops_duplicates_and_rewrites_manifests(tmp_path):
    a, b = TrainConfig(seed=0, device="cpu"), TrainConfig(seed=1)
    records = [old_record(a, drop=("augment_shift",)),                       # before augment_shift existed
               old_record(dataclasses.replace(a, device="auto"), status="failed"),   # the same run again
               old_record(b, epochs=2)]
    for r in records:
        store.write_json(tmp_path / "records" / f"{r['key']}.json", r)
    unfinished = "0123456789abcdef"                                          # listed before it ran
    store.write_json(tmp_path / "grids" / "old.json", {"name": "old", "spec": {}, "fast_mode": False,
                                                       "keys": [r["key"] for r in records] + [unfinished]})
    loaded = store.load_records(tmp_path)                                    # read as they are
    assert set(loaded) == {store.run_key(a), store.run_key(b)} and loaded[store.run_key(a)]["status"] == "ok"
    assert [r["key"] for r in store.load_grids(tmp_path)["old"]] == [store.run_key(a), store.run_key(b)]
    assert store.needs_migration(tmp_path)

    counts = store.migrate(tmp_path)
    assert counts["records_before"] == 3 and counts["records_after"] == 2
    assert counts["manifest_keys"] == {"old": (4, 2)} and counts["csv_rows_after"] == 2
    assert sorted(p.stem for p in (tmp_path / "records").glob("*.json")) == sorted([store.run_key(a),
                                                                                   store.run_key(b)])
    assert manifest_keys(tmp_path, "old") == [store.run_key(a), store.run_key(b)]
    assert not store.needs_migration(tmp_path)
    state = folder_state(tmp_path)
    store.migrate(tmp_path)                                                  # once is enough: a no-op now
    assert folder_state(tmp_path) == state


def test_the_committed_results_are_the_migrated_first_format(tmp_path, monkeypatch, capsys):
    """figures/sweep as the first format wrote it, migrated, is figures/sweep; the README's commands that
    produced it then find every run done (the keys are reproduced), and results.csv keeps its rows."""
    monkeypatch.setattr(settings, "FAST", False)                             # the full-size configs
    assert not store.needs_migration(COMMITTED)
    assert {name: len(rows) for name, rows in store.load_grids(COMMITTED).items()} == README_SWEEP_RUNS
    copy = tmp_path / "sweep"
    shutil.copytree(COMMITTED, copy)
    to_first_format(copy)
    rows = len((copy / "results.csv").read_text().splitlines()) - 1
    counts = store.migrate(copy)
    shared = 20       # the corruption grid's r = 0 runs are the α grid's α = 50 runs: one record each
    assert counts["records_before"] == counts["records_after"] == counts["csv_rows_after"] == rows == \
        sum(README_SWEEP_RUNS.values()) - shared
    assert folder_state(copy) == folder_state(COMMITTED)
    for command, n in zip(README_SWEEPS, README_SWEEP_RUNS.values()):
        assert main(command.split() + ["--out", str(copy), "--dry-run"]) == 0
        assert f"{n} runs: {n} done, 0 failed, 0 to train in 0 chunk(s)" in capsys.readouterr().out
    assert len((copy / "results.csv").read_text().splitlines()) - 1 == rows


# ---------------------------------------------------------------------------------------------------
# the sweep figures and the accuracy table
# ---------------------------------------------------------------------------------------------------
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


def test_sweep_table_and_trend_summarise_seeds_per_protocol_and_size():
    rows = [dict(status="ok", protocol=p, n_labelled=100, alpha=a, seed=s, accuracy=base + a / 100 + s / 100)
            for p, base in (("corrected", 0.5), ("thesis", 0.2)) for a in (0.1, 100.0) for s in (0, 1)]
    rows.append(dict(status="failed", protocol="thesis", n_labelled=100, alpha=100.0, seed=2, accuracy=None))
    table = plots.sweep_table(rows, "alpha", "accuracy")
    assert "| corrected | 100 | 0.51 ± 0.01 (2) | 1.50 ± 0.01 (2) |" in table
    verdict, low, high = plots.sweep_trend(rows, "alpha", "accuracy", "thesis", 100)
    assert verdict == "rises" and low[2] == high[2] == 2 and high[0] == pytest.approx(1.205)
    flat = [dict(r, accuracy=0.5 + r["seed"] / 10) for r in rows if r["status"] == "ok"]
    assert plots.sweep_trend(flat, "alpha", "accuracy", "thesis", 100)[0] == "flat"
    with pytest.raises(ValueError, match="no finished runs"):
        plots.sweep_trend(rows, "alpha", "accuracy", "thesis", 600)
