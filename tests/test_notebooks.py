"""Every notebook in notebooks/ executes without a cell error (small sizes: PUB_OPTAX_NOTEBOOK_SMALL=1,
and XLA's optimisation passes skipped).

Each notebook runs from a temporary copy (its working directory is the temporary folder, so
nothing it writes lands in the repository) in a ``python3`` kernel that runs this interpreter
(the current virtual environment), with a 600 s timeout per cell. Notebooks may read
``PUB_OPTAX_NOTEBOOK_SMALL`` to shrink their sizes.
"""

import glob
import json
import os
import shutil
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))


def _kernel_for_this_python(tmp_path, monkeypatch):
  """A ``python3`` kernelspec that runs ``sys.executable``, found first through JUPYTER_PATH."""
  spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
  spec_dir.mkdir(parents=True)
  spec = dict(
    argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
    display_name="Python 3 (pub_optax tests)",
    language="python",
  )
  (spec_dir / "kernel.json").write_text(json.dumps(spec))
  monkeypatch.setenv(
    "JUPYTER_PATH",
    os.pathsep.join(
      [str(tmp_path / "jupyter")]
      + [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    ),
  )


@pytest.mark.skipif(not NOTEBOOKS, reason="no notebooks in notebooks/")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
  workdir = tmp_path / "run"
  workdir.mkdir()
  copy = workdir / os.path.basename(path)
  shutil.copy(path, copy)
  _kernel_for_this_python(tmp_path, monkeypatch)
  monkeypatch.setenv("PUB_OPTAX_NOTEBOOK_SMALL", "1")
  # Compilation is most of a small notebook's time, and no cell's success depends on XLA's
  # optimisation passes, so the kernel skips them.
  monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
  monkeypatch.setenv("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", "cpu"))
  monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")

  nb = nbformat.read(str(copy), as_version=4)
  client = nbclient.NotebookClient(
    nb,
    timeout=600,
    kernel_name="python3",
    allow_errors=False,
    resources={"metadata": {"path": str(workdir)}},
  )
  try:
    client.execute()
  except nbclient.exceptions.CellExecutionError as err:
    pytest.fail(f"{os.path.basename(path)}: a cell raised\n{str(err)[-4000:]}")
  errors = [
    out
    for cell in nb.cells
    if cell.cell_type == "code"
    for out in cell.get("outputs", [])
    if out.get("output_type") == "error"
  ]
  assert not errors, f"{os.path.basename(path)}: error outputs {[e.get('ename') for e in errors]}"
