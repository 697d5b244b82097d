"""Nearest-neighbour search over a store's version: the retrieval consumer's
read side (method §10).

A consumer team that serves "items for this user" from an index of version
j builds it over the store's items in version j's space (`version_index`,
exact or HNSW, `bcjax.store.faiss_index.build_index`); the index carries
that `Space` and refuses query vectors of any other (`VersionIndex.search`).
Users of the latest version are mapped into version j by the store's chain
(`EmbeddingStore.lookup`, the same product path as every read), and so are
query vectors of a later version when the caller asks
(`EmbeddingStore.search(..., through_chain=True)`, built on this module).
Scores are inner products; items a caller excludes (a user's history) are
never returned.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import faiss
import numpy as np

from bcjax.store import faiss_index
from bcjax.store.layout import StoreError
from bcjax.store.provenance import Space, check_same
from bcjax.util import names


@dataclasses.dataclass(frozen=True)
class VersionIndex:
  """An index over a store's items in version `version`'s space.

  Attributes:
    version: j.
    kind: "exact" or "hnsw".
    index: the faiss index, id = row of `item_ids`.
    item_ids: the raw item ids, in the store's order.
    space: version j's `Space`.
  """
  version: int
  kind: str
  index: faiss.Index
  item_ids: np.ndarray
  space: Space

  def search(self, queries: Any, space: Space, k: int = 10,
             exclude: Sequence[Sequence[str]] | None = None
             ) -> list[list[tuple[str, float]]]:
    """The top-k items of each query vector, which must be in this index's
    space.

    Args:
      queries: `[n, d_j]` (or `[d_j]`) query vectors.
      space: their `Space`.
      k: items per query, 1..number of items.
      exclude: per query, raw item ids never returned.

    Returns:
      Per query, up to k (raw item id, inner product) pairs, best first
      (ties to the earlier stored item); fewer only when the exclusions
      (or an HNSW search) leave fewer.

    Raises:
      StoreError: queries of another space (both named), of the wrong
        shape or not finite, k out of range, an exclusion list per query
        missing or naming an unknown item.
    """
    check_same(space, self.space, f"search of {self.kind} index")
    num_items = len(self.item_ids)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not (
        1 <= k <= num_items):
      raise StoreError(f"k={k}: the index holds {num_items} items")
    queries = np.asarray(queries, dtype=np.float32)
    queries = queries[None] if queries.ndim == 1 else queries
    if queries.ndim != 2 or queries.shape[1] != space.dim:
      raise StoreError(f"query vectors have shape {queries.shape}, expected "
                       f"[n, {space.dim}] for {space}")
    skip = self._excluded(exclude, len(queries))
    needed = min(k + max(map(len, skip), default=0), num_items)
    try:
      scores, found = faiss_index.search(self.index, queries, needed)
    except ValueError as e:
      raise StoreError(f"search: {e}") from None
    return [[(str(self.item_ids[i]), float(s))
             for i, s in zip(rows, values) if i >= 0 and i not in banned][:k]
            for rows, values, banned in zip(found, scores, skip)]

  def _excluded(self, exclude: Any, num_queries: int) -> list[set[int]]:
    """The rows each query excludes."""
    if exclude is None:
      return [set()] * num_queries
    if isinstance(exclude, str) or len(exclude) != num_queries:
      raise StoreError(f"exclude must hold one list of item ids per query "
                       f"({num_queries})")
    rows = {item: row for row, item in enumerate(self.item_ids.tolist())}
    skip = []
    for q, ids in enumerate(exclude):
      if isinstance(ids, str):
        raise StoreError(f"exclude[{q}] is one string; give a list of ids")
      unknown = [i for i in ids if i not in rows]
      if unknown:
        raise StoreError(f"exclude[{q}]: unknown item id {unknown[0]!r}")
      skip.append({rows[i] for i in ids})
    return skip


def version_index(store, version: int | None = None,
                  kind: str = "hnsw") -> VersionIndex:
  """Builds the index of version j (default latest) over every stored item.

  Args:
    store: an `EmbeddingStore` (or its `reader.StoreReader`).
    version: j; None for the latest.
    kind: "exact" or "hnsw".

  Raises:
    StoreError: an unknown version or kind.
  """
  names.check(faiss_index.KINDS, kind, "index kind", StoreError)
  read = store.read(version)
  return VersionIndex(read.space.version, kind,
                      faiss_index.build_index(read.items, kind),
                      store.item_ids, read.space)


def neighbours(store, index: VersionIndex, user_ids: Sequence[str],
               k: int = 10) -> list[list[tuple[str, float]]]:
  """The top-k items of each user through a version's index.

  Args:
    store: the store the index was built from.
    index: `version_index(store, j, ...)`.
    user_ids: raw user ids; each is read from the latest version and mapped
      into version j.
    k: items per user, 1..number of items.

  Returns:
    Per user, k (raw item id, inner product) pairs, best first (ties to the
    earlier stored item).

  Raises:
    StoreError: an unknown user id, k out of range, or an index of another
      store (its space is not the store's version j).
  """
  users, _ = store.lookup(user_ids, (), index.version)
  return index.search(users, store.space(index.version), k)
