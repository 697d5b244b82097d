"""Tests of versions and train/validation splits (method §3), written against it."""

import collections

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from bcjax.data.graph import DataError, build_graph
from bcjax.data.splits import PAPER_TIMES, check_times, make_splits


def _graph(users, items, timestamps=None, ratings=None, attributes=None):
  n = len(users)
  timestamps = list(range(n)) if timestamps is None else timestamps
  ratings = [3.0] * n if ratings is None else ratings
  return build_graph("t", users, items, ratings, timestamps, attributes or {})


# An 11-row graph; linspace(0, 1, 11) puts row e at about e/10, and no time
# used below (0.35, 0.75, 1.0) is near a row's ratio.
#   row: 0  1  2  3  4  5  6  7  8  9  10
HAND_USERS = ["A", "B", "A", "C", "D", "A", "E", "D", "B", "D", "F"]
HAND_ITEMS = ["p", "q", "q", "p", "r", "p", "q", "s", "r", "p", "t"]
# users: A0 B1 C2 D3 E4 F5; items: p0 q1 r2 s3 t4.


def test_hand_split_single_version():
  """One version over (0.35, 1.0]: new single -> train, new triple -> 2 train + last val, existing -> val.

  Snapshot at 0.35: rows 0..3, users A, B, C -> U0 = 3.
  Window rows 4..10:
    4 D (new, 3 window rows: 4, 7, 9) -> train
    5 A (existing)                    -> val
    6 E (new, 1 window row)           -> train
    7 D                               -> train
    8 B (existing)                    -> val
    9 D (D's last)                    -> val
    10 F (new, 1 window row)          -> train
  train = 0,1,2,3,4,6,7,10; val = 5,8,9; U1 = 6; I1 = 5.
  """
  g = _graph(HAND_USERS, HAND_ITEMS)
  (s,) = make_splits(g, (0.35, 1.0))
  assert (s.version, s.time_train, s.time_val) == (0, 0.35, 1.0)
  assert (s.num_existing_users, s.num_users, s.num_items) == (3, 6, 5)
  np.testing.assert_array_equal(s.train_index, [0, 1, 2, 3, 4, 6, 7, 10])
  np.testing.assert_array_equal(s.val_index, [5, 8, 9])
  np.testing.assert_array_equal(s.train_user, [0, 1, 0, 2, 3, 4, 3, 5])
  np.testing.assert_array_equal(s.train_item, [0, 1, 1, 0, 2, 1, 3, 4])
  np.testing.assert_array_equal(s.val_user, [0, 1, 3])
  np.testing.assert_array_equal(s.val_item, [0, 2, 0])
  assert (s.num_train, s.num_val) == (8, 3)


def test_hand_split_two_versions():
  """Times (0.35, 0.75, 1.0): a user new in version 0 is existing in version 1.

  Version 0, window rows 4..7 (U0 = 3):
    4 D (new, 2 window rows) -> train; 5 A -> val; 6 E (single) -> train;
    7 D (last)               -> val.
    train = 0..4, 6; val = 5, 7; U1 = 5 (A..E); I1 = 4 (p, q, r, s).
  Version 1, window rows 8..10 (U0 = U(0.75) = 5):
    8 B (existing) -> val; 9 D (now existing) -> val; 10 F (new single) -> train.
    train = 0..7, 10; val = 8, 9; U1 = 6; I1 = 5.
  """
  g = _graph(HAND_USERS, HAND_ITEMS)
  s0, s1 = make_splits(g, (0.35, 0.75, 1.0))
  assert (s0.num_existing_users, s0.num_users, s0.num_items) == (3, 5, 4)
  np.testing.assert_array_equal(s0.train_index, [0, 1, 2, 3, 4, 6])
  np.testing.assert_array_equal(s0.val_index, [5, 7])
  assert (s1.version, s1.time_train, s1.time_val) == (1, 0.75, 1.0)
  assert (s1.num_existing_users, s1.num_users, s1.num_items) == (5, 6, 5)
  np.testing.assert_array_equal(s1.train_index, [0, 1, 2, 3, 4, 5, 6, 7, 10])
  np.testing.assert_array_equal(s1.val_index, [8, 9])


def test_hand_split_ties_across_boundary():
  """Rows with equal timestamps on both sides of tau are split by row ratio, in file order.

  File rows (user, item, t), 11 rows:
    a p 0 | b q 1 | c p 2 | x q 7 | y r 7 | x p 7 | a r 8 | y p 9 | z q 10 |
    w p 11 | w q 12
  Time order = file order here except that the three t=7 rows keep their file
  order x, y, x: sorted rows 3 (x q), 4 (y r), 5 (x p).
  tau_0 = 0.35 -> snapshot rows 0..3: users a0 b1 c2 x3, U0 = 4.
  Window rows 4..10:
    4 y (new; rows 4, 7)   -> train      5 x (existing) -> val
    6 a (existing)         -> val        7 y (last)     -> val
    8 z (new; single)      -> train      9 w (new; 9, 10) -> train
    10 w (last)            -> val
  train = 0,1,2,3,4,8,9; val = 5,6,7,10; U1 = 7; I1 = 3.
  """
  users = ["a", "b", "c", "x", "y", "x", "a", "y", "z", "w", "w"]
  items = ["p", "q", "p", "q", "r", "p", "r", "p", "q", "p", "q"]
  times = [0, 1, 2, 7, 7, 7, 8, 9, 10, 11, 12]
  # Shuffle the file so sorting matters, keeping the relative order of ties.
  perm = [6, 0, 3, 10, 1, 4, 8, 2, 5, 9, 7]
  # rows 3, 4, 5 (the tie) appear in file positions 2, 5, 8: order kept.
  g = _graph([users[p] for p in perm], [items[p] for p in perm],
             timestamps=[times[p] for p in perm],
             ratings=[float(p) for p in perm])
  np.testing.assert_array_equal(g.rating, np.arange(11))  # sorted back
  (s,) = make_splits(g, (0.35, 1.0))
  assert g.timestamp[3] == g.timestamp[4] == g.timestamp[5]
  assert (s.num_existing_users, s.num_users, s.num_items) == (4, 7, 3)
  np.testing.assert_array_equal(s.train_index, [0, 1, 2, 3, 4, 8, 9])
  np.testing.assert_array_equal(s.val_index, [5, 6, 7, 10])


def test_new_user_two_window_interactions_same_timestamp():
  """A new user's 'last' window interaction is the later row even when timestamps tie."""
  users = ["a", "a", "a", "n", "n"]
  items = ["p", "q", "r", "p", "q"]
  g = _graph(users, items, timestamps=[0, 1, 2, 5, 5], ratings=[1, 2, 3, 4, 5])
  # linspace(0,1,5) = 0, .25, .5, .75, 1: snapshot at 0.6 = rows 0..2.
  (s,) = make_splits(g, (0.6, 1.0))
  np.testing.assert_array_equal(s.train_index, [0, 1, 2, 3])
  np.testing.assert_array_equal(s.val_index, [4])
  np.testing.assert_array_equal(s.val_rating, [5.0])


def test_split_attributes_restricted_to_version_items():
  """Version k's attributes cover exactly items < I1, identical to the graph's for them."""
  # min_attribute_count=1 keeps every value, so items carry 0..3 values.
  attrs = {"k": {"p": ["v", "w"], "q": ["v"], "r": [], "s": ["v", "w", "x"],
                 "t": ["w"]}}
  g = build_graph("t", HAND_USERS, HAND_ITEMS, [3.0] * 11, list(range(11)),
                  attrs, min_attribute_count=1)
  full = g.attributes["k"]
  assert len(full.values) == 7
  s0, s1 = make_splits(g, (0.35, 0.75, 1.0))
  assert (s0.num_items, s1.num_items) == (4, 5)
  for split in (s0, s1):
    kind = split.attributes["k"]
    i1 = split.num_items
    assert len(kind.offsets) == i1 + 1
    assert len(kind.values) == full.offsets[i1]
    assert kind.vocab == full.vocab
    for i in range(i1):
      np.testing.assert_array_equal(kind.of_item(i), full.of_item(i))
  # items p, q, r, s of version 0 carry 2 + 1 + 0 + 3 values.
  assert len(s0.attributes["k"].values) == 6
  assert {full.vocab[v] for v in s0.attributes["k"].of_item(3)} == {"v", "w", "x"}


def test_rows_data_match_graph():
  """train_/val_ user, item and rating arrays are the graph's rows at the indices."""
  rng = np.random.default_rng(0)
  n = 200
  g = _graph(rng.integers(0, 40, n), rng.integers(0, 30, n),
             timestamps=rng.integers(0, 50, n),
             ratings=rng.integers(1, 6, n).astype(float))
  for s in make_splits(g):
    for part in ("train", "val"):
      index = getattr(s, f"{part}_index")
      np.testing.assert_array_equal(getattr(s, f"{part}_user"), g.user[index])
      np.testing.assert_array_equal(getattr(s, f"{part}_item"), g.item[index])
      np.testing.assert_array_equal(getattr(s, f"{part}_rating"),
                                    g.rating[index])


# ---------------------------------------------------------------------------
# Version times.


def test_paper_times():
  """The default version times are method §3's, giving five versions."""
  assert tuple(PAPER_TIMES) == (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
  g = _graph([f"u{k % 7}" for k in range(50)], [f"i{k % 9}" for k in range(50)])
  splits = make_splits(g)
  assert [s.version for s in splits] == [0, 1, 2, 3, 4]
  assert [(s.time_train, s.time_val) for s in splits] == list(
      zip(PAPER_TIMES, PAPER_TIMES[1:]))


@pytest.mark.parametrize("times", [
    (), (0.5,), (0.5, 0.5), (0.6, 0.5), (0.5, 0.7, 0.6), (0.2, 0.4, 0.4),
    (-0.1, 0.5), (0.5, 1.1), (0.5, float("nan")),
])
def test_check_times_rejects(times):
  """Too short, non-increasing, or outside [0, 1] time lists raise DataError."""
  with pytest.raises(DataError):
    check_times(times)
  g = _graph(["a", "b", "c"], ["p", "q", "r"])
  with pytest.raises(DataError):
    make_splits(g, times)


@pytest.mark.parametrize("times", [(0.0, 1.0), (0.5, 0.6), [0.1, 0.2, 0.9]])
def test_check_times_accepts(times):
  """Valid time lists come back as a tuple of floats."""
  out = check_times(times)
  assert out == tuple(float(t) for t in times)


# ---------------------------------------------------------------------------
# Properties on random graphs.


def _brute_split(users, t0, t1):
  """The split rule of method §3 as a plain Python loop over rows."""
  n = len(users)
  ratio = np.linspace(0, 1, n)
  snap0 = [e for e in range(n) if ratio[e] <= t0]
  snap1 = [e for e in range(n) if ratio[e] <= t1]
  window = [e for e in snap1 if ratio[e] > t0]
  u0 = max(users[e] for e in snap0) + 1
  count = collections.Counter(users[e] for e in window)
  last = {}
  for e in window:
    last[users[e]] = e
  train, val = list(snap0), []
  for e in window:
    u = users[e]
    if u < u0:
      val.append(e)
    elif count[u] == 1:
      train.append(e)
    elif e == last[u]:
      val.append(e)
    else:
      train.append(e)
  return sorted(train), val, snap0, snap1, window, u0


random_graph = st.lists(
    st.tuples(st.integers(0, 15), st.integers(0, 10), st.integers(0, 8)),
    min_size=2, max_size=80)
random_times = st.one_of(
    st.just(PAPER_TIMES),
    st.lists(st.floats(0, 1), min_size=2, max_size=5, unique=True).map(
        sorted))


@settings(max_examples=80, deadline=None)
@given(random_graph, random_times)
def test_split_properties(rows, times):
  """Every split invariant of method §3 on random graphs with timestamp ties."""
  g = _graph([r[0] for r in rows], [r[1] for r in rows],
             timestamps=[r[2] for r in rows])
  user = g.user.tolist()
  item = g.item.tolist()
  splits = make_splits(g, times)
  assert len(splits) == len(times) - 1
  for k, s in enumerate(splits):
    t0, t1 = times[k], times[k + 1]
    train, val, snap0, snap1, window, u0 = _brute_split(user, t0, t1)
    ti, vi = s.train_index.tolist(), s.val_index.tolist()
    # identical to the brute-force rule
    assert ti == train and vi == val
    # disjoint, covering the snapshot at tau_{k+1}, containing tau_k's
    assert not set(ti) & set(vi)
    assert sorted(ti + vi) == snap1
    assert set(snap0) <= set(ti)
    # time order
    assert ti == sorted(ti) and vi == sorted(vi)
    # node counts
    u1 = max(user[e] for e in snap1) + 1
    i1 = max(item[e] for e in snap1) + 1
    assert (s.num_existing_users, s.num_users, s.num_items) == (u0, u1, i1)
    # prefix: the users/items present at tau_k and tau_{k+1} are 0..U-1
    assert u0 == len({user[e] for e in snap0})
    assert u1 == len({user[e] for e in snap1})
    assert i1 == len({item[e] for e in snap1})
    assert all(user[e] < u1 and item[e] < i1 for e in ti + vi)
    assert s.train_user.max(initial=0) < u1 and s.train_item.max() < i1
    # existing users: all window interactions in val
    for e in window:
      if user[e] < u0:
        assert e in vi
    # new users with >= 2 window interactions: exactly one val, their last
    by_user = collections.defaultdict(list)
    for e in window:
      by_user[user[e]].append(e)
    for u, es in by_user.items():
      if u < u0:
        continue
      in_val = [e for e in es if e in vi]
      if len(es) == 1:
        assert in_val == []
      else:
        assert in_val == [es[-1]]
