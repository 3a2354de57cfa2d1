"""The notebooks in notebooks/: committed without outputs, and run top to bottom headless."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
# figures each notebook must show
FIGURES = {"dense_features.ipynb": 7, "correspondence.ipynb": 4}


def test_every_notebook_is_listed():
    assert sorted(n.name for n in NOTEBOOKS) == sorted(FIGURES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code), \
        f"{path.name} has outputs: strip them before committing"


@pytest.mark.suite("notebooks")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_runs_headless_with_a_tiny_model(path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("PE_DENSE_NB_MODEL", "PE-Spatial-T16-512")
    monkeypatch.setenv("PE_DENSE_NB_SIZE", "224")
    monkeypatch.delenv("PE_DENSE_NB_WEIGHTS", raising=False)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()  # raises on any cell error

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) == FIGURES[path.name]
    shown = "".join(o.get("text", "") + o.get("data", {}).get("text/html", "") for o in outputs)
    assert "RANDOM" in shown  # no weights given: the warning is visible
