"""Grids of training runs — the seminar thesis's §5 sweeps and the paper's accuracy table — trained many
runs at once, resumable, one JSON record per run plus an aggregated CSV.

**Grid** (:class:`GridSpec`): axes α × corruption rate × M × protocol × objective × seed, plus fixed
:class:`~ssvae_lib.train.TrainConfig` overrides; :meth:`GridSpec.configs` expands it. Named presets:
``thesis-alpha`` (thesis Fig. 2), ``thesis-noise`` (Fig. 3), ``paper-table`` (the paper's M = 100 / 600
/ 1000 / 3000 table), each with a ``-fast`` variant that runs in seconds on a CPU. A *protocol* names a
labelling and a corruption protocol together: ``"thesis"`` = the thesis's batch-keyed labels with labels
re-corrupted every epoch, ``"corrected"`` = a fixed labelled set with fixed noisy labels.

**Many runs at once** (:func:`train_runs`): runs that share the architecture, the data pool and the batch
shapes are stacked into one :class:`StackedSSVAE` whose parameters carry a leading run dimension, so
every layer is one batched matrix multiply. The objectives of ``objectives.py`` are reused unchanged:
the stacked model folds the runs into the batch dimension. Each run keeps everything that makes it
itself — its initialisation (``torch.manual_seed(seed)`` as in :func:`~ssvae_lib.train.train`), its
pool, labelled set, corrupted labels and batch order (``train._batches`` with its own ``rng``), its own
noise stream (eps / Gumbel drawn from its own generator with the shapes and order of the sequential
step, then stacked), its α and γ (per-run tensors; Eq. 8 and Eq. 20 are affine in α) and its Adam
state (Adam is elementwise, so one Adam over stacked parameters is R independent Adams). The result
equals training the runs one by one with :func:`~ssvae_lib.train.train` up to float rounding.

The thesis's batch-keyed labelling makes a step supervised for some runs and unsupervised for others:
each step evaluates L_U on the subset of runs whose batch is unlabelled and L_S on the subset whose
batch is labelled (:meth:`StackedSSVAE.subset`), so no run computes a term it does not use. Each
epoch's evaluation (accuracy, ELBO, IWAE log p(x)) is batched too (:func:`evaluate_runs`), with each
run's noise drawn as :func:`~ssvae_lib.train.evaluate` draws it, in passes sized to the memory budget.

**Results** (:func:`run_sweep`): ``OUT/records/<key>.json`` per finished run, keyed by a hash of its
(effective) config; finished runs are skipped, so an interrupted sweep resumes and loses at most the
runs in flight. ``OUT/grids/<name>.json`` lists each grid's keys and ``OUT/results.csv`` has one row per
run: final test accuracy, ELBO, IWAE log p(x) and the label-leakage scores of ``metrics.leakage_scores``
on the posterior-mean z of the test set.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import data as data_mod
from . import settings
from . import train as train_mod
from .engine import RunOutcome, plan, runs_per_chunk, train_runs, upgrade_record
from .train import TrainConfig

RECORD_FORMAT = "ssvae_lib.sweep-run/1"
RECORDS = "records"               # sub-folder of a results folder holding one JSON record per run
PROTOCOLS = {"thesis": ("thesis", "per_epoch"), "corrected": ("fixed", "fixed")}
# TrainConfig fields that a grid sets through its axes; they may not appear among the overrides.
AXIS_FIELDS = ("alpha", "corruption_rate", "n_labelled", "labelling", "corruption_protocol", "objective",
               "seed", "epochs", "dataset")


# ==========================================================================================
# grid specification
# ==========================================================================================
def protocol_name(labelling: str, corruption_protocol: str) -> str:
    """"thesis" / "corrected" for the two named pairs, else "labelling/corruption_protocol"."""
    for name, pair in PROTOCOLS.items():
        if pair == (labelling, corruption_protocol):
            return name
    return f"{labelling}/{corruption_protocol}"


def parse_protocol(name: str) -> tuple[str, str]:
    """(labelling, corruption_protocol) of a protocol name: "thesis", "corrected" or "LABELLING/CORRUPTION"."""
    if name in PROTOCOLS:
        return PROTOCOLS[name]
    parts = name.split("/")
    if len(parts) != 2 or parts[0] not in train_mod.LABELLINGS \
            or parts[1] not in train_mod.CORRUPTION_PROTOCOLS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)} or 'LABELLING/CORRUPTION' with "
                         f"LABELLING in {train_mod.LABELLINGS} and CORRUPTION in "
                         f"{train_mod.CORRUPTION_PROTOCOLS}, got {name!r}")
    return parts[0], parts[1]


_DEFAULT = TrainConfig()


def _tuple(value) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return (value,)
    return tuple(value)


@dataclass(frozen=True)
class GridSpec:
    """A grid of runs: the product of the axes, every run with the ``overrides`` (other TrainConfig
    fields). ``n_labelled`` entries may be None (every training image labelled)."""

    name: str = "custom"
    alphas: tuple = (_DEFAULT.alpha,)
    corruption_rates: tuple = (0.0,)
    n_labelled: tuple = (_DEFAULT.n_labelled,)
    protocols: tuple = ("corrected",)
    objectives: tuple = (_DEFAULT.objective,)
    seeds: tuple = (0,)
    epochs: int = _DEFAULT.epochs
    dataset: str = _DEFAULT.dataset
    overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        for axis in ("alphas", "corruption_rates", "n_labelled", "protocols", "objectives", "seeds"):
            values = _tuple(getattr(self, axis))
            if not values:
                raise ValueError(f"GridSpec: axis {axis} is empty; give at least one value")
            if len(set(values)) != len(values):
                raise ValueError(f"GridSpec: axis {axis} repeats a value: {list(values)}")
            object.__setattr__(self, axis, values)
        for name in self.protocols:
            parse_protocol(name)
        if not self.name or any(c in self.name for c in "/\\ ") or self.name.startswith("."):
            raise ValueError(f"GridSpec: name must be a plain word usable as a file name, got {self.name!r}")
        overrides = dict(self.overrides)
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"GridSpec: unknown TrainConfig fields in overrides: {unknown}")
        clash = sorted(set(overrides) & set(AXIS_FIELDS))
        if clash:
            raise ValueError(f"GridSpec: overrides {clash} are grid axes; set them with the axes "
                             "(alphas, corruption_rates, n_labelled, protocols, objectives, seeds, epochs, dataset)")
        object.__setattr__(self, "overrides", overrides)
        self.configs()  # validates every combination now, with TrainConfig's messages

    def configs(self) -> list[TrainConfig]:
        """One TrainConfig per grid point, in the order protocol, objective, M, corruption, α, seed."""
        out = []
        for protocol, objective, m, rate, alpha, seed in itertools.product(
                self.protocols, self.objectives, self.n_labelled, self.corruption_rates, self.alphas, self.seeds):
            labelling, corruption_protocol = parse_protocol(protocol)
            out.append(TrainConfig(**{**self.overrides, "dataset": self.dataset, "epochs": self.epochs,
                                      "objective": objective, "n_labelled": m, "corruption_rate": float(rate),
                                      "alpha": float(alpha), "seed": int(seed), "labelling": labelling,
                                      "corruption_protocol": corruption_protocol}))
        return out

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: dict) -> "GridSpec":
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"GridSpec: unknown keys {unknown}; allowed: "
                             f"{[f.name for f in dataclasses.fields(cls)]}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> "GridSpec":
        """Read a grid from a ``.json`` or ``.toml`` file whose keys are the GridSpec fields."""
        path = Path(path)
        if path.suffix == ".json":
            values = json.loads(path.read_text())
        elif path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise ValueError(f"{path}: reading TOML needs Python >= 3.11; write the grid as JSON") from None
            values = tomllib.loads(path.read_text())
        else:
            raise ValueError(f"{path}: grid files must end in .json or .toml")
        if "n_labelled" in values:  # TOML has no null: "all" means every image labelled
            values["n_labelled"] = [None if v in ("all", "none", None) else v for v in _tuple(values["n_labelled"])]
        return cls.from_dict(values)


THESIS_ALPHAS = (0.1, 0.5, 1.0, 10.0, 25.0, 50.0, 75.0, 100.0)       # thesis §5.2
THESIS_CORRUPTION_RATES = (0.0, 0.01, 0.1, 0.2, 0.5, 1.0)             # thesis §5.3
PAPER_N_LABELLED = (100, 600, 1000, 3000)                             # the paper's table, thesis §5
# Fast variants: scikit-learn's 8x8 digits (always offline), a small network, two epochs.
_FAST = dict(dataset="digits", epochs=2, seeds=(0, 1), n_labelled=(50, 200),
             overrides=dict(hidden_dim=64, iwae_samples=4, iwae_examples=100))

PRESETS: dict[str, GridSpec] = {
    # The thesis's protocol (batch-keyed labels, per-epoch corruption) with its objective and sizes.
    "thesis-alpha": GridSpec("thesis-alpha", alphas=THESIS_ALPHAS, n_labelled=PAPER_N_LABELLED,
                             protocols=("thesis",), objectives=("ssvae",), seeds=tuple(range(10)), epochs=40),
    "thesis-noise": GridSpec("thesis-noise", corruption_rates=THESIS_CORRUPTION_RATES,
                             n_labelled=PAPER_N_LABELLED, protocols=("thesis",), objectives=("ssvae",),
                             seeds=tuple(range(10)), epochs=40),
    # The paper's table with the settings validated for M = 100 (train.TUNED), both objectives.
    "paper-table": GridSpec("paper-table", alphas=(train_mod.TUNED["alpha"],), n_labelled=PAPER_N_LABELLED,
                            protocols=("corrected",), objectives=("ssvae", "m2"), seeds=tuple(range(5)),
                            epochs=train_mod.TUNED["epochs"],
                            overrides={k: v for k, v in train_mod.TUNED.items() if k not in ("alpha", "epochs")}),
    "thesis-alpha-fast": GridSpec("thesis-alpha-fast", alphas=(0.1, 10.0, 100.0), protocols=("thesis",),
                                  objectives=("ssvae",), **_FAST),
    "thesis-noise-fast": GridSpec("thesis-noise-fast", corruption_rates=(0.0, 0.2, 1.0), protocols=("thesis",),
                                  objectives=("ssvae",), **_FAST),
    "paper-table-fast": GridSpec("paper-table-fast", protocols=("corrected",), objectives=("ssvae", "m2"),
                                 **_FAST),
}


def preset(name: str, fast: bool = False) -> GridSpec:
    """The named grid; ``fast=True`` picks its ``-fast`` variant."""
    if fast and not name.endswith("-fast"):
        name = name + "-fast"
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


# ==========================================================================================
# results: one JSON record per run, grid manifests, the aggregated CSV
# ==========================================================================================
def run_key(config: TrainConfig) -> str:
    """16 hex digits of the SHA-256 of the config's canonical JSON: a run's identity in a results folder."""
    text = json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _write_json(path: Path, payload) -> None:
    """Atomic write: a crash never leaves a half-written record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)


def outcome_record(outcome: RunOutcome, grid: str, device: str, runs_in_chunk: int, seconds: float) -> dict:
    """The JSON record of one finished run (no weights)."""
    return {"format": RECORD_FORMAT, "key": run_key(outcome.config), "grid": grid,
            "status": "ok" if outcome.error is None else "failed", "error": outcome.error,
            "config": outcome.config.to_dict(), "history": outcome.history, "scores": outcome.scores,
            "dataset_name": outcome.dataset_name, "provenance": outcome.provenance, "device": device,
            "runs_in_chunk": runs_in_chunk, "chunk_seconds": seconds}


def load_records(results: str | Path) -> dict[str, dict]:
    """Every run record under ``results/records``, by key."""
    records = {}
    for path in sorted((Path(results) / RECORDS).glob("*.json")):
        record = json.loads(path.read_text())
        if record.get("format") != RECORD_FORMAT:
            raise ValueError(f"{path}: not a sweep run record (expected format {RECORD_FORMAT})")
        records[record["key"]] = record
    return records


def result_row(record: dict) -> dict:
    """One flat row per run: the grid coordinates, the final evaluation (``accuracy``, ``elbo``,
    ``log_likelihood`` on the evaluation split) and the leakage scores."""
    c = record["config"]
    last = upgrade_record(record["history"][-1]) if record["history"] else {"split": "test"}
    split = last["split"]
    row = {"key": record["key"], "grid": record["grid"], "status": record["status"],
           "dataset": record.get("dataset_name") or c["dataset"], "objective": c["objective"], "order": c["order"],
           "protocol": protocol_name(c["labelling"], c["corruption_protocol"]),
           "n_labelled": c["n_labelled"], "alpha": c["alpha"], "gamma": c["gamma"],
           "corruption_rate": c["corruption_rate"], "seed": c["seed"], "epochs": c["epochs"],
           "epochs_done": last.get("epoch", 0), "eval_split": split}
    for name in ("accuracy", "elbo", "log_likelihood"):
        row[name] = last.get(name, float("nan"))
    row["train_loss"] = last.get("train_loss", float("nan"))
    row.update(record.get("scores") or {})
    row["chunk_seconds"] = record.get("chunk_seconds", float("nan"))
    row["runs_in_chunk"] = record.get("runs_in_chunk", 1)
    return row


def _row_order(row: dict) -> tuple:
    """Grid coordinates first, so that the CSV reads like the grid."""
    return (row["grid"], row["dataset"], row["protocol"], row["objective"],
            -1 if row["n_labelled"] is None else row["n_labelled"], row["corruption_rate"], row["alpha"],
            row["seed"], row["key"])


def write_csv(rows: list[dict], path: str | Path) -> Path:
    """Rows (dicts) to CSV; the columns are the union of the rows' keys, in first-seen order."""
    path = Path(path)
    columns = list(dict.fromkeys(k for row in rows for k in row if k != "history"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return path


def load_grids(results: str | Path) -> dict[str, list[dict]]:
    """grid name -> its rows (:func:`result_row` plus ``"history"``), for every grid manifest under
    ``results/grids`` (runs not finished yet are left out)."""
    results = Path(results)
    records = load_records(results)
    grids = {}
    for path in sorted((results / "grids").glob("*.json")):
        manifest = json.loads(path.read_text())
        rows = []
        for key in manifest["keys"]:
            if key in records:
                rows.append({**result_row(records[key]), "grid": manifest["name"],
                             "history": records[key]["history"]})
        grids[manifest["name"]] = rows
    return grids


# ==========================================================================================
# the sweep
# ==========================================================================================
def run_sweep(spec: GridSpec, out: str | Path, *, max_runs: int | None = None, scores: bool = True,
              progress: bool = True, device: str | None = None, datasets: dict | None = None) -> list[dict]:
    """Train every run of ``spec`` not yet recorded under ``out``, stacked in chunks of at most
    :func:`runs_per_chunk` runs; write ``out/records/<key>.json`` as each chunk finishes, then
    ``out/grids/<spec.name>.json`` and ``out/results.csv`` (every run recorded under ``out``).
    Returns the rows (:func:`result_row`) of this grid. ``device`` overrides the configs' device;
    ``datasets`` maps dataset names to already loaded :class:`~ssvae_lib.data.Dataset` objects."""
    out = Path(out)
    configs = [train_mod.fast_mode(c) for c in spec.configs()]
    if device is not None:
        configs = [dataclasses.replace(c, device=device) for c in configs]
    keys = [run_key(c) for c in configs]
    _write_json(out / "grids" / f"{spec.name}.json", {"name": spec.name, "spec": spec.to_dict(),
                                                       "fast_mode": settings.FAST, "keys": keys})
    done = set(load_records(out))
    todo = [c for c, k in zip(configs, keys) if k not in done]
    datasets = dict(datasets or {})
    from tqdm.auto import tqdm
    bar = tqdm(total=len(configs), initial=len(configs) - len(todo), disable=not progress,
               desc=spec.name, unit="run")
    try:
        for group in plan(todo):
            first = group[0]
            if first.dataset not in datasets:
                datasets[first.dataset] = data_mod.load_dataset(first.dataset, root=first.data_root)
            ds = datasets[first.dataset]
            run_device = train_mod.resolve_device(first.device)
            size = runs_per_chunk(first, ds.input_dim, ds.n_classes, run_device, max_runs)
            for start in range(0, len(group), size):
                chunk = group[start:start + size]
                started = time.perf_counter()
                outcomes = train_runs(chunk, dataset=ds, scores=scores, progress=progress)
                seconds = time.perf_counter() - started
                for outcome in outcomes:
                    record = outcome_record(outcome, spec.name, str(run_device), len(chunk), seconds)
                    _write_json(out / RECORDS / f"{record['key']}.json", record)
                bar.update(len(chunk))
    finally:
        bar.close()
        records = load_records(out)
        write_csv(sorted((result_row(r) for r in records.values()), key=_row_order), out / "results.csv")
    return [result_row(records[k]) for k in keys if k in records]


# ==========================================================================================
# command-line parsing helpers
# ==========================================================================================
def parse_values(text: str, kind: type = float) -> tuple:
    """"0.1,1,10" -> (0.1, 1.0, 10.0); "all"/"none" entries become None (for M)."""
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"empty entry in the list {text!r}")
        try:
            values.append(None if part.lower() in ("all", "none") else kind(part))
        except ValueError:
            raise ValueError(f"{part!r} in {text!r} is not a {kind.__name__}") from None
    return tuple(values)


def parse_assignments(items: Sequence[str]) -> dict:
    """["max_train=4000", "hidden_dim=128"] -> TrainConfig overrides, typed from its annotations."""
    import typing
    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in hints:
            raise ValueError(f"--set expects FIELD=VALUE with FIELD a TrainConfig field "
                             f"({', '.join(hints)}), got {item!r}")
        kinds = [t for t in typing.get_args(hints[name]) if t is not type(None)] or [hints[name]]
        if type(None) in typing.get_args(hints[name]) and text.strip().lower() in ("none", "all"):
            out[name] = None
        else:
            try:
                out[name] = kinds[0](text.strip())
            except ValueError:
                raise ValueError(f"--set {name}: {text!r} is not a {kinds[0].__name__}") from None
    return out
