"""Data: MNIST idx files (checksummed download), offline stand-ins, the labelled subset,
label corruption and the seminar thesis's batch-keyed labelling protocol.

Datasets (``load_dataset``):

* ``"mnist"``      the four official idx files; missing ones are downloaded and MD5-verified.
* ``"mnist-t10k"`` only the two official *test* files: 10,000 real digits re-split 8,000 / 2,000.
* ``"digits"``     scikit-learn's bundled 8x8 digits (1,797 images), always available offline.
* ``"auto"``       ``mnist`` if its files are present; else, with no folder given (the user cache) and a
                   mirror reachable within seconds, ``mnist`` downloaded; else the first of ``mnist-t10k``
                   and ``digits`` whose files are present, with a warning saying why and how to fix it.
* ``"shapes"``     a procedurally generated dataset with known factors (``ssvae_lib.shapes``).

Every loader returns a ``Dataset`` (:mod:`ssvae_lib.dataset`, also importable as ``data.Dataset``).
Images are flattened float32 tensors in [0, 1] of shape [N, D]; labels are int64 in [0, n_classes).
The notation follows GUIDE.md §2: M = ``n_labelled`` labelled examples, N = examples in the pool.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import logging
import math
import os
import struct
import tempfile
import threading
import time
import urllib.request
import warnings
import zlib
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from . import shapes
from .checks import check_choice, check_int, check_real
from .dataset import Dataset
from .settings import DATA_DIR_ENV
from .shapes import ShapesSampler  # noqa: F401 - data.ShapesSampler (issue API)

logger = logging.getLogger("ssvae_lib")

# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

MNIST_TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
MNIST_TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

#: MD5 of every file name the loader accepts: the gzip files served by the mirrors and the
#: same files uncompressed. A file is only ever used after its MD5 matched this table.
MNIST_MD5: Mapping[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

#: Mirrors serving the four ``*.gz`` files, tried in this order: ``$SSVAE_MNIST_MIRRORS`` (comma-separated
#: URLs of folders, e.g. a local mirror behind a firewall) if set, else two public ones.
MNIST_MIRRORS: tuple[str, ...] = tuple(url.strip() for url in os.environ.get("SSVAE_MNIST_MIRRORS", "").split(",")
                                       if url.strip()) or (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

DATASET_NAMES = ("auto", "mnist", "mnist-t10k", "digits", "shapes")
BINARIZATION_SEED = 0       # the one binarisation of evaluation images (data.binarized)
_FALLBACK_WARNINGS: dict = {}   # each fallback warning once per process (warnings' registry)
PROBE_SECONDS = 3.0         # how long "auto" waits for a mirror to answer before it falls back offline
DOWNLOAD_TIMEOUT = 60.0     # seconds one read of a download may wait
DOWNLOAD_DEADLINE = 600.0   # seconds one file's download may take in all
# Pixels per image of each dataset, known without loading it (checkpoints check it against a config).
INPUT_SIZES = {"mnist": 28 * 28, "mnist-t10k": 28 * 28, "digits": 8 * 8, "shapes": shapes.IMAGE_SIZE ** 2}

IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions

T10K_TEST_FRACTION = 0.2  # mnist-t10k: 10,000 digits -> 8,000 training pool / 2,000 test
DIGITS_N_TEST = 300  # digits: 1,797 images -> 1,497 training pool / 300 test

# One tag per random decision, so that the same user seed never gives correlated streams.
_STREAM_TRAIN_TEST = 1
_STREAM_LABELLED = 3
_STREAM_CORRUPT_FIXED = 4
_STREAM_CORRUPT_PER_EPOCH = 5
_STREAM_THESIS_BATCHES = 6
_STREAM_THESIS_SHUFFLE = 7


class DataFileError(ValueError):
    """A data file exists but is corrupt: wrong checksum, wrong idx header or truncated."""


class MissingDataError(FileNotFoundError):
    """Required data files are absent and could not be downloaded."""


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


# --------------------------------------------------------------------------------------------
# idx files, checksums, download
# --------------------------------------------------------------------------------------------


def read_idx(path) -> np.ndarray:
    """Read an idx file of unsigned bytes (gzip-compressed or not) into a uint8 array.

    Accepts magic 0x00000801 (labels, [N]) and 0x00000803 (images, [N, rows, cols]); checks
    that every dimension is positive and that the payload has exactly the announced length.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataFileError(f"{path}: not a valid gzip file ({err})") from None
    if len(raw) < 4:
        raise DataFileError(f"{path}: {len(raw)} bytes is too short for an idx header")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (IDX_LABELS_MAGIC, IDX_IMAGES_MAGIC):
        raise DataFileError(
            f"{path}: magic number 0x{magic:08x} is not an idx file of unsigned bytes; expected "
            f"0x{IDX_LABELS_MAGIC:08x} (labels) or 0x{IDX_IMAGES_MAGIC:08x} (images)"
        )
    ndim = raw[3]
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataFileError(f"{path}: truncated inside the idx header ({len(raw)} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header_len])
    if 0 in dims:
        raise DataFileError(f"{path}: idx header has an empty dimension {dims}")
    expected, found = math.prod(dims), len(raw) - header_len
    if found < expected:
        raise DataFileError(
            f"{path}: truncated; the header announces {dims} = {expected} bytes, found {found}"
        )
    if found > expected:
        raise DataFileError(
            f"{path}: {found - expected} unexpected bytes after the {expected} announced by {dims}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims).copy()


def file_md5(path) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def data_dir(root=None) -> Path:
    """Folder holding the MNIST idx files: ``root``, else ``$SSVAE_DATA_DIR``, else the user
    cache (``$XDG_CACHE_HOME/ssvae_lib/mnist``, by default ``~/.cache/ssvae_lib/mnist``)."""
    return _data_dir_and_source(root)[0]


def _data_dir_and_source(root) -> tuple[Path, str]:
    if root is not None:
        return Path(root).expanduser(), "the root argument"
    from_env = os.environ.get(DATA_DIR_ENV, "").strip()
    if from_env:
        return Path(from_env).expanduser(), f"${DATA_DIR_ENV}"
    cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    if not cache or not Path(cache).is_absolute():  # the XDG spec ignores relative values
        cache = "~/.cache"
    return Path(cache).expanduser() / "ssvae_lib" / "mnist", "the user cache"


def _present(directory: Path, stem: str) -> Path | None:
    """The compressed (preferred) or uncompressed file for ``stem``, if either exists; a
    ``DataFileError`` if something else (a folder) stands in its place."""
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.exists() and not candidate.is_file():
            raise DataFileError(f"{candidate} is a directory (or another non-file), not an MNIST idx file; "
                                "remove it or point the data folder elsewhere")
        if candidate.is_file():
            return candidate
    return None


def _verified(path: Path, checksums: Mapping[str, str]) -> Path:
    """``path`` after its MD5 matched ``checksums``; otherwise an error naming the file."""
    expected = checksums.get(path.name)
    if expected is None:
        raise DataFileError(
            f"{path}: no known MD5 for this file name, so it cannot be verified; "
            f"known names: {', '.join(sorted(checksums))}"
        )
    actual = file_md5(path)
    if actual != expected.lower():
        raise DataFileError(
            f"{path}: MD5 is {actual} but should be {expected}; the file is corrupt or not the "
            "official one. It was left untouched: delete it to have it downloaded again."
        )
    return path


def _fetch(url: str, target: Path, expected_md5: str, timeout: float, deadline: float) -> None:
    """Download ``url`` to ``target`` atomically: a temporary file in the same folder, renamed
    only after the MD5 matched; removed on any failure, so no partial file is ever left.
    ``timeout``: seconds one read may wait; ``deadline``: seconds the whole file may take."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    give_up = time.monotonic() + deadline
    try:
        digest = hashlib.md5(usedforsecurity=False)
        n_bytes = 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=min(timeout, deadline)) as response, \
                tqdm(total=None, unit="B", unit_scale=True, desc=target.name, leave=False) as bar:
            announced = response.headers.get("Content-Length")
            bar.total = None if announced is None else int(announced)
            for chunk in iter(lambda: response.read1(1 << 16), b""):
                out.write(chunk)
                bar.update(len(chunk))
                digest.update(chunk)
                n_bytes += len(chunk)
                if time.monotonic() > give_up:
                    raise TimeoutError(f"took longer than {deadline:g} s (the download deadline) after "
                                       f"{n_bytes} bytes")
        if announced is not None and n_bytes != int(announced):
            raise OSError(f"connection ended after {n_bytes} of {announced} bytes")
        if digest.hexdigest() != expected_md5.lower():
            raise ValueError(f"MD5 {digest.hexdigest()} does not match {expected_md5}")
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _download(directory: Path, filename: str, mirrors: Sequence[str],
              checksums: Mapping[str, str], timeout: float, deadline: float) -> list[str]:
    """Try each mirror in turn; return [] on success, else one failure reason per mirror."""
    reasons = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        try:
            logger.info("downloading %s", url)
            _fetch(url, directory / filename, checksums[filename], timeout, deadline)
            return []
        except (OSError, ValueError, http.client.HTTPException) as err:
            reasons.append(f"{url}: {err}")
    return reasons or ["no mirror given"]


def _missing_message(directory: Path, missing: Sequence[str], checksums: Mapping[str, str],
                     reasons: Sequence[str]) -> str:
    lines = [f"MNIST files missing from {directory}: {', '.join(f + '.gz' for f in missing)}."]
    if reasons:
        lines.append("Downloading them failed:")
        lines += [f"  {r}" for r in reasons]
    else:
        lines.append("Downloading was switched off (download=False).")
    lines.append(
        f"Put these files (gzip-compressed or uncompressed) into {directory}, or point "
        f"${DATA_DIR_ENV} at a folder that holds them. Expected MD5 checksums:"
    )
    for stem in missing:
        for name in (f"{stem}.gz", stem):
            if name in checksums:
                lines.append(f"  {name}  {checksums[name]}")
    lines.append('Offline, load_dataset("auto") falls back to mnist-t10k or digits.')
    return "\n".join(lines)


def _load_idx_files(stems: Sequence[str], root, download: bool, mirrors: Sequence[str],
                    checksums: Mapping[str, str], timeout: float,
                    deadline: float) -> dict[str, tuple[Path, np.ndarray]]:
    """stem -> (path, verified array) for the given idx files, downloading missing ``.gz`` files
    (folders created for them are removed again if they stay empty)."""
    directory = data_dir(root)
    missing = [s for s in stems if _present(directory, s) is None]
    if missing:
        if not download:
            raise MissingDataError(_missing_message(directory, missing, checksums, []))
        created = [p for p in (directory, *directory.parents) if not p.exists()]
        directory.mkdir(parents=True, exist_ok=True)
        reasons = []
        for stem in missing:
            reasons += _download(directory, f"{stem}.gz", mirrors, checksums, timeout, deadline)
        still_missing = [s for s in stems if _present(directory, s) is None]
        if still_missing:
            for folder in created:                 # innermost first
                if not any(folder.iterdir()):
                    folder.rmdir()
            raise MissingDataError(_missing_message(directory, still_missing, checksums, reasons))
    files = {}
    for stem in stems:
        path = _verified(_present(directory, stem), checksums)
        files[stem] = (path, read_idx(path))
    return files


def _images_and_labels(images_file: tuple[Path, np.ndarray],
                       labels_file: tuple[Path, np.ndarray]):
    """Check that an images/labels pair fits together; return (x [N, D] float32, y [N] int64)."""
    (images_path, images), (labels_path, labels) = images_file, labels_file
    if images.ndim != 3:
        raise DataFileError(f"{images_path}: expected images [N, rows, cols], found {images.shape}")
    if labels.ndim != 1:
        raise DataFileError(f"{labels_path}: expected labels [N], found shape {labels.shape}")
    if len(images) != len(labels):
        raise DataFileError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                            f"{len(labels)} labels")
    if labels.max() > 9:
        raise DataFileError(f"{labels_path}: label {labels.max()} is not a digit 0..9")
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    return x, torch.from_numpy(labels.astype(np.int64))


# --------------------------------------------------------------------------------------------
# Loading datasets
# --------------------------------------------------------------------------------------------


def split_train_test(n_examples: int, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Reproducible partition of ``range(n_examples)`` into sorted (train, test) index arrays,
    the test part being ``n_test`` indices drawn uniformly by a seeded permutation."""
    check_int("n_examples", n_examples, low=1)
    check_int("n_test", n_test, low=0, high=n_examples)
    permutation = _rng(seed, _STREAM_TRAIN_TEST).permutation(n_examples)
    return np.sort(permutation[n_test:]), np.sort(permutation[:n_test])


def _load_mnist(root, download, mirrors, checksums, timeout, deadline) -> Dataset:
    files = _load_idx_files(MNIST_TRAIN_FILES + MNIST_TEST_FILES, root, download, mirrors,
                            checksums, timeout, deadline)
    x_train, y_train = _images_and_labels(*(files[s] for s in MNIST_TRAIN_FILES))
    x_test, y_test = _images_and_labels(*(files[s] for s in MNIST_TEST_FILES))
    (train_path, train_images), (test_path, test_images) = (files[MNIST_TRAIN_FILES[0]],
                                                            files[MNIST_TEST_FILES[0]])
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataFileError(f"{train_path} has images of {train_images.shape[1:]} pixels but "
                            f"{test_path} has {test_images.shape[1:]}")
    provenance = (f"MNIST: the official {len(x_train):,} training / {len(x_test):,} test digits, "
                  "MD5-verified")
    return Dataset(x_train, y_train, x_test, y_test, train_images.shape[1:], 10, "mnist",
                   provenance)


def _load_mnist_t10k(root, download, mirrors, checksums, timeout, deadline, seed) -> Dataset:
    files = _load_idx_files(MNIST_TEST_FILES, root, download, mirrors, checksums, timeout, deadline)
    x, y = _images_and_labels(*(files[s] for s in MNIST_TEST_FILES))
    train, test = split_train_test(len(x), round(T10K_TEST_FRACTION * len(x)), seed)
    provenance = (f"MNIST-10k: the {len(x):,} official MNIST test digits re-split "
                  f"{len(train):,} train / {len(test):,} test (seed {seed}); not full MNIST")
    image_shape = files[MNIST_TEST_FILES[0]][1].shape[1:]
    return Dataset(x[train], y[train], x[test], y[test], image_shape, 10, "mnist-t10k",
                   provenance)


def _load_digits(seed) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy((bunch.data / 16.0).astype(np.float32))  # pixel values 0..16
    y = torch.from_numpy(bunch.target.astype(np.int64))
    train, test = split_train_test(len(x), DIGITS_N_TEST, seed)
    provenance = (f"digits: scikit-learn's {len(x):,} 8x8 handwritten digits re-split "
                  f"{len(train):,} train / {len(test):,} test (seed {seed}); not MNIST")
    return Dataset(x[train], y[train], x[test], y[test], (8, 8), 10, "digits", provenance)


def _reachable(mirrors: Sequence[str], seconds: float = PROBE_SECONDS) -> bool:
    """Whether a mirror answers a HEAD request for the first MNIST file within ``seconds`` in all (name
    lookup included): offline, ``"auto"`` learns it in seconds rather than after a download timeout."""
    found = []

    def probe():
        for mirror in mirrors:
            url = mirror.rstrip("/") + f"/{MNIST_TRAIN_FILES[0]}.gz"
            with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
                with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=seconds):
                    found.append(mirror)
                    return

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(seconds)
    return bool(found)


def _auto_choice(root) -> tuple[str, str]:
    """Which dataset ``"auto"`` uses for this data folder, and why (never downloads). A folder given
    by ``root`` or ``$SSVAE_DATA_DIR`` that does not exist is an error, not a reason to fall back."""
    directory, source = _data_dir_and_source(root)
    if source != "the user cache" and not directory.is_dir():
        raise MissingDataError(f"data folder {directory} (from {source}) does not exist"
                               f"{' (it is a file)' if directory.exists() else ''}; give the folder that holds "
                               "the MNIST idx files")
    train = all(_present(directory, s) for s in MNIST_TRAIN_FILES)
    test = all(_present(directory, s) for s in MNIST_TEST_FILES)
    if train and test:
        return "mnist", f"all four MNIST files found in {directory}"
    if test:
        return "mnist-t10k", (f"only the two MNIST test files found in {directory}; "
                              "full MNIST's training files are missing")
    return "digits", f"no MNIST files found in {directory}; using scikit-learn's offline digits"


def _auto_pick(root, download, mirrors, checksums, timeout, deadline) -> tuple[str, str, Dataset | None]:
    """The dataset ``"auto"`` uses and why (:func:`_auto_choice`), and full MNIST itself when it was just
    downloaded into the user cache (no folder given, ``download`` on, a mirror answering: :func:`_reachable`)."""
    name, reason = _auto_choice(root)
    if name == "mnist" or not download or _data_dir_and_source(root)[1] != "the user cache":
        return name, reason, None
    if not _reachable(mirrors):
        return name, f"{reason}; no MNIST mirror served the files within {PROBE_SECONDS:g} s (offline?)", None
    try:
        mnist = _load_mnist(root, True, mirrors, checksums, timeout, deadline)
    except MissingDataError:
        return (name, f"{reason}; downloading full MNIST failed ('python -m ssvae_lib data --dataset mnist' says why)",
                None)
    return "mnist", f"downloaded the four MNIST files into {data_dir(root)}", mnist


def load_dataset(name: str = "auto", root=None, download: bool = True, seed: int = 0, *,
                 mirrors: Sequence[str] = MNIST_MIRRORS, checksums: Mapping[str, str] = MNIST_MD5,
                 timeout: float = DOWNLOAD_TIMEOUT, deadline: float = DOWNLOAD_DEADLINE, **kwargs) -> Dataset:
    """Load a dataset by name (see the module docstring for the names).

    ``root``: folder of the MNIST files (default: ``$SSVAE_DATA_DIR``, else the user cache).
    ``download``: fetch missing MNIST files from ``mirrors`` (for ``"auto"`` only into the user cache, when
    a mirror answers within ``PROBE_SECONDS``).
    ``seed``: the train/test re-split of ``mnist-t10k`` and ``digits``.
    ``timeout``: seconds a download may wait for one read; ``deadline``: seconds one file may take.
    ``checksums``: file name -> MD5; a file is only used after matching it. A present file with
    a wrong checksum or header raises ``DataFileError`` (also under ``"auto"``: no silent
    fallback) and is never overwritten; absent files raise ``MissingDataError``.
    Extra keyword arguments go to the ``"shapes"`` generator only.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if name == "shapes":
        return shapes.load_shapes(seed=seed, **kwargs)
    if kwargs:
        raise TypeError(f"unexpected arguments for dataset {name!r}: {', '.join(kwargs)}")
    check_int("seed", seed, low=0)
    if name == "auto":
        name, reason, downloaded = _auto_pick(root, download, mirrors, checksums, timeout, deadline)
        if downloaded is not None:
            return downloaded
        if name != "mnist":
            # named after this module, not the caller's file: the same text in a script and a notebook
            warnings.warn_explicit(f"dataset 'auto' picked {name}, an offline stand-in, not full MNIST: {reason}. "
                                   "'python -m ssvae_lib data --dataset mnist' downloads full MNIST (11 MB) into "
                                   f"{data_dir(root)}.", UserWarning, filename=__name__, lineno=0, module=__name__,
                                   registry=_FALLBACK_WARNINGS)
        download = False
    if name == "mnist":
        return _load_mnist(root, download, mirrors, checksums, timeout, deadline)
    if name == "mnist-t10k":
        return _load_mnist_t10k(root, download, mirrors, checksums, timeout, deadline, seed)
    return _load_digits(seed)


def input_size(name: str, root=None) -> int:
    """Pixels per image of dataset ``name`` (for ``"auto"``: of the one it picks), without loading it."""
    return INPUT_SIZES[_auto_choice(root)[0] if name == "auto" else name]


def describe(name: str = "auto", root=None) -> str:
    """The text ``python -m ssvae_lib data`` prints: the data folder, which dataset ``auto``
    picked and why, then the dataset's summary (sizes, provenance, classes)."""
    directory, source = _data_dir_and_source(root)
    lines, dataset = [f"data folder: {directory} (from {source})"], None
    if name == "auto":
        name, reason, dataset = _auto_pick(root, True, MNIST_MIRRORS, MNIST_MD5, DOWNLOAD_TIMEOUT,
                                           DOWNLOAD_DEADLINE)
        lines.append(f"auto picked: {name} ({reason})")
    if dataset is None:
        dataset = load_dataset(name, root=root)
    return "\n".join(lines + [dataset.summary()])


# --------------------------------------------------------------------------------------------
# The labelled subset and label corruption
# --------------------------------------------------------------------------------------------


def split_labelled(labels, n_labelled: int, seed: int) -> torch.Tensor:
    """The M = ``n_labelled`` examples whose labels the model may see, fixed for a whole run.

    Returns a sorted int64 tensor of distinct indices into ``labels``, class-balanced: every
    class present gets M // K, and M mod K randomly chosen classes (by ``seed``) one more.
    """
    y = _label_array(labels)
    check_int("n_labelled", n_labelled, low=0)
    if n_labelled > len(y):
        raise ValueError(f"n_labelled={n_labelled} exceeds the {len(y)} examples in the pool")
    rng = _rng(seed, _STREAM_LABELLED)
    classes, counts = np.unique(y, return_counts=True)
    base, extra = divmod(n_labelled, len(classes)) if len(classes) else (0, 0)
    too_small = classes[counts < base]
    if len(too_small):
        c = too_small[0]
        raise ValueError(
            f"class {c} has only {counts[classes == c][0]} examples but a balanced split of "
            f"{n_labelled} labels over {len(classes)} classes needs {base} from each"
        )
    can_give_extra = np.flatnonzero(counts > base)
    if len(can_give_extra) < extra:
        raise ValueError(
            f"a balanced split of {n_labelled} labels needs {extra} classes with more than "
            f"{base} examples, but only {len(can_give_extra)} have that many"
        )
    shares = np.full(len(classes), base)
    shares[rng.choice(can_give_extra, size=extra, replace=False)] += 1
    chosen = [rng.choice(np.flatnonzero(y == c), size=k, replace=False)
              for c, k in zip(classes, shares)]
    indices = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(indices.astype(np.int64))


def binarized(x: torch.Tensor, seed: int = BINARIZATION_SEED) -> torch.Tensor:
    """One stochastic binarisation x_bin ~ Bernoulli(x) of grey levels in [0, 1] (binarised MNIST), drawn
    on the CPU from ``seed``: the same images on every device and for every run."""
    return torch.bernoulli(x.cpu(), generator=torch.Generator().manual_seed(seed))


def random_shift(x: torch.Tensor, image_shape: tuple[int, int], max_shift: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each image of ``x`` ``[N, H*W]`` by its own random offset (dy, dx), each uniform on
    {-max_shift, ..., max_shift}; pixels moved in from outside are 0 (background). Data augmentation
    of the labelled images (README, Benchmarks); ``max_shift=0`` returns ``x`` unchanged."""
    check_int("max_shift", max_shift, low=0)
    if len(image_shape) != 2:
        raise ValueError(f"random_shift needs 2-d images, got image_shape {tuple(image_shape)}")
    height, width = (int(s) for s in image_shape)
    if x.dim() != 2 or x.shape[1] != height * width:
        raise ValueError(f"expected images of shape [N, {height * width}], got {tuple(x.shape)}")
    if max_shift >= min(height, width):
        raise ValueError(f"max_shift={max_shift} would move a {height}x{width} image out of its frame")
    if max_shift == 0:
        return x
    n, s = x.shape[0], max_shift
    device = generator.device if generator is not None else x.device
    dy, dx = (torch.randint(0, 2 * s + 1, (n,), generator=generator, device=device).to(x.device)
              for _ in range(2))
    padded = torch.nn.functional.pad(x.view(n, height, width), (s, s, s, s))
    rows = (dy[:, None] + torch.arange(height, device=x.device))[:, :, None]     # [N, H, 1]
    cols = (dx[:, None] + torch.arange(width, device=x.device))[:, None, :]      # [N, 1, W]
    return padded[torch.arange(n, device=x.device)[:, None, None], rows, cols].reshape(n, height * width)


def corrupt_labels(labels, rate: float, n_classes: int, seed: int, protocol: str = "fixed",
                   epoch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace round(rate * M) of the M labels, each by a uniformly drawn *different* class.

    ``protocol="fixed"``: one draw per seed, the same in every epoch (``epoch`` is ignored).
    ``protocol="per_epoch"``: which labels, and to what, is redrawn every epoch from
    (seed, epoch) -- the seminar thesis's §5.3 protocol. (The thesis's code applied it to every
    loader batch of B labels separately, flipping int(rate * B) of them.)
    Returns (corrupted labels int64, mask of the labels that changed), on the labels' device.
    """
    y = _label_array(labels)
    rate = check_real("rate", rate, 0.0, 1.0)
    check_int("n_classes", n_classes, low=2)
    if len(y) and y.max() >= n_classes:
        raise ValueError(f"label {y.max()} is outside 0..{n_classes - 1}")
    check_choice("protocol", protocol, ("fixed", "per_epoch"))
    if protocol == "fixed":
        rng = _rng(seed, _STREAM_CORRUPT_FIXED)
    elif epoch is None:
        raise ValueError('protocol="per_epoch" needs the epoch number (epoch=0, 1, ...)')
    else:
        check_int("epoch", epoch, low=0)
        rng = _rng(seed, _STREAM_CORRUPT_PER_EPOCH, epoch)
    n_corrupt = math.floor(rate * len(y) + 0.5)  # round half up
    which = rng.choice(len(y), size=n_corrupt, replace=False)
    corrupted = y.copy()
    # Adding 1..K-1 modulo K maps each label uniformly onto the K-1 other classes.
    corrupted[which] = (y[which] + rng.integers(1, n_classes, size=n_corrupt)) % n_classes
    mask = np.zeros(len(y), dtype=bool)
    mask[which] = True
    device = labels.device if isinstance(labels, torch.Tensor) else "cpu"
    return torch.from_numpy(corrupted).to(device), torch.from_numpy(mask).to(device)


# --------------------------------------------------------------------------------------------
# The seminar thesis's labelling protocol (reproduced faithfully, for comparison)
# --------------------------------------------------------------------------------------------
# The thesis's code (built on probtorch's example) shuffles the training set every epoch, drops
# the last incomplete batch, and keeps a dict batch index b -> "supervised?" drawn once, with
# probability M/N, the first time b occurs. Labels are thus keyed by the *position* of a batch,
# not by examples: a supervised batch holds different images every epoch, and with M = 100 of
# N = 60,000 often no batch at all is supervised.


def thesis_labelled_batches(n_examples: int, n_labelled: int, batch_size: int,
                            seed: int) -> np.ndarray:
    """Bool mask over the N // B batch positions: True where the batch is "supervised"
    (each independently with probability M/N, drawn once per seed, the same every epoch)."""
    n_batches = _thesis_n_batches(n_examples, batch_size)
    check_int("n_labelled", n_labelled, low=0, high=n_examples)
    return _rng(seed, _STREAM_THESIS_BATCHES).random(n_batches) < n_labelled / n_examples


def thesis_epoch_batches(n_examples: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """Example indices of each batch in this epoch, shape [N // B, B]: a fresh seeded
    shuffle every epoch; the last incomplete batch is dropped, as in the thesis's loop."""
    n_batches = _thesis_n_batches(n_examples, batch_size)
    check_int("epoch", epoch, low=0)
    permutation = _rng(seed, _STREAM_THESIS_SHUFFLE, epoch).permutation(n_examples)
    return permutation[: n_batches * batch_size].reshape(n_batches, batch_size)


def thesis_labelled_indices(n_examples: int, n_labelled: int, batch_size: int, seed: int,
                            epoch: int) -> np.ndarray:
    """Sorted indices of the examples whose labels the thesis's protocol used in ``epoch``:
    every example that landed in a supervised batch position."""
    supervised = thesis_labelled_batches(n_examples, n_labelled, batch_size, seed)
    batches = thesis_epoch_batches(n_examples, batch_size, seed, epoch)
    return np.sort(batches[supervised].reshape(-1)).astype(np.int64)


def thesis_distinct_labelled(n_examples: int, n_labelled: int, batch_size: int, seed: int,
                             epochs: int) -> int:
    """How many different examples the thesis's protocol shows with a label over epochs 1..``epochs``
    (the trainer's numbering): the size of the union of :func:`thesis_labelled_indices`."""
    check_int("epochs", epochs, low=1)
    seen = [thesis_labelled_indices(n_examples, n_labelled, batch_size, seed, epoch)
            for epoch in range(1, epochs + 1)]
    return len(np.unique(np.concatenate(seen)))


def _thesis_n_batches(n_examples: int, batch_size: int) -> int:
    check_int("n_examples", n_examples, low=1)
    check_int("batch_size", batch_size, low=1, high=n_examples)
    return n_examples // batch_size


# --------------------------------------------------------------------------------------------
# Input checks and random streams
# --------------------------------------------------------------------------------------------


def _rng(seed: int, stream: int, *more: int) -> np.random.Generator:
    """A generator for one random decision: independent streams via SeedSequence."""
    check_int("seed", seed, low=0)
    return np.random.default_rng(np.random.SeedSequence([int(seed), stream, *map(int, more)]))


def _label_array(labels) -> np.ndarray:
    """Labels (tensor, array or sequence) as a 1-d int64 numpy array of non-negative values."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    y = np.asarray(labels)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.size == 0):
        raise ValueError(f"labels must be a 1-d array of integers, got shape {y.shape} "
                         f"and dtype {y.dtype}")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise ValueError(f"labels must be non-negative class indices, found {y.min()}")
    return y

