"""Tests of bcjax.store.search and `read_store --neighbours`: the top items
of a user through a version's index, the user mapped from the latest
version."""

from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest

from bcjax import store as store_lib

REPO = Path(__file__).resolve().parents[1]
USER_IDS = np.array([f"u{i}" for i in range(30)])
ITEM_IDS = np.array([f"i{i}" for i in range(300)])


def _store(path):
  """Two versions (d 8 -> 12), a random W_1, items 0..299 at version 1."""
  rng = np.random.default_rng(0)
  normal = lambda *shape: rng.normal(size=shape).astype(np.float32)
  store = store_lib.EmbeddingStore.create(
      path, normal(20, 8), normal(250, 8), USER_IDS[:20], ITEM_IDS[:250],
      "synthetic", "bc")
  store.append_version(normal(30, 12), normal(300, 12), normal(12, 8),
                       USER_IDS, ITEM_IDS)
  return store


def _brute_force(store, version, user, k):
  users, items = store.embeddings(version)
  scores = items @ users[list(USER_IDS).index(user)]
  top = np.argsort(-scores, kind="stable")[:k]
  return [str(ITEM_IDS[i]) for i in top]


@pytest.mark.parametrize("version", [0, 1])
def test_exact_neighbours_are_the_brute_force_top_k(tmp_path, version):
  store = _store(tmp_path / "s")
  index = store_lib.version_index(store, version, "exact")
  assert index.index.ntotal == 300 and index.version == version
  found = store_lib.neighbours(store, index, ["u3", "u25"], k=10)
  for user, pairs in zip(["u3", "u25"], found):
    assert [i for i, _ in pairs] == _brute_force(store, version, user, 10)
    scores = [s for _, s in pairs]
    assert scores == sorted(scores, reverse=True)


def test_hnsw_neighbours_overlap_the_exact_ones(tmp_path):
  """Bound: at least 9 of the exact top 10, per user, on 300 items."""
  store = _store(tmp_path / "s")
  exact, hnsw = (store_lib.version_index(store, 0, kind)
                 for kind in ("exact", "hnsw"))
  users = list(USER_IDS)
  for a, b in zip(store_lib.neighbours(store, exact, users),
                  store_lib.neighbours(store, hnsw, users)):
    assert len({i for i, _ in a} & {i for i, _ in b}) >= 9


def test_bad_requests_name_the_problem(tmp_path):
  store = _store(tmp_path / "s")
  with pytest.raises(store_lib.StoreError, match="index kind 'ivf'"):
    store_lib.version_index(store, 0, "ivf")
  with pytest.raises(store_lib.StoreError, match="version 5"):
    store_lib.version_index(store, 5)
  index = store_lib.version_index(store, 0, "exact")
  with pytest.raises(store_lib.StoreError, match="unknown user id 'ghost'"):
    store_lib.neighbours(store, index, ["ghost"])
  with pytest.raises(store_lib.StoreError, match="k=301"):
    store_lib.neighbours(store, index, ["u1"], k=301)


def test_read_store_neighbours_cli(tmp_path):
  store = _store(tmp_path / "s")
  result = subprocess.run(
      [sys.executable, "-m", "launch.read_store", f"--store={tmp_path / 's'}",
       "--version=0", "--neighbours=u3", "--k=5", "--index=exact"],
      cwd=REPO, capture_output=True, text=True, check=False, timeout=120)
  assert result.returncode == 0, result.stderr
  lines = [line.split("\t") for line in result.stdout.strip().splitlines()]
  assert [line[0] for line in lines] == ["1", "2", "3", "4", "5"]
  assert [line[1] for line in lines] == _brute_force(store, 0, "u3", 5)
  bad = subprocess.run(
      [sys.executable, "-m", "launch.read_store", f"--store={tmp_path / 's'}",
       "--neighbours=ghost"],
      cwd=REPO, capture_output=True, text=True, check=False, timeout=120)
  assert bad.returncode == 2 and "unknown user id 'ghost'" in bad.stderr


def _read_store(*flags):
  return subprocess.run(
      [sys.executable, "-m", "launch.read_store", *flags], cwd=REPO,
      capture_output=True, text=True, check=False, timeout=120)


def test_read_store_new_since_exclude_and_export_cli(tmp_path):
  store = _store(tmp_path / "s")
  root = f"--store={tmp_path / 's'}"
  new = _read_store(root, "--new_since=0")
  assert new.returncode == 0, new.stderr
  assert new.stdout.splitlines() == (
      [f"user\tu{i}" for i in range(20, 30)]
      + [f"item\ti{i}" for i in range(250, 300)])
  top = _brute_force(store, 0, "u3", 5)
  found = _read_store(root, "--version=0", "--neighbours=u3", "--k=3",
                      "--index=exact", f"--exclude={top[0]},{top[2]}")
  assert found.returncode == 0, found.stderr
  assert [line.split("\t")[1] for line in found.stdout.splitlines()] == [
      top[1], top[3], top[4]]
  out = tmp_path / "v0.faiss"
  export = _read_store(root, "--version=0", "--index=exact",
                       f"--export_index={out}")
  assert export.returncode == 0, export.stderr
  served = store_lib.load_index(out, store)
  assert served.space == store.space(0)
  users, _ = store.lookup(["u3"], (), 0)
  assert [i for i, _ in served.search(users, served.space, 5)[0]] == top
  inside = _read_store(root, f"--export_index={tmp_path / 's' / 'x.faiss'}")
  assert inside.returncode == 2 and "embedding store" in inside.stderr
