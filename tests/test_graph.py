"""Tests of the canonical dynamic graph (method §2), written against it."""

import collections

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from bcjax.data.graph import DataError, build_graph


def _graph(users, items, ratings=None, timestamps=None, attributes=None,
           **kwargs):
  n = len(users)
  ratings = [3.0] * n if ratings is None else ratings
  timestamps = list(range(n)) if timestamps is None else timestamps
  return build_graph("test", users, items, ratings, timestamps,
                     attributes or {}, **kwargs)


def _brute_canonical(users, items, ratings, timestamps):
  """Stable time sort (Python's sort is stable) + first-appearance indexing."""
  order = sorted(range(len(users)), key=lambda r: timestamps[r])
  user_index, item_index = {}, {}
  out_user, out_item = [], []
  for r in order:
    out_user.append(user_index.setdefault(users[r], len(user_index)))
    out_item.append(item_index.setdefault(items[r], len(item_index)))
  return order, out_user, out_item, list(user_index), list(item_index)


# ---------------------------------------------------------------------------
# Canonical order and indexing.


def test_stable_sort_keeps_file_order_on_ties():
  """Rows with equal timestamps keep their file order after the time sort."""
  # file rows:      0    1    2    3    4    5
  timestamps = [5, 3, 5, 3, 1, 3]
  ratings = [1.0, 2.0, 3.0, 4.0, 5.0, 2.5]  # identifies the file row
  # sorted: t=1: row 4; t=3: rows 1, 3, 5 (file order); t=5: rows 0, 2.
  g = _graph(["a", "b", "c", "d", "e", "f"], ["x"] * 6, ratings, timestamps)
  np.testing.assert_array_equal(g.rating, [5.0, 2.0, 4.0, 2.5, 1.0, 3.0])
  np.testing.assert_array_equal(g.timestamp, [1, 3, 3, 3, 5, 5])
  np.testing.assert_array_equal(g.user_ids, ["e", "b", "d", "f", "a", "c"])


def test_nodes_indexed_by_first_appearance_in_time_order():
  """Users and items get indices 0.. in order of first appearance after sorting."""
  # file rows (user, item, t): the time order is rows 2, 0, 3, 1, 4.
  users = ["u9", "u1", "u5", "u9", "u1"]
  items = ["i3", "i3", "i7", "i1", "i7"]
  timestamps = [20, 40, 10, 30, 50]
  g = _graph(users, items, timestamps=timestamps)
  # time order: (u5,i7) (u9,i3) (u9,i1) (u1,i3) (u1,i7)
  np.testing.assert_array_equal(g.user, [0, 1, 1, 2, 2])
  np.testing.assert_array_equal(g.item, [0, 1, 2, 1, 0])
  np.testing.assert_array_equal(g.user_ids, ["u5", "u9", "u1"])
  np.testing.assert_array_equal(g.item_ids, ["i7", "i3", "i1"])
  np.testing.assert_array_equal(g.timestamp, [10, 20, 30, 40, 50])
  assert (g.num_users, g.num_items, g.num_interactions) == (3, 3, 5)


def test_integer_ids_indexed_by_first_appearance_not_by_value():
  """Integer raw ids are re-indexed by first appearance, not by numeric order."""
  g = _graph([30, 2, 30, 11], [7, 7, 0, 5])
  np.testing.assert_array_equal(g.user, [0, 1, 0, 2])
  np.testing.assert_array_equal(g.item, [0, 0, 1, 2])
  np.testing.assert_array_equal(g.user_ids.astype(int), [30, 2, 11])
  np.testing.assert_array_equal(g.item_ids.astype(int), [7, 0, 5])


raw_rows = st.lists(
    st.tuples(st.integers(0, 12), st.integers(0, 8), st.integers(1, 5),
              st.integers(0, 6)),
    min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(raw_rows)
def test_canonical_form_matches_brute_force(rows):
  """Random rows with many timestamp ties: the whole canonical form matches a Python loop."""
  users = [f"u{r[0]}" for r in rows]
  items = [f"i{r[1]}" for r in rows]
  ratings = [float(r[2]) for r in rows]
  timestamps = [r[3] for r in rows]
  g = build_graph("h", users, items, ratings, timestamps, {})
  order, bu, bi, uids, iids = _brute_canonical(users, items, ratings,
                                               timestamps)
  np.testing.assert_array_equal(g.user, bu)
  np.testing.assert_array_equal(g.item, bi)
  np.testing.assert_array_equal(g.rating, [ratings[r] for r in order])
  np.testing.assert_array_equal(g.timestamp, [timestamps[r] for r in order])
  np.testing.assert_array_equal(g.user_ids, uids)
  np.testing.assert_array_equal(g.item_ids, iids)
  # Prefix property: after every row, the users seen are exactly 0..max.
  for e in range(len(rows)):
    assert int(g.user[:e + 1].max()) + 1 == len(set(g.user[:e + 1].tolist()))
    assert int(g.item[:e + 1].max()) + 1 == len(set(g.item[:e + 1].tolist()))
  assert np.all(np.diff(g.timestamp) >= 0)


# ---------------------------------------------------------------------------
# Time axis and snapshots.


@pytest.mark.parametrize("num_rows", [1, 2, 3, 7, 11, 100, 1001])
def test_edge_ratio_is_linspace(num_rows):
  """The time of row e is numpy.linspace(0, 1, E)[e], bit for bit."""
  g = _graph([f"u{k % 5}" for k in range(num_rows)], ["i"] * num_rows)
  ratio = np.asarray(g.edge_ratio)
  assert ratio.shape == (num_rows,)
  np.testing.assert_array_equal(ratio, np.linspace(0, 1, num_rows))
  assert ratio[0] == 0.0 and ratio[-1] == (1.0 if num_rows > 1 else 0.0)


def test_snapshot_boundary_uses_linspace_values():
  """With E=11, linspace(0,1,11)[6] = 0.6000000000000001 > 0.6, so the snapshot at 0.6 has 6 rows.

  (The exact fraction 6/10 would put 7 rows in it; method §2 names
  numpy.linspace as the time axis, as the paper's code does.)
  """
  assert np.linspace(0, 1, 11)[6] > 0.6  # the premise of this test
  g = _graph([f"u{k}" for k in range(11)], [f"i{k}" for k in range(11)])
  assert g.num_edges_at(0.6) == 6
  assert g.num_users_at(0.6) == 6 and g.num_items_at(0.6) == 6
  assert g.num_edges_at(0.5) == 6  # linspace[5] == 0.5 exactly: included
  assert g.num_edges_at(0.0) == 1 and g.num_edges_at(1.0) == 11


@settings(max_examples=50, deadline=None)
@given(raw_rows, st.lists(st.floats(0, 1), min_size=1, max_size=6))
def test_counts_at_tau_match_brute_force(rows, taus):
  """num_edges_at, U(tau), I(tau) equal a loop over rows with ratio <= tau."""
  g = build_graph("h", [r[0] for r in rows], [r[1] for r in rows],
                  [float(r[2]) for r in rows], [r[3] for r in rows], {})
  ratio = np.linspace(0, 1, len(rows))
  for tau in list(taus) + [0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]:
    inside = [e for e in range(len(rows)) if ratio[e] <= tau]
    assert g.num_edges_at(tau) == len(inside)
    assert g.num_users_at(tau) == 1 + max(int(g.user[e]) for e in inside)
    assert g.num_items_at(tau) == 1 + max(int(g.item[e]) for e in inside)
    # U(tau) also equals the number of distinct users in the snapshot.
    assert g.num_users_at(tau) == len({int(g.user[e]) for e in inside})


# ---------------------------------------------------------------------------
# Attributes.


def _attr_graph(num_items, attributes, extra_rows=()):
  """One interaction per item i0..i{n-1}, in index order."""
  items = [f"i{k}" for k in range(num_items)] + [r for r in extra_rows]
  users = [f"u{k % 3}" for k in range(len(items))]
  return _graph(users, items, attributes=attributes)


def _decoded(kind, graph):
  """Raw item id -> set of kept value strings, read back through the CSR."""
  return {graph.item_ids[i]: {kind.vocab[v] for v in kind.of_item(i)}
          for i in range(graph.num_items)}


def test_attribute_frequency_rule_and_vocab_order():
  """Values on >= 5 distinct graph items are kept, most frequent first; 4 is dropped."""
  n = 12
  genre = collections.defaultdict(list)
  for k in range(7):
    genre[f"i{k}"].append("seven")       # 7 items: kept, first
  for k in range(5):
    genre[f"i{k + 3}"].append("five")    # exactly 5 items: kept
  for k in range(4):
    genre[f"i{k + 6}"].append("four")    # 4 items: dropped
  for k in range(4):
    genre[f"i{k}"] += ["twice", "twice"]  # 8 mentions on 4 items: dropped
  for k in range(6):
    genre[f"i{k + 1}"] += ["six", "six"]  # 12 mentions on 6 items: 6, kept
  for k in range(3):
    genre[f"i{k}"].append("offgraph")
  for k in range(5):
    genre[f"x{k}"].append("offgraph")    # items not in the graph don't count
  g = _attr_graph(n, {"genre": dict(genre)})
  kind = g.attributes["genre"]
  assert kind.vocab == ("seven", "six", "five")
  assert kind.num_values == 3
  decoded = _decoded(kind, g)
  for k in range(n):
    raw = f"i{k}"
    expected = {v for v in genre.get(raw, []) if v in kind.vocab}
    assert decoded[raw] == expected, raw


def test_attribute_tie_in_frequency_keeps_both():
  """Two values with the same count are both kept, after a more frequent one."""
  genre = collections.defaultdict(list)
  for k in range(6):
    genre[f"i{k}"] += ["a", "b"]
  for k in range(9):
    genre[f"i{k}"].append("c")
  g = _attr_graph(9, {"genre": dict(genre)})
  vocab = g.attributes["genre"].vocab
  assert vocab[0] == "c" and set(vocab[1:]) == {"a", "b"} and len(vocab) == 3


def test_attribute_rule_is_per_kind():
  """A value string counted under one kind does not count under another."""
  cat = {f"i{k}": ["shared"] for k in range(5)}
  brand = {f"i{k}": ["shared"] for k in range(5, 9)}   # only 4 under `brand`
  g = _attr_graph(10, {"category": cat, "brand": brand})
  assert g.attributes["category"].vocab == ("shared",)
  assert g.attributes["brand"].vocab == ()
  assert len(g.attributes["brand"].values) == 0
  np.testing.assert_array_equal(g.attributes["brand"].offsets, np.zeros(11))
  assert set(g.attributes) == {"category", "brand"}


def test_attribute_csr_layout_by_hand():
  """CSR offsets/values of a small hand-made case, items in first-appearance order."""
  # Interactions make item order: i2 -> 0, i0 -> 1, i1 -> 2, then i3..i7.
  items = ["i2", "i0", "i1", "i3", "i4", "i5", "i6", "i7"]
  attrs = {
      "i0": ["p", "q"],
      "i1": [],
      "i2": ["q"],
      "i3": ["p", "q"],
      "i4": ["p", "q", "r"],
      "i5": ["p", "q"],
      "i6": ["p"],
      # i7 missing from the mapping: no values.
  }
  # counts: p on 5 items (i0,i3,i4,i5,i6), q on 5 (i0,i2,i3,i4,i5), r on 1.
  g = _graph([f"u{k}" for k in range(8)], items, attributes={"k": attrs})
  kind = g.attributes["k"]
  assert set(kind.vocab) == {"p", "q"}
  per_item = [{"q"}, {"p", "q"}, set(), {"p", "q"}, {"p", "q"}, {"p", "q"},
              {"p"}, set()]
  lengths = [len(s) for s in per_item]
  np.testing.assert_array_equal(kind.offsets, np.concatenate([[0],
                                                             np.cumsum(lengths)]))
  assert len(kind.values) == kind.offsets[-1]
  assert np.issubdtype(kind.values.dtype, np.integer)
  for i, expected in enumerate(per_item):
    got = kind.values[kind.offsets[i]:kind.offsets[i + 1]]
    assert {kind.vocab[v] for v in got} == expected
    np.testing.assert_array_equal(kind.of_item(i), got)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 25),
       st.dictionaries(st.integers(0, 30),
                       st.lists(st.sampled_from("abcdefg"), max_size=6),
                       max_size=30))
def test_attributes_match_brute_force(num_items, raw_attrs):
  """Random attribute lists (with repeats and unknown items): kept set, vocab order and CSR."""
  attrs = {f"i{k}": v for k, v in raw_attrs.items()}
  g = _attr_graph(num_items, {"k": attrs})
  kind = g.attributes["k"]
  counts = collections.Counter()
  for k in range(num_items):
    counts.update(set(attrs.get(f"i{k}", [])))
  kept = {v for v, c in counts.items() if c >= 5}
  assert set(kind.vocab) == kept and len(kind.vocab) == len(kept)
  freq = [counts[v] for v in kind.vocab]
  assert freq == sorted(freq, reverse=True)
  assert len(kind.offsets) == g.num_items + 1 and kind.offsets[0] == 0
  assert np.all(np.diff(kind.offsets) >= 0)
  assert kind.offsets[-1] == len(kind.values)
  if len(kind.values):
    assert kind.values.min() >= 0 and kind.values.max() < len(kind.vocab)
  decoded = _decoded(kind, g)
  for k in range(num_items):
    assert decoded[f"i{k}"] == set(attrs.get(f"i{k}", [])) & kept


# ---------------------------------------------------------------------------
# Immutability.


def test_arrays_are_read_only():
  """Every array of the graph, attributes included, refuses writes."""
  attrs = {"k": {f"i{k}": ["v"] for k in range(6)}}
  g = _attr_graph(6, attrs)
  kind = g.attributes["k"]
  arrays = {"user": g.user, "item": g.item, "rating": g.rating,
            "timestamp": g.timestamp, "user_ids": g.user_ids,
            "item_ids": g.item_ids, "offsets": kind.offsets,
            "values": kind.values}
  for name, array in arrays.items():
    assert not array.flags.writeable, name
    with pytest.raises(ValueError):
      array[0] = array[0]
  with pytest.raises(TypeError):
    g.attributes["other"] = kind  # the mapping itself is read-only


def test_input_arrays_not_aliased():
  """Mutating the caller's input arrays afterwards does not change the graph."""
  ratings = np.array([1.0, 2.0, 3.0])
  timestamps = np.array([0, 1, 2])
  g = build_graph("t", np.array(["a", "b", "c"]), np.array(["x", "y", "z"]),
                  ratings, timestamps, {})
  ratings[:] = 9.0
  timestamps[:] = 99
  np.testing.assert_array_equal(g.rating, [1.0, 2.0, 3.0])
  np.testing.assert_array_equal(g.timestamp, [0, 1, 2])


# ---------------------------------------------------------------------------
# Validation.


@pytest.mark.parametrize("case, kwargs, pattern", [
    ("empty", dict(users=[], items=[], ratings=[], timestamps=[]),
     r"(?i)no interactions|empty"),
    ("nan rating", dict(ratings=[1.0, float("nan"), 3.0]),
     r"(?i)nan|non-finite"),
    ("inf rating", dict(ratings=[1.0, float("inf"), 3.0]),
     r"(?i)inf|non-finite"),
    ("nan timestamp", dict(timestamps=[0.0, float("nan"), 2.0]),
     r"(?i)nan|non-finite"),
    ("rating above range", dict(ratings=[1.0, 6.0, 3.0], rating_range=(1, 5)),
     r"(?i)outside"),
    ("rating below range", dict(ratings=[0.5, 2.0, 3.0], rating_range=(1, 5)),
     r"(?i)outside"),
    ("negative user id", dict(users=[1, -3, 2]), r"(?i)negative"),
    ("negative item id", dict(items=[0, 4, -1]), r"(?i)negative"),
    ("short ratings", dict(ratings=[1.0, 2.0]), r"(?i)length"),
    ("long items", dict(items=[1, 2, 3, 4]), r"(?i)length"),
    ("short timestamps", dict(timestamps=[1]), r"(?i)length"),
    ("string ratings", dict(ratings=["good", "bad", "ok"]), r"(?i)numeric"),
    ("object ratings", dict(ratings=[1.0, None, 3.0]),
     r"(?i)numeric|nan|non-finite"),
])
def test_validation_errors(case, kwargs, pattern):
  """Each kind of bad input raises DataError with a message naming the problem."""
  args = dict(users=[1, 2, 3], items=[0, 1, 2], ratings=[1.0, 2.0, 3.0],
              timestamps=[0, 1, 2])
  rating_range = kwargs.pop("rating_range", None)
  args.update(kwargs)
  with pytest.raises(DataError, match=pattern):
    build_graph("bad", args["users"], args["items"], args["ratings"],
                args["timestamps"], {}, rating_range=rating_range)


def test_bare_string_attribute_value_rejected():
  """An item's values given as one string (not a list) raise instead of splitting into characters."""
  attrs = {"brand": {f"i{k}": "Sony" for k in range(6)}}
  with pytest.raises(DataError, match=r"(?i)string|list"):
    _attr_graph(6, attrs)
  g = _attr_graph(6, {"brand": {f"i{k}": ["Sony"] for k in range(6)}})
  assert g.attributes["brand"].vocab == ("Sony",)


def test_rating_range_is_inclusive():
  """Ratings equal to either bound of rating_range are accepted."""
  g = build_graph("ok", [1, 2], [1, 2], [1.0, 5.0], [0, 1], {},
                  rating_range=(1, 5))
  np.testing.assert_array_equal(g.rating, [1.0, 5.0])


def test_data_error_is_value_error():
  """DataError is a ValueError, so generic handlers still catch it."""
  assert issubclass(DataError, ValueError)
