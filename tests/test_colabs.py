"""The notebooks in colabs/: committed without outputs, and each runs top to
bottom in a fresh kernel at the test sizes (BCJAX_PRESET=test)."""

import json
import re
import shlex
import subprocess
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


def _install_cell(path) -> str:
  return next(c.source for c in nbformat.read(path, as_version=4).cells
              if c.cell_type == "code")


def test_the_notebooks_share_one_install_cell():
  assert len({_install_cell(path) for path in NOTEBOOKS}) == 1


def _pip_install(arguments: str) -> None:
  subprocess.run([sys.executable, "-m", "pip", "install",
                  *shlex.split(arguments)], check=True)


def test_install_cell_keeps_the_installed_jax(tmp_path):
  """The install cell, run where bcjax is missing (as on Colab), asks pip for
  bcjax alone: the jax and jaxlib already here are in range and pinned, so
  neither is replaced. A dry run of this checkout, offline."""
  report = tmp_path / "report.json"
  source = _install_cell(NOTEBOOKS[0])
  source = source.replace("import bcjax\n", "raise ImportError\n", 1)
  source = source.replace(
      '"bcjax @ git+https://github.com/bcjax/bcjax"',
      f"--dry-run --no-index --no-build-isolation --report {report} {ROOT}")
  # IPython's `%pip install ARGS` (with its {name} expansion) as a call.
  source = re.sub(r"%pip install (.*)", r'pip_install(f"""\1""")', source)
  exec(compile(source, "install cell", "exec"), {"pip_install": _pip_install})
  installs = json.loads(report.read_text())["install"]
  assert [i["metadata"]["name"] for i in installs] == ["bcjax"]


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
