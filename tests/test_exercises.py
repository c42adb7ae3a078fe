"""Every notebook's exercises come with solutions: one hidden code cell per exercise, tagged
``solution``, left out of the slides. The solutions run (and their asserts are checked) with the notebook
under nbval."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def exercises_and_solutions(notebook: Path):
    nb = nbformat.read(notebook, 4)
    section = [c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## Exercises")]
    solutions = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    items = re.findall(r"^\d+\. ", section[0].source, flags=re.MULTILINE) if section else []
    return items, solutions


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_exercise_has_a_hidden_solution_that_runs_with_the_notebook(notebook):
    items, solutions = exercises_and_solutions(notebook)
    assert 2 <= len(items) <= 6, f"{notebook.name}: {len(items)} exercises"
    assert len(solutions) == len(items), f"{notebook.name}: {len(items)} exercises, {len(solutions)} solutions"
    for n, cell in enumerate(solutions, start=1):
        assert cell.cell_type == "code" and f"# Solution {n}\n" in cell.source
        assert cell.metadata["jupyter"] == {"source_hidden": True, "outputs_hidden": True}
        assert cell.metadata["slideshow"]["slide_type"] == "skip"
        assert not any(o.get("output_type") == "error" for o in cell.outputs)
