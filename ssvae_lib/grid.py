"""Grids of training runs: which runs a sweep trains, and how command-line text becomes config values.

**Grid** (:class:`GridSpec`): axes α × corruption rate × M × protocol × objective × seed, plus fixed
:class:`~ssvae_lib.train.TrainConfig` overrides; :meth:`GridSpec.configs` expands it. Named presets:
``thesis-alpha`` (thesis Fig. 2), ``thesis-noise`` (Fig. 3), ``paper-table`` (the paper's M = 100 / 600
/ 1000 / 3000 table), each with a ``-fast`` variant that runs in seconds on a CPU. A *protocol* names a
labelling and a corruption protocol together: ``"thesis"`` = the thesis's batch-keyed labels with labels
re-corrupted every epoch, ``"corrected"`` = a fixed labelled set with fixed noisy labels.

**Parsing** (:func:`parse_value`, :func:`parse_assignments`, :func:`parse_values`): the one place where
text such as ``max_train=none`` or ``alpha=1e-3`` becomes a typed TrainConfig value, for the command
line, the sweeps and the benchmarks. It lives here, not in ``train.py``, so that the training engine
stays free of command-line concerns.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from . import train as train_mod
from .config import field_type
from .train import TrainConfig

PROTOCOLS = {"thesis": ("thesis", "per_epoch"), "corrected": ("fixed", "fixed")}
# TrainConfig fields that a grid sets through its axes; they may not appear among the overrides.
AXIS_FIELDS = ("alpha", "corruption_rate", "n_labelled", "labelling", "corruption_protocol", "objective",
               "seed", "epochs", "dataset")


def protocol_name(labelling: str, corruption_protocol: str) -> str:
    """"thesis" / "corrected" for the two named pairs, else "labelling/corruption_protocol"."""
    for name, pair in PROTOCOLS.items():
        if pair == (labelling, corruption_protocol):
            return name
    return f"{labelling}/{corruption_protocol}"


def parse_protocol(name: str) -> tuple[str, str]:
    """(labelling, corruption_protocol) of a protocol name: "thesis", "corrected" or "LABELLING/CORRUPTION"."""
    if name in PROTOCOLS:
        return PROTOCOLS[name]
    parts = name.split("/")
    if len(parts) != 2 or parts[0] not in train_mod.LABELLINGS \
            or parts[1] not in train_mod.CORRUPTION_PROTOCOLS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)} or 'LABELLING/CORRUPTION' with "
                         f"LABELLING in {train_mod.LABELLINGS} and CORRUPTION in "
                         f"{train_mod.CORRUPTION_PROTOCOLS}, got {name!r}")
    return parts[0], parts[1]


_DEFAULT = TrainConfig()


def _tuple(value) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return (value,)
    return tuple(value)


@dataclass(frozen=True)
class GridSpec:
    """A grid of runs: the product of the axes, every run with the ``overrides`` (other TrainConfig
    fields). ``n_labelled`` entries may be None (every training image labelled)."""

    name: str = "custom"
    alphas: tuple = (_DEFAULT.alpha,)
    corruption_rates: tuple = (0.0,)
    n_labelled: tuple = (_DEFAULT.n_labelled,)
    protocols: tuple = ("corrected",)
    objectives: tuple = (_DEFAULT.objective,)
    seeds: tuple = (0,)
    epochs: int = _DEFAULT.epochs
    dataset: str = _DEFAULT.dataset
    overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        for axis in ("alphas", "corruption_rates", "n_labelled", "protocols", "objectives", "seeds"):
            values = _tuple(getattr(self, axis))
            if not values:
                raise ValueError(f"GridSpec: axis {axis} is empty; give at least one value")
            if len(set(values)) != len(values):
                raise ValueError(f"GridSpec: axis {axis} repeats a value: {list(values)}")
            object.__setattr__(self, axis, values)
        for name in self.protocols:
            parse_protocol(name)
        if not self.name or any(c in self.name for c in "/\\ ") or self.name.startswith("."):
            raise ValueError(f"GridSpec: name must be a plain word usable as a file name, got {self.name!r}")
        overrides = dict(self.overrides)
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"GridSpec: unknown TrainConfig fields in overrides: {unknown}")
        clash = sorted(set(overrides) & set(AXIS_FIELDS))
        if clash:
            raise ValueError(f"GridSpec: overrides {clash} are grid axes; set them with the axes "
                             "(alphas, corruption_rates, n_labelled, protocols, objectives, seeds, epochs, dataset)")
        object.__setattr__(self, "overrides", overrides)
        self.configs()  # validates every combination now, with TrainConfig's messages

    def configs(self) -> list[TrainConfig]:
        """One TrainConfig per grid point, in the order protocol, objective, M, corruption, α, seed."""
        out = []
        for protocol, objective, m, rate, alpha, seed in itertools.product(
                self.protocols, self.objectives, self.n_labelled, self.corruption_rates, self.alphas, self.seeds):
            labelling, corruption_protocol = parse_protocol(protocol)
            out.append(TrainConfig(**{**self.overrides, "dataset": self.dataset, "epochs": self.epochs,
                                      "objective": objective, "n_labelled": m, "corruption_rate": float(rate),
                                      "alpha": float(alpha), "seed": int(seed), "labelling": labelling,
                                      "corruption_protocol": corruption_protocol}))
        return out

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: dict) -> "GridSpec":
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ValueError(f"GridSpec: unknown keys {unknown}; allowed: {allowed}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> "GridSpec":
        """Read a grid from a ``.json`` or ``.toml`` file whose keys are the GridSpec fields."""
        path = Path(path)
        if path.suffix == ".json":
            values = json.loads(path.read_text())
        elif path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise ValueError(f"{path}: reading TOML needs Python >= 3.11; write the grid as JSON") from None
            values = tomllib.loads(path.read_text())
        else:
            raise ValueError(f"{path}: grid files must end in .json or .toml")
        if "n_labelled" in values:  # TOML has no null: "all" means every image labelled
            values["n_labelled"] = [None if v in ("all", "none", None) else v for v in _tuple(values["n_labelled"])]
        return cls.from_dict(values)


THESIS_ALPHAS = (0.1, 0.5, 1.0, 10.0, 25.0, 50.0, 75.0, 100.0)       # thesis §5.2
THESIS_CORRUPTION_RATES = (0.0, 0.01, 0.1, 0.2, 0.5, 1.0)             # thesis §5.3
PAPER_N_LABELLED = (100, 600, 1000, 3000)                             # the paper's table, thesis §5
# Fast variants: scikit-learn's 8x8 digits (always offline), a small network, two epochs.
_FAST = dict(dataset="digits", epochs=2, seeds=(0, 1), n_labelled=(50, 200),
             overrides=dict(hidden_dim=64, iwae_samples=4, iwae_examples=100))

PRESETS: dict[str, GridSpec] = {
    # The thesis's protocol (batch-keyed labels, per-epoch corruption) with its objective and sizes.
    "thesis-alpha": GridSpec("thesis-alpha", alphas=THESIS_ALPHAS, n_labelled=PAPER_N_LABELLED,
                             protocols=("thesis",), objectives=("ssvae",), seeds=tuple(range(10)), epochs=40),
    "thesis-noise": GridSpec("thesis-noise", corruption_rates=THESIS_CORRUPTION_RATES,
                             n_labelled=PAPER_N_LABELLED, protocols=("thesis",), objectives=("ssvae",),
                             seeds=tuple(range(10)), epochs=40),
    # The paper's table with the settings validated for M = 100 (train.TUNED), both objectives.
    "paper-table": GridSpec("paper-table", alphas=(train_mod.TUNED["alpha"],), n_labelled=PAPER_N_LABELLED,
                            protocols=("corrected",), objectives=("ssvae", "m2"), seeds=tuple(range(5)),
                            epochs=train_mod.TUNED["epochs"],
                            overrides={k: v for k, v in train_mod.TUNED.items() if k not in ("alpha", "epochs")}),
    "thesis-alpha-fast": GridSpec("thesis-alpha-fast", alphas=(0.1, 10.0, 100.0), protocols=("thesis",),
                                  objectives=("ssvae",), **_FAST),
    "thesis-noise-fast": GridSpec("thesis-noise-fast", corruption_rates=(0.0, 0.2, 1.0), protocols=("thesis",),
                                  objectives=("ssvae",), **_FAST),
    "paper-table-fast": GridSpec("paper-table-fast", protocols=("corrected",), objectives=("ssvae", "m2"),
                                 **_FAST),
}


def preset(name: str, fast: bool = False) -> GridSpec:
    """The named grid; ``fast=True`` picks its ``-fast`` variant."""
    if fast and not name.endswith("-fast"):
        name = name + "-fast"
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


# -- command-line text -> typed values -----------------------------------------------------
NONE_WORDS = ("none", "all")          # text that means None for a field that allows it ("all": every image)
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_values(text: str, kind: type = float) -> tuple:
    """"0.1,1,10" -> (0.1, 1.0, 10.0); "all"/"none" entries become None (for M)."""
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"empty entry in the list {text!r}")
        try:
            values.append(None if part.lower() in NONE_WORDS else kind(part))
        except ValueError:
            raise ValueError(f"{part!r} in {text!r} is not a {kind.__name__}") from None
    return tuple(values)


def parse_value(name: str, text: str):
    """The typed value of TrainConfig field ``name`` written as ``text``: ``int``, ``float``, ``str`` or
    ``bool`` by its annotation; "none" (and "all") give None where the field allows it."""
    kind, optional = field_type(name)
    text = text.strip()
    if optional and text.lower() in NONE_WORDS:
        return None
    allowed = kind.__name__ + (" or 'none'" if optional else "")
    try:
        if kind is bool:
            if text.lower() not in TRUE_WORDS + FALSE_WORDS:
                raise ValueError
            return text.lower() in TRUE_WORDS
        return kind(text)
    except ValueError:
        raise ValueError(f"{name} takes {allowed}, got {text!r}") from None


def parse_assignments(items: Sequence[str]) -> dict:
    """["max_train=4000", "data_root=/data"] -> {"max_train": 4000, "data_root": "/data"} (TrainConfig
    fields, typed by :func:`parse_value`; a dash in a name reads as an underscore)."""
    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"expected FIELD=VALUE with FIELD a TrainConfig field, got {item!r}")
        name = name.strip().replace("-", "_")
        out[name] = parse_value(name, text)
    return out
