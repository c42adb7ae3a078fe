"""Turn on JupyterLab's saving of widget state for this environment: ``python tools/lab_settings.py``.

JupyterLab writes the state of the widgets a notebook shows into the notebook only when the setting
"Save Jupyter widget state in notebooks" is on, and it is off by default. Without that state a notebook
re-saved in JupyterLab (autosave does it) shows its panels as ``VBox(children=(...`` text in the static
slides. This script sets it in ``<prefix>/share/jupyter/lab/settings/overrides.json``, the defaults
JupyterLab reads for every user of this environment, keeping whatever else the file holds.
``make install`` runs it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PLUGIN = "@jupyter-widgets/jupyterlab-manager:plugin"
SETTINGS = {PLUGIN: {"saveState": True}}


def overrides_file(prefix: str | Path = sys.prefix) -> Path:
    """JupyterLab's default-settings file of the environment at ``prefix``."""
    return Path(prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"


def write_overrides(prefix: str | Path = sys.prefix) -> Path:
    """Merge :data:`SETTINGS` into the environment's ``overrides.json``; returns its path."""
    path = overrides_file(prefix)
    current = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if not isinstance(current, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(current).__name__}")
    for plugin, values in SETTINGS.items():
        current[plugin] = {**current.get(plugin, {}), **values}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=2) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", default=sys.prefix, help="the environment (default: this Python's)")
    path = write_overrides(parser.parse_args(argv).prefix)
    print(f"JupyterLab will save widget state in notebooks: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
