"""The notebooks in colabs/: committed without outputs, and each runs top to
bottom in a fresh kernel at the test sizes (BCJAX_PRESET=test)."""

import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
# analyze_results last: its `launch.reproduce` runs reuse the programs the
# others compiled (see `compile_cache`).
NAMES = ("quickstart", "embedding_store", "analyze_results")
NOTEBOOKS = [ROOT / "colabs" / f"{name}.ipynb" for name in NAMES]


def test_the_notebooks_are_there():
  assert sorted(p.stem for p in (ROOT / "colabs").glob("*.ipynb")) == sorted(NAMES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  assert nb.metadata.kernelspec.name == "python3"
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert code and all(not c.outputs and c.execution_count is None for c in code)
  # The first code cell installs bcjax where it is not importable (Colab).
  assert "except ImportError:" in code[0].source and "%pip install" in code[0].source


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
  """One persistent XLA compilation cache for the notebooks and the
  `launch.reproduce` runs they start (the same shapes recur)."""
  return tmp_path_factory.mktemp("jax-cache")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_end_to_end(path, tmp_path, monkeypatch, compile_cache):
  for name in ("BCJAX_RUN_DIR", "BCJAX_OTHER_RUN_DIR"):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv("BCJAX_PRESET", "test")
  monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' scratch runs
  # Tiny programs: XLA's optimisation passes cost more than they save.
  monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(compile_cache))
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  nb = nbformat.read(path, as_version=4)
  # The kernel must be this interpreter (the kernelspec's "python" is
  # replaced by sys.executable), so that it imports this checkout's bcjax.
  nb.cells.insert(0, nbformat.v4.new_code_cell(
      f"import sys\nassert sys.executable == {sys.executable!r}, sys.executable"))
  client = NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(tmp_path)}})
  start = time.perf_counter()
  client.execute()  # Raises CellExecutionError on the first failing cell.
  print(f"{path.name}: {time.perf_counter() - start:.1f}s")
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type == "error"]
  assert not errors
