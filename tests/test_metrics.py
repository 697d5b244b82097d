"""Tests of bcjax.core.metrics against brute-force numpy and pure Python."""

import chex
from float32_bounds import tolerance
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bcjax.core import metrics

# Compares floats of two computations: `make test-numerics` runs it under
# other XLA CPU kernels.
pytestmark = pytest.mark.numerics

KS = metrics.RECALL_KS


def _brute_force_recall(user_emb, item_emb, train_user, train_item, val_user,
                        val_item, num_items, ks=KS):
  """Ranks every item per user with a stable argsort on -score."""
  recalls = {k: [] for k in ks}
  for user in np.unique(val_user):
    allowed = np.setdiff1d(np.arange(num_items), train_item[train_user == user])
    scores = item_emb[allowed] @ user_emb[user]
    ranked = allowed[np.argsort(-scores, kind="stable")]
    relevant = set(val_item[val_user == user].tolist())
    for k in ks:
      found = relevant & set(ranked[:k].tolist())
      recalls[k].append(len(found) / len(relevant))
  return {k: np.mean(r) for k, r in recalls.items()}


def _random_version(seed, num_users, num_items, num_pad_items, dim=3):
  """Integer embeddings (many exact ties), heavy users, duplicate pairs."""
  rng = np.random.default_rng(seed)
  user_emb = rng.integers(-2, 3, size=(num_users, dim)).astype(np.float32)
  item_emb = rng.integers(-2, 3, size=(num_items + num_pad_items, dim))
  item_emb = item_emb.astype(np.float32)
  item_emb[num_items:] = np.nan  # Garbage in padding rows: never ranked.
  train_user = rng.integers(0, num_users, size=4 * num_users)
  train_item = rng.integers(0, num_items, size=4 * num_users)
  # Users 0 and 1 trained on nearly every item: fewer rankable items than K.
  heavy = np.arange(num_items - 3)
  train_user = np.concatenate([train_user, np.zeros_like(heavy),
                               np.ones_like(heavy)])
  train_item = np.concatenate([train_item, heavy, heavy])
  val_user = rng.integers(0, num_users, size=2 * num_users)
  val_item = rng.integers(0, num_items, size=2 * num_users)
  # Duplicates, a validation item that is also a training item, heavy users.
  val_user = np.concatenate([val_user, val_user[:5], [0, 0, 1]])
  val_item = np.concatenate([val_item, val_item[:5], [0, num_items - 1,
                                                      num_items - 2]])
  return (user_emb, item_emb, train_user, train_item, val_user, val_item,
          num_items)


@pytest.mark.parametrize("num_items,num_pad_items", [(40, 8), (150, 0),
                                                     (150, 26)])
@pytest.mark.parametrize("batch_users", [1, 7, 64])
def test_recall_matches_brute_force(num_items, num_pad_items, batch_users):
  version = _random_version(num_items, 30, num_items, num_pad_items)
  user_emb, item_emb, train_user, train_item, val_user, val_item, _ = version
  inputs = metrics.prepare_recall_inputs(train_user, train_item, val_user,
                                         val_item, num_items, batch_users)
  recall = metrics.recall_at_k(user_emb, item_emb, inputs)
  expected = _brute_force_recall(*version)
  assert list(recall) == list(KS)
  for k in KS:
    np.testing.assert_allclose(recall[k], expected[k], rtol=1e-6)


def test_prepare_recall_inputs_shapes():
  version = _random_version(0, 30, 40, 0)
  _, _, train_user, train_item, val_user, val_item, num_items = version
  inputs = metrics.prepare_recall_inputs(train_user, train_item, val_user,
                                         val_item, num_items, batch_users=8)
  num_eval = len(np.unique(val_user))
  num_batches = -(-num_eval // 8)
  assert inputs.num_users == num_eval
  assert inputs.batch_users == 8
  chex.assert_shape(inputs.users, (num_batches, 8))
  np.testing.assert_array_equal(inputs.users[inputs.user_mask],
                                np.unique(val_user))
  for pairs in (inputs.excluded, inputs.validation):
    assert pairs.dtype == np.int32 and pairs.shape[0] == num_batches
    padding = pairs[..., 0] == 8
    assert padding.any()
    assert (pairs[..., 0] <= 8).all() and (pairs[..., 1] < num_items).all()


def test_batch_hits_counts_duplicate_validation_once():
  users = jnp.array([[1.0], [1.0]])
  items = jnp.array([[3.0], [2.0], [1.0], [0.0]])
  item_mask = jnp.array([True, True, True, False])
  excluded = jnp.array([[0, 0], [2, 1]], jnp.int32)  # Row 2: padding.
  validation = jnp.array([[0, 1], [0, 1], [1, 0], [1, 3], [2, 2]], jnp.int32)
  hits, num_val = metrics.batch_hits(users, items, item_mask, excluded,
                                     validation, ks=(1, 2, 5))
  np.testing.assert_array_equal(num_val, [1, 2])
  # Row 0 ranks [1, 2]; row 1 ranks [0, 1, 2]; item 3 is padding.
  np.testing.assert_array_equal(hits, [[1, 1, 1], [1, 1, 1]])


def test_recall_compiles_once_across_batches(monkeypatch):
  version = _random_version(1, 30, 40, 8)
  user_emb, item_emb, train_user, train_item, val_user, val_item, _ = version
  inputs = metrics.prepare_recall_inputs(train_user, train_item, val_user,
                                         val_item, 40, batch_users=4)
  assert inputs.users.shape[0] > 2
  traced = jax.jit(chex.assert_max_traces(metrics.batch_hits.__wrapped__, n=1),
                   static_argnames="ks")
  monkeypatch.setattr(metrics, "batch_hits", traced)
  metrics.recall_at_k(user_emb, item_emb, inputs)
  metrics.recall_at_k(user_emb + 1.0, item_emb, inputs)


def test_recall_rejects_small_tables():
  version = _random_version(2, 30, 40, 0)
  user_emb, item_emb, train_user, train_item, val_user, val_item, _ = version
  inputs = metrics.prepare_recall_inputs(train_user, train_item, val_user,
                                         val_item, 40)
  with pytest.raises(ValueError, match="item rows"):
    metrics.recall_at_k(user_emb, item_emb[:39], inputs)
  with pytest.raises(ValueError, match="user rows"):
    metrics.recall_at_k(user_emb[:1], item_emb, inputs)
  with pytest.raises(ValueError, match="no validation"):
    metrics.prepare_recall_inputs(train_user, train_item, [], [], 40)
  with pytest.raises(ValueError, match="outside"):
    metrics.prepare_recall_inputs(train_user, train_item, [0], [40], 40)


def _pairwise_auc(scores, labels):
  """Fraction of (positive, negative) pairs ordered right, ties 1/2."""
  positives = [s for s, y in zip(scores, labels) if y]
  negatives = [s for s, y in zip(scores, labels) if not y]
  if not positives or not negatives:
    return float("nan")
  wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
  return wins / (len(positives) * len(negatives))


MAX_LEN = 24
_jit_auc = jax.jit(metrics.roc_auc)


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(
    entries=st.lists(st.tuples(st.integers(-3, 3), st.booleans(),
                               st.booleans()),
                     min_size=1, max_size=MAX_LEN))
def test_roc_auc_matches_pairwise_count(entries):
  scores, labels, real = (list(column) for column in zip(*entries))
  expected = _pairwise_auc([s for s, r in zip(scores, real) if r],
                           [y for y, r in zip(labels, real) if r])
  # Fixed length keeps one compilation; the padding is masked out.
  pad = MAX_LEN - len(scores)
  auc = _jit_auc(jnp.array(scores + [7] * pad, jnp.float32),
                 jnp.array(labels + [True] * pad),
                 jnp.array(real + [False] * pad))
  # Exact half-integer counts and one float32 division: within 2^-24
  # relative, and 0 exactly.
  np.testing.assert_allclose(auc, expected, rtol=1e-6, atol=2**-24)


def test_roc_auc_without_mask_and_garbage_in_masked_entries():
  scores = np.array([0.1, 0.4, 0.35, 0.8, np.nan, np.inf], np.float32)
  labels = np.array([0, 0, 1, 1, 1, 0])
  mask = np.array([1, 1, 1, 1, 0, 0], bool)
  np.testing.assert_allclose(metrics.roc_auc(scores[:4], labels[:4]), 0.75)
  np.testing.assert_allclose(metrics.roc_auc(scores, labels, mask), 0.75)
  assert np.isnan(metrics.roc_auc(scores[:2], labels[:2]))


def test_roc_auc_vmap_equals_loop():
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 5, size=(6, 50)).astype(np.float32)
  labels = rng.random((6, 50)) < 0.4
  mask = rng.random((6, 50)) < 0.8
  batched = jax.vmap(metrics.roc_auc)(scores, labels, mask)
  looped = [metrics.roc_auc(s, y, m) for s, y, m in zip(scores, labels, mask)]
  # Exact counts and one division each way (see above).
  np.testing.assert_allclose(batched, looped, rtol=1e-6, atol=2**-24)
  for auc, s, y, m in zip(batched, scores, labels, mask):
    np.testing.assert_allclose(auc, _pairwise_auc(s[m], y[m]), rtol=1e-6, atol=2**-24)


def test_alignment_error_matches_numpy():
  rng = np.random.default_rng(0)
  users_a, users_b = rng.normal(size=(2, 7, 4))
  items_a, items_b = rng.normal(size=(2, 11, 4))
  expected = np.mean(np.concatenate([
      np.linalg.norm(users_a - users_b, axis=1),
      np.linalg.norm(items_a - items_b, axis=1)]))
  # float32 (inputs rounded from float64) against float64: differences that
  # may cancel, 4-term norms, a mean over 18 rows; scale: the mean norm of
  # |a| + |b|.
  size = np.mean(np.linalg.norm(
      np.abs(np.concatenate([users_a, items_a])) +
      np.abs(np.concatenate([users_b, items_b])), axis=1))
  np.testing.assert_allclose(
      metrics.alignment_error(users_a, items_a, users_b, items_b), expected,
      **tolerance(terms=18, scale=size, depth=2))
  np.testing.assert_allclose(
      metrics.alignment_error(users_a, items_a, users_a, items_a), 0.0)
