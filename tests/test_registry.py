"""The consumer registry of a store: baselines against plain references,
round trips, and tampered or bad entries refused by name."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from bcjax.models.consumer import ConsumerMLP
from bcjax.store import EmbeddingStore, StoreError, faiss_index, registry
from bcjax.store.consumer_kinds import LinearHead, MLPHead, recall_at_k
from bcjax.util import keys


def _auc(scores, labels):
  """ROC-AUC by its definition: over (positive, negative) pairs, a win 1, a
  tie 1/2."""
  pos, neg = scores[labels], scores[~labels]
  diff = pos[:, None] - neg[None, :]
  return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def _store(tmp_path, rng):
  users = rng.normal(size=(30, 4)).astype(np.float32)
  items = rng.normal(size=(40, 4)).astype(np.float32)
  return EmbeddingStore.create(
      tmp_path / "store", users, items, [f"u{i}" for i in range(30)],
      [f"i{i}" for i in range(40)], dataset="toy", strategy="toy")


def _linear(store, rng, name="lin"):
  _, items = store.embeddings(0)
  labels = items[:, 0] + 0.5 * rng.normal(size=40) > 0
  head = LinearHead(np.array([1.0, 0.3, 0.0, -0.2]), 0.1)
  consumer = registry.register_classifier(
      store, name, 0, head, ["item"], [f"i{i}" for i in range(40)], labels)
  return consumer, items @ head.weights + 0.1, labels


def test_a_linear_heads_baseline_is_the_roc_auc_of_its_scores(tmp_path):
  rng = np.random.default_rng(0)
  store = _store(tmp_path, rng)
  consumer, scores, labels = _linear(store, rng)
  np.testing.assert_allclose(consumer.baseline, _auc(scores, labels),
                             rtol=0, atol=1e-6)
  loaded, = registry.consumers(EmbeddingStore.open(store.path))
  assert loaded.name == "lin" and loaded.baseline == consumer.baseline
  np.testing.assert_array_equal(loaded.rows, np.arange(40)[:, None])
  np.testing.assert_allclose(loaded.scores(*store.embeddings(0)), scores,
                             rtol=1e-6, atol=1e-6)


def test_an_mlp_head_round_trips_through_msgpack(tmp_path):
  rng = np.random.default_rng(1)
  store = _store(tmp_path, rng)
  users, items = store.embeddings(0)
  model = ConsumerMLP(8)
  variables = model.init(keys.derive(keys.root(0), "head"), jnp.zeros((2, 8)))
  pairs = rng.integers(0, 30, size=(50, 2))
  labels = np.arange(50) % 2 == 0
  consumer = registry.register_classifier(
      store, "pairs", 0, MLPHead(8, variables), ("user", "item"),
      np.stack([[f"u{a}" for a in pairs[:, 0]],
                [f"i{b}" for b in pairs[:, 1]]], 1), labels)
  expected = np.asarray(model.apply(variables, np.concatenate(
      [users[pairs[:, 0]], items[pairs[:, 1]]], 1)))
  np.testing.assert_allclose(consumer.baseline, _auc(expected, labels),
                             rtol=0, atol=1e-6)
  loaded, = registry.consumers(store)
  np.testing.assert_allclose(loaded.scores(users, items), expected,
                             rtol=1e-6, atol=1e-6)


def test_recall_at_k_by_hand():
  # Query [1, 0] scores items 1, .9, 0, 0; item 0 is excluded, items 2 and
  # 3 tie (the lower id first): the top 2 are items 1 and 2.
  index = faiss_index.build_index(
      np.array([[1, 0], [0.9, 0], [0, 1], [0, 0.5]], np.float32), "exact")
  queries = np.array([[1, 0], [0, 1]], np.float32)
  relevant = np.array([[0, 2], [0, 3], [1, 2]])
  excluded = np.array([[0, 0]])
  np.testing.assert_allclose(
      recall_at_k(index, queries, relevant, excluded, 2), [0.5, 1.0],
      rtol=0, atol=1e-12)


def test_an_index_records_its_baseline_recall(tmp_path):
  rng = np.random.default_rng(2)
  store = _store(tmp_path, rng)
  users, items = store.embeddings(0)
  top = np.argsort(-(users[:5] @ items.T), axis=1)
  # Per query: excluded its best item, relevant its 2nd and its last.
  consumer = registry.register_index(
      store, "idx", 0, [f"u{i}" for i in range(5)],
      [[f"i{top[q, 1]}", f"i{top[q, -1]}"] for q in range(5)],
      [[f"i{top[q, 0]}"] for q in range(5)], k=1)
  np.testing.assert_allclose(consumer.baseline_recall, np.full(5, 0.5),
                             rtol=0, atol=1e-12)
  loaded, = registry.consumers(store)
  assert loaded.baseline == 0.5 and loaded.k == 1


def test_tampered_files_are_refused_by_name(tmp_path):
  rng = np.random.default_rng(3)
  store = _store(tmp_path, rng)
  _linear(store, rng)
  folder = tmp_path / "store" / registry.FOLDER
  path = folder / registry.REGISTRY
  record = json.loads(path.read_text())
  labels = folder / record["consumers"]["lin"]["files"]["labels"]["name"]
  original = labels.read_bytes()
  labels.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
  with pytest.raises(StoreError, match="consumer 'lin'.*checksum"):
    registry.consumers(store)
  labels.write_bytes(original)
  record["consumers"]["lin"]["baseline"] = 0.99
  path.write_text(json.dumps(record))
  with pytest.raises(StoreError, match="consumer 'lin': recorded baseline"):
    registry.consumers(store)
  record["consumers"]["lin"]["files"]["labels"]["name"] = "../manifest.json"
  path.write_text(json.dumps(record))
  with pytest.raises(StoreError, match="consumer 'lin'.*escapes"):
    registry.consumers(store)
  path.write_text("{not json")
  with pytest.raises(StoreError, match="registry.json cannot be read"):
    registry.consumers(store)


def test_bad_registrations_are_refused(tmp_path):
  rng = np.random.default_rng(4)
  store = _store(tmp_path, rng)
  head, ids = LinearHead(np.ones(4)), [f"i{i}" for i in range(4)]
  labels = [True, False, True, False]
  with pytest.raises(StoreError, match="item id 'nope'"):
    registry.register_classifier(store, "c", 0, head, ["item"],
                                 ids[:3] + ["nope"], labels)
  with pytest.raises(StoreError, match="version 1"):
    registry.register_classifier(store, "c", 1, head, ["item"], ids, labels)
  with pytest.raises(StoreError, match="reads 4 inputs"):
    registry.register_classifier(
        store, "c", 0, head, ["user", "item"],
        np.stack([[f"u{i}" for i in range(4)], ids], 1), labels)
  with pytest.raises(StoreError, match="both classes"):
    registry.register_classifier(store, "c", 0, head, ["item"], ids,
                                 [True] * 4)
  with pytest.raises(StoreError, match="not a plain name"):
    registry.register_classifier(store, "../c", 0, head, ["item"], ids, labels)
  with pytest.raises(StoreError, match="relevant item"):
    registry.register_index(store, "x", 0, ["u0"], [[]], k=5)
  registry.register_classifier(store, "c", 0, head, ["item"], ids, labels)
  with pytest.raises(StoreError, match="'c' is registered"):
    registry.register_classifier(store, "c", 0, head, ["item"], ids, labels)
  registry.unregister(store, "c")
  assert registry.consumers(store) == []
  assert [p.name for p in (tmp_path / "store" / registry.FOLDER).iterdir()
          ] == [registry.REGISTRY]


def test_a_consumer_built_on_another_stores_space_is_refused(tmp_path):
  """A registry copied beside another store's versions (other tables, so
  other fingerprints) is refused, naming the consumer and both spaces."""
  rng = np.random.default_rng(5)
  store = _store(tmp_path, rng)
  _linear(store, rng)
  other = EmbeddingStore.create(
      tmp_path / "other", rng.normal(size=(30, 4)).astype(np.float32),
      rng.normal(size=(40, 4)).astype(np.float32),
      [f"u{i}" for i in range(30)], [f"i{i}" for i in range(40)],
      dataset="toy", strategy="toy")
  (tmp_path / "store" / registry.FOLDER).rename(
      tmp_path / "other" / registry.FOLDER)
  with pytest.raises(StoreError, match=r"consumer 'lin' was built on toy/toy "
                     r"version 0 .* not on this store's toy/toy version 0"):
    registry.consumers(other)
