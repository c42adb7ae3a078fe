"""Shared test helpers: the small digits dataset and a training config that runs in about a second."""
import pytest

from ssvae_lib.data import load_dataset
from ssvae_lib.train import TrainConfig

TINY = dict(dataset="digits", n_labelled=50, epochs=2, batch_size=64, labelled_batch_size=25, hidden_dim=32,
            style_dim=4, n_samples=2, iwae_samples=4, iwae_examples=60, max_train=600, max_test=200,
            alpha=10.0, device="cpu")


def tiny_config(**overrides) -> TrainConfig:
    """A run of about a second on the 8x8 digits (10 steps per epoch)."""
    return TrainConfig(**{**TINY, **overrides})


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


def pytest_terminal_summary(terminalreporter):
    """Show the measured tables that tests record with ``record_property("<name>_table", text)``
    (e.g. the bias/std table of the style-first supervised estimator) at the end of every run."""
    for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", []):
        for name, value in getattr(report, "user_properties", []):
            if name.endswith("_table"):
                terminalreporter.write_sep("-", name)
                terminalreporter.write_line(str(value))
