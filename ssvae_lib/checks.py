"""Checks of plain-number arguments shared by the metrics, the shapes data, the toys and multilabel:
one test and one message per kind of mistake, naming the argument."""
from __future__ import annotations

import math
import numbers

import numpy as np


def check_int(name: str, value, low: int = 1, high: int | None = None) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) in [low, high]; else a ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low \
            or (high is not None and value > high):
        kind = "a positive integer" if low == 1 else f"an integer >= {low}"
        kind = kind if high is None else f"an integer in the allowed range {low}..{high}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def check_real(name: str, value, low: float = -math.inf, high: float = math.inf, *,
               open_interval: bool = False) -> float:
    """``value`` as a ``float`` if it is a finite real number (not a bool) in [low, high] (in (low, high)
    with ``open_interval``); else a ValueError saying which numbers are allowed."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or not ((low < value < high) if open_interval else (low <= value <= high)):
        if high < math.inf:
            allowed = f"a number in {'(' if open_interval else '['}{low:g}, {high:g}{')' if open_interval else ']'}"
        else:
            allowed = "a finite number" + (f" {'>' if open_interval else '>='} {low:g}" if low > -math.inf else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return float(value)


def check_choice(name: str, value, choices):
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random (train, test) index arrays of ``n`` rows, ``round(test_fraction · n)`` of them for
    test; a ValueError when either part would be empty."""
    test_fraction = check_real("test_fraction", test_fraction, 0.0, 1.0, open_interval=True)
    n_test = int(round(test_fraction * n))
    if not 0 < n_test < n:
        raise ValueError(f"test_fraction={test_fraction} leaves an empty train or test split of {n} rows")
    permutation = np.random.default_rng(seed).permutation(n)
    return permutation[n_test:], permutation[:n_test]
