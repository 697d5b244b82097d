"""The legacy-index consumer: retrieval through a frozen version-0 index
(method §10).

A consumer team built a vector index over version 0's item embeddings and
serves "items for this user" from it. The index is frozen: at version k the
users' queries are a strategy's BC embeddings of version k (in version 0's
space), items that appeared after version 0 are *inserted* as their BC
embeddings, and the version-0 vectors stay as they were. The "refreshed"
variant rebuilds an index of the same kind from every item's version-k BC
embedding (what a consumer re-ingesting the store would get).

Indexes are faiss's (faiss-cpu, the usual vector-search library): the exact
inner-product index `IndexFlatIP` and the graph index `IndexHNSWFlat` with
inner-product scores, at the fixed parameters `HNSW_M`,
`HNSW_EF_CONSTRUCTION` and `HNSW_EF_SEARCH`. Recall@K follows method §5 on
the candidates an index returns: the user's training items are filtered out
of a candidate list deep enough to leave K others, ties go to the lower item
index, and recall is ``|top-K ∩ V_u| / |V_u|`` over the users with
validation items (`metrics.RecallInputs` supplies them, so the users and
pairs are the intended task's). `evaluate_run` measures a finished run and
writes `retrieval.json`; the report's section is `bcjax.retrieval_report`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Literal, Sequence

import faiss
import numpy as np

from bcjax import io, metrics, strategies
from bcjax.rundir import RunDir

Kind = Literal["exact", "hnsw"]
KINDS: tuple[Kind, ...] = ("exact", "hnsw")
RETRIEVAL_KS = (10, 50)
# HNSW: 32 links a node, beam 200 while building; searches use a beam of at
# least 256 (and at least the candidate depth).
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 256
# The strategy whose version-0 items fill the frozen index (E_0(M_0)), and
# the one whose own version-k model and index is the ceiling.
FROZEN_SOURCE, CEILING_SOURCE = strategies.FIX_M0, strategies.NOBC


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
  if kind == "exact":
    index = faiss.IndexFlatIP(d)
  elif kind == "hnsw":
    index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
  else:
    raise ValueError(f"index kind {kind!r}; known: {', '.join(KINDS)}")
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


@dataclasses.dataclass(frozen=True)
class Queries:
  """The evaluation users of a version and their pairs, flattened.

  Attributes:
    users: `[N]` the users with a validation item, increasing.
    excluded: `[N, I]` bool, True where the item is a training item of the
      user (never retrieved).
    validation: `[N, I]` bool, True on the user's distinct validation items.
  """
  users: np.ndarray
  excluded: np.ndarray
  validation: np.ndarray

  @classmethod
  def of(cls, inputs: metrics.RecallInputs) -> Queries:
    """The queries of a version's Recall@K inputs (same users and pairs)."""
    position = np.cumsum(inputs.user_mask.ravel()) - 1
    users = inputs.users.ravel()[inputs.user_mask.ravel()]

    def table(pairs: np.ndarray) -> np.ndarray:
      out = np.zeros((len(users), inputs.num_items), bool)
      batch = np.broadcast_to(np.arange(len(pairs))[:, None], pairs.shape[:2])
      real = pairs[..., 0] < inputs.batch_users
      slot = batch[real] * inputs.batch_users + pairs[..., 0][real]
      out[position[slot], pairs[..., 1][real]] = True
      return out

    return cls(users, table(inputs.excluded), table(inputs.validation))


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


def recall(index: faiss.Index, user_vectors, queries: Queries,
           ks: Sequence[int] = RETRIEVAL_KS) -> dict[int, float]:
  """Recall@K of the evaluation users through an index (method §5).

  Every user retrieves max(ks) + (the largest training-item count)
  candidates (all items at most), so K candidates remain once its training
  items are filtered out, plus any item tied with the last of them. Equal
  scores go to the lower item index, so through the exact index this is
  method §5's Recall@K.

  Args:
    index: an index over the version's items, id = item index.
    user_vectors: `[U, d]` query embeddings, row = user index.
    queries: the version's `Queries`.
    ks: the cut-offs, each >= 1.

  Returns:
    ``{K: recall@K}``, averaged over the evaluation users.

  Raises:
    ValueError: a K below 1, fewer items in the index than the version
      ranks, too few user rows, or query vectors of another width.
  """
  ks = tuple(int(k) for k in ks)
  if not ks or min(ks) < 1:
    raise ValueError(f"recall@K: every K must be >= 1, got {ks}")
  num_items = queries.excluded.shape[1]
  if index.ntotal < num_items:
    raise ValueError(f"recall@K: the index holds {index.ntotal} items, the "
                     f"version ranks {num_items}")
  user_vectors = np.asarray(user_vectors)
  if user_vectors.shape[0] <= queries.users.max():
    raise ValueError(f"recall@K: {user_vectors.shape[0]} user rows, but user "
                     f"{int(queries.users.max())} is evaluated")
  needed = min(max(ks) + int(queries.excluded.sum(1).max()), index.ntotal)
  _, found = search(index, user_vectors[queries.users], needed)
  rows = np.arange(len(found))[:, None]
  item = np.clip(found, 0, num_items - 1)
  kept = (found >= 0) & (found < num_items) & ~queries.excluded[rows, item]
  rank = np.cumsum(kept, axis=1)
  hit = kept & queries.validation[rows, item]
  num_val = queries.validation.sum(1)
  return {k: float(np.mean(np.sum(hit & (rank <= k), 1) / num_val))
          for k in ks}


def evaluate_run(workdir: RunDir | str | os.PathLike,
                 recall_inputs: Sequence[metrics.RecallInputs],
                 strategies: Sequence[str]) -> dict:
  """Legacy-index retrieval of every strategy at versions 1..K; writes
  `retrieval.json`.

  Args:
    workdir: a run whose strategies (and fix-m0, nobc) are complete.
    recall_inputs: every version's Recall@K inputs (`RunData.data(k).recall`).
    strategies: the strategies to measure.

  Returns:
    ``{"strategies": {s: {"exact": {"recall@10": [...],``
    ``"recall@50": [...]}, "hnsw": {...}, "refreshed": {...}}}, "ceiling":
    {"recall@10": [...], "recall@50": [...]}}``, one value per version 1..K:
    frozen exact and HNSW indexes with the new items inserted, the refreshed
    exact index, and nobc's version-k model through its own exact index
    (None when the run has no complete nobc).
  """
  run_dir = RunDir.of(workdir)
  frozen_items = run_dir.bc_tables(FROZEN_SOURCE, 0)[1]
  frozen = {kind: build_index(frozen_items, kind) for kind in KINDS}
  versions = range(1, len(recall_inputs))
  queries = {k: Queries.of(recall_inputs[k]) for k in versions}
  out = {"strategies": {}, "ceiling": {f"recall@{K}": []
                                       for K in RETRIEVAL_KS}}
  has_ceiling = bool(run_dir.complete_in([CEILING_SOURCE],
                                         len(recall_inputs)))
  for k in versions:
    found = dict.fromkeys(RETRIEVAL_KS)
    if has_ceiling:
      users, items = run_dir.tables(CEILING_SOURCE, k)
      found = recall(build_index(items, "exact"), users, queries[k])
    for K, value in found.items():
      out["ceiling"][f"recall@{K}"].append(value)
  for s in strategies:
    record = {kind: {f"recall@{K}": [] for K in RETRIEVAL_KS}
              for kind in (*KINDS, "refreshed")}
    for k in versions:
      users, items = run_dir.bc_tables(s, k)
      new_items = items[len(frozen_items):]
      for kind in KINDS:
        found = recall(with_inserted(frozen[kind], new_items), users,
                       queries[k])
        for K, value in found.items():
          record[kind][f"recall@{K}"].append(value)
      for K, value in recall(build_index(items, "exact"), users,
                             queries[k]).items():
        record["refreshed"][f"recall@{K}"].append(value)
    out["strategies"][s] = record
  io.save_json(run_dir.retrieval_path, out)
  return out
