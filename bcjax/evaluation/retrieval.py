"""The legacy-index consumer: retrieval through a frozen version-0 index
(method §10).

A consumer team built a vector index over version 0's item embeddings and
serves "items for this user" from it. The index is frozen: at version k the
users' queries are a strategy's BC embeddings of version k (in version 0's
space), items that appeared after version 0 are *inserted* as their BC
embeddings, and the version-0 vectors stay as they were. The "refreshed"
variant rebuilds an index of the same kind from every item's version-k BC
embedding (what a consumer re-ingesting the store would get).

Indexes are `bcjax.store.faiss_index`'s (faiss, exact or HNSW, inner
product). Recall@K follows method §5 on
the candidates an index returns: the user's training items are filtered out
of a candidate list deep enough to leave K others, ties go to the lower item
index, and recall is ``|top-K ∩ V_u| / |V_u|`` over the users with
validation items (`metrics.RecallInputs` supplies them, so the users and
pairs are the intended task's). `evaluate_run` measures a finished run and
writes `retrieval.json`; the report's section is `bcjax.paper.retrieval_report`'s.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import faiss
import numpy as np

from bcjax.core import metrics
from bcjax.runs import strategies
from bcjax.runs.rundir import RunDir
from bcjax.store import faiss_index
from bcjax.util import io

RETRIEVAL_KS = (10, 50)
# The strategy whose version-0 items fill the frozen index (E_0(M_0)), and
# the one whose own version-k model and index is the ceiling.
FROZEN_SOURCE, CEILING_SOURCE = strategies.FIX_M0, strategies.NOBC


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
  _, found = faiss_index.search(index, user_vectors[queries.users], needed)
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
  frozen = {kind: faiss_index.build_index(frozen_items, kind) for kind in faiss_index.KINDS}
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
      found = recall(faiss_index.build_index(items, "exact"), users, queries[k])
    for K, value in found.items():
      out["ceiling"][f"recall@{K}"].append(value)
  for s in strategies:
    record = {kind: {f"recall@{K}": [] for K in RETRIEVAL_KS}
              for kind in (*faiss_index.KINDS, "refreshed")}
    for k in versions:
      users, items = run_dir.bc_tables(s, k)
      new_items = items[len(frozen_items):]
      for kind in faiss_index.KINDS:
        found = recall(faiss_index.with_inserted(frozen[kind], new_items), users,
                       queries[k])
        for K, value in found.items():
          record[kind][f"recall@{K}"].append(value)
      for K, value in recall(faiss_index.build_index(items, "exact"), users,
                             queries[k]).items():
        record["refreshed"][f"recall@{K}"].append(value)
    out["strategies"][s] = record
  io.save_json(run_dir.retrieval_path, out)
  return out
