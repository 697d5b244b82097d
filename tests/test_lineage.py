"""bcjax.Lineage: the state carried from one version to the next."""

import dataclasses
from pathlib import Path
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import bcjax
from bcjax.backward import chains

# Compares floats of two computations: `make test-numerics` runs it under
# other XLA CPU kernels.
pytestmark = pytest.mark.numerics

NUM_NODES, DIMS = 12, (3, 4, 5)


@dataclasses.dataclass(frozen=True)
class PullTask:
  """loss = mean ||z[ids] - targets||^2 over a batch (ids, targets, mask)."""

  def nodes(self, batch):
    ids, _, mask = batch
    return (ids,), mask

  def loss(self, z, batch):
    ids, targets, mask = batch
    error = jnp.sum((z[ids] - targets[:, :z.shape[1]]) ** 2, axis=-1)
    return jnp.sum(jnp.where(mask, error, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def _table(dim):
  return bcjax.FunctionalModel(
      lambda key, inputs, d: {"table": jax.random.normal(key, (NUM_NODES, d))},
      lambda params, inputs: params["table"], dim)


def _batches(key):
  targets = np.random.default_rng(0).normal(size=(NUM_NODES, max(DIMS)))
  ids = np.asarray(jax.random.permutation(key, NUM_NODES)).reshape(3, 4)
  return ids, targets[ids].astype(np.float32), np.ones(ids.shape, bool)


INPUTS = jnp.zeros((NUM_NODES,))
FIT = dict(schedule=bcjax.Schedule(epochs=3), tx=optax.adam(0.05))


def _three_versions(tmp_path=None):
  lineage, results = bcjax.Lineage(), []
  for k, d in enumerate(DIMS):
    results.append(lineage.fit(_table(d), PullTask(), INPUTS, _batches,
                               jax.random.key(k), **FIT))
    if tmp_path is not None:
      z = np.asarray(lineage.embed(INPUTS))
      ids = np.array([f"n{i}" for i in range(NUM_NODES)])
      lineage.publish(tmp_path / "store", z[:5], z[5:], ids[:5], ids[5:])
  return lineage, results


def test_each_version_is_fit_with_the_previous_model_and_the_chain():
  lineage, results = _three_versions()
  assert lineage.num_versions == 3
  assert [w.shape for w in lineage.chain()] == [(4, 3), (5, 4)]
  # Version 2 by hand: the same call, so the same bits.
  previous = bcjax.embed(_table(4), results[1].variables, INPUTS)
  by_hand = bcjax.fit(_table(5), PullTask(), INPUTS, _batches,
                      jax.random.key(2), objective=bcjax.BC_ALIGNER,
                      previous=previous, chain=(results[1].transform,), **FIT)
  np.testing.assert_array_equal(by_hand.transform, results[2].transform)
  jax.tree.map(np.testing.assert_array_equal, by_hand.variables,
               results[2].variables)
  assert results[0].transform is None  # Version 0: the task alone.
  # The same call on the same matrices: the same bits.
  np.testing.assert_array_equal(
      lineage.to_version_zero(),
      chains.chain_matrix(lineage.chain(), 2, 0))


def test_publish_fills_a_store_version_by_version(tmp_path):
  lineage, results = _three_versions(tmp_path)
  store = bcjax.EmbeddingStore.open(tmp_path / "store")
  assert store.versions == [0, 1, 2] and store.dims == list(DIMS)
  z = np.asarray(bcjax.embed(_table(5), results[2].variables, INPUTS))
  users, _ = store.embeddings(version=0)
  np.testing.assert_array_equal(users, store.transform(z[:5], 2, 0))
  np.testing.assert_allclose(users, z[:5] @ lineage.to_version_zero(),
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(bcjax.StoreError, match="holds versions 0..2"):
    stale = bcjax.Lineage(lineage.last, lineage.chain()[:1])
    stale.publish(tmp_path / "store", z[:5], z[5:], [], [])


def test_mistakes_are_named():
  lineage = bcjax.Lineage()
  with pytest.raises(ValueError, match="version 0 has no backward"):
    lineage.add(_table(3), {}, np.eye(3))
  lineage.add(_table(3), {"params": {"table": jnp.zeros((NUM_NODES, 3))}})
  with pytest.raises(ValueError, match="version 1: needs W_k"):
    lineage.add(_table(4), {})
  with pytest.raises(ValueError, match=r"version 1: W_1 has shape \(3, 4\), "
                     r"expected \[4, 3\]"):
    lineage.add(_table(4), {}, np.zeros((3, 4)))
  with pytest.raises(ValueError, match="learns no backward transformation"):
    lineage.fit(_table(4), PullTask(), INPUTS, _batches, jax.random.key(0),
                objective=bcjax.Objective(), **FIT)
  with pytest.raises(ValueError, match="`chain` is the lineage's own"):
    lineage.fit(_table(4), PullTask(), INPUTS, _batches, jax.random.key(0),
                chain=(), **FIT)
  with pytest.raises(ValueError, match="backward matrices without"):
    bcjax.Lineage(None, [np.eye(2)])


def test_fold_in_fills_new_rows_with_the_mean_of_known_neighbours():
  previous = np.array([[1., 2.], [3., 4.], [0., 0.], [0., 0.], [0., 0.]],
                      np.float32)
  known = np.array([True, True, False, False, False])
  # Node 2 neighbours 0 and 1 (both known); node 3 only node 2 (new);
  # node 4 none. Edges are read in both directions.
  filled, now_known = bcjax.fill_from_neighbours(previous, known,
                                    (np.array([2, 1, 3]), np.array([0, 2, 2])))
  np.testing.assert_array_equal(filled[:2], previous[:2])
  np.testing.assert_allclose(filled[2], [2., 3.])
  np.testing.assert_array_equal(filled[3:], 0.0)
  np.testing.assert_array_equal(now_known, [True, True, True, False, False])
  with pytest.raises(ValueError, match=r"node-id arrays in 0..4"):
    bcjax.fill_from_neighbours(previous, known, (np.array([5]), np.array([0])))


def test_target_reads_previous_rows_by_id_and_marks_new_nodes():
  lineage, _ = _three_versions()
  own = np.asarray(lineage.embed(INPUTS))
  ids = np.array([3, -1, 0, 11, -1])
  previous, known = lineage.target(jnp.zeros((5,)), ids)
  np.testing.assert_array_equal(known, [True, False, True, True, False])
  np.testing.assert_array_equal(previous[known], own[ids[known]])
  np.testing.assert_array_equal(previous[~known], 0.0)
  # Without ids, the model applied to the new inputs: every node known.
  previous, known = lineage.target(INPUTS)
  assert known is None
  np.testing.assert_array_equal(previous, own)
  with pytest.raises(ValueError, match=r"version 3: `previous_ids` must be a "
                     r"1-D int array of rows of version 2's 12 embeddings"):
    lineage.target(INPUTS, np.array([0, 12]))
  with pytest.raises(ValueError, match="pass both"):
    lineage.target(INPUTS, neighbours=(np.array([0]), np.array([1])))
  stranger = bcjax.Lineage(lineage.last, lineage.backward)
  with pytest.raises(ValueError, match="no inputs of it"):
    stranger.target(INPUTS, np.arange(NUM_NODES))


def test_previous_ids_map_nodes_by_count_or_by_raw_id():
  # Counts (users, items): old nodes keep their indices, new ones come after.
  np.testing.assert_array_equal(bcjax.previous_ids((2, 3), (3, 4)),
                                [0, 1, -1, 2, 3, 4, -1])
  # Raw ids, matched by value: user u0 moved, item x left, u2 and z are new.
  np.testing.assert_array_equal(
      bcjax.previous_ids((["u0", "u1"], ["x", "y"]),
                         (["u1", "u2", "u0"], ["y", "z"])),
      [1, -1, 0, 3, -1])
  for previous, current, message in [
      ((2, 3), (3,), "2 kinds of nodes before, 1 now"),
      ((2,), (-1,), "integer >= 0, got -1"),
      ((["a", "b"],), (["a", "a"],), "raw id 'a' more than once"),
      ((2,), (["0", "1"],), "give counts or raw ids of one type")]:
    with pytest.raises(ValueError, match=message):
      bcjax.previous_ids(previous, current)


def test_split_nodes_by_kind():
  z = np.arange(14).reshape(7, 2)
  users, items = bcjax.split_nodes(z, (3, 4))
  np.testing.assert_array_equal(users, z[:3])
  np.testing.assert_array_equal(items, z[3:])
  with pytest.raises(ValueError, match=r"sizes \[3, 3\] add up to 6, but z "
                     "has 7 rows"):
    bcjax.split_nodes(z, (3, 3))


_CONTINUE = """
import sys
import jax
import numpy as np
sys.path.insert(0, sys.argv[1])
import bcjax
import test_lineage as t
lineage = bcjax.Lineage.load(sys.argv[2], t._table(t.DIMS[1]))
result = lineage.fit(t._table(t.DIMS[2]), t.PullTask(), t.INPUTS, t._batches,
                     jax.random.key(2), **t.FIT)
z = np.asarray(lineage.embed(t.INPUTS))
ids = np.array([f"n{i}" for i in range(t.NUM_NODES)])
lineage.publish(None, z[:5], z[5:], ids[:5], ids[5:])
np.savez(sys.argv[3], w=result.transform, table=result.variables["params"][
    "table"], chain=lineage.to_version_zero())
"""


def test_a_saved_lineage_continues_in_another_process(tmp_path):
  """Versions 0-1 here, saved; version 2 fit in a second process from the
  save: bit for bit version 2 fit here without saving (same machine)."""
  lineage, results = bcjax.Lineage(), []
  ids = np.array([f"n{i}" for i in range(NUM_NODES)])
  for k, d in enumerate(DIMS[:2]):
    results.append(lineage.fit(_table(d), PullTask(), INPUTS, _batches,
                               jax.random.key(k), **FIT))
    z = np.asarray(lineage.embed(INPUTS))
    lineage.publish(tmp_path / "store", z[:5], z[5:], ids[:5], ids[5:])
  lineage.save(tmp_path / "saved")
  done = subprocess.run(
      [sys.executable, "-c", _CONTINUE, str(Path(__file__).parent),
       str(tmp_path / "saved"), str(tmp_path / "out.npz")],
      capture_output=True, text=True, check=False, timeout=300)
  assert done.returncode == 0, done.stderr
  here = lineage.fit(_table(DIMS[2]), PullTask(), INPUTS, _batches,
                     jax.random.key(2), **FIT)
  there = np.load(tmp_path / "out.npz")
  np.testing.assert_array_equal(there["w"], here.transform)
  np.testing.assert_array_equal(there["table"],
                                here.variables["params"]["table"])
  np.testing.assert_array_equal(there["chain"], lineage.to_version_zero())
  # The second process published version 2 to the first one's store.
  store = bcjax.EmbeddingStore.open(tmp_path / "store")
  assert store.versions == [0, 1, 2]
  z = np.asarray(lineage.embed(INPUTS))
  np.testing.assert_array_equal(store.embeddings()[0], z[:5])


def test_a_bad_save_is_named(tmp_path):
  lineage, _ = _three_versions()
  lineage.save(tmp_path / "saved")
  with pytest.raises(ValueError, match="has 5 dims, the model given 4"):
    bcjax.Lineage.load(tmp_path / "saved", _table(4))
  loaded = bcjax.Lineage.load(tmp_path / "saved", _table(5))
  assert loaded.num_versions == 3 and loaded.store is None
  np.testing.assert_array_equal(loaded.last_inputs, INPUTS)
  for a, b in zip(loaded.chain(), lineage.chain()):
    np.testing.assert_array_equal(a, b)
  w = tmp_path / "saved" / "w2.npy"
  w.write_bytes(w.read_bytes()[:-4] + b"\0\0\0\0")
  with pytest.raises(ValueError, match="w2.npy: checksum mismatch"):
    bcjax.Lineage.load(tmp_path / "saved", _table(5))
  with pytest.raises(ValueError, match="no saved lineage"):
    bcjax.Lineage.load(tmp_path / "nothing", _table(5))
  with pytest.raises(ValueError, match="no version yet"):
    bcjax.Lineage().save(tmp_path / "empty")
