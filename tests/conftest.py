"""Shared fixtures: the small digits dataset, one intra-op thread; the summary of recorded measurement tables."""
import pytest
import torch

from ssvae_lib.data import load_dataset


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one intra-op thread avoids waking a thread pool for every small operation (4x faster on
    a shared 2-core machine); restored afterwards. Modules use it with ``pytestmark``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_terminal_summary(terminalreporter):
    """Show the measured tables that tests record with ``record_property("<name>_table", text)``
    (e.g. the bias/std table of the style-first supervised estimator) at the end of every run."""
    for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", []):
        for name, value in getattr(report, "user_properties", []):
            if name.endswith("_table"):
                terminalreporter.write_sep("-", name)
                terminalreporter.write_line(str(value))
