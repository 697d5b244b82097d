"""Structural rules of the library, checked on its source (AST)."""

import ast
from pathlib import Path

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
      for a in node.names:  # `from bcjax import consumers` binds a module.
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
  """Every key of a run comes from `bcjax.keys.derive` (named streams): no
  other library module folds indices into keys by hand."""
  offenders = [_module_name(p) for p in MODULES
               if "fold_in" in p.read_text()
               and _module_name(p) not in ("bcjax.keys",)
               and not _module_name(p).startswith("bcjax.benchmarks")]
  assert not offenders, offenders


def test_modules_stay_small():
  """One concept per module: none grows past about 400 lines."""
  sizes = {_module_name(p): len(p.read_text().splitlines()) for p in MODULES}
  assert not {m: n for m, n in sizes.items() if n > 420}, sizes
