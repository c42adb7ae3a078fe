"""Shared fixtures: the small digits dataset; the summary of recorded measurement tables."""
import pytest

from ssvae_lib.data import load_dataset


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
