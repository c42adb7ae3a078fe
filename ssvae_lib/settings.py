"""Process-wide switches, read once at import.

``SSVAE_FAST=1`` shrinks epochs and data so every notebook and the demo run in seconds
under test; ``SSVAE_DATA_DIR`` names the folder holding MNIST's idx files;
:func:`keep_freed_memory` tunes the C allocator for training on CPU.
"""
import ctypes
import os
import sys
import tempfile
from pathlib import Path

FAST: bool = os.environ.get("SSVAE_FAST", "").strip().lower() not in ("", "0", "false", "no")
DATA_DIR_ENV = "SSVAE_DATA_DIR"


def fast(full, quick):
    """``quick`` in fast mode, ``full`` otherwise (one place decides what 'fast' means)."""
    return quick if FAST else full


def checkout_figures() -> Path:
    """The repository's committed ``figures/`` (the current directory's when the package is installed
    elsewhere): written only by ``python -m ssvae_lib figures`` and by an explicit ``--figures``."""
    checkout = Path(__file__).resolve().parents[1]
    return checkout / "figures" if (checkout / "pyproject.toml").exists() else Path.cwd() / "figures"


def figures_dir() -> Path:
    """Where the demo and the notebooks write figures: ``$SSVAE_FIGURES_DIR``, else ``runs/figures`` beside
    the committed ``figures/`` (ignored by git, so running them never changes a tracked file). In fast
    mode a temporary folder."""
    if FAST:
        return Path(tempfile.gettempdir()) / "ssvae_fast_figures"
    if os.environ.get("SSVAE_FIGURES_DIR"):
        return Path(os.environ["SSVAE_FIGURES_DIR"])
    return checkout_figures().parent / "runs" / "figures"


_allocator_tuned = False


def keep_freed_memory() -> bool:
    """Let glibc keep freed blocks up to 32 MB in the heap instead of returning them to the OS.

    A training step allocates and frees the same multi-megabyte activations every step; by default
    glibc maps each from the OS anew, and the page faults on first touch cost about a third of an
    M2 step on CPU. Process-wide, idempotent; a no-op (returns False) where glibc is absent."""
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3          # mallopt parameters, <malloc.h>
    _allocator_tuned = bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and \
        bool(libc.mallopt(m_trim_threshold, 1 << 30))
    return _allocator_tuned
