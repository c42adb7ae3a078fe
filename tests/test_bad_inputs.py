"""Bad input, faults and misuse, as a user meets them: each case ends in a clear error that names the
field or file and what is allowed, or in the correct result, and no work is lost. Grouped by family."""
from __future__ import annotations

import dataclasses
import http.server
import json
import threading
import time

import pytest
import torch

from ssvae_lib import __main__ as cli
from ssvae_lib import data, engine, metrics, objectives, store, train
from ssvae_lib.grid import GridSpec
from ssvae_lib.models import SSVAE
from ssvae_lib.train import DivergenceError, TrainConfig
from tiny_run import TINY, tiny_config


@pytest.fixture(scope="module")
def digits():
    return data.load_dataset("digits")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SSVAE(input_dim=64, hidden_dim=16, n_classes=10, style_dim=3).eval()


# -- 1. config fields: type and range, named in the message ------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("n_labelled", "50"), ("epochs", 1.5), ("batch_size", 64.7), ("iwae_examples", 1.5),
    ("validation_size", 50.5), ("epochs", True), ("seed", -1), ("seed", 2**70), ("seed", 1.0),
    ("max_train", -100), ("max_test", -10), ("max_test", 0), ("max_train", 0), ("validation_size", -1),
    ("lr", float("inf")), ("lr", float("nan")), ("lr", "0.1"), ("alpha", "50"), ("temperature", float("inf")),
    ("corruption_rate", float("nan")), ("dataset", 3), ("device", 0), ("data_root", 5),
])
def test_a_config_field_of_the_wrong_type_or_range_is_named(field, value):
    with pytest.raises(ValueError, match=rf"TrainConfig: {field} must be") as caught:
        TrainConfig(**{field: value})
    assert repr(value) in str(caught.value) or str(value) in str(caught.value)


def test_integral_numbers_of_other_types_are_accepted_as_integers():
    import numpy as np

    config = TrainConfig(epochs=np.int64(3), seed=2**32 - 1, max_train=10, lr=1, alpha=np.float32(2.0))
    assert config.epochs == 3 and type(config.epochs) is int and config.lr == 1.0


# -- 2. data that leave the likelihood's support -----------------------------------------------------
@pytest.mark.parametrize("scale, shift", [(255.0, 0.0), (1.0, -0.5)], ids=["0-255", "standardised"])
def test_pixels_outside_0_1_are_refused_everywhere_a_bernoulli_model_meets_data(model, digits, scale, shift):
    x, y = digits.x_test[:20] * scale + shift, digits.y_test[:20]
    message = r"'bernoulli' observation model needs x in \[0, 1\]"
    with pytest.raises(ValueError, match=message):
        objectives.supervised_bound(model, x, y, alpha=1.0)
    with pytest.raises(ValueError, match=message):
        objectives.unsupervised_bound(model, x)
    with pytest.raises(ValueError, match=message):
        metrics.iwae_log_likelihood(model, x)
    with pytest.raises(ValueError, match=message):
        train.evaluate(model, x, y)
    bad = dataclasses.replace(digits, x_train=digits.x_train * scale + shift)
    with pytest.raises(ValueError, match=message):
        train.train(tiny_config(epochs=1), dataset=bad, progress=False)


def test_the_dataset_summary_reports_the_values_it_holds(digits):
    assert "values in [0, 1]" in digits.summary()
    bytes_ = dataclasses.replace(digits, x_train=digits.x_train * 255, x_test=digits.x_test * 255)
    assert "values in [0, 255]" in bytes_.summary() and "[0, 1]" not in bytes_.summary()


def test_a_dataset_with_non_finite_pixels_is_refused(digits):
    x = digits.x_train.clone()
    x[3, 5] = float("nan")
    with pytest.raises(ValueError, match="x_train holds non-finite values"):
        dataclasses.replace(digits, x_train=x)


# -- 3. what evaluate accepts -------------------------------------------------------------------------
def test_labels_of_shape_b_1_are_refused_not_broadcast(model, digits):
    x, y = digits.x_test[:50], digits.y_test[:50]
    with pytest.raises(ValueError, match=r"labels y must be integer class indices of shape \[50\]"):
        train.evaluate(model, x, y[:, None])


def test_one_hot_labels_are_refused_with_the_fix(model, digits):
    x, y = digits.x_test[:50], digits.y_test[:50]
    with pytest.raises(ValueError, match=r"argmax"):
        train.evaluate(model, x, torch.nn.functional.one_hot(y, 10).float())


def test_labels_outside_the_classes_are_refused(model, digits):
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]"):
        train.evaluate(model, digits.x_test[:5], torch.tensor([0, 1, 2, 3, 10]))


def test_uint8_images_are_refused_and_float64_images_give_the_float32_result(model, digits):
    x, y = digits.x_test[:60], digits.y_test[:60]
    with pytest.raises(ValueError, match=r"images x must be floating point.*uint8.*x.float\(\) / 255"):
        train.evaluate(model, (x * 255).to(torch.uint8), y)
    ref = train.evaluate(model, x, y, generator=torch.Generator().manual_seed(1))
    got = train.evaluate(model, x.double(), y, generator=torch.Generator().manual_seed(1))
    assert got == pytest.approx(ref, rel=1e-6)


def test_an_empty_batch_and_images_of_the_wrong_size_are_refused(model, digits):
    with pytest.raises(ValueError, match="at least one image"):
        train.evaluate(model, digits.x_test[:0], digits.y_test[:0])
    with pytest.raises(ValueError, match=r"images x must have shape \[B, 64\] for this model, got \[5, 784\]"):
        train.evaluate(model, torch.rand(5, 784), digits.y_test[:5])
    with pytest.raises(ValueError, match=r"\[B, 64\]"):
        objectives.unsupervised_bound(model, torch.rand(5, 784))


# -- 4. runs that diverge -----------------------------------------------------------------------------
def test_a_loss_exploding_past_the_bound_ends_the_run_with_its_history(digits):
    with pytest.raises(DivergenceError, match=r"loss exploded at epoch 1, step \d+: .* nats per image, more than 10,000 times") as caught:
        train.train(tiny_config(lr=1e6, epochs=4), dataset=digits, progress=False)
    result = caught.value.result
    assert result.history == []                    # it exploded within the first epoch ...
    torch.manual_seed(0)
    initial = train.build_model(result.config, 64, 10).state_dict()
    for name, value in result.model.state_dict().items():   # ... so the model kept is the initial one
        assert torch.equal(value, initial[name]), name


def test_a_sweep_records_an_exploding_run_as_failed_and_goes_on(tmp_path, digits):
    small = {k: v for k, v in TINY.items() if k not in ("alpha", "n_labelled", "epochs", "dataset")}
    bad = GridSpec("bad", alphas=(1.0, 2.0), n_labelled=(50,), dataset="digits", epochs=2,
                   overrides={**small, "lr": 1e6})
    good = dataclasses.replace(bad, name="good", overrides=small)
    rows = store.run_sweep(bad, tmp_path, scores=False, progress=False, datasets={"digits": digits})
    rows += store.run_sweep(good, tmp_path, scores=False, progress=False, datasets={"digits": digits})
    assert [r["status"] for r in rows] == ["failed", "failed", "ok", "ok"]
    errors = [json.loads(p.read_text())["error"] or "" for p in (tmp_path / "records").glob("*.json")]
    assert sum(e.startswith(("loss exploded", "non-finite loss")) for e in errors) == 2


# -- 5. sizes of the pool and batches ------------------------------------------------------------------
def test_a_batch_larger_than_the_pool_is_refused(digits):
    with pytest.raises(ValueError, match=r"batch_size=100000 is larger than the training pool \(600 images\)"):
        train.train(tiny_config(batch_size=100000), dataset=digits, progress=False)


# -- 6. which data 'auto' picks ------------------------------------------------------------------------
def test_auto_refuses_a_folder_in_the_place_of_a_data_file(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").mkdir()
    with pytest.raises(data.DataFileError, match="t10k-images-idx3-ubyte.*is a directory"):
        data.load_dataset("auto", root=tmp_path)


def test_auto_refuses_a_data_folder_that_does_not_exist(tmp_path):
    with pytest.raises(data.MissingDataError, match=r"data folder .*nowhere \(from the root argument\) does not exist"):
        data.load_dataset("auto", root=tmp_path / "nowhere")


def test_auto_refuses_a_file_given_as_the_data_folder(tmp_path):
    (tmp_path / "mnist").write_text("not a folder")
    with pytest.raises(data.MissingDataError, match=r"mnist \(from the root argument\) does not exist \(it is a file\)"):
        data.load_dataset("auto", root=tmp_path / "mnist")


def test_auto_says_visibly_what_it_fell_back_to(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MNIST_MIRRORS", ("http://127.0.0.1:9/",))
    with pytest.warns(UserWarning, match=r"digits.*no MNIST files.*python -m ssvae_lib data --dataset mnist"):
        ds = data.load_dataset("auto", root=tmp_path)
    assert ds.name == "digits"


# -- 7. checkpoints -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, digits):
    result = train.train(tiny_config(epochs=1), dataset=digits, progress=False)
    return train.save(result, tmp_path_factory.mktemp("ckpt") / "model.pt")


def test_a_flipped_byte_in_the_weights_is_caught_by_the_digest(checkpoint, tmp_path):
    raw = bytearray(checkpoint.read_bytes())
    position = raw.index(b"PK", len(raw) // 2)  # inside the archive, in a tensor's storage
    raw[position - 50] ^= 0xFF
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(raw))
    with pytest.raises(train.CheckpointError, match=r"flipped.pt"):
        train.load(bad)


@pytest.mark.parametrize("content", [b"", b"hello", "truncated", "list"])
def test_empty_truncated_and_foreign_files_give_one_clear_error(checkpoint, tmp_path, content):
    path = tmp_path / "bad.pt"
    if content == "truncated":
        path.write_bytes(checkpoint.read_bytes()[:3000])
    elif content == "list":
        torch.save([1, 2, 3], path)
    else:
        path.write_bytes(content)
    with pytest.raises(train.CheckpointError, match=r"bad.pt: not an ssvae_lib checkpoint"):
        train.load(path)
    with pytest.raises(train.CheckpointError, match="does not exist"):
        train.load(tmp_path / "missing.pt")


def test_a_digits_checkpoint_is_refused_for_an_mnist_config(checkpoint):
    with pytest.raises(train.CheckpointError, match=r"input size: saved 64 vs requested 784"):
        train.load(checkpoint, TrainConfig(**{**TINY, "dataset": "mnist-t10k"}))
    assert train.load(checkpoint, tiny_config()).model.input_dim == 64


# -- 8. devices ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cuda", "cuda:3"])
def test_a_cuda_device_without_cuda_is_a_clear_error(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=rf"device '{name}'.*CUDA is not available.*'auto' or 'cpu'"):
        train.resolve_device(name)


def test_a_cuda_index_beyond_the_devices_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"device 'cuda:3'.*1 CUDA device"):
        train.resolve_device("cuda:3")


# -- 9. downloads --------------------------------------------------------------------------------------
class _Trickle(http.server.BaseHTTPRequestHandler):
    stop = threading.Event()

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        try:
            while not self.stop.wait(0.05):
                self.wfile.write(b"x")
                self.wfile.flush()
        except OSError:  # the client hung up: what the deadline is for
            pass

    def log_message(self, *args):
        pass


def test_a_trickling_mirror_hits_the_total_deadline_and_leaves_no_folder(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    folder = tmp_path / "new" / "mnist"
    started = time.monotonic()
    try:
        with pytest.raises(data.MissingDataError, match=r"took longer than 1 s \(the download deadline\)"):
            data.load_dataset("mnist-t10k", root=folder, mirrors=(f"http://127.0.0.1:{server.server_port}/",),
                              deadline=1.0)
    finally:
        _Trickle.stop.set()
        server.shutdown()
        server.server_close()
    assert time.monotonic() - started < 8
    assert not folder.exists() and not folder.parent.exists()


# -- 10. the command line: exit codes, no tracebacks, nothing lost -----------------------------------------
def test_the_cli_refuses_a_bad_value_with_exit_2(capsys, tmp_path):
    assert cli.main(["train", "--lr", "inf", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "lr must be" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_the_cli_refuses_cuda_without_cuda_with_exit_2(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["train", *_tiny_flags(device="cuda"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "device 'cuda': CUDA is not available" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_data_offline_exits_non_zero(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MNIST_MIRRORS", ("http://127.0.0.1:9/",))
    assert cli.main(["data", "--dataset", "mnist", "--root", str(tmp_path / "m")]) == 1
    assert "MNIST files missing" in capsys.readouterr().err


def _tiny_flags(**changes):
    flags = []
    for k, v in {**TINY, **changes}.items():
        flags += ["--" + k.replace("_", "-"), str(v)]
    return flags


def test_a_diverged_cli_run_writes_its_checkpoint_and_history_and_exits_3(capsys, tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", *_tiny_flags(lr=1e6, epochs=4), "--out", str(out)]) == 3
    assert "diverged" in capsys.readouterr().err
    assert (out / "history.json").exists() and train.load(out / "model.pt").model.input_dim == 64


def test_ctrl_c_during_a_cli_run_keeps_it_and_exits_130(capsys, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_step = engine._step

    def interrupted(*args):
        calls["n"] += 1
        if calls["n"] == 15:
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(engine, "_step", interrupted)
    out = tmp_path / "run"
    assert cli.main(["train", *_tiny_flags(epochs=3), "--out", str(out)]) == 130
    assert "stopped early" in capsys.readouterr().out
    assert len(train.load(out / "model.pt").history) == 1


def test_an_unexpected_file_error_is_one_line_not_a_traceback(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["train", *_tiny_flags(epochs=1), "--out", str(blocker / "run")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
