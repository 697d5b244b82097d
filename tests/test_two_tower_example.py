"""The two-tower example (`launch/two_tower_example.py`) at its test size.

A user-defined model trained for three versions with BC-Aligner through the
public API: the store holds every version, and a consumer frozen on version
0 keeps its ROC-AUC on version 2 read through the store, unlike the raw
version-2 prefix. Margins come from seeds 0-3 at the test size, where
|a - b| <= 0.012, a >= 0.86 and b - c >= 0.23 (c ranged 0.24-0.64).
"""

import ast
import math
from pathlib import Path

import numpy as np

from bcjax.store import EmbeddingStore
from launch import two_tower_example


def test_frozen_consumer_keeps_its_accuracy_on_version_2(tmp_path):
  result = two_tower_example.run(str(tmp_path), size="test", seed=0)
  assert all(math.isfinite(v) for v in result.values()), result

  store = EmbeddingStore.open(tmp_path / "store")
  assert result["versions"] == 3
  assert store.versions == [0, 1, 2]
  assert store.dims == list(two_tower_example.SIZES["test"]["dims"])
  for version in store.versions:
    users, items = store.embeddings(version=version)
    assert np.all(np.isfinite(users)) and np.all(np.isfinite(items))

  a = result["auc a: v0"]
  b = result["auc b: v2 via store"]
  c = result["auc c: v2 prefix"]
  assert a > 0.75  # The consumer learned something on version 0.
  assert abs(b - a) < 0.05  # Backward compatible: version 2 serves it.
  assert b > c + 0.15  # Reading the raw version-2 prefix does not.
  for k in range(3):
    assert result[f"recall@20 v{k}"] > 0.05
  # The registered consumer let versions 1 and 2 through the release gate.
  assert result["gate v1"] and result["gate v2"]


def test_the_example_uses_only_the_top_level_api():
  """A stranger's model needs `bcjax` itself, not its submodules."""
  tree = ast.parse(Path(two_tower_example.__file__).read_text())
  imported = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
              for a in node.names}
  imported |= {f"{node.module}.{a.name}" if node.module == "bcjax"
               else node.module for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) for a in node.names}
  ours = {name for name in imported if name.startswith("bcjax")}
  assert ours <= {"bcjax", "bcjax.data", "bcjax.metrics"}, ours
  assert {"data", "metrics"} <= set(__import__("bcjax").__all__)
