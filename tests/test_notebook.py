"""The example notebook runs start to end in a real Jupyter kernel, on the small subset, so that it cannot rot."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parent.parent / "examples" / "regbench.ipynb"
TINY = """TRAIN_SIZE = 200
EPOCHS = 2
SEEDS = 2
TUNE_TRIALS = 2
BACKEND = "jax"
STORE = "store.sqlite"
"""


def test_the_example_notebook_runs_and_shows_its_tables_and_figures(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND")  # the notebook's backend= chooses (the kernel inherits this environment)
    (tmp_path / "home").mkdir()  # the kernel's IPython profile
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(parameters) == 1 and "TRAIN_SIZE" in parameters[0].source
    parameters[0].source = TINY
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    shown = [output.data for output in outputs if output.output_type == "execute_result"]
    comparisons = [data["text/html"] for data in shown if "<table>" in data.get("text/html", "")]
    assert len(comparisons) >= 2 and all("verdict" in html for html in comparisons)
    assert any("image/png" in data for data in shown)  # the learning curves, drawn inline
    assert (tmp_path / "results" / "notebook-tuned-dropout" / "report.html").is_file()
    assert (tmp_path / "store.sqlite").is_file()
