"""Training one model: :func:`train`, its result, the confusion matrix of its classifier, checkpoints.

:func:`train` is the engine's loop (``engine.train_runs``) with one run. The names a notebook needs for
a run (``TrainConfig``, ``TUNED``, ``evaluate``, ``step_loss``, ``Callback``, ...) are importable from here.
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from . import data as data_mod
from . import metrics
from .config import (ARCHITECTURE_FIELDS, CORRUPTION_PROTOCOLS, LABELLINGS, OBJECTIVES, TUNED,  # noqa: F401
                     TrainConfig, build_model, effective_supervised_weight, fast_mode, resolve_device,
                     scored_as)
from .engine import (EVAL_BATCH, EVAL_SEED_OFFSET, Callback, DivergenceError, TrainState,  # noqa: F401
                     bounds, evaluate, predict, step_loss, train_runs, upgrade_record)
from .models import CCVAE, SSVAE
from .schedule import PreparedData, prepare_data  # noqa: F401

CHECKPOINT_FORMAT = "ssvae_lib.checkpoint/1"


@dataclass
class TrainResult:
    config: TrainConfig
    model: SSVAE
    history: list = field(default_factory=list)
    stopped_early: bool = False
    dataset_name: str = ""
    provenance: str = ""

    def final(self, key: str) -> float:
        """The last epoch's value of ``key`` (e.g. "accuracy", measured on the split named by "split")."""
        return self.history[-1][key] if self.history else float("nan")


def train(config: TrainConfig, callbacks: Iterable[Callback] = (), *, stop: threading.Event | None = None,
          dataset: data_mod.Dataset | None = None, progress: bool = True) -> TrainResult:
    """Train one model. Ctrl-C or ``stop.set()`` ends training cleanly (the result keeps the model and
    the history so far, ``stopped_early=True``); a non-finite loss raises :class:`DivergenceError`,
    whose ``result`` keeps the model and the history up to the last complete epoch."""
    outcome = train_runs([config], dataset=dataset, scores=False, progress=progress, callbacks=callbacks,
                         stop=stop)[0]
    result = TrainResult(outcome.config, outcome.model, outcome.history, outcome.stopped_early,
                         outcome.dataset_name, outcome.provenance)
    if outcome.error is not None:
        raise DivergenceError(outcome.error, result)
    return result


def confusion(result: TrainResult, dataset: data_mod.Dataset | None = None) -> np.ndarray:
    """``metrics.confusion_matrix`` of argmax q(y|x) on the run's evaluation split (the split its
    history's accuracy was measured on): rows true digits, columns predicted ones."""
    prep = prepare_data(result.config, dataset)
    device = next(result.model.parameters()).device
    predictions = predict(result.model, prep.x_eval.to(device))
    return metrics.confusion_matrix(prep.y_eval, predictions.cpu(), prep.dataset.n_classes)


# -- checkpoints ---------------------------------------------------------------------------------------
class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, unreadable, corrupted, or not for the given config."""


def weights_digest(state_dict: dict) -> str:
    """SHA-256 of every tensor's name, dtype, shape and bytes: changes when any stored weight does."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{list(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save(result: TrainResult, path: str | Path) -> Path:
    """Write model weights (with their :func:`weights_digest`), config and history to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = result.model.state_dict()
    payload = {"format": CHECKPOINT_FORMAT, "config": result.config.to_dict(),
               "model": result.model.config(), "state_dict": state, "digest": weights_digest(state),
               "history": json.loads(json.dumps(result.history)), "stopped_early": result.stopped_early,
               "dataset_name": result.dataset_name, "provenance": result.provenance}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load(path: str | Path, config: TrainConfig | None = None, map_location="cpu") -> TrainResult:
    """Read a checkpoint written by :func:`save`; a :class:`CheckpointError` naming the file if it is
    missing, unreadable, not a checkpoint or its weights do not match their digest. With ``config``, also
    refuse one whose architecture fields or input size differ from the config's."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
        if payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"format {payload.get('format')!r}")
        saved = TrainConfig.from_dict(payload["config"])
        model_class = CCVAE if saved.objective == "ccvae" else SSVAE
        model = model_class(**{**payload["model"], "log_sigma_range": tuple(payload["model"]["log_sigma_range"])})
        model.load_state_dict(payload["state_dict"])
        history = [upgrade_record(r) for r in payload["history"]]
    except Exception as err:   # torch.load raises many kinds (EOFError, RuntimeError, UnpicklingError, ...)
        raise CheckpointError(f"{path}: not an ssvae_lib checkpoint (format {CHECKPOINT_FORMAT}), or a "
                              f"truncated or corrupted one: {type(err).__name__}: {err}") from None
    if "digest" in payload and weights_digest(payload["state_dict"]) != payload["digest"]:
        raise CheckpointError(f"{path}: the stored weights do not match their SHA-256 digest; the file is corrupted")
    if config is not None:
        diff = {k: (getattr(saved, k), getattr(config, k)) for k in ARCHITECTURE_FIELDS
                if getattr(saved, k) != getattr(config, k)}
        wanted = data_mod.input_size(config.dataset, config.data_root)
        if wanted != model.input_dim:
            diff["input size"] = (model.input_dim, wanted)
        if diff:
            raise CheckpointError(f"{path}: checkpoint is incompatible with the given config; differing fields "
                                  + ", ".join(f"{k}: saved {a!r} vs requested {b!r}" for k, (a, b) in diff.items()))
    model.eval()
    return TrainResult(saved, model, history, payload["stopped_early"], payload["dataset_name"],
                       payload["provenance"])
