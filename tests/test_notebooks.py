"""The notebooks run top to bottom on a small generated dataset, and are stored without outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_the_three_notebooks_are_there() -> None:
    assert {n.stem for n in NOTEBOOKS} == {"retrain_provider_model", "explore_billing", "reform_art174_impact"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs_and_starts_with_parameters(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])
    assert code[0].source.startswith("# Parameters")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path: Path, synthetic: Path, tmp_path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    book.cells[1].source = f"DATA = {str(synthetic)!r}\nSEED = 11\nLINES = 30_000"
    NotebookClient(book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    assert book.cells[-1].outputs  # the last cell shows its result
