"""Every Colab notebook runs top to bottom in a real Jupyter kernel (at its tiniest sizes),
and is stored with its outputs stripped."""

import json
import os
import pathlib
import sys

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))
SHAKESPEARE = pathlib.Path(os.environ.get("RESEARCH_DATA_DIR", "/nonexistent"), "tinyshakespeare.txt")
KERNEL = "research-tests"


def test_the_notebooks_exist():
  assert [p.stem for p in NOTEBOOKS] == [
      "01_quickstart", "02_sweep_and_compare", "03_checkpoint_analysis", "04_finetune_peft",
      "05_scaling_on_tpu"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_stripped(path):
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: {cell.source[:60]!r}"


@pytest.fixture
def kernel(tmp_path, monkeypatch):
  """A kernel spec running this interpreter, so the kernel sees the test environment."""
  spec = tmp_path / "jupyter" / "kernels" / KERNEL
  spec.mkdir(parents=True)
  (spec / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": KERNEL, "language": "python"}))
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  # This checkout's packages, whatever directory the kernel starts in; the smallest sizes.
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
  monkeypatch.setenv("RESEARCH_NOTEBOOK_TINY", "1")
  # The kernel inherits the conftest's environment: its XLA flags and compilation cache.
  return KERNEL


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason="RESEARCH_DATA_DIR holds no tinyshakespeare.txt")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, kernel, tmp_path):
  nb = nbformat.read(path, as_version=4)
  work = tmp_path / "work"
  work.mkdir()
  client = NotebookClient(nb, kernel_name=kernel, timeout=600,
                          resources={"metadata": {"path": str(work)}})
  client.execute()  # raises CellExecutionError naming the cell on any exception
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
  assert not errors
  assert (work / "runs").is_dir(), "each notebook writes its runs under the working directory"
