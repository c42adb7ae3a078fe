"""Training engine: a validated config, the training loop with live callbacks, evaluation, checkpoints.

One optimisation step maximises a minibatch estimate of Eq. 10 of the seminar thesis,

    sum_{x in unlabelled batch} L_U(x) + gamma * sum_{(x, y) in labelled batch} L_S(x, y),

divided by the unlabelled batch size. With the ``"fixed"`` labelling every step sees ``batch_size``
unlabelled images (an epoch is one pass over the training pool) and ``labelled_batch_size`` images of
the fixed labelled set (cycled). Relative to Eq. 10 on the whole data, each labelled example is then
weighted by ``gamma * (labelled_batch_size / batch_size) * (N / M)`` — the batch ratio acts as a weight
(Jurasinski 2019, App. D); :func:`effective_supervised_weight` returns that number. The ``"thesis"``
labelling reproduces the seminar thesis's batch-keyed protocol (see ``data.thesis_labelled_batches``).
"""
from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from . import data as data_mod
from . import metrics, objectives, settings
from .models import ORDERS, SSVAE

OBJECTIVES = ("m2", "ssvae")
LABELLINGS = ("fixed", "thesis")
CORRUPTION_PROTOCOLS = ("fixed", "per_epoch")
CHECKPOINT_FORMAT = "ssvae_lib.checkpoint/1"
EVAL_SEED_OFFSET = 1_000_003   # evaluation noise: generator seeded with seed + this, every epoch
EVAL_BATCH = 500               # images per evaluation batch (each batch draws its own noise)
# Config fields that fix the architecture: a checkpoint is only loadable into a model with the same.
ARCHITECTURE_FIELDS = ("hidden_dim", "style_dim", "order")


@dataclass
class TrainConfig:
    """Everything a run depends on; validated on construction (seminar thesis §5.1 defaults)."""

    dataset: str = "auto"
    data_root: str | None = None
    n_labelled: int | None = 100        # M; None = every training image labelled
    alpha: float = 50.0                 # weight of alpha * log q(y|x) (Eq. 6)
    gamma: float = 1.0                  # weight of the supervised sum (Eq. 10)
    beta: float = 1.0                   # weight of the style's KL term (beta-VAE, Eq. 3); 1 = the ELBO
    objective: str = "m2"               # "m2": Eq. 8 + Eq. 9 enumeration; "ssvae": Eq. 20 + concrete
    order: str = "label_first"          # recognition order, see models.SSVAE
    labelling: str = "fixed"            # "fixed" labelled set, or the thesis's batch-keyed protocol
    corruption_rate: float = 0.0
    corruption_protocol: str = "fixed"  # "fixed" once, or "per_epoch" (thesis §5.3)
    epochs: int = 40
    batch_size: int = 128               # unlabelled images per step
    labelled_batch_size: int = 64       # labelled images per step ("fixed" labelling)
    augment_shift: int = 0              # labelled images moved by up to this many pixels each step
    lr: float = 1e-3
    n_samples: int = 8                  # S: importance samples of the supervised term
    temperature: float = 0.5            # concrete relaxation of y ("ssvae")
    hidden_dim: int = 256
    style_dim: int = 10
    iwae_samples: int = 16              # K of the test log-likelihood estimate
    iwae_examples: int = 500            # test images used for that estimate
    validation_size: int = 0            # > 0: evaluate on a split carved from the pool, not the test set
    max_train: int | None = None        # cap on the training pool (fast mode)
    max_test: int | None = None
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        def need(ok, message):
            if not ok:
                raise ValueError(f"TrainConfig: {message}")

        need(self.objective in OBJECTIVES, f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        need(self.order in ORDERS, f"order must be one of {ORDERS}, got {self.order!r}")
        need(self.labelling in LABELLINGS, f"labelling must be one of {LABELLINGS}, got {self.labelling!r}")
        need(self.corruption_protocol in CORRUPTION_PROTOCOLS,
             f"corruption_protocol must be one of {CORRUPTION_PROTOCOLS}, got {self.corruption_protocol!r}")
        need(self.objective == "ssvae" or self.order == "label_first",
             "objective 'm2' needs order 'label_first' (M2 has q(y|x) q(z|x,y)); use objective 'ssvae'")
        need(math.isfinite(self.alpha) and self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}")
        need(math.isfinite(self.gamma) and self.gamma >= 0, f"gamma must be >= 0, got {self.gamma}")
        need(math.isfinite(self.beta) and self.beta >= 0, f"beta must be >= 0, got {self.beta}")
        need(0.0 <= self.corruption_rate <= 1.0, f"corruption_rate must lie in [0, 1], got {self.corruption_rate}")
        need(self.n_labelled is None or self.n_labelled >= 1,
             f"n_labelled must be >= 1 or None (all), got {self.n_labelled}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        for name in ("epochs", "batch_size", "labelled_batch_size", "n_samples", "hidden_dim",
                     "style_dim", "iwae_samples", "iwae_examples"):
            need(int(getattr(self, name)) >= 1, f"{name} must be a positive integer, got {getattr(self, name)}")
        need(isinstance(self.augment_shift, int) and self.augment_shift >= 0,
             f"augment_shift must be an integer >= 0 (pixels), got {self.augment_shift!r}")
        need(self.validation_size >= 0, f"validation_size must be >= 0, got {self.validation_size}")
        need(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"),
             f"device must be 'auto', 'cpu' or 'cuda[:i]', got {self.device!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"TrainConfig: unknown fields {sorted(unknown)}")
        return cls(**values)


# Settings chosen on 1,000-image validation splits for M = 100 labels on MNIST-10k (README, Benchmarks):
# the beta-weighted style KL (Eq. 3) pushes the digit's identity out of z into y, where the unlabelled
# term can train the classifier; gamma < 1 keeps the 100 labels from outweighing the unlabelled term;
# labelled images shifted by up to 2 pixels keep the classifier from learning the 100 images by heart.
# Used by the accuracy benchmark, the demo and the paper-table preset.
TUNED = dict(alpha=500.0, beta=8.0, gamma=0.75, lr=3e-3, epochs=80, augment_shift=2)


def fast_mode(config: TrainConfig) -> TrainConfig:
    """The SSVAE_FAST shrink: at most 2 epochs, 2,000 training and 500 test images."""
    if not settings.FAST:
        return config
    cap = lambda value, limit: limit if value is None else min(value, limit)  # noqa: E731
    return dataclasses.replace(config, epochs=min(config.epochs, 2), max_train=cap(config.max_train, 2000),
                               max_test=cap(config.max_test, 500), iwae_examples=min(config.iwae_examples, 200))


def effective_supervised_weight(config: TrainConfig, n_labelled: int, n_unlabelled: int) -> float:
    """Weight of one labelled example relative to one unlabelled example per epoch ("fixed" labelling):
    gamma * (labelled_batch_size / batch_size) * (N / M)."""
    per_step = min(config.labelled_batch_size, n_labelled)
    return config.gamma * per_step / config.batch_size * n_unlabelled / n_labelled


def resolve_device(name: str) -> torch.device:
    return data_mod.default_device() if name == "auto" else torch.device(name)


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss term becomes nan or inf; names the step and the term."""


@dataclass
class TrainState:
    """What callbacks see: the live run."""

    config: TrainConfig
    model: SSVAE
    history: list
    epoch: int = 0
    step: int = 0
    steps_per_epoch: int = 0
    loss: float = float("nan")


class Callback:
    """Override any of these; ``every_n_steps`` sets how often ``on_step`` fires."""

    every_n_steps: int = 50

    def on_train_begin(self, state: TrainState): ...
    def on_step(self, state: TrainState): ...
    def on_epoch_end(self, state: TrainState): ...
    def on_train_end(self, state: TrainState): ...


@dataclass
class TrainResult:
    config: TrainConfig
    model: SSVAE
    history: list = field(default_factory=list)
    stopped_early: bool = False
    dataset_name: str = ""
    provenance: str = ""

    def final(self, key: str) -> float:
        return self.history[-1][key] if self.history else float("nan")


# -- data preparation ----------------------------------------------------------------------------------
@dataclass
class PreparedData:
    x_pool: torch.Tensor       # training pool (unlabelled set, all of it)
    y_pool: torch.Tensor       # true labels of the pool (used only where labels are observed)
    labelled: torch.Tensor     # indices into the pool of the fixed labelled set
    x_eval: torch.Tensor
    y_eval: torch.Tensor
    eval_split: str
    dataset: data_mod.Dataset


def prepare_data(config: TrainConfig, dataset: data_mod.Dataset | None = None) -> PreparedData:
    """Load the dataset, cap sizes, carve the validation split and draw the fixed labelled set."""
    ds = dataset if dataset is not None else data_mod.load_dataset(config.dataset, root=config.data_root)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 7]))
    x_pool, y_pool, x_eval, y_eval = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    eval_split = "test"
    if config.validation_size:
        if config.validation_size >= len(y_pool):
            raise ValueError(f"validation_size {config.validation_size} leaves no training data "
                             f"(pool has {len(y_pool)} images)")
        perm = torch.as_tensor(rng.permutation(len(y_pool)))
        val, rest = perm[:config.validation_size], perm[config.validation_size:]
        x_eval, y_eval, x_pool, y_pool = x_pool[val], y_pool[val], x_pool[rest], y_pool[rest]
        eval_split = "validation"
    if config.max_train is not None and config.max_train < len(y_pool):
        keep = torch.as_tensor(np.sort(rng.permutation(len(y_pool))[:config.max_train]))
        x_pool, y_pool = x_pool[keep], y_pool[keep]
    if config.max_test is not None and config.max_test < len(y_eval):
        x_eval, y_eval = x_eval[:config.max_test], y_eval[:config.max_test]
    if config.n_labelled is None:          # every image labelled: no class balancing to do
        labelled = torch.arange(len(y_pool))
    elif config.n_labelled > len(y_pool):
        raise ValueError(f"n_labelled={config.n_labelled} is larger than the training pool "
                         f"({len(y_pool)} images)")
    else:
        labelled = torch.as_tensor(data_mod.split_labelled(y_pool, config.n_labelled, seed=config.seed))
    return PreparedData(x_pool, y_pool, labelled, x_eval, y_eval, eval_split, ds)


# -- the step ------------------------------------------------------------------------------------------
def bounds(model: SSVAE, config: TrainConfig, x: torch.Tensor, y: torch.Tensor | None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-example bound to maximise: L_S(x, y) when labels are given, L_U(x) otherwise."""
    if y is not None:
        estimator = "m2" if config.objective == "m2" else "is"
        return objectives.supervised_bound(model, x, y, config.alpha, estimator=estimator,
                                           n_samples=config.n_samples, beta=config.beta, generator=generator)
    method = "enumerate" if config.objective == "m2" else "concrete"
    return objectives.unsupervised_bound(model, x, method=method, temperature=config.temperature,
                                         beta=config.beta, generator=generator)


def step_loss(model, config, x_unlab, x_lab, y_lab, generator=None) -> tuple[torch.Tensor, dict]:
    """Negative Eq. 10 minibatch estimate, scaled by 1/``config.batch_size`` (the nominal unlabelled
    batch, also for an epoch's smaller last batch, so no step over-weights the labelled term); also
    the terms by name."""
    terms = {}
    batch = config.batch_size
    total = 0.0
    if x_unlab is not None:
        terms["unsupervised"] = -bounds(model, config, x_unlab, None, generator).sum() / batch
        total = total + terms["unsupervised"]
    if x_lab is not None:
        terms["supervised"] = -config.gamma * bounds(model, config, x_lab, y_lab, generator).sum() / batch
        total = total + terms["supervised"]
    return total, terms


def _batches(config: TrainConfig, prep: PreparedData, epoch: int, rng: np.random.Generator):
    """Yield (unlabelled idx or None, labelled idx or None, their observed labels or None) per step."""
    n_pool = len(prep.y_pool)
    if config.labelling == "thesis":
        supervised = data_mod.thesis_labelled_batches(n_pool, len(prep.labelled), config.batch_size,
                                                      config.seed)
        noisy = _corrupted(config, prep.y_pool, prep.dataset.n_classes, epoch)
        for b, idx in enumerate(data_mod.thesis_epoch_batches(n_pool, config.batch_size, config.seed, epoch)):
            idx = torch.as_tensor(idx)
            if supervised[b]:
                yield None, idx, noisy[idx]
            else:
                yield idx, None, None
        return
    noisy = _corrupted(config, prep.y_pool[prep.labelled], prep.dataset.n_classes, epoch)
    order = torch.as_tensor(rng.permutation(n_pool))
    per_step = min(config.labelled_batch_size, len(prep.labelled))
    lab_order = torch.as_tensor(rng.permutation(len(prep.labelled)))
    cursor = 0
    for start in range(0, n_pool, config.batch_size):
        if cursor + per_step > len(lab_order):
            lab_order, cursor = torch.as_tensor(rng.permutation(len(prep.labelled))), 0
        pick = lab_order[cursor:cursor + per_step]
        cursor += per_step
        yield order[start:start + config.batch_size], prep.labelled[pick], noisy[pick]


def _corrupted(config: TrainConfig, labels: torch.Tensor, n_classes: int, epoch: int) -> torch.Tensor:
    """The observed labels of this epoch: corrupted per the config's rate and protocol."""
    if config.corruption_rate == 0:
        return labels
    noisy, _ = data_mod.corrupt_labels(labels.cpu(), config.corruption_rate, n_classes, config.seed,
                                       protocol=config.corruption_protocol, epoch=epoch)
    return torch.as_tensor(noisy, device=labels.device)


# -- evaluation ----------------------------------------------------------------------------------------
@torch.no_grad()
def predict(model: SSVAE, x: torch.Tensor, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """argmax q(y|x) per image, in batches (deterministic: no sampling)."""
    return torch.cat([model.classify(x[start:start + batch_size]).argmax(-1)
                      for start in range(0, len(x), batch_size)])


@torch.no_grad()
def evaluate(model: SSVAE, x: torch.Tensor, y: torch.Tensor, *, iwae_samples: int = 16,
             iwae_examples: int = 500, batch_size: int = EVAL_BATCH, generator=None) -> dict:
    """Accuracy of argmax q(y|x), the mean ELBO (Eq. 9, exact enumeration) and an IWAE estimate of
    log p(x) with ``iwae_samples`` samples on the first ``iwae_examples`` images (nats per image)."""
    model.eval()
    correct = int((predict(model, x, batch_size) == y).sum())
    elbo = 0.0
    for start in range(0, len(y), batch_size):
        xb = x[start:start + batch_size]
        elbo += float(objectives.unsupervised_bound(model, xb, method="enumerate", generator=generator).sum())
    n_iwae = min(iwae_examples, len(y))
    log_px = 0.0
    for start in range(0, n_iwae, batch_size):
        xb = x[start:min(start + batch_size, n_iwae)]
        log_px += float(metrics.iwae_log_likelihood(model, xb, iwae_samples, generator=generator).sum())
    model.train()
    return {"accuracy": correct / len(y), "elbo": elbo / len(y), "log_likelihood": log_px / max(n_iwae, 1)}


def confusion(result: TrainResult, dataset: data_mod.Dataset | None = None) -> np.ndarray:
    """``metrics.confusion_matrix`` of argmax q(y|x) on the run's evaluation split (the split its
    history's accuracy was measured on): rows true digits, columns predicted ones."""
    prep = prepare_data(result.config, dataset)
    device = next(result.model.parameters()).device
    predictions = predict(result.model, prep.x_eval.to(device))
    return metrics.confusion_matrix(prep.y_eval, predictions.cpu(), prep.dataset.n_classes)


# -- the loop ------------------------------------------------------------------------------------------
def build_model(config: TrainConfig, input_dim: int, n_classes: int) -> SSVAE:
    return SSVAE(input_dim=input_dim, hidden_dim=config.hidden_dim, n_classes=n_classes,
                 style_dim=config.style_dim, order=config.order)


def train(config: TrainConfig, callbacks: Iterable[Callback] = (), *, stop: threading.Event | None = None,
          dataset: data_mod.Dataset | None = None, progress: bool = True) -> TrainResult:
    """Train one model. Ctrl-C or ``stop.set()`` ends training cleanly (the result keeps the model and
    the history so far, ``stopped_early=True``); a non-finite loss raises :class:`NonFiniteLossError`."""
    config = fast_mode(config)
    device = resolve_device(config.device)
    if device.type == "cpu":
        settings.keep_freed_memory()
    prep = prepare_data(config, dataset)
    n_classes = prep.dataset.n_classes
    torch.manual_seed(config.seed)
    model = build_model(config, prep.x_pool.shape[1], n_classes).to(device)
    prep = dataclasses.replace(prep, x_pool=prep.x_pool.to(device), y_pool=prep.y_pool.to(device),
                               x_eval=prep.x_eval.to(device), y_eval=prep.y_eval.to(device),
                               labelled=prep.labelled.to(device))
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    eval_generator = torch.Generator(device=device)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 11]))
    callbacks = list(callbacks)
    result = TrainResult(config, model, dataset_name=prep.dataset.name, provenance=prep.dataset.provenance)
    state = TrainState(config, model, result.history)
    steps_per_epoch = math.ceil(len(prep.y_pool) / config.batch_size)
    state.steps_per_epoch = steps_per_epoch
    bar = _progress_bar(config.epochs * steps_per_epoch, progress)
    for cb in callbacks:
        cb.on_train_begin(state)
    try:
        for epoch in range(1, config.epochs + 1):
            state.epoch = epoch
            started, total, count = time.perf_counter(), 0.0, 0
            for unlab_idx, lab_idx, lab_y in _batches(config, prep, epoch, rng):
                if stop is not None and stop.is_set():
                    raise _Stop
                x_u = prep.x_pool[unlab_idx] if unlab_idx is not None else None
                x_l = prep.x_pool[lab_idx] if lab_idx is not None else None
                if x_l is not None and config.augment_shift:
                    x_l = data_mod.random_shift(x_l, prep.dataset.image_shape, config.augment_shift, generator)
                loss, terms = step_loss(model, config, x_u, x_l, lab_y, generator)
                state.step += 1
                _check_finite(loss, terms, state)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                state.loss = float(loss.detach())
                total, count = total + state.loss, count + 1
                bar.update(1)
                for cb in callbacks:
                    if state.step % max(cb.every_n_steps, 1) == 0:
                        cb.on_step(state)
            train_seconds = time.perf_counter() - started
            eval_generator.manual_seed(config.seed + EVAL_SEED_OFFSET)
            scores = evaluate(model, prep.x_eval, prep.y_eval, iwae_samples=config.iwae_samples,
                              iwae_examples=config.iwae_examples, generator=eval_generator)
            record = {"epoch": epoch, "step": state.step, "train_loss": total / max(count, 1),
                      **{f"{prep.eval_split}_{k}": v for k, v in scores.items()},
                      "train_seconds": train_seconds, "wall_seconds": time.perf_counter() - started}
            result.history.append(record)
            bar.set_postfix(epoch=epoch, loss=f"{record['train_loss']:.1f}",
                            acc=f"{scores['accuracy']:.3f}")
            for cb in callbacks:
                cb.on_epoch_end(state)
    except (KeyboardInterrupt, _Stop):
        result.stopped_early = True
    finally:
        bar.close()
    for cb in callbacks:
        cb.on_train_end(state)
    model.eval()
    return result


class _Stop(Exception):
    pass


def _check_finite(loss, terms, state):
    if torch.isfinite(loss):
        return
    bad = [name for name, value in terms.items() if not torch.isfinite(value)]
    raise NonFiniteLossError(f"non-finite loss at epoch {state.epoch}, step {state.step}: "
                             f"term(s) {', '.join(bad) or 'total'} = "
                             f"{', '.join(str(float(terms[b].detach())) for b in bad)}")


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, disable=not enabled, desc="training", unit="step", leave=False)


# -- checkpoints ---------------------------------------------------------------------------------------
def save(result: TrainResult, path: str | Path) -> Path:
    """Write model weights, config and history to ``path`` (a ``torch.save`` file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "config": result.config.to_dict(),
               "model": result.model.config(), "state_dict": result.model.state_dict(),
               "history": json.loads(json.dumps(result.history)), "stopped_early": result.stopped_early,
               "dataset_name": result.dataset_name, "provenance": result.provenance}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load(path: str | Path, config: TrainConfig | None = None, map_location="cpu") -> TrainResult:
    """Read a checkpoint written by :func:`save`. With ``config``, refuse a checkpoint whose
    architecture fields differ from it."""
    payload = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an ssvae_lib checkpoint (expected format {CHECKPOINT_FORMAT})")
    saved = TrainConfig.from_dict(payload["config"])
    if config is not None:
        diff = {k: (getattr(saved, k), getattr(config, k)) for k in ARCHITECTURE_FIELDS
                if getattr(saved, k) != getattr(config, k)}
        if diff:
            raise ValueError(f"{path}: checkpoint is incompatible with the given config; differing fields "
                             + ", ".join(f"{k}: saved {a!r} vs requested {b!r}" for k, (a, b) in diff.items()))
    model = SSVAE(**{**payload["model"], "log_sigma_range": tuple(payload["model"]["log_sigma_range"])})
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return TrainResult(saved, model, payload["history"], payload["stopped_early"],
                       payload["dataset_name"], payload["provenance"])
