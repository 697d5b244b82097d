"""A version's nodes: kinds laid out one after another (users, then items).

A model embeds a version's nodes as one `[num_nodes, d]` array whose rows
come in groups of one kind each, in a fixed order; the BPR task puts users
first, then items (`bcjax.epoch_batches`). Two pieces of bookkeeping follow
from that layout, written once here: splitting the rows back into their
kinds (`split_nodes`), and mapping each node of a version to its row in the
previous version (`previous_ids`, what `Lineage.fit` needs of a model with a
learned row per node).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def split_nodes(z: Any, sizes: Sequence[int]) -> tuple[Any, ...]:
  """The rows of `z` by kind: `users, items = split_nodes(z, (U, I))`.

  Args:
    z: `[num_nodes, ...]`, a version's embeddings (or any per-node array).
    sizes: each kind's node count, in the layout's order; they add up to
      `num_nodes`.

  Returns:
    One slice of `z` per kind.

  Raises:
    ValueError: a size that is not an integer >= 0, or sizes that do not
      add up to `z`'s rows.
  """
  counts = [_count("split_nodes", size) for size in sizes]
  if sum(counts) != len(z):
    raise ValueError(f"split_nodes: sizes {counts} add up to {sum(counts)}, "
                     f"but z has {len(z)} rows")
  ends = np.cumsum(counts)
  return tuple(z[end - n:end] for n, end in zip(counts, ends))


def previous_ids(previous: Sequence[Any], current: Sequence[Any]
                 ) -> np.ndarray:
  """Each node of a version -> its row in the previous version (-1: new).

  Both versions are laid out by kind in the same order (users, then items).
  A kind is given by its node count (node i of that kind is the same node
  in both versions: old nodes keep their indices, new ones come after) or
  by its nodes' raw ids in order (matched by value: nodes may also leave or
  move):

    previous_ids((200, 200), (300, 300))          # (users, items) counts
    previous_ids((old_user_ids, old_item_ids), (user_ids, item_ids))

  Args:
    previous: the previous version's kinds, counts or raw-id arrays.
    current: this version's kinds, the same ones in the same order.

  Returns:
    `[num_nodes]` int64: `Lineage.fit(previous_ids=...)`.

  Raises:
    ValueError: a different number of kinds, a count that is not an
      integer >= 0, a raw id listed twice in a kind, or a kind given as
      numbers in one version and as strings in the other.
  """
  if len(previous) != len(current):
    raise ValueError(f"previous_ids: {len(previous)} kinds of nodes before, "
                     f"{len(current)} now; give the same kinds in both")
  rows, offset = [], 0
  for kind, (old, new) in enumerate(zip(previous, current)):
    old, new = _ids(kind, old), _ids(kind, new)
    if old.size and new.size and (
        np.issubdtype(old.dtype, np.number) != np.issubdtype(new.dtype,
                                                             np.number)):
      raise ValueError(f"previous_ids: kind {kind} is {old.dtype} before and "
                       f"{new.dtype} now; give counts or raw ids of one type "
                       "in both versions")
    at = _positions(old, new)
    rows.append(np.where(at >= 0, offset + at, -1))
    offset += len(old)
  return np.concatenate([np.zeros(0, np.int64), *rows])


def _count(what: str, size: Any) -> int:
  """`size` as a node count (an int >= 0); a ValueError naming `what`."""
  if (isinstance(size, bool) or not isinstance(size, (int, np.integer))
      or size < 0):
    raise ValueError(f"{what}: a node count must be an integer >= 0, got "
                     f"{size!r}")
  return int(size)


def _positions(old: np.ndarray, new: np.ndarray) -> np.ndarray:
  """Each entry of `new`'s index in `old` (distinct values), -1 if absent."""
  if not old.size:
    return np.full(len(new), -1, np.int64)
  order = np.argsort(old, kind="stable")
  at = order[np.minimum(np.searchsorted(old, new, sorter=order),
                        len(old) - 1)]
  return np.where(old[at] == new, at, -1)


def _ids(kind: int, group: Any) -> np.ndarray:
  """A kind's nodes as raw ids: a count n is the ids 0..n-1."""
  if np.ndim(group) == 0:
    return np.arange(_count(f"previous_ids: kind {kind}", group))
  ids = np.asarray(group)
  if ids.ndim != 1:
    raise ValueError(f"previous_ids: kind {kind} must be a count or a 1-D "
                     f"array of raw ids, got shape {list(ids.shape)}")
  unique, counts = np.unique(ids, return_counts=True)
  if (counts > 1).any():
    raise ValueError(f"previous_ids: kind {kind} lists the raw id "
                     f"{unique[counts > 1][0].item()!r} more than once")
  return ids
