"""The canonical dynamic bipartite graph (method §2).

Every loader ends in `build_graph`, which puts raw interactions into the one
form the rest of bcjax relies on: interactions in time order (stable sort),
users and items re-indexed by first appearance (so the nodes present at any
time form a prefix), the edge ratio as the time axis, and item attributes per
kind in CSR form with rare values dropped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
from typing import Mapping, Sequence

import numpy as np

MIN_ATTRIBUTE_COUNT = 5


class DataError(ValueError):
  """Input data that cannot form a valid dynamic graph."""


@dataclasses.dataclass(frozen=True)
class AttributeKind:
  """One kind of item attribute (e.g. `genre`) in CSR form.

  Attributes:
    name: the kind's name.
    offsets: `[num_items + 1]` int64; item i's values are
      `values[offsets[i]:offsets[i + 1]]`.
    values: `[nnz]` int32 indices into `vocab`.
    vocab: value strings, most frequent first.
  """
  name: str
  offsets: np.ndarray
  values: np.ndarray
  vocab: tuple[str, ...]

  @property
  def num_values(self) -> int:
    """The vocabulary size (kept values)."""
    return len(self.vocab)

  def of_item(self, item: int) -> np.ndarray:
    """Value indices of one item.

    Args:
      item: the item index.

    Returns:
      `[n]` int32 indices into `vocab` (n may be 0).
    """
    return self.values[self.offsets[item]:self.offsets[item + 1]]

  def prefix(self, num_items: int) -> "AttributeKind":
    """The attributes of items `0..num_items-1` only (a version's items).

    Args:
      num_items: how many leading items to keep.

    Returns:
      An `AttributeKind` with the same vocabulary.
    """
    offsets = self.offsets[:num_items + 1]
    return AttributeKind(self.name, offsets, self.values[:offsets[-1]],
                         self.vocab)


@dataclasses.dataclass(frozen=True)
class DynamicGraph:
  """Interactions in canonical form; every array is read-only.

  Attributes:
    name: dataset name.
    user: `[E]` int32 user index, by first appearance.
    item: `[E]` int32 item index, by first appearance.
    rating: `[E]` float32.
    timestamp: `[E]` int64, non-decreasing.
    user_ids: `[num_users]` raw user ids (str), indexed by user index.
    item_ids: `[num_items]` raw item ids (str).
    attributes: kind name -> `AttributeKind` over all items.
  """
  name: str
  user: np.ndarray
  item: np.ndarray
  rating: np.ndarray
  timestamp: np.ndarray
  user_ids: np.ndarray
  item_ids: np.ndarray
  attributes: Mapping[str, AttributeKind]

  @property
  def num_interactions(self) -> int:
    """E, the number of interactions."""
    return len(self.user)

  @property
  def num_users(self) -> int:
    """The number of users over the whole graph."""
    return len(self.user_ids)

  @property
  def num_items(self) -> int:
    """The number of items over the whole graph."""
    return len(self.item_ids)

  def fingerprint(self) -> str:
    """The sha256 of the canonical interactions, ids and attributes (not
    the name): the graph's identity, which a run directory records so that
    it is never resumed on another graph of the same name."""
    digest = hashlib.sha256()
    arrays = [self.user, self.item, self.rating, self.timestamp,
              self.user_ids, self.item_ids]
    for name, kind in self.attributes.items():
      arrays += [np.asarray([name, *kind.vocab], str), kind.offsets,
                 kind.values]
    for array in arrays:
      array = np.ascontiguousarray(array)
      digest.update(f"{array.dtype.str}{array.shape};".encode())
      digest.update(array.tobytes())
    return digest.hexdigest()

  @property
  def edge_ratio(self) -> np.ndarray:
    """`[E]` the time of each interaction: `numpy.linspace(0, 1, E)`."""
    return np.linspace(0.0, 1.0, self.num_interactions)

  def num_edges_at(self, tau: float) -> int:
    """Number of interactions in the snapshot at time `tau` (ratio <= tau).

    Args:
      tau: a time in [0, 1] (the edge ratio).

    Returns:
      The snapshot's interactions are the first this many rows.
    """
    return int(np.searchsorted(self.edge_ratio, tau, side="right"))

  def num_users_at(self, tau: float) -> int:
    """U(tau): 1 + the largest user index in the snapshot at `tau`.

    Args:
      tau: a time in [0, 1] (the edge ratio).

    Returns:
      The snapshot's user count (0 for an empty snapshot).
    """
    n = self.num_edges_at(tau)
    return int(self.user[:n].max()) + 1 if n else 0

  def num_items_at(self, tau: float) -> int:
    """I(tau): 1 + the largest item index in the snapshot at `tau`.

    Args:
      tau: a time in [0, 1] (the edge ratio).

    Returns:
      The snapshot's item count (0 for an empty snapshot).
    """
    n = self.num_edges_at(tau)
    return int(self.item[:n].max()) + 1 if n else 0


def _readonly(array: np.ndarray) -> np.ndarray:
  array = np.ascontiguousarray(array)
  array.setflags(write=False)
  return array


def _check_interactions(name, user_ids, item_ids, ratings, timestamps,
                        rating_range):
  arrays = {"user_ids": user_ids, "item_ids": item_ids, "ratings": ratings,
            "timestamps": timestamps}
  lengths = {key: len(value) for key, value in arrays.items()}
  if len(set(lengths.values())) != 1:
    raise DataError(f"{name}: interaction arrays differ in length: {lengths}")
  if lengths["ratings"] == 0:
    raise DataError(f"{name}: no interactions")
  for key in ("user_ids", "item_ids"):
    ids = arrays[key]
    if np.issubdtype(ids.dtype, np.integer) and (ids < 0).any():
      row = int(np.argmax(ids < 0))
      raise DataError(f"{name}: negative id {ids[row]} in {key} at row {row}")
  for key in ("ratings", "timestamps"):
    values = arrays[key]
    if not np.issubdtype(values.dtype, np.number):
      raise DataError(f"{name}: {key} are not numeric (dtype {values.dtype})")
    bad = ~np.isfinite(values)
    if bad.any():
      row = int(np.argmax(bad))
      raise DataError(f"{name}: {int(bad.sum())} non-finite {key}, first "
                      f"{values[row]} at row {row}")
  # Timestamps are stored as int64 seconds; larger ones would wrap around.
  bad = np.abs(timestamps.astype(np.float64)) >= 2.0**62
  if bad.any():
    row = int(np.argmax(bad))
    raise DataError(f"{name}: timestamp {timestamps[row]} at row {row} is out "
                    "of range (|t| < 2**62 seconds)")
  if rating_range is not None:
    low, high = rating_range
    bad = (ratings < low) | (ratings > high)
    if bad.any():
      row = int(np.argmax(bad))
      raise DataError(f"{name}: rating {ratings[row]} at row {row} is outside "
                      f"[{low}, {high}]")


def _index_by_first_appearance(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Returns (index per row, raw id per index) with ids ordered by first row."""
  unique, first_row, inverse = np.unique(raw, return_index=True,
                                         return_inverse=True)
  order = np.argsort(first_row, kind="stable")
  rank = np.empty(len(unique), dtype=np.int64)
  rank[order] = np.arange(len(unique))
  return rank[inverse].astype(np.int32), unique[order]


def _attribute_kind(kind: str, item_ids: np.ndarray,
                    values_of: Mapping[str, Sequence[str]],
                    min_count: int) -> AttributeKind:
  """Builds one kind's CSR, keeping values that occur on >= min_count items."""
  per_item = []
  for raw in item_ids:
    values = values_of.get(raw, ())
    if isinstance(values, (str, bytes)):
      # A bare string would be iterated character by character.
      raise DataError(f"attribute kind {kind!r}: item {raw!r} has the string "
                      f"{values!r}; give a list of values, e.g. [{values!r}]")
    # An item counts once per value; keep first-occurrence order.
    per_item.append(list(dict.fromkeys(values)))
  counts: dict[str, int] = {}
  for values in per_item:
    for value in values:
      counts[value] = counts.get(value, 0) + 1
  kept = sorted((v for v, c in counts.items() if c >= min_count),
                key=lambda v: (-counts[v], v))
  index = {value: i for i, value in enumerate(kept)}
  lengths = np.zeros(len(item_ids) + 1, dtype=np.int64)
  flat = []
  for i, values in enumerate(per_item):
    mapped = [index[v] for v in values if v in index]
    lengths[i + 1] = len(mapped)
    flat.extend(mapped)
  return AttributeKind(kind, _readonly(np.cumsum(lengths)),
                       _readonly(np.asarray(flat, dtype=np.int32)),
                       tuple(kept))


def build_graph(name: str,
                user_ids: Sequence,
                item_ids: Sequence,
                ratings: Sequence[float],
                timestamps: Sequence,
                item_attributes: Mapping[str, Mapping[str, Sequence[str]]],
                rating_range: tuple[float, float] | None = None,
                min_attribute_count: int = MIN_ATTRIBUTE_COUNT) -> DynamicGraph:
  """Puts raw interactions into canonical form (method §2).

  Args:
    name: dataset name, used in error messages.
    user_ids: `[E]` raw user ids (str or non-negative int).
    item_ids: `[E]` raw item ids (str or non-negative int).
    ratings: `[E]` finite ratings.
    timestamps: `[E]` finite numeric timestamps, any order.
    item_attributes: kind -> (raw item id as str -> attribute value strings).
      Items missing from a kind's mapping have no value of that kind.
    rating_range: optional inclusive (low, high) bounds for the ratings.
    min_attribute_count: a value is kept if at least this many of the
      graph's items carry it.

  Returns:
    The canonical `DynamicGraph`.

  Raises:
    DataError: empty input, arrays of different lengths, negative ids,
      non-numeric or non-finite ratings or timestamps, out-of-range ratings
      or timestamps, an item's attribute values given as one bare string.
  """
  user_ids, item_ids = np.asarray(user_ids), np.asarray(item_ids)
  ratings, timestamps = np.asarray(ratings), np.asarray(timestamps)
  _check_interactions(name, user_ids, item_ids, ratings, timestamps,
                      rating_range)
  order = np.argsort(timestamps, kind="stable")
  user, raw_users = _index_by_first_appearance(user_ids[order])
  item, raw_items = _index_by_first_appearance(item_ids[order])
  raw_items = raw_items.astype(str)
  attributes = {
      kind: _attribute_kind(kind, raw_items, values_of, min_attribute_count)
      for kind, values_of in item_attributes.items()
  }
  return DynamicGraph(
      name=name,
      user=_readonly(user),
      item=_readonly(item),
      rating=_readonly(ratings[order].astype(np.float32)),
      timestamp=_readonly(timestamps[order].astype(np.int64)),
      user_ids=_readonly(raw_users.astype(str)),
      item_ids=_readonly(raw_items),
      attributes=types.MappingProxyType(attributes),
  )
