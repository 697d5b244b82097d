"""Tests of the unintended-task targets (method §7), against brute-force loops."""

import collections

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from bcjax.data.graph import build_graph
from bcjax.data.splits import PAPER_TIMES, make_splits
from bcjax.data.targets import item_stats, version_targets


def _brute_item_stats(items, ratings, min_count=10):
  """item -> (count, mean, unbiased std) for items with >= min_count ratings."""
  by_item = collections.defaultdict(list)
  for i, r in zip(items, ratings):
    by_item[int(i)].append(float(r))
  out = {}
  for i in sorted(by_item):
    values = np.asarray(by_item[i], np.float64)
    if len(values) >= min_count:
      out[i] = (len(values), values.mean(), np.std(values, ddof=1))
  return out


def _assert_stats_equal(stats, expected):
  assert stats.item.tolist() == list(expected)
  np.testing.assert_array_equal(stats.count, [v[0] for v in expected.values()])
  np.testing.assert_allclose(stats.mean, [v[1] for v in expected.values()],
                             rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(stats.std, [v[2] for v in expected.values()],
                             rtol=1e-9, atol=1e-12)


def test_item_stats_by_hand():
  """Count, mean and ddof=1 std by hand; 10 ratings kept, 9 dropped, constant gives std 0."""
  items = [0] * 10 + [1] * 9 + [2] * 10 + [3] * 12
  ratings = ([1, 2, 3, 4, 5] * 2 + [5] * 9 + [4] * 10 +
             [1, 1, 1, 1, 1, 1, 5, 5, 5, 5, 5, 5])
  stats = item_stats(np.asarray(items), np.asarray(ratings, np.float32), 5)
  assert stats.item.tolist() == [0, 2, 3]
  assert stats.count.tolist() == [10, 10, 12]
  # item 0: mean 3, squared deviations 2 * (4+1+0+1+4) = 20, var = 20/9.
  # item 3: mean 3, squared deviations 12 * 4 = 48, var = 48/11.
  np.testing.assert_allclose(stats.mean, [3.0, 4.0, 3.0], rtol=1e-12)
  np.testing.assert_allclose(stats.std,
                             [np.sqrt(20 / 9), 0.0, np.sqrt(48 / 11)],
                             rtol=1e-12, atol=1e-12)


def _hand_split():
  """The 11-row graph of test_splits, version (0.35, 1.0], with ratings.

  row:    0  1  2  3  4  5  6  7  8  9  10
  user:   A  B  A  C  D  A  E  D  B  D  F
  rating: 5  1  2  4  5  3  1  4  4  2  5
  train rows 0,1,2,3,4,6,7,10; val rows 5 (A, 3), 8 (B, 4), 9 (D, 2).
  """
  users = ["A", "B", "A", "C", "D", "A", "E", "D", "B", "D", "F"]
  items = ["p", "q", "q", "p", "r", "p", "q", "s", "r", "p", "t"]
  ratings = [5, 1, 2, 4, 5, 3, 1, 4, 4, 2, 5]
  g = build_graph("t", users, items, ratings, list(range(11)), {})
  (s,) = make_splits(g, (0.35, 1.0))
  return s


def test_targets_by_hand():
  """Edge labels and user activity of a hand-worked split."""
  t = version_targets(_hand_split())
  # train ratings 5 1 2 4 5 1 4 5 ; val ratings 3 4 2
  assert t.train_edge_positive.tolist() == [True, False, False, True, True,
                                            False, True, True]
  assert t.val_edge_positive.tolist() == [False, True, False]
  # users A0 B1 C2 D3 E4 F5: active A, B, D; positive only B (max 4).
  assert t.user_active.tolist() == [True, True, False, True, False, False]
  assert t.user_positive_active.tolist() == [False, True, False, False, False,
                                             False]


def test_user_positive_activity_uses_highest_validation_rating():
  """Highest val rating decides: (5, 2, 4.5, 1) positive, (1, 3.5, 3.9) not, (4, 4) positive."""
  # linspace(0, 1, 12): the snapshot at 0.2 is rows 0..2 (users x, y, z), so
  # every later row is an existing user's and goes to validation.
  users = ["x", "y", "z"] + ["x", "y", "z", "x", "y", "x", "y", "x", "z"]
  ratings = [5, 5, 5] + [5, 1, 4, 2, 3.5, 4.5, 3.9, 1, 4]
  g = build_graph("t", users, ["i"] * 12, ratings, list(range(12)), {})
  (s,) = make_splits(g, (0.2, 1.0))
  assert s.num_existing_users == 3 and s.num_train == 3 and s.num_val == 9
  t = version_targets(s)
  assert t.user_active.tolist() == [True, True, True]
  # val maxima: x 5, y 3.9, z 4.
  assert t.user_positive_active.tolist() == [True, False, True]


def _random_graph(seed, num_rows, num_users, num_items):
  rng = np.random.default_rng(seed)
  ratings = rng.choice([1.0, 2.0, 3.0, 3.5, 4.0, 4.5, 5.0], num_rows)
  return build_graph("r", rng.integers(0, num_users, num_rows),
                     rng.integers(0, num_items, num_rows), ratings,
                     rng.integers(0, num_rows // 3 + 1, num_rows), {})


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.integers(20, 250), st.integers(2, 40),
       st.integers(2, 20),
       st.one_of(st.just(PAPER_TIMES),
                 st.lists(st.floats(0, 1), min_size=2, max_size=4,
                          unique=True).map(sorted)))
def test_targets_match_brute_force(seed, num_rows, num_users, num_items,
                                   times):
  """Every target of every version equals a Python loop over the split's interactions."""
  g = _random_graph(seed, num_rows, num_users, num_items)
  for s in make_splits(g, times):
    t = version_targets(s)
    train = list(zip(s.train_user.tolist(), s.train_item.tolist(),
                     s.train_rating.tolist()))
    val = list(zip(s.val_user.tolist(), s.val_item.tolist(),
                   s.val_rating.tolist()))
    assert t.train_edge_positive.tolist() == [r >= 4 for _, _, r in train]
    assert t.val_edge_positive.tolist() == [r >= 4 for _, _, r in val]
    best = {}
    for u, _, r in val:
      best[u] = max(best.get(u, -1.0), r)
    assert len(t.user_active) == len(t.user_positive_active) == s.num_users
    assert t.user_active.tolist() == [u in best for u in range(s.num_users)]
    assert t.user_positive_active.tolist() == [
        u in best and best[u] >= 4 for u in range(s.num_users)]
    _assert_stats_equal(t.item_stats_train, _brute_item_stats(
        [i for _, i, _ in train], [r for _, _, r in train]))
    _assert_stats_equal(t.item_stats_all, _brute_item_stats(
        [i for _, i, _ in train + val], [r for _, _, r in train + val]))
    assert all(i < s.num_items for i in t.item_stats_all.item.tolist())


def test_item_stats_over_train_and_over_train_plus_val_differ():
  """Validation ratings enter only the train+val statistics (item pushed over 10 by val)."""
  # 3 existing users rate item p 9 times in the snapshot; then, as existing
  # users, they rate it 3 more times (validation).
  users = ["a", "b", "c"] * 4
  ratings = [1, 2, 3] * 3 + [5, 5, 5]
  g = build_graph("t", users, ["p"] * 12, ratings, list(range(12)), {})
  (s,) = make_splits(g, (0.75, 1.0))  # linspace(0,1,12)[8] = 8/11 < .75 < 9/11
  assert s.num_train == 9 and s.num_val == 3
  t = version_targets(s)
  assert t.item_stats_train.item.tolist() == []
  assert t.item_stats_all.item.tolist() == [0]
  assert t.item_stats_all.count.tolist() == [12]
  values = np.array(ratings, np.float64)
  np.testing.assert_allclose(t.item_stats_all.mean, [values.mean()])
  np.testing.assert_allclose(t.item_stats_all.std, [values.std(ddof=1)])


@pytest.mark.parametrize("rating, positive", [(3.99, False), (4.0, True),
                                              (4.01, True), (1.0, False)])
def test_edge_label_threshold(rating, positive):
  """binary-edge-rating is rating >= 4, with 4 itself positive."""
  g = build_graph("t", ["a", "b"], ["p", "q"], [rating, rating], [0, 1], {})
  (s,) = make_splits(g, (0.0, 1.0))
  t = version_targets(s)
  assert t.train_edge_positive.tolist() + t.val_edge_positive.tolist() == [
      positive, positive]
