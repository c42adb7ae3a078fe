"""Results folders you can trust: one JSON record per run, grid manifests, an aggregated CSV, and
:func:`run_sweep`, which trains what a folder still lacks.

A results folder holds

* ``records/<key>.json``: one per run, ``"ok"`` or ``"failed"`` (diverged: its error and its history up
  to the last complete epoch), written atomically as each chunk of runs finishes;
* ``grids/<name>.json``: a grid's manifest, the keys of its recorded runs. Written atomically and only
  ever extended, so an interrupted sweep leaves a manifest of exactly the runs that finished;
* ``results.csv``: one row per record (:func:`result_row`), rewritten after each chunk.

**Run identity** (:func:`run_key`): a hash of the settings that change a run's result, versioned by
``IDENTITY``. ``device`` is left out (``NOT_IDENTITY``); every other field is hashed only where it differs
from ``IDENTITY_BASELINE``, so a TrainConfig field added later, whose default keeps the old behaviour,
leaves every existing key as it was. Folders of the first format (``ssvae_lib.sweep-run/1``, keyed by a
hash of the full config) are read as they are; :func:`migrate` rewrites one to the current format.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from tqdm.auto import tqdm

from . import data as data_mod
from . import engine, settings
from . import train as train_mod
from .grid import GridSpec, protocol_name
from .train import TrainConfig

IDENTITY = "ssvae_lib.run/2"                 # version of run_key; change it only with a migration
RECORD_FORMAT = "ssvae_lib.sweep-run/2"
OLD_RECORD_FORMATS = ("ssvae_lib.sweep-run/1",)
MANIFEST_FORMAT = "ssvae_lib.grid/2"
RECORDS, GRIDS, CSV_NAME = "records", "grids", "results.csv"
NOT_IDENTITY = ("device",)                   # TrainConfig fields that never change a run's result
# TrainConfig's defaults when IDENTITY was defined. Frozen: never change a value here. A field added to
# TrainConfig later gets an entry with the value that reproduces the behaviour from before it existed.
IDENTITY_BASELINE = MappingProxyType({
    "dataset": "auto", "data_root": None, "n_labelled": 100, "alpha": 50.0, "gamma": 1.0, "beta": 1.0,
    "objective": "m2", "order": "label_first", "observation": "bernoulli", "labelling": "fixed", "corruption_rate": 0.0,
    "corruption_protocol": "fixed", "epochs": 40, "batch_size": 128, "labelled_batch_size": 64,
    "augment_shift": 0, "lr": 1e-3, "n_samples": 8, "temperature": 0.5, "hidden_dim": 256, "style_dim": 10,
    "iwae_samples": 16, "iwae_examples": 500, "validation_size": 0, "max_train": None, "max_test": None,
    "seed": 0,
    # added later, at the value that keeps the behaviour from before
    "binarize": False, "supervised_estimator": "as_written",
    "sigma": 1.0, "var_floor": None, "pretrain_epochs": 0, "learn_beta": False, "characteristic_dim": 2,
})
_UNSET = object()


# -- run identity --------------------------------------------------------------------------
def identity(config: TrainConfig | Mapping) -> dict:
    """The settings that make a run what it is: the fields of ``config`` (a TrainConfig or its dict)
    that differ from ``IDENTITY_BASELINE``, without ``NOT_IDENTITY``; a field absent from ``config``
    counts as its baseline value."""
    values = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    out = {}
    for name, value in values.items():
        base = IDENTITY_BASELINE.get(name, _UNSET)
        if isinstance(base, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)                     # alpha=50 and alpha=50.0 are one run
        if name not in NOT_IDENTITY and value != base:
            out[name] = value
    return out


def run_key(config: TrainConfig | Mapping) -> str:
    """16 hex digits of the SHA-256 of ``IDENTITY`` and :func:`identity`: a run's name in a results folder."""
    text = json.dumps([IDENTITY, identity(config)], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- records and manifests -----------------------------------------------------------------
def write_text(path: Path, text: str) -> Path:
    """Atomic write: a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_json(path: Path, payload) -> None:
    write_text(path, json.dumps(payload, indent=1))


def outcome_record(outcome, grid: str, device: str, runs_in_chunk: int, seconds: float) -> dict:
    """The JSON record of one trained run (a ``RunOutcome``; no weights)."""
    return {"format": RECORD_FORMAT, "key": run_key(outcome.config), "grid": grid,
            "status": "ok" if outcome.error is None else "failed", "error": outcome.error,
            "config": outcome.config.to_dict(), "history": outcome.history, "scores": outcome.scores,
            "dataset_name": outcome.dataset_name, "provenance": outcome.provenance, "device": device,
            "runs_in_chunk": runs_in_chunk, "chunk_seconds": seconds,
            "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _preference(record: dict) -> tuple:
    """Of two records of one run keep the larger: finished over failed, then the later, then the longer."""
    return record["status"] == "ok", record.get("recorded_at") or "", len(record["history"])


def _read_records(results: Path) -> tuple[dict[str, dict], dict[str, str], list[Path], bool]:
    """(records by key, preferred of duplicates; stored key or file name -> key; every record file;
    whether any file is of an old format). Records are returned in the current format."""
    records, aliases, paths, old = {}, {}, sorted((results / RECORDS).glob("*.json")), False
    for path in paths:
        record = json.loads(path.read_text())
        if record.get("format") not in (RECORD_FORMAT, *OLD_RECORD_FORMATS):
            raise ValueError(f"{path}: not a sweep run record (format {record.get('format')!r}, "
                             f"expected {RECORD_FORMAT})")
        old = old or record["format"] != RECORD_FORMAT
        key = run_key(record["config"])
        aliases[record["key"]] = aliases[path.stem] = key
        record = {**record, "format": RECORD_FORMAT, "key": key}
        if key not in records or _preference(record) > _preference(records[key]):
            records[key] = record
    return records, aliases, paths, old


def load_records(results: str | Path) -> dict[str, dict]:
    """Every run record under ``results/records``, by key (old formats read as the current one; of two
    records of the same run, the finished and then the later one)."""
    return _read_records(Path(results))[0]


def _read_manifests(results: Path) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted((results / GRIDS).glob("*.json"))}


def _grid_keys(manifest: dict, aliases: Mapping[str, str]) -> list[str]:
    """A manifest's keys as current keys, each once, leaving out runs that have no record."""
    return list(dict.fromkeys(aliases[k] for k in manifest["keys"] if k in aliases))


def add_to_manifest(results: Path, spec: GridSpec, keys: list[str]) -> None:
    """Add ``keys`` (recorded runs of ``spec``) to ``results/grids/<name>.json``; never removes one."""
    path = results / GRIDS / f"{spec.name}.json"
    listed = json.loads(path.read_text())["keys"] if path.exists() else []
    new = [k for k in keys if k not in listed]
    if new:
        write_json(path, {"format": MANIFEST_FORMAT, "name": spec.name, "spec": spec.to_dict(),
                          "fast_mode": settings.FAST, "keys": listed + new})


# -- rows and the CSV ----------------------------------------------------------------------
def result_row(record: dict) -> dict:
    """One flat row per run: the grid coordinates, the last evaluation (``accuracy``, ``elbo``,
    ``log_likelihood`` on the evaluation split) and the leakage scores (history records of any age:
    ``engine.upgrade_record``)."""
    c = {**IDENTITY_BASELINE, **record["config"]}
    last = engine.upgrade_record(record["history"][-1]) if record["history"] else {"split": "test"}
    return {"key": record["key"], "grid": record["grid"], "status": record["status"],
            "dataset": record.get("dataset_name") or c["dataset"], "objective": c["objective"],
            "order": c["order"], "protocol": protocol_name(c["labelling"], c["corruption_protocol"]),
            **{k: c[k] for k in ("n_labelled", "alpha", "gamma", "beta", "learn_beta", "observation",
                                 "sigma", "labelled_batch_size", "pretrain_epochs", "corruption_rate",
                                 "seed", "epochs")},
            "epochs_done": last.get("epoch", 0), "eval_split": last["split"],
            **{k: last.get(k, float("nan")) for k in ("accuracy", "elbo", "log_likelihood", "train_loss")},
            **(record.get("scores") or {}), "chunk_seconds": record.get("chunk_seconds", float("nan")),
            "runs_in_chunk": record.get("runs_in_chunk", 1)}


def _row_order(row: dict) -> tuple:
    """Grid coordinates first, so that the CSV reads like the grid."""
    return (row["grid"], row["dataset"], row["protocol"], row["objective"],
            -1 if row["n_labelled"] is None else row["n_labelled"], row["corruption_rate"], row["alpha"],
            row["seed"], row["key"])


def write_csv(rows: list[dict], path: str | Path) -> Path:
    """Rows (dicts) to CSV, atomically; the columns are the union of the rows' keys, in first-seen order."""
    columns = list(dict.fromkeys(k for row in rows for k in row if k != "history"))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(Path(path), text.getvalue())


def write_results_csv(results: Path, records: dict[str, dict]) -> Path:
    """``results/results.csv``: one row per record, in grid order."""
    return write_csv(sorted((result_row(r) for r in records.values()), key=_row_order), results / CSV_NAME)


def load_grids(results: str | Path) -> dict[str, list[dict]]:
    """grid name -> its rows (:func:`result_row` plus ``"history"``), for every grid manifest under
    ``results/grids``; only recorded runs (finished or failed) appear."""
    results = Path(results)
    records, aliases, _, _ = _read_records(results)
    return {m["name"]: [{**result_row(records[k]), "grid": m["name"], "history": records[k]["history"]}
                        for k in _grid_keys(m, aliases)]
            for m in _read_manifests(results).values()}


# -- migration of an old results folder ----------------------------------------------------
def needs_migration(results: str | Path) -> bool:
    """Whether ``results`` holds a record or a manifest of an old format."""
    results = Path(results)
    old_records = _read_records(results)[3]
    return old_records or any(m.get("format") != MANIFEST_FORMAT for m in _read_manifests(results).values())


def migrate(results: str | Path) -> dict:
    """Rewrite a results folder to the current format, once: each run's record under its current key
    (of duplicate records of one run the finished, then the later one is kept), each manifest's keys as
    current keys (keys without a record, i.e. runs that never finished, are dropped), and results.csv.
    New files are written before old ones are removed. Returns counts before and after."""
    results = Path(results)
    csv_path = results / CSV_NAME
    csv_before = len(csv_path.read_text().splitlines()) - 1 if csv_path.exists() else 0
    records, aliases, paths, _ = _read_records(results)
    for key, record in records.items():
        write_json(results / RECORDS / f"{key}.json", record)
    for path in paths:
        if path.stem not in records:
            path.unlink()
    manifests = {}
    for stem, manifest in _read_manifests(results).items():
        keys = _grid_keys(manifest, aliases)
        write_json(results / GRIDS / f"{stem}.json",        # the field order of add_to_manifest
                   {"format": MANIFEST_FORMAT, **{k: v for k, v in manifest.items() if k != "format"}, "keys": keys})
        manifests[manifest["name"]] = (len(manifest["keys"]), len(keys))
    if records or csv_path.exists():
        write_results_csv(results, records)
    return {"records_before": len(paths), "records_after": len(records), "manifest_keys": manifests,
            "csv_rows_before": csv_before, "csv_rows_after": len(records)}


# -- the sweep -----------------------------------------------------------------------------
@dataclass
class SweepPlan:
    """What :func:`run_sweep` will do for one grid and results folder: every run's effective config and
    key, the keys already recorded (``done``: finished; ``failed``) and the chunks left to train."""

    spec: GridSpec
    results: Path
    configs: list[TrainConfig]
    keys: list[str]
    done: list[str]
    failed: list[str]
    chunks: list[list[TrainConfig]]
    datasets: dict
    retry_failed: bool = False

    @property
    def remaining(self) -> int:
        return sum(len(chunk) for chunk in self.chunks)

    def summary(self) -> str:
        failed = f"{len(self.failed)} failed" + (" (to retry)" if self.retry_failed and self.failed else "")
        return (f"grid {self.spec.name}: {len(self.configs)} runs: {len(self.done)} done, {failed}, "
                f"{self.remaining} to train in {len(self.chunks)} chunk(s); results in {self.results}")


def plan_sweep(spec: GridSpec, results: str | Path, *, max_runs: int | None = None, device: str | None = None,
               datasets: dict | None = None, retry_failed: bool = False) -> SweepPlan:
    """The :class:`SweepPlan` of ``spec`` in ``results``. Reads only: validates the grid and the folder
    and loads the datasets of the runs left to train (their chunk sizes depend on the image size). A run
    recorded as failed counts as done (it diverged; the same settings diverge again) unless
    ``retry_failed``."""
    results = Path(results)
    configs = [train_mod.fast_mode(c) for c in spec.configs()]
    if device is not None:
        configs = [dataclasses.replace(c, device=device) for c in configs]
    keys = [run_key(c) for c in configs]
    records = load_records(results)
    done = [k for k in keys if k in records and records[k]["status"] == "ok"]
    failed = [k for k in keys if k in records and records[k]["status"] != "ok"]
    skip = set(done) if retry_failed else set(done) | set(failed)
    todo = [c for c, k in zip(configs, keys) if k not in skip]
    datasets, chunks = dict(datasets or {}), []
    for group in engine.plan(todo):
        first = group[0]
        if first.dataset not in datasets:
            datasets[first.dataset] = data_mod.load_dataset(first.dataset, root=first.data_root)
        ds = datasets[first.dataset]
        size = engine.runs_per_chunk(first, ds.input_dim, ds.n_classes, train_mod.resolve_device(first.device),
                                    max_runs)
        chunks += [group[i:i + size] for i in range(0, len(group), size)]
    return SweepPlan(spec, results, configs, keys, done, failed, chunks, datasets, retry_failed)


def run_sweep(spec: GridSpec, out: str | Path, *, max_runs: int | None = None, scores: bool = True,
              progress: bool = True, device: str | None = None, datasets: dict | None = None,
              retry_failed: bool = False) -> list[dict]:
    """Train every run of ``spec`` not yet recorded under ``out`` (:func:`plan_sweep`), chunk by chunk.
    After each chunk: its records, the grid's manifest extended by their keys, and results.csv. A run
    that diverges is recorded as failed and the others go on. An old-format folder is migrated first.
    Returns this grid's rows (:func:`result_row`). ``device`` overrides the configs' device (it is not
    part of a run's key); ``datasets`` maps dataset names to loaded :class:`~ssvae_lib.data.Dataset`\\ s."""
    out = Path(out)
    p = plan_sweep(spec, out, max_runs=max_runs, device=device, datasets=datasets, retry_failed=retry_failed)
    if needs_migration(out):
        migrate(out)
    recorded = set(p.done) | set(p.failed)                       # before, perhaps under another grid's name
    add_to_manifest(out, spec, [k for k in p.keys if k in recorded])
    bar = tqdm(total=len(p.configs), initial=len(p.configs) - p.remaining, disable=not progress,
               desc=spec.name, unit="run")
    try:
        for chunk in p.chunks:
            started = time.perf_counter()
            outcomes = engine.train_runs(chunk, dataset=p.datasets[chunk[0].dataset], scores=scores,
                                        progress=progress)
            seconds = time.perf_counter() - started
            run_device = str(train_mod.resolve_device(chunk[0].device))
            records = [outcome_record(o, spec.name, run_device, len(chunk), seconds) for o in outcomes]
            for record in records:
                write_json(out / RECORDS / f"{record['key']}.json", record)
            add_to_manifest(out, spec, [r["key"] for r in records])
            write_results_csv(out, load_records(out))
            bar.update(len(chunk))
    finally:
        bar.close()
    records = load_records(out)
    return [result_row(records[k]) for k in p.keys if k in records]
