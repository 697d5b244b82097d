"""Nearest-neighbour search over a store's version: the retrieval consumer's
read side (method §10).

A consumer team that serves "items for this user" from an index of version
j builds it over the store's items in version j's space (`version_index`,
exact or HNSW, `bcjax.store.faiss_index.build_index`), and queries it with users of
the latest version mapped into version j (`EmbeddingStore.lookup`, the same
product path as every read). Scores are inner products; training items are
not known to the store, so nothing is filtered.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import faiss
import numpy as np

from bcjax.store import faiss_index
from bcjax.store.embedding_store import EmbeddingStore
from bcjax.store.layout import StoreError


@dataclasses.dataclass(frozen=True)
class VersionIndex:
  """An index over a store's items in version `version`'s space.

  Attributes:
    version: j.
    kind: "exact" or "hnsw".
    index: the faiss index, id = row of `item_ids`.
    item_ids: the raw item ids, in the store's order.
  """
  version: int
  kind: str
  index: faiss.Index
  item_ids: np.ndarray


def version_index(store: EmbeddingStore, version: int | None = None,
                  kind: str = "hnsw") -> VersionIndex:
  """Builds the index of version j (default latest) over every stored item.

  Raises:
    StoreError: an unknown version or kind.
  """
  if kind not in faiss_index.KINDS:
    raise StoreError(f"index kind {kind!r}; known: "
                     f"{', '.join(faiss_index.KINDS)}")
  j = store.latest_version if version is None else version
  _, items = store.embeddings(j)
  return VersionIndex(j, kind, faiss_index.build_index(items, kind),
                      store.item_ids)


def neighbours(store: EmbeddingStore, index: VersionIndex,
               user_ids: Sequence[str], k: int = 10
               ) -> list[list[tuple[str, float]]]:
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
    StoreError: an unknown user id, or k out of range.
  """
  if not 1 <= k <= len(index.item_ids):
    raise StoreError(f"k={k}: the index holds {len(index.item_ids)} items")
  users, _ = store.lookup(user_ids, (), index.version)
  scores, found = faiss_index.search(index.index, users, k)
  return [[(str(index.item_ids[i]), float(s)) for i, s in zip(rows, values)
           if i >= 0] for rows, values in zip(found, scores)]
