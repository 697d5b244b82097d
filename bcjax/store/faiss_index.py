"""Inner-product vector indexes (faiss): build, insert into a frozen copy, and
search with ties broken towards the lower id.

faiss (faiss-cpu) is the usual vector-search library. Two kinds: the exact
`IndexFlatIP` and the graph index `IndexHNSWFlat` with inner-product
scores, at the fixed parameters `HNSW_M`, `HNSW_EF_CONSTRUCTION` and
`HNSW_EF_SEARCH`. faiss runs on one thread here so that HNSW insertion
order, hence the graph and every figure, is reproducible. The store's
search (`bcjax.store.search`) and the frozen-index evaluation
(`bcjax.evaluation.retrieval`) both build and query indexes through this
module.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import faiss
import numpy as np

from bcjax.util import names

Kind = Literal["exact", "hnsw"]
KINDS: tuple[Kind, ...] = ("exact", "hnsw")
# HNSW: 32 links a node, beam 200 while building; searches use a beam of at
# least 256 (and at least the candidate depth).
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 256


@contextlib.contextmanager
def _one_thread():
  """faiss on one thread: HNSW insertion order, hence the graph and the
  figures, are then reproducible."""
  before = faiss.omp_get_max_threads()
  faiss.omp_set_num_threads(1)
  try:
    yield
  finally:
    faiss.omp_set_num_threads(before)


def _vectors(vectors, what: str) -> np.ndarray:
  """float32, C-contiguous `[n, d]` rows, as faiss reads them."""
  array = np.ascontiguousarray(vectors, dtype=np.float32)
  if array.ndim != 2 or array.shape[1] < 1:
    raise ValueError(f"{what}: expected a [n, d] table, got shape "
                     f"{array.shape}")
  if not np.all(np.isfinite(array)):
    raise ValueError(f"{what}: the table holds NaN or infinite values")
  return array


def build_index(vectors, kind: Kind) -> faiss.Index:
  """An inner-product index over `vectors`; row i gets id i.

  Args:
    vectors: `[n, d]` item embeddings.
    kind: "exact" (`IndexFlatIP`) or "hnsw" (`IndexHNSWFlat`, `HNSW_M`
      links, `HNSW_EF_CONSTRUCTION`).

  Returns:
    The faiss index.

  Raises:
    ValueError: an unknown kind, or a table that is not finite `[n, d]`.
  """
  vectors = _vectors(vectors, "index vectors")
  d = vectors.shape[1]
  if names.check(KINDS, kind, "index kind") == "exact":
    index = faiss.IndexFlatIP(d)
  else:
    index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
  with _one_thread():
    index.add(vectors)
  return index


def with_inserted(frozen: faiss.Index, vectors) -> faiss.Index:
  """A copy of `frozen` with `vectors` appended (ids ntotal, ntotal + 1, ...).

  The frozen index itself is left untouched, and in the copy the existing
  vectors are never replaced: new items are only added.

  Raises:
    ValueError: vectors of another width than the index's.
  """
  vectors = _vectors(vectors, "inserted vectors") if len(vectors) else None
  if vectors is not None and vectors.shape[1] != frozen.d:
    raise ValueError(f"inserted vectors have {vectors.shape[1]} dims, the "
                     f"index {frozen.d}")
  index = faiss.clone_index(frozen)
  if vectors is not None:
    with _one_thread():
      index.add(vectors)
  return index


def stored_vectors(index: faiss.Index) -> np.ndarray:
  """Every vector an index holds, `[ntotal, d]`, in id order."""
  return index.reconstruct_n(0, index.ntotal)


def search(index: faiss.Index, queries, needed: int
           ) -> tuple[np.ndarray, np.ndarray]:
  """The top `needed` items of every query, ties to the lower item index.

  The search deepens (doubling) until each row's last candidate scores
  strictly below its `needed`-th, so re-ordering ties by item index never
  misses one beyond the list.

  Args:
    index: an index over items, id = item index.
    queries: `[n, d]` query vectors.
    needed: how many items, 1..ntotal.

  Returns:
    (scores `[n, needed]`, item ids `[n, needed]`), best first; an HNSW
    index may return id -1 where it found fewer.

  Raises:
    ValueError: `needed` out of range, or queries of another width.
  """
  queries = _vectors(queries, "query vectors")
  if queries.shape[1] != index.d:
    raise ValueError(f"query vectors have {queries.shape[1]} dims, the "
                     f"index {index.d}")
  if not 1 <= needed <= index.ntotal:
    raise ValueError(f"search: {needed} items asked of an index of "
                     f"{index.ntotal}")
  depth = min(needed + 1, index.ntotal)
  while True:
    if isinstance(index, faiss.IndexHNSW):
      index.hnsw.efSearch = max(HNSW_EF_SEARCH, depth)
    scores, found = index.search(queries, depth)
    if depth == index.ntotal or np.all(scores[:, -1] < scores[:, needed - 1]):
      break
    depth = min(2 * depth, index.ntotal)
  order = np.lexsort((found, -scores), axis=1)[:, :needed]
  return (np.take_along_axis(scores, order, axis=1),
          np.take_along_axis(found, order, axis=1))
