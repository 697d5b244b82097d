"""Structural rules of the library, checked on its source (AST)."""

import ast
from pathlib import Path
import re
import subprocess
import sys

PACKAGE = Path(__file__).resolve().parents[1] / "bcjax"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _module_name(path: Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.Module):
  """(imported module, imported names, local alias of a module) triples."""
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module:
      yield node.module, [a.name for a in node.names], None
      for a in node.names:  # `from bcjax.evaluation import consumers` binds a module.
        yield f"{node.module}.{a.name}", [], a.asname or a.name
    elif isinstance(node, ast.Import):
      for a in node.names:
        yield a.name, [], a.asname or a.name


def test_no_module_uses_another_modules_private_names():
  offenders = []
  for path in MODULES:
    tree = ast.parse(path.read_text())
    aliases = set()
    for module, names, alias in _imports(tree):
      if not module.startswith("bcjax"):
        continue
      offenders += [f"{path.name}: from {module} import {n}" for n in names
                    if n.startswith("_") and n != "__version__"]
      if alias:
        aliases.add(alias)
    offenders += [
        f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_")
        and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
        and node.value.id in aliases]
  assert not offenders, offenders


def test_nothing_in_the_library_imports_the_benchmarks_or_jit_internals():
  offenders = []
  for path in MODULES:
    name = _module_name(path)
    source = path.read_text()
    if "__wrapped__" in source:
      offenders.append(f"{name} uses __wrapped__")
    if name.startswith("bcjax.benchmarks"):
      continue
    offenders += [f"{name} imports {module}"
                  for module, _, _ in _imports(ast.parse(source))
                  if module.startswith("bcjax.benchmarks")]
  assert not offenders, offenders


def test_random_streams_are_derived_in_one_module():
  """Every key of a run comes from `bcjax.util.keys.derive` (named streams): no
  other library module folds indices into keys by hand."""
  offenders = [_module_name(p) for p in MODULES
               if "fold_in" in p.read_text()
               and _module_name(p) not in ("bcjax.util.keys",)
               and not _module_name(p).startswith("bcjax.benchmarks")]
  assert not offenders, offenders


def test_modules_stay_small():
  """One concept per module: none grows past about 400 lines."""
  sizes = {_module_name(p): len(p.read_text().splitlines()) for p in MODULES}
  assert not {m: n for m, n in sizes.items() if n > 420}, sizes


def _docstrings(tree: ast.Module):
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)):
      text = ast.get_docstring(node)
      if text:
        yield text


def test_strategy_names_and_display_names_are_defined_once():
  """Strategy names ("nobc", "fix-m0", ...) and the paper's display names
  are string literals in `bcjax.runs.strategies` only; everything else reads
  its constants (the presets in `bcjax.runs.configs` list strategies as values a
  user would write)."""
  from bcjax.runs import strategies
  names = set(strategies.STRATEGIES) | set(strategies.PAPER_NAMES.values())
  offenders = []
  for path in MODULES:
    module = _module_name(path)
    if module == "bcjax.runs.strategies" or module.startswith("bcjax.runs.configs"):
      continue
    offenders += [f"{module}:{node.lineno}: {node.value!r}"
                  for node in ast.walk(ast.parse(path.read_text()))
                  if isinstance(node, ast.Constant) and node.value in names]
  assert not offenders, offenders


def test_backward_maps_are_defined_and_chained_in_one_package():
  """One registry of map kinds, one chain applicator: no module outside
  `bcjax.backward` defines a backward-map type or a chain/compose/fit
  function of its own."""
  owned = ("compose", "chain", "chain_matrix", "apply_chain", "blocked_map",
           "blocked_product", "chain_function", "fit_lstsq", "fit_procrustes")
  offenders = []
  for path in MODULES:
    module = _module_name(path)
    if module.startswith("bcjax.backward"):
      continue
    for node in ast.parse(path.read_text()).body:
      if isinstance(node, ast.ClassDef) and "Backward" in node.name:
        offenders.append(f"{module}: class {node.name}")
      if isinstance(node, ast.FunctionDef) and node.name.lstrip("_") in owned:
        offenders.append(f"{module}: def {node.name}")
  assert not offenders, offenders


def test_docstrings_quote_no_machine_figures():
  """Figures of one machine go stale with every release: they belong in
  docs/records.md, measured by `launch.benchmark`, not in docstrings."""
  machine = re.compile(r"Xeon|EPYC|AVX|\d+-core|\d+(\.\d+)?x (faster|the)")
  offenders = [f"{_module_name(p)}: {m.group(0)!r}" for p in MODULES
               for text in _docstrings(ast.parse(p.read_text()))
               for m in machine.finditer(text)]
  assert not offenders, offenders


def test_epochs_are_looped_in_one_place():
  """One training loop (`bcjax.util.loop.run`): no other module iterates over
  epochs (a `for epoch in ...` or a loop over `range(... epochs ...)`)."""
  def loops_epochs(node: ast.For) -> bool:
    target = ast.unparse(node.target)
    return target == "epoch" or ("range(" in ast.unparse(node.iter)
                                 and "epochs" in ast.unparse(node.iter))
  offenders = [f"{_module_name(p)}:{node.lineno}" for p in MODULES
               if _module_name(p) != "bcjax.util.loop"
               for node in ast.walk(ast.parse(p.read_text()))
               if isinstance(node, ast.For) and loops_epochs(node)]
  assert not offenders, offenders


def _bcjax_imports(path: Path) -> set[str]:
  return {module for module, _, _ in _imports(ast.parse(path.read_text()))
          if module.startswith("bcjax")}


def test_the_executors_and_the_configs_import_no_stage():
  """The plan's executors (`bcjax.paper.workers`) run stages they know nothing
  of, and `bcjax.runs.configs` owns every stage's settings without importing a
  stage: neither imports the consumers, the strategies or the stages."""
  stages = ("bcjax.evaluation", "bcjax.runs.strategies", "bcjax.paper")
  offenders = [f"{_module_name(p)} imports {m}" for p in MODULES
               if _module_name(p) == "bcjax.paper.workers"
               or _module_name(p).startswith("bcjax.runs.configs")
               for m in _bcjax_imports(p)
               if m.startswith(stages) and not (  # It checks strategy names.
                   _module_name(p).startswith("bcjax.runs.configs")
                   and m.startswith("bcjax.runs.strategies"))]
  assert not offenders, offenders


def test_one_way_of_writing_lines():
  """Lines go through `bcjax.util.progress` (or a caller's `log`): no library
  module logs with absl or prints, except the report printer of the main
  job and the JSON line a benchmark subprocess hands its parent."""
  allowed = {"bcjax.util.progress", "bcjax.paper.pipeline", "bcjax.benchmarks.scaling"}
  offenders = []
  for path in MODULES:
    tree, module = ast.parse(path.read_text()), _module_name(path)
    offenders += [f"{module} imports absl logging"
                  for m in _bcjax_imports(path) | {
                      n for n, _, _ in _imports(tree)}
                  if m in ("absl.logging", "logging")]
    if module not in allowed:
      offenders += [f"{module}:{node.lineno} prints" for node in ast.walk(tree)
                    if isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id == "print"]
  assert not offenders, offenders


# The folders from the lowest floor up: a module imports from its own folder
# and the folders before it only (docs/api.md follows the same order).
FLOORS = ("util", "data", "models", "backward", "core", "store", "release",
          "runs", "evaluation", "paper", "benchmarks", "text")


def test_folders_are_layers_that_import_only_downwards():
  assert {p.relative_to(PACKAGE).parts[0] for p in MODULES
          if p.parent != PACKAGE} == set(FLOORS)
  assert [p.name for p in MODULES if p.parent == PACKAGE] == ["__init__.py"]
  offenders = []
  for path in MODULES:
    if path.parent == PACKAGE:
      continue
    floor = FLOORS.index(path.relative_to(PACKAGE).parts[0])
    for module in _bcjax_imports(path):
      parts = module.split(".")
      if len(parts) > 1 and parts[1] in FLOORS and (
          FLOORS.index(parts[1]) > floor):
        offenders.append(f"{_module_name(path)} imports {module}")
  assert not offenders, offenders


def test_the_core_knows_no_experiment():
  """`import bcjax` (the core, the store, the lineage) loads nothing of the
  paper's experiment: no run folders, strategies, consumers or report."""
  loaded = subprocess.run(
      [sys.executable, "-c", "import sys, bcjax; print(' '.join(sorted("
       "m for m in sys.modules if m.startswith('bcjax.'))))"],
      capture_output=True, text=True, check=True).stdout.split()
  above = [m for m in loaded
           if m.split(".")[1] in ("runs", "evaluation", "paper", "benchmarks",
                                  "text")]
  assert loaded and not above, above


def test_unknown_names_are_refused_in_one_place():
  """Every registry is read through `bcjax.util.names`: no other module
  writes its own "unknown X; known: ..." message."""
  offenders = [_module_name(p) for p in MODULES
               if re.search(r"; known: ", p.read_text())
               and _module_name(p) != "bcjax.util.names"]
  assert not offenders, offenders
