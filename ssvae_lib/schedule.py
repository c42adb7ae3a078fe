"""Which images and labels each training step sees: the prepared data of a run (pool, evaluation split,
the fixed labelled set) and the batch schedule of both labelling protocols, with label corruption.

Everything here is drawn from the run's seed alone, never from the noise generators of the engine.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import data as data_mod
from .config import TrainConfig


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
    if config.batch_size > len(y_pool):
        raise ValueError(f"batch_size={config.batch_size} is larger than the training pool ({len(y_pool)} images); "
                         f"choose at most {len(y_pool)}")
    if config.n_labelled is None:          # every image labelled: no class balancing to do
        labelled = torch.arange(len(y_pool))
    elif config.n_labelled > len(y_pool):
        raise ValueError(f"n_labelled={config.n_labelled} is larger than the training pool "
                         f"({len(y_pool)} images)")
    else:
        labelled = torch.as_tensor(data_mod.split_labelled(y_pool, config.n_labelled, seed=config.seed))
    return PreparedData(x_pool, y_pool, labelled, x_eval, y_eval, eval_split, ds)


def batches(config: TrainConfig, prep: PreparedData, epoch: int, rng: np.random.Generator):
    """Yield (unlabelled idx or None, labelled idx or None, their observed labels or None) per step."""
    n_pool = len(prep.y_pool)
    if config.labelling == "thesis":
        supervised = data_mod.thesis_labelled_batches(n_pool, len(prep.labelled), config.batch_size,
                                                      config.seed)
        noisy = corrupted(config, prep.y_pool, prep.dataset.n_classes, epoch)
        for b, idx in enumerate(data_mod.thesis_epoch_batches(n_pool, config.batch_size, config.seed, epoch)):
            idx = torch.as_tensor(idx)
            if supervised[b]:
                yield None, idx, noisy[idx]
            else:
                yield idx, None, None
        return
    noisy = corrupted(config, prep.y_pool[prep.labelled], prep.dataset.n_classes, epoch)
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


def corrupted(config: TrainConfig, labels: torch.Tensor, n_classes: int, epoch: int) -> torch.Tensor:
    """The observed labels of this epoch: corrupted per the config's rate and protocol."""
    if config.corruption_rate == 0:
        return labels
    noisy, _ = data_mod.corrupt_labels(labels.cpu(), config.corruption_rate, n_classes, config.seed,
                                       protocol=config.corruption_protocol, epoch=epoch)
    return torch.as_tensor(noisy, device=labels.device)
