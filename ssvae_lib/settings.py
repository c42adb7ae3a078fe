"""Process-wide switches, read once at import.

``SSVAE_FAST=1`` shrinks epochs and data so every notebook and the demo run in seconds
under test; ``SSVAE_DATA_DIR`` names the folder holding MNIST's idx files.
"""
import os
import tempfile
from pathlib import Path

FAST: bool = os.environ.get("SSVAE_FAST", "").strip().lower() not in ("", "0", "false", "no")
DATA_DIR_ENV = "SSVAE_DATA_DIR"


def fast(full, quick):
    """``quick`` in fast mode, ``full`` otherwise (one place decides what 'fast' means)."""
    return quick if FAST else full


def figures_dir() -> Path:
    """Where library figures go: ``$SSVAE_FIGURES_DIR``, else the checkout's ``figures/`` (the current
    directory's when the package is installed elsewhere). In fast mode a temporary folder, so quick
    test runs never overwrite the committed full-mode figures."""
    if FAST:
        return Path(tempfile.gettempdir()) / "ssvae_fast_figures"
    if os.environ.get("SSVAE_FIGURES_DIR"):
        return Path(os.environ["SSVAE_FIGURES_DIR"])
    checkout = Path(__file__).resolve().parents[1]
    return checkout / "figures" if (checkout / "pyproject.toml").exists() else Path.cwd() / "figures"
