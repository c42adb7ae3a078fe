"""Tests for ssvae_lib.data: idx parsing, checksums, download, dataset choice, the labelled
subset, label corruption and the seminar thesis's labelling protocol. All offline."""
import gzip
import hashlib
import time
import http.server
import math
import os
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from ssvae_lib import data
from ssvae_lib.data import (
    DataFileError,
    Dataset,
    MissingDataError,
    corrupt_labels,
    load_dataset,
    random_shift,
    read_idx,
    split_labelled,
    split_train_test,
    thesis_epoch_batches,
    thesis_labelled_batches,
    thesis_labelled_indices,
)
from ssvae_lib.settings import DATA_DIR_ENV

ALL_STEMS = data.MNIST_TRAIN_FILES + data.MNIST_TEST_FILES


# --------------------------------------------------------------------------------------------
# Fixtures: tiny idx files written by the tests themselves
# --------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an idx file (written independently of the reader under test)."""
    magic = {1: 0x801, 3: 0x803}[array.ndim]
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def tiny_arrays(stem: str) -> np.ndarray:
    """Small, deterministic stand-ins: 40 training and 20 test images of 4x5 pixels."""
    n = 40 if stem.startswith("train") else 20
    rng = np.random.default_rng(len(stem) + n)
    if "images" in stem:
        return rng.integers(0, 256, size=(n, 4, 5), dtype=np.uint8)
    return (np.arange(n) % 10).astype(np.uint8)


def write_tiny(directory: Path, stems=ALL_STEMS, compress=True) -> dict:
    """Write tiny MNIST-named idx files; return the checksum table that verifies them."""
    directory.mkdir(parents=True, exist_ok=True)
    table = {}
    for stem in stems:
        payload = idx_bytes(tiny_arrays(stem))
        name = f"{stem}.gz" if compress else stem
        if compress:
            payload = gzip.compress(payload, mtime=0)
        (directory / name).write_bytes(payload)
        table[name] = hashlib.md5(payload).hexdigest()
    return table


def mirror_dir(tmp_path: Path):
    """A folder served as a file:// mirror holding all four tiny .gz files, and its table."""
    folder = tmp_path / "mirror"
    table = write_tiny(folder)
    return folder.as_uri() + "/", table


@pytest.fixture(scope="module")
def real_mnist_dir():
    """The folder of the official MNIST test files: $SSVAE_DATA_DIR (CI), else the user cache, where the
    two files are downloaded (MD5-checked) when missing. Never skipped: without them the tests fail."""
    value = os.environ.get(DATA_DIR_ENV, "").strip()
    directory = Path(value) if value else data.data_dir()
    try:
        load_dataset("mnist-t10k", root=directory, download=not value)
    except (MissingDataError, OSError) as err:
        pytest.fail(f"{err}\nThese tests need the two official MNIST test files (t10k-images-idx3-ubyte.gz, "
                    f"t10k-labels-idx1-ubyte.gz): set {DATA_DIR_ENV} to the folder holding them, "
                    "e.g. ../shared/data/mnist as .ci/run does.")
    return directory


@pytest.fixture(scope="module")
def t10k(real_mnist_dir):
    return load_dataset("mnist-t10k", download=False)


class FakeMirror:
    """A local HTTP server on 127.0.0.1: /good/<file> serves the file, /cut/<file> announces the
    full length but sends only half and hangs up (an interrupted download)."""

    def __init__(self, files: dict):
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                mode, _, name = self.path.strip("/").partition("/")
                mirror.requests.append(self.path)
                if name not in files:
                    self.send_error(404)
                    return
                body = files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if mode == "good" else body[: len(body) // 2])

            def log_message(self, *args):
                pass

        self.requests = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def no_proxy(monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


# --------------------------------------------------------------------------------------------
# idx parsing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_reads_images_and_labels(tmp_path, compress):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 0, 255], dtype=np.uint8)
    for name, array in [("img", images), ("lab", labels)]:
        payload = idx_bytes(array)
        (tmp_path / name).write_bytes(gzip.compress(payload) if compress else payload)
    np.testing.assert_array_equal(read_idx(tmp_path / "img"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "lab"), labels)
    assert read_idx(tmp_path / "img").dtype == np.uint8


def test_read_idx_wrong_magic_names_file(tmp_path):
    path = tmp_path / "bad-magic-idx3-ubyte"
    payload = bytearray(idx_bytes(np.zeros((2, 2, 2), np.uint8)))
    payload[2] = 0x0D  # float32 type code instead of unsigned byte
    path.write_bytes(bytes(payload))
    with pytest.raises(DataFileError, match="magic number 0x00000d03") as err:
        read_idx(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_truncated_file_names_file(tmp_path, compress):
    path = tmp_path / "cut-idx3-ubyte"
    payload = idx_bytes(np.ones((3, 4, 4), np.uint8))[:-5]
    path.write_bytes(gzip.compress(payload) if compress else payload)
    with pytest.raises(DataFileError, match="truncated") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_read_idx_truncated_gzip_stream_and_header(tmp_path):
    cut_gzip = tmp_path / "cut.gz"
    cut_gzip.write_bytes(gzip.compress(idx_bytes(np.ones((3, 4, 4), np.uint8)))[:-10])
    with pytest.raises(DataFileError, match="gzip") as err:
        read_idx(cut_gzip)
    assert str(cut_gzip) in str(err.value)
    cut_header = tmp_path / "cut-header"
    cut_header.write_bytes(idx_bytes(np.ones((3, 4, 4), np.uint8))[:9])
    with pytest.raises(DataFileError, match="header"):
        read_idx(cut_header)


def test_read_idx_trailing_bytes_rejected(tmp_path):
    path = tmp_path / "long"
    path.write_bytes(idx_bytes(np.ones(5, np.uint8)) + b"\x00\x00")
    with pytest.raises(DataFileError, match="2 unexpected bytes"):
        read_idx(path)


# --------------------------------------------------------------------------------------------
# Checksums and loading MNIST-named files
# --------------------------------------------------------------------------------------------


def test_tiny_mnist_loads_with_injected_checksums(tmp_path):
    table = write_tiny(tmp_path)
    ds = load_dataset("mnist", root=tmp_path, download=False, checksums=table)
    assert (ds.name, ds.n_train, ds.n_test, ds.image_shape, ds.input_dim) == (
        "mnist", 40, 20, (4, 5), 20)
    np.testing.assert_array_equal(
        ds.x_train.numpy() * 255, tiny_arrays("train-images-idx3-ubyte").reshape(40, 20))
    np.testing.assert_array_equal(ds.y_test.numpy(), tiny_arrays("t10k-labels-idx1-ubyte"))
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64


def test_uncompressed_files_are_accepted(tmp_path):
    table = write_tiny(tmp_path, compress=False)
    ds = load_dataset("mnist", root=tmp_path, download=False, checksums=table)
    assert (ds.n_train, ds.n_test) == (40, 20)


def test_bad_checksum_raises_naming_file_and_leaves_it_untouched(tmp_path):
    table = write_tiny(tmp_path)
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    table[bad.name] = "0" * 32
    before = bad.read_bytes()
    mirror, _ = mirror_dir(tmp_path)
    for download in (False, True):  # a present but corrupt file is never replaced
        with pytest.raises(DataFileError, match="MD5") as err:
            load_dataset("mnist", root=tmp_path, download=download, mirrors=[mirror],
                         checksums=table)
        assert str(bad) in str(err.value)
        assert bad.read_bytes() == before


def test_file_without_known_checksum_is_refused(tmp_path):
    table = write_tiny(tmp_path)
    del table["t10k-images-idx3-ubyte.gz"]
    with pytest.raises(DataFileError, match="no known MD5") as err:
        load_dataset("mnist", root=tmp_path, download=False, checksums=table)
    assert "t10k-images-idx3-ubyte.gz" in str(err.value)


def test_images_labels_count_mismatch_names_files(tmp_path):
    table = write_tiny(tmp_path, stems=data.MNIST_TEST_FILES)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.zeros(19, np.uint8))))
    table[labels.name] = hashlib.md5(labels.read_bytes()).hexdigest()
    with pytest.raises(DataFileError, match="20 images") as err:
        load_dataset("mnist-t10k", root=tmp_path, download=False, checksums=table)
    assert str(labels) in str(err.value)


def test_real_checksum_table_matches_known_values():
    # The official values as published with the offline copy of the data; the test-file
    # values (and their uncompressed ones) are also checked against the real files below.
    assert data.MNIST_MD5["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert data.MNIST_MD5["train-labels-idx1-ubyte.gz"] == "d53e105ee54ea40749a09fcbcd1e9432"
    assert data.MNIST_MD5["t10k-images-idx3-ubyte.gz"] == "9fb629c4189551a2d022fa330f9573f3"
    assert data.MNIST_MD5["t10k-labels-idx1-ubyte.gz"] == "ec29112dd5afa0611ce80d1b7f02629c"


def test_real_t10k_files_match_table(real_mnist_dir):
    for stem in data.MNIST_TEST_FILES:
        gz = (real_mnist_dir / f"{stem}.gz").read_bytes()
        assert hashlib.md5(gz).hexdigest() == data.MNIST_MD5[f"{stem}.gz"]
        assert hashlib.md5(gzip.decompress(gz)).hexdigest() == data.MNIST_MD5[stem]


# --------------------------------------------------------------------------------------------
# Download through local fake mirrors (no network)
# --------------------------------------------------------------------------------------------


def test_download_from_file_mirror(tmp_path):
    mirror, table = mirror_dir(tmp_path)
    target = tmp_path / "cache"
    ds = load_dataset("mnist", root=target, mirrors=[mirror], checksums=table)
    assert (ds.n_train, ds.n_test) == (40, 20)
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{s}.gz" for s in ALL_STEMS)
    for p in target.iterdir():
        assert hashlib.md5(p.read_bytes()).hexdigest() == table[p.name]


def test_interrupted_download_leaves_no_partial_file(tmp_path, no_proxy):
    _, table = mirror_dir(tmp_path)
    files = {name: (tmp_path / "mirror" / name).read_bytes() for name in table}
    target = tmp_path / "cache"
    with FakeMirror(files) as server:
        with pytest.raises(MissingDataError) as err:
            load_dataset("mnist-t10k", root=target, mirrors=[server.url + "/cut/"],
                         checksums=table)
    assert server.requests  # the mirror was really asked
    assert not target.exists()  # no partial file, and no empty folder left behind
    message = str(err.value)
    assert "/cut/t10k-images-idx3-ubyte.gz" in message and str(target) in message
    for stem in data.MNIST_TEST_FILES:
        assert f"{stem}.gz" in message and table[f"{stem}.gz"] in message


def test_download_raising_midway_leaves_no_partial_file(tmp_path, monkeypatch):
    mirror, table = mirror_dir(tmp_path)
    target = tmp_path / "cache"
    seen_part_files = []

    class Breaks:
        headers = {}

        def __init__(self):
            self.calls = 0

        def read1(self, n):
            self.calls += 1
            if self.calls == 1:
                return b"\x1f\x8b partial"
            seen_part_files.extend(p.name for p in target.iterdir())
            raise ConnectionResetError("connection reset midway")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Breaks())
    with pytest.raises(MissingDataError, match="connection reset midway"):
        load_dataset("mnist-t10k", root=target, mirrors=[mirror], checksums=table)
    assert any(name.endswith(".part") for name in seen_part_files)  # was written to a temp file
    assert not target.exists()  # ... which is gone, with the folder made for it


def test_next_mirror_after_interrupted_and_wrong_downloads(tmp_path, no_proxy):
    mirror, table = mirror_dir(tmp_path)
    files = {name: (tmp_path / "mirror" / name).read_bytes() for name in table}
    wrong = {name: b"not the file" for name in table}
    wrong_folder = tmp_path / "wrong"
    wrong_folder.mkdir()
    for name, body in wrong.items():
        (wrong_folder / name).write_bytes(body)
    target = tmp_path / "cache"
    with FakeMirror(files) as server:
        mirrors = [server.url + "/cut/", wrong_folder.as_uri() + "/", server.url + "/good"]
        ds = load_dataset("mnist-t10k", root=target, mirrors=mirrors, checksums=table)
        assert len(server.requests) == 4  # each of the two files: cut, then good
    assert ds.n_train + ds.n_test == 20
    assert sorted(p.name for p in target.iterdir()) == sorted(
        f"{s}.gz" for s in data.MNIST_TEST_FILES)


def test_offline_error_says_what_where_and_checksums(tmp_path):
    target = tmp_path / "empty"
    with pytest.raises(MissingDataError) as err:
        load_dataset("mnist", root=target, download=False)
    message = str(err.value)
    assert str(target) in message and "download=False" in message
    for stem in ALL_STEMS:
        assert f"{stem}.gz" in message and data.MNIST_MD5[f"{stem}.gz"] in message


# --------------------------------------------------------------------------------------------
# Choosing the dataset: root resolution and "auto"
# --------------------------------------------------------------------------------------------


def test_data_dir_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert data.data_dir() == tmp_path / "env"
    monkeypatch.delenv(DATA_DIR_ENV)
    assert data.data_dir() == tmp_path / "xdg" / "ssvae_lib" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.data_dir() == Path.home() / ".cache" / "ssvae_lib" / "mnist"


def test_auto_fallback_order_and_no_download(tmp_path):
    mirror, table = mirror_dir(tmp_path)  # a working mirror that auto must not use
    folder = tmp_path / "data"
    folder.mkdir()
    assert load_dataset("auto", root=folder, mirrors=[mirror], checksums=table).name == "digits"
    assert list(folder.iterdir()) == []
    write_tiny(folder, stems=data.MNIST_TEST_FILES)
    ds = load_dataset("auto", root=folder, mirrors=[mirror], checksums=table)
    assert ds.name == "mnist-t10k" and ds.provenance.startswith("MNIST-10k")
    assert not (folder / "train-images-idx3-ubyte.gz").exists()  # nothing was downloaded
    write_tiny(folder, stems=data.MNIST_TRAIN_FILES)
    ds = load_dataset("auto", root=folder, mirrors=[mirror], checksums=table)
    assert ds.name == "mnist" and (ds.n_train, ds.n_test) == (40, 20)


def test_auto_uses_env_var_with_real_files(real_mnist_dir, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(real_mnist_dir))
    ds = load_dataset("auto")
    assert ds.name == "mnist-t10k" and "not full MNIST" in ds.provenance
    text = data.describe()
    assert "auto picked: mnist-t10k" in text and "8,000 train / 2,000 test" in text


def test_describe_reports_digits_for_empty_folder(tmp_path):
    text = data.describe(root=tmp_path)
    assert "auto picked: digits" in text and "1,497 train / 300 test" in text


def test_unknown_name_and_stray_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="mnist-t10k"):
        load_dataset("cifar", root=tmp_path)
    with pytest.raises(TypeError, match="n_images"):
        load_dataset("digits", n_images=3)


def test_shapes_hook_passes_arguments_on(monkeypatch):
    monkeypatch.setattr(data.shapes, "load_shapes", lambda **kwargs: ("shapes", kwargs))
    assert load_dataset("shapes", n_images=12) == ("shapes", {"seed": 0, "n_images": 12})
    assert load_dataset("shapes", seed=3)[1]["seed"] == 3


# --------------------------------------------------------------------------------------------
# The real MNIST-10k split and the digits stand-in
# --------------------------------------------------------------------------------------------


def test_mnist_t10k_split_sizes_and_values(t10k, real_mnist_dir):
    assert (t10k.n_train, t10k.n_test, t10k.input_dim, t10k.image_shape) == (
        8000, 2000, 784, (28, 28))
    assert 0.0 <= t10k.x_train.min() and t10k.x_train.max() <= 1.0
    assert sorted(torch.unique(t10k.y_test).tolist()) == list(range(10))
    # The two parts are a partition of the 10,000 official images (none lost, none shared).
    raw = read_idx(real_mnist_dir / "t10k-images-idx3-ubyte.gz").reshape(10000, 784)
    original = sorted(row.tobytes() for row in raw)
    parts = torch.cat([t10k.x_train, t10k.x_test]).mul(255).round().to(torch.uint8).numpy()
    assert sorted(row.tobytes() for row in parts) == original


def test_mnist_t10k_split_is_reproducible_by_seed(t10k, real_mnist_dir):
    again = load_dataset("mnist-t10k", download=False)
    other = load_dataset("mnist-t10k", download=False, seed=1)
    assert torch.equal(again.x_train, t10k.x_train) and torch.equal(again.y_test, t10k.y_test)
    assert not torch.equal(other.y_train, t10k.y_train)
    assert "(seed 1)" in other.provenance


def test_split_train_test_partition():
    train, test = split_train_test(50, 10, seed=3)
    assert len(test) == 10 and len(train) == 40
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(50))
    assert np.array_equal(test, split_train_test(50, 10, seed=3)[1])
    assert not np.array_equal(test, split_train_test(50, 10, seed=4)[1])


def test_digits_shape_and_split():
    ds = load_dataset("digits")
    assert (ds.n_train, ds.n_test, ds.input_dim, ds.image_shape, ds.n_classes) == (
        1497, 300, 64, (8, 8), 10)
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0  # 0..16 scaled by 1/16
    assert torch.equal(load_dataset("digits").y_test, ds.y_test)
    assert not torch.equal(load_dataset("digits", seed=5).y_test, ds.y_test)


# --------------------------------------------------------------------------------------------
# The Dataset container and devices
# --------------------------------------------------------------------------------------------


def small_dataset(**extra):
    x = torch.rand(6, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    return Dataset(x[:4], y[:4], x[4:], y[4:], (2, 2), 3, "toy", "six random images", **extra)


def test_dataset_properties_summary_and_to():
    factors = np.arange(12).reshape(6, 2)
    ds = small_dataset(factors_train=factors[:4], factors_test=factors[4:],
                       factor_names=("a", "b"))
    assert (ds.n_train, ds.n_test, ds.input_dim) == (4, 2, 4)
    np.testing.assert_array_equal(ds.factors, factors)
    moved = ds.to(data.default_device())
    assert moved is not ds and moved.x_train.device.type == data.default_device().type
    assert moved.factor_names == ("a", "b") and moved.factors_test is ds.factors_test
    text = ds.summary()
    assert "toy" in text and "six random images" in text and "4 train / 2 test" in text
    assert "train class counts: 0:2 1:1 2:1" in text
    assert small_dataset().factors is None


def test_dataset_rejects_inconsistent_parts():
    x, y = torch.rand(3, 4), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="rows"):
        Dataset(x, y[:2], x, y, (2, 2), 3, "bad", "")
    with pytest.raises(ValueError, match="pixels"):
        Dataset(x, y, x, y, (3, 3), 3, "bad", "")
    with pytest.raises(ValueError, match="int64"):
        Dataset(x, y.int(), x, y, (2, 2), 3, "bad", "")


def test_default_device_prefers_cuda():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert data.default_device() == torch.device(expected)


# --------------------------------------------------------------------------------------------
# The labelled subset
# --------------------------------------------------------------------------------------------


def test_split_labelled_size_balance_and_type():
    labels = torch.from_numpy(np.random.default_rng(0).integers(0, 10, size=3000))
    for n_labelled in (0, 7, 100, 123, 1000):
        idx = split_labelled(labels, n_labelled, seed=0)
        assert idx.dtype == torch.int64 and len(idx) == n_labelled
        assert len(torch.unique(idx)) == n_labelled and torch.equal(idx, torch.sort(idx).values)
        counts = torch.bincount(labels[idx], minlength=10)
        assert counts.max() - counts.min() <= (1 if n_labelled % 10 else 0)


def test_split_labelled_is_fixed_by_seed_and_extras_are_random():
    labels = np.repeat(np.arange(10), 50)
    assert torch.equal(split_labelled(labels, 105, 4), split_labelled(labels, 105, 4))
    assert not torch.equal(split_labelled(labels, 105, 4), split_labelled(labels, 105, 5))
    lucky = {int(np.argmax(np.bincount(labels[split_labelled(labels, 101, s)], minlength=10)))
             for s in range(40)}
    # Which class gets the one extra label: 40 seeds all picking the same class has
    # probability 10 * 0.1**40; seeing at least 5 distinct classes fails with p < 1e-20.
    assert len(lucky) >= 5


def test_split_labelled_is_disjoint_from_held_out_test(t10k):
    idx = split_labelled(t10k.y_train, 100, seed=0)
    train_rows, test_rows = split_train_test(10000, 2000, seed=0)
    assert set(train_rows[idx.numpy()].tolist()).isdisjoint(test_rows.tolist())
    test_images = {row.tobytes() for row in t10k.x_test.numpy()}  # no duplicates in t10k
    assert not any(row.tobytes() in test_images for row in t10k.x_train[idx].numpy())


def test_split_labelled_errors():
    labels = np.array([0] * 10 + [1] * 3)
    with pytest.raises(ValueError, match="exceeds"):
        split_labelled(labels, 14, 0)
    with pytest.raises(ValueError, match="n_labelled must be an integer >= 0, got -1"):
        split_labelled(labels, -1, 0)
    with pytest.raises(ValueError, match="class 1 has only 3"):
        split_labelled(labels, 8, 0)
    with pytest.raises(ValueError, match="integer"):
        split_labelled(labels, 2.5, 0)
    assert len(split_labelled(labels, 7, 0)) == 7  # 4 + 3 works: class 1 gives all it has


# --------------------------------------------------------------------------------------------
# Augmentation: random translations
# --------------------------------------------------------------------------------------------
def translations(image: torch.Tensor, max_shift: int) -> list[torch.Tensor]:
    """Every translation of a 2-d image by (dy, dx) in {-s..s}^2, zero-filled (written with slices)."""
    height, width = image.shape
    out = []
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            moved = torch.zeros_like(image)
            moved[max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
                image[max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
            out.append(moved)
    return out


@pytest.mark.parametrize("max_shift", [1, 2])
def test_random_shift_translates_each_image_by_its_own_offset(max_shift):
    x = torch.rand(300, 5 * 7)
    shifted = random_shift(x, (5, 7), max_shift, torch.Generator().manual_seed(0))
    used = set()
    for original, moved in zip(x.view(-1, 5, 7), shifted.view(-1, 5, 7)):
        matches = [k for k, t in enumerate(translations(original, max_shift)) if torch.equal(t, moved)]
        assert len(matches) == 1
        used.add(matches[0])
    assert used == set(range((2 * max_shift + 1) ** 2))   # every offset occurs among 300 images
    again = random_shift(x, (5, 7), max_shift, torch.Generator().manual_seed(0))
    assert torch.equal(again, shifted)                      # seeded: reproducible


def test_random_shift_keeps_a_centred_digit_whole():
    x = torch.zeros(50, 8, 8)
    x[:, 2:6, 2:6] = torch.rand(50, 4, 4)                  # a 2-pixel empty border
    shifted = random_shift(x.view(50, 64), (8, 8), 2, torch.Generator().manual_seed(1))
    # Only where the pixels sit changes: each image keeps exactly the same multiset of values.
    assert torch.equal(shifted.sort(1).values, x.view(50, 64).sort(1).values)
    assert torch.equal(random_shift(x.view(50, 64), (8, 8), 0), x.view(50, 64))


@pytest.mark.parametrize("shape, max_shift, match", [
    ((64,), 1, "2-d images"), ((4, 4), 1, "shape"), ((8, 8), 8, "out of its frame"),
    ((8, 8), -1, "integer >= 0"), ((8, 8), 1.5, "integer")])
def test_random_shift_rejects_bad_input(shape, max_shift, match):
    with pytest.raises(ValueError, match=match):
        random_shift(torch.rand(3, 64), shape, max_shift)


# --------------------------------------------------------------------------------------------
# Label corruption
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.0, 0.01, 0.1, 0.25, 0.3333, 0.5, 1.0])
@pytest.mark.parametrize("protocol", ["fixed", "per_epoch"])
def test_corruption_exact_count_and_never_to_itself(rate, protocol):
    labels = torch.from_numpy(np.random.default_rng(1).integers(0, 10, size=1001))
    corrupted, changed = corrupt_labels(labels, rate, 10, seed=2, protocol=protocol, epoch=3)
    assert int(changed.sum()) == math.floor(rate * 1001 + 0.5)
    assert torch.all(corrupted[changed] != labels[changed])
    assert torch.equal(corrupted[~changed], labels[~changed])
    assert corrupted.dtype == torch.int64 and corrupted.min() >= 0 and corrupted.max() < 10


def test_corruption_edge_rates():
    labels = torch.arange(20) % 4
    same, none = corrupt_labels(labels, 0, 4, seed=0)
    assert torch.equal(same, labels) and not none.any()
    flipped, every = corrupt_labels(labels, 1, 4, seed=0)
    assert every.all() and torch.all(flipped != labels)


def test_corruption_targets_are_uniform_over_other_classes():
    labels = np.zeros(9000, dtype=np.int64)
    corrupted, _ = corrupt_labels(labels, 1.0, 10, seed=7)
    counts = np.bincount(corrupted.numpy(), minlength=10)
    assert counts[0] == 0
    # Each of classes 1..9 is Binomial(9000, 1/9): mean 1000, sd sqrt(9000/9*8/9) = 29.8.
    # 5 standard deviations: false-alarm probability < 9 * 6e-7 over the nine classes.
    assert np.all(np.abs(counts[1:] - 1000) < 5 * math.sqrt(9000 / 9 * 8 / 9))


def test_fixed_corruption_ignores_epoch_and_per_epoch_redraws():
    labels = torch.arange(500) % 10
    fixed = [corrupt_labels(labels, 0.2, 10, seed=3, epoch=e) for e in (0, 5)]
    assert torch.equal(fixed[0][0], fixed[1][0]) and torch.equal(fixed[0][1], fixed[1][1])
    e0 = corrupt_labels(labels, 0.2, 10, seed=3, protocol="per_epoch", epoch=0)
    e0_again = corrupt_labels(labels, 0.2, 10, seed=3, protocol="per_epoch", epoch=0)
    e1 = corrupt_labels(labels, 0.2, 10, seed=3, protocol="per_epoch", epoch=1)
    assert torch.equal(e0[0], e0_again[0]) and torch.equal(e0[1], e0_again[1])
    assert not torch.equal(e0[1], e1[1]) and int(e1[1].sum()) == 100


def test_corruption_rejects_bad_input():
    labels = torch.tensor([0, 1, 2])
    for rate in (-0.1, 1.1, float("nan"), "0.5"):
        with pytest.raises(ValueError, match="rate"):
            corrupt_labels(labels, rate, 3, seed=0)
    with pytest.raises(ValueError, match="epoch"):
        corrupt_labels(labels, 0.5, 3, seed=0, protocol="per_epoch")
    with pytest.raises(ValueError, match="protocol"):
        corrupt_labels(labels, 0.5, 3, seed=0, protocol="sometimes")
    with pytest.raises(ValueError, match="outside 0..1"):
        corrupt_labels(labels, 0.5, 2, seed=0)


# --------------------------------------------------------------------------------------------
# The seminar thesis's batch-keyed labelling protocol
# --------------------------------------------------------------------------------------------

M, N, BATCH = 100, 60_000, 256


def test_thesis_protocol_often_labels_no_batch_at_all():
    n_batches = N // BATCH  # 234: the last incomplete batch is dropped
    n_seeds = 1000
    none = sum(not thesis_labelled_batches(N, M, BATCH, seed).any() for seed in range(n_seeds))
    share = none / n_seeds
    exact = (1 - M / N) ** n_batches  # each batch labelled independently with probability M/N
    standard_error = math.sqrt(exact * (1 - exact) / n_seeds)
    assert share > 0.5
    assert abs(share - exact) < 4 * standard_error  # 4 SE: false alarm < 1e-4


def test_thesis_protocol_shows_far_more_than_m_images_over_40_epochs():
    seed = next(s for s in range(100) if thesis_labelled_batches(N, M, BATCH, s).any())
    per_epoch = [thesis_labelled_indices(N, M, BATCH, seed, epoch) for epoch in range(1, 41)]
    distinct = data.thesis_distinct_labelled(N, M, BATCH, seed, epochs=40)
    assert distinct == len(np.unique(np.concatenate(per_epoch)))
    assert distinct > 5 * M
    assert not np.array_equal(per_epoch[0], per_epoch[1])  # different images every epoch


def test_thesis_epoch_batches_shuffle_each_epoch_reproducibly():
    b0 = thesis_epoch_batches(1000, 64, seed=1, epoch=0)
    assert b0.shape == (15, 64) and len(np.unique(b0)) == 15 * 64 and b0.max() < 1000
    assert np.array_equal(b0, thesis_epoch_batches(1000, 64, seed=1, epoch=0))
    assert not np.array_equal(b0, thesis_epoch_batches(1000, 64, seed=1, epoch=1))
    mask = thesis_labelled_batches(1000, 500, 64, seed=1)
    indices = thesis_labelled_indices(1000, 500, 64, seed=1, epoch=0)
    assert np.array_equal(indices, np.sort(b0[mask].ravel()))


def test_thesis_protocol_rejects_bad_input():
    with pytest.raises(ValueError, match="n_labelled"):
        thesis_labelled_batches(100, 101, 10, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        thesis_epoch_batches(100, 0, seed=0, epoch=0)
    with pytest.raises(ValueError, match="epoch"):
        thesis_epoch_batches(100, 10, seed=0, epoch=-1)


def test_auto_downloads_full_mnist_into_the_user_cache(tmp_path, monkeypatch):
    mirror, table = mirror_dir(tmp_path)
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    ds = load_dataset("auto", mirrors=[mirror], checksums=table)
    assert ds.name == "mnist" and (ds.n_train, ds.n_test) == (40, 20)
    assert sorted(p.name for p in (tmp_path / "xdg" / "ssvae_lib" / "mnist").iterdir()) == sorted(table)


def test_auto_offline_falls_back_within_seconds_and_says_why(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    started = time.monotonic()
    with pytest.warns(UserWarning, match=r"picked digits, an offline stand-in.*no MNIST mirror served the "
                                         r"files within 3 s.*python -m ssvae_lib data --dataset mnist"):
        ds = load_dataset("auto", mirrors=["http://10.255.255.1/"])    # hangs or is refused
    assert ds.name == "digits" and time.monotonic() - started < 6
    assert not (tmp_path / "xdg").exists()                             # nothing created
