"""Tests of user-uniform BPR triple sampling (method §5), written against it."""

import collections

import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from bcjax.data.graph import DataError, build_graph
from bcjax.data.sampling import TripleSampler, numpy_rng
from bcjax.data.splits import make_splits

# A chi-square statistic above the 1 - 1e-12 quantile is treated as a failure:
# with a fixed seed the tests are deterministic, and for a correct sampler a
# failing seed would be a one-in-a-trillion event.
FALSE_FAILURE_PROBABILITY = 1e-12


def _chi2_threshold(df):
  return stats.chi2.isf(FALSE_FAILURE_PROBABILITY, df)


def _positives(user, item):
  out = collections.defaultdict(set)
  for u, i in zip(np.asarray(user).tolist(), np.asarray(item).tolist()):
    out[u].add(i)
  return out


def _dense_training_set():
  """8 items; user u (0..6) has items 0..u, user 7 has none, user 8 has {3, 5, 7}."""
  user, item = [], []
  for u in range(7):
    for i in range(u + 1):
      user.append(u)
      item.append(i)
  for i in (3, 5, 7):
    user.append(8)
    item.append(i)
  # a duplicate training interaction
  user.append(2)
  item.append(1)
  return np.array(user), np.array(item), 9, 8


def test_negatives_are_never_training_positives():
  """Over many epochs no (u, i-) is a training interaction, even for users with 7 of 8 items."""
  user, item, num_users, num_items = _dense_training_set()
  positives = _positives(user, item)
  sampler = TripleSampler(user, item, num_users, num_items)
  rng = np.random.default_rng(0)
  for _ in range(200):
    u, pos, neg = sampler.sample(rng)
    for a, p, n in zip(u.tolist(), pos.tolist(), neg.tolist()):
      assert n not in positives[a]
      assert p in positives[a]
      assert 0 <= n < num_items


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 11)), min_size=1,
                max_size=60), st.integers(0, 2**31))
def test_triples_are_valid_on_random_training_sets(pairs, seed):
  """Random training sets: count = |train|, positives real, negatives not positives, in range."""
  user = np.array([p[0] for p in pairs])
  item = np.array([p[1] for p in pairs])
  num_users, num_items = 10, 12
  positives = _positives(user, item)
  if any(len(v) == num_items for v in positives.values()):
    return  # no negative exists for that user
  sampler = TripleSampler(user, item, num_users, num_items)
  rng = np.random.default_rng(seed)
  for _ in range(3):
    u, pos, neg = sampler.sample(rng)
    assert len(u) == len(pos) == len(neg) == len(pairs)
    for a, p, n in zip(u.tolist(), pos.tolist(), neg.tolist()):
      assert a in positives  # a user with >= 1 training edge
      assert p in positives[a] and n not in positives[a]
      assert 0 <= n < num_items


def test_triple_count_and_order_on_a_version_split():
  """On a real split: |train| triples, users < U1, items < I1, and not grouped by user."""
  rng = np.random.default_rng(3)
  n = 600
  g = build_graph("r", rng.integers(0, 80, n), rng.integers(0, 50, n),
                  np.full(n, 4.0), rng.integers(0, 100, n), {})
  s = make_splits(g)[0]
  sampler = TripleSampler(s.train_user, s.train_item, s.num_users, s.num_items)
  u, pos, neg = sampler.sample(np.random.default_rng(0))
  assert len(u) == s.num_train
  assert u.max() < s.num_users and pos.max() < s.num_items
  assert neg.max() < s.num_items and neg.min() >= 0
  positives = _positives(s.train_user, s.train_item)
  assert all(p in positives[a] for a, p in zip(u.tolist(), pos.tolist()))
  # Shuffled: users are not in sorted order (probability ~ 0 for a shuffle).
  assert np.any(np.diff(u.astype(np.int64)) < 0)


def test_same_seed_same_triples_different_seed_different():
  """Sampling is a function of the generator state only."""
  user, item, num_users, num_items = _dense_training_set()
  sampler = TripleSampler(user, item, num_users, num_items)
  a = sampler.sample(np.random.default_rng(7))
  b = TripleSampler(user, item, num_users, num_items).sample(
      np.random.default_rng(7))
  c = sampler.sample(np.random.default_rng(8))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert any(not np.array_equal(x, y) for x, y in zip(a, c))
  # Consecutive epochs from one generator differ too.
  rng = np.random.default_rng(7)
  e1, e2 = sampler.sample(rng), sampler.sample(rng)
  assert any(not np.array_equal(x, y) for x, y in zip(e1, e2))


def test_users_uniform_despite_skewed_degrees():
  """Users with >= 1 edge are drawn uniformly (chi-square), even when one has 300 edges.

  Edge-uniform sampling would give user 0 about 300/309 of the draws.
  Users 10 and 11 (no edges) must never appear.
  """
  user = np.array([0] * 300 + list(range(1, 10)))
  item = np.array(list(range(300)) + [0] * 9)
  sampler = TripleSampler(user, item, 12, 400)
  n = 100_000
  u, _, _ = sampler.sample(np.random.default_rng(123), num_samples=n)
  counts = np.bincount(u, minlength=12)
  assert counts[10] == 0 and counts[11] == 0
  observed = counts[:10]
  chi2 = stats.chisquare(observed).statistic
  assert chi2 < _chi2_threshold(9), (chi2, observed)
  # and the test has power: user 0 is not over-represented by much.
  assert observed[0] < 0.12 * n


def test_positive_uniform_over_the_users_edges():
  """Given the user, each of its training edges (duplicates included) is equally likely."""
  # user 0 has edges to items 4, 4, 5, 6: item 4 has probability 1/2.
  user = np.array([0, 0, 0, 0, 1])
  item = np.array([4, 4, 5, 6, 0])
  sampler = TripleSampler(user, item, 2, 10)
  u, pos, _ = sampler.sample(np.random.default_rng(5), num_samples=80_000)
  picks = pos[u == 0]
  observed = np.array([(picks == i).sum() for i in (4, 5, 6)])
  assert observed.sum() == len(picks)
  expected = len(picks) * np.array([0.5, 0.25, 0.25])
  chi2 = stats.chisquare(observed, expected).statistic
  assert chi2 < _chi2_threshold(2), (chi2, observed)
  assert set(pos[u == 1].tolist()) == {0}


def test_negatives_uniform_over_non_interacted_items():
  """A user's negatives are uniform over the items it has not interacted with (chi-square)."""
  # user 0: items {0, 2, 5} of 10; user 1: {0..7}, so only 8 and 9 remain.
  user = np.array([0, 0, 0] + [1] * 8)
  item = np.array([0, 2, 5] + list(range(8)))
  sampler = TripleSampler(user, item, 2, 10)
  u, _, neg = sampler.sample(np.random.default_rng(11), num_samples=100_000)
  for who, allowed in ((0, [1, 3, 4, 6, 7, 8, 9]), (1, [8, 9])):
    negs = neg[u == who]
    counts = np.bincount(negs, minlength=10)
    forbidden = np.setdiff1d(np.arange(10), allowed)
    assert counts[forbidden].sum() == 0
    chi2 = stats.chisquare(counts[allowed]).statistic
    assert chi2 < _chi2_threshold(len(allowed) - 1), (chi2, counts)


def test_numpy_rng_is_deterministic_in_the_key():
  """numpy_rng(key) gives the same stream for the same key and different ones for other keys."""
  a = numpy_rng(jax.random.key(0)).integers(0, 2**62, size=8)
  b = numpy_rng(jax.random.key(0)).integers(0, 2**62, size=8)
  c = numpy_rng(jax.random.key(1)).integers(0, 2**62, size=8)
  k1, k2 = jax.random.split(jax.random.key(0))
  d = numpy_rng(k1).integers(0, 2**62, size=8)
  e = numpy_rng(k2).integers(0, 2**62, size=8)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert not np.array_equal(d, e) and not np.array_equal(a, d)
  assert isinstance(numpy_rng(jax.random.key(0)), np.random.Generator)


def test_sampler_with_numpy_rng_reproducible():
  """Triples drawn with numpy_rng of the same JAX key are identical."""
  user, item, num_users, num_items = _dense_training_set()
  sampler = TripleSampler(user, item, num_users, num_items)
  a = sampler.sample(numpy_rng(jax.random.key(42)))
  b = sampler.sample(numpy_rng(jax.random.key(42)))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def test_empty_training_set_raises():
  """No training interactions: DataError."""
  with pytest.raises(DataError):
    TripleSampler(np.array([], np.int64), np.array([], np.int64), 3, 5)


def test_user_with_every_item_raises():
  """A user whose training items are all I1 items has no negative: DataError, not a hang."""
  with pytest.raises(DataError):
    TripleSampler(np.array([0, 0, 0, 1]), np.array([0, 1, 2, 0]), 2, 3)
