import dataclasses
import math
import platform
import sys
import threading

import pytest
import torch

from ssvae_lib import engine, grid, schedule, settings
from ssvae_lib import train as T
from ssvae_lib.data import load_dataset
from tiny_run import tiny_config
from ssvae_lib.train import Callback, DivergenceError, TrainConfig


@pytest.fixture(autouse=True)
def full_mode(monkeypatch):
    """These configs are already tiny; SSVAE_FAST (set by `make test`) must not shrink them further."""
    monkeypatch.setattr(settings, "FAST", False)


tiny = tiny_config


@pytest.mark.parametrize("bad, match", [
    (dict(alpha=-1.0), "alpha"), (dict(gamma=-0.5), "gamma"), (dict(beta=-1.0), "beta"),
    (dict(corruption_rate=1.5), "corruption_rate"),
    (dict(corruption_rate=-0.1), "corruption_rate"), (dict(objective="m3"), "objective"),
    (dict(labelling="random"), "labelling"), (dict(corruption_protocol="daily"), "corruption_protocol"),
    (dict(order="style_first", objective="m2"), "needs order"), (dict(epochs=0), "epochs"),
    (dict(n_labelled=0), "n_labelled"), (dict(device="tpu"), "device"), (dict(lr=0.0), "lr"),
    (dict(augment_shift=-1), "augment_shift"), (dict(augment_shift=0.5), "augment_shift"),
])
def test_config_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**bad)


def test_n_labelled_larger_than_pool_is_an_error(digits):
    with pytest.raises(ValueError, match="larger than the training pool"):
        T.prepare_data(tiny(n_labelled=601), digits)


def test_all_labelled_uses_every_pool_image():
    shapes = load_dataset("shapes")        # unequal class counts: a balanced split of all is impossible
    prep = T.prepare_data(tiny(dataset="shapes", n_labelled=None, max_train=None), shapes)
    assert torch.equal(prep.labelled, torch.arange(len(prep.y_pool)))


def test_config_round_trips_through_dict():
    config = tiny(alpha=3.0)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown fields"):
        TrainConfig.from_dict({**config.to_dict(), "learning_rate": 1})


def test_tuned_settings_are_a_valid_config_and_feed_the_paper_table():
    config = TrainConfig(n_labelled=100, **T.TUNED)
    assert config.beta > 1 and config.alpha == T.TUNED["alpha"]
    for run in grid.preset("paper-table").configs():
        assert all(getattr(run, k) == v for k, v in T.TUNED.items())


def test_keep_freed_memory_is_idempotent():
    first = settings.keep_freed_memory()
    assert settings.keep_freed_memory() == first
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert first


def test_effective_supervised_weight():
    config = TrainConfig(gamma=2.0, batch_size=128, labelled_batch_size=64)
    assert T.effective_supervised_weight(config, n_labelled=100, n_unlabelled=8000) == pytest.approx(2 * 0.5 * 80)


@pytest.mark.parametrize("objective, order", [("m2", "label_first"), ("ssvae", "label_first"),
                                              ("ssvae", "style_first")])
def test_training_decreases_the_loss_and_is_deterministic(digits, objective, order):
    config = tiny(objective=objective, order=order, epochs=4)
    first = T.train(config, dataset=digits, progress=False)
    second = T.train(config, dataset=digits, progress=False)
    losses = [r["train_loss"] for r in first.history]
    assert losses[-1] < losses[0] - 0.05 * abs(losses[0]), losses
    drop_timing = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]  # noqa: E731
    assert drop_timing(first.history) == drop_timing(second.history)
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    record = first.history[-1]
    assert record["split"] == "test"
    for key in ("train_loss", "accuracy", "elbo", "log_likelihood", "wall_seconds"):
        assert math.isfinite(record[key])
    assert 0.0 <= record["accuracy"] <= 1.0


def test_validation_split_replaces_the_test_set(digits):
    result = T.train(tiny(validation_size=100, epochs=1), dataset=digits, progress=False)
    assert result.history[0]["split"] == "validation"
    # The confusion matrix is taken on the same split: its diagonal is the history's accuracy.
    result.model.train()
    confusion = T.confusion(result, digits)
    assert confusion.shape == (10, 10) and confusion.sum() == 100
    assert confusion.trace() / 100 == result.final("accuracy")
    assert result.model.training    # left in the mode it was found in


@pytest.mark.parametrize("labelling, protocol", [("thesis", "per_epoch"), ("fixed", "fixed"), ("fixed", "per_epoch")])
def test_labelling_and_corruption_protocols_run(digits, labelling, protocol):
    config = tiny(labelling=labelling, corruption_rate=0.2, corruption_protocol=protocol, epochs=1,
                  n_labelled=300)
    assert len(T.train(config, dataset=digits, progress=False).history) == 1


def test_fixed_labelling_steps_use_only_the_labelled_set(digits):
    config = tiny()
    prep = T.prepare_data(config, digits)
    import numpy as np
    seen = set()
    for unlab, lab, y in schedule.batches(config, prep, 1, np.random.default_rng(0)):
        seen.update(lab.tolist())
        torch.testing.assert_close(y, prep.y_pool[lab])  # no corruption: observed = true labels
    assert seen == set(prep.labelled.tolist())


def test_augment_shift_moves_only_the_labelled_images(digits, monkeypatch):
    """Each step moves its labelled images (which translations: test_data) and leaves the unlabelled
    ones as they are; the same seed gives the same run, and the shift changes the run."""
    config = tiny(augment_shift=1, epochs=1)
    prep = T.prepare_data(config, digits)
    pool = {tuple(row.tolist()) for row in prep.x_pool}
    seen, step_terms = {"labelled": [], "unlabelled": []}, engine.step_terms

    def spy(model, config, inputs, validate=False):
        seen["unlabelled"].append(inputs["x_u"])
        seen["labelled"].append(inputs["x_l"])
        return step_terms(model, config, inputs, validate)

    monkeypatch.setattr(engine, "step_terms", spy)
    first = T.train(config, dataset=digits, progress=False)
    assert all(tuple(row.tolist()) in pool for x in seen["unlabelled"] for row in x)
    labelled = torch.cat(seen["labelled"])
    moved = [tuple(row.tolist()) not in pool for row in labelled]
    assert 0.5 < sum(moved) / len(moved) < 1.0                 # 8 of 9 offsets move the image
    second = T.train(config, dataset=digits, progress=False)
    assert first.history[0]["train_loss"] == second.history[0]["train_loss"]
    unshifted = T.train(dataclasses.replace(config, augment_shift=0), dataset=digits, progress=False)
    assert first.history[0]["train_loss"] != unshifted.history[0]["train_loss"]


def test_augment_shift_needs_2d_images(digits):
    flat = dataclasses.replace(digits, image_shape=(64,))
    with pytest.raises(ValueError, match="2-d images"):
        T.train(tiny(augment_shift=1, epochs=1), dataset=flat, progress=False)


class Recorder(Callback):
    every_n_steps = 3

    def __init__(self):
        self.steps, self.epochs, self.began, self.ended = [], [], 0, 0

    def on_train_begin(self, state):
        self.began += 1

    def on_step(self, state):
        self.steps.append(state.step)

    def on_epoch_end(self, state):
        self.epochs.append(state.epoch)

    def on_train_end(self, state):
        self.ended += 1


def test_callbacks_fire(digits):
    rec = Recorder()
    result = T.train(tiny(), [rec], dataset=digits, progress=False)
    steps = result.history[-1]["step"]
    assert rec.steps == list(range(3, steps + 1, 3))
    assert rec.epochs == [1, 2] and rec.began == rec.ended == 1


class StopAt(Callback):
    every_n_steps = 1

    def __init__(self, step, how, event=None):
        self.step, self.how, self.event = step, how, event

    def on_step(self, state):
        if state.step == self.step:
            if self.how == "event":
                self.event.set()
            else:
                raise KeyboardInterrupt


@pytest.mark.parametrize("how", ["event", "interrupt"])
def test_stop_keeps_model_and_history(digits, how):
    event = threading.Event()
    steps_per_epoch = math.ceil(600 / 64)
    result = T.train(tiny(epochs=3), [StopAt(steps_per_epoch + 2, how, event)], stop=event, dataset=digits,
                     progress=False)
    assert result.stopped_early
    assert len(result.history) == 1          # epoch 1 finished, epoch 2 interrupted
    assert not result.model.training         # returned ready for evaluation


class Poison(Callback):
    every_n_steps = 1

    def on_step(self, state):
        if state.step == 2:
            with torch.no_grad():
                state.model.decoder_out.bias.fill_(float("nan"))


def test_non_finite_loss_names_step_and_term(digits):
    with pytest.raises(DivergenceError, match=r"step 3: term\(s\) unsupervised, supervised"):
        T.train(tiny(), [Poison()], dataset=digits, progress=False)


def test_checkpoint_round_trip(digits, tmp_path):
    result = T.train(tiny(epochs=1), dataset=digits, progress=False)
    path = T.save(result, tmp_path / "run" / "model.pt")
    loaded = T.load(path)
    assert loaded.config == result.config and loaded.history == result.history
    for (ka, a), (kb, b) in zip(result.model.state_dict().items(), loaded.model.state_dict().items()):
        assert ka == kb and torch.equal(a, b)
    x = digits.x_test[:5]
    torch.testing.assert_close(loaded.model.classify(x), result.model.classify(x), rtol=0, atol=0)
    assert T.load(path, config=result.config).config == result.config
    with pytest.raises(ValueError, match="incompatible.*style_dim: saved 4 vs requested 8"):
        T.load(path, config=dataclasses.replace(result.config, style_dim=8))
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": torch.zeros(1)}, bogus)
    with pytest.raises(ValueError, match="not an ssvae_lib checkpoint"):
        T.load(bogus)


def test_fast_mode_caps(monkeypatch):
    monkeypatch.setattr(settings, "FAST", True)
    config = T.fast_mode(TrainConfig(epochs=40))
    assert config.epochs == 2 and config.max_train == 2000 and config.max_test == 500
    monkeypatch.setattr(settings, "FAST", False)
    assert T.fast_mode(TrainConfig(epochs=40)).epochs == 40
