"""The documentation builds with warnings as errors (`make docs`): every
docstring renders, every page of docs/ is reachable, and the API reference
covers every module of the package."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_has_its_reference_entry():
  modules = {".".join(p.relative_to(ROOT).with_suffix("").parts)
             .removesuffix(".__init__")
             for p in (ROOT / "bcjax").rglob("*.py")}
  api = (ROOT / "docs" / "api.md").read_text()
  assert sorted(m for m in modules if f"automodule:: {m}\n" not in api) == []


def test_the_docs_build_without_warnings(tmp_path):
  build = subprocess.run(
      [sys.executable, "-m", "sphinx", "-q", "-W", "--keep-going", "-b",
       "html", "-d", str(tmp_path / "doctrees"), "docs", str(tmp_path / "html")],
      cwd=ROOT, capture_output=True, text=True)
  assert build.returncode == 0, build.stderr[-3000:]
  pages = {p.stem for p in (tmp_path / "html").glob("*.html")}
  assert {"index", "guide", "api", "method", "records"} <= pages
