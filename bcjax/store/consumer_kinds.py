"""The kinds of consumer a store registers (`bcjax.store.registry`): a
classifier head over embeddings, and a frozen vector index with its queries,
and how each is scored.

A `Classifier` reads the embeddings of its rows (users, items or pairs,
concatenated) through a `LinearHead` or a `bcjax.models.consumer.ConsumerMLP`
head (`MLPHead`) and is scored by a metric of `METRICS` (ROC-AUC by
default). A `FrozenIndex` is scored by Recall@K (`recall_at_k`, method §5)
of its query users through a faiss index (`bcjax.store.faiss_index`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import faiss
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from bcjax.core import metrics
from bcjax.models.consumer import ConsumerMLP
from bcjax.store import faiss_index

# Metrics of a classifier: (scores [N], labels [N]) -> a scalar, jittable.
METRICS = {
    "roc_auc": metrics.roc_auc,
    "accuracy": lambda s, y: jnp.mean((s > 0) == jnp.asarray(y, bool)),
}
INPUTS = ("user", "item")


@dataclasses.dataclass(frozen=True)
class LinearHead:
  """A linear (logistic) head: score = x @ weights + bias.

  Attributes:
    weights: `[d_in]`.
    bias: a scalar.
  """
  weights: np.ndarray
  bias: float = 0.0

  def __call__(self, x: np.ndarray) -> np.ndarray:
    weights = np.asarray(self.weights, np.float64).reshape(-1)
    return np.asarray(x, np.float64) @ weights + float(self.bias)

  @property
  def d_in(self) -> int:
    return int(np.size(self.weights))


@dataclasses.dataclass(frozen=True)
class MLPHead:
  """A `bcjax.models.consumer.ConsumerMLP` head, scored in eval mode.

  Attributes:
    hidden: its width h.
    variables: `{"params", "batch_stats"}` of one head (no seed axis).
  """
  hidden: int
  variables: Any

  def __call__(self, x: np.ndarray) -> np.ndarray:
    return np.asarray(ConsumerMLP(self.hidden).apply(
        self.variables, jnp.asarray(x, jnp.float32)))

  @property
  def d_in(self) -> int:
    return int(self.variables["params"]["dense_0"]["kernel"].shape[0])

  def to_bytes(self) -> bytes:
    """The variables as flax msgpack (no pickle)."""
    return flax.serialization.to_bytes(self.variables)

  @classmethod
  def from_bytes(cls, hidden: int, d_in: int, data: bytes) -> MLPHead:
    """The head `to_bytes` wrote, for `d_in` inputs.

    Raises:
      ValueError: the bytes do not hold such a head's variables.
    """
    template = jax.eval_shape(lambda: ConsumerMLP(hidden).init(
        jax.random.key(0), jnp.zeros((2, d_in))))  # Shapes only: no draw.
    return cls(hidden, flax.serialization.from_bytes(template, data))


@dataclasses.dataclass(frozen=True)
class Classifier:
  """A classifier consumer built on version `version`.

  Attributes:
    rows: `[N, len(inputs)]` store rows; column c is a user row when
      `inputs[c]` is "user", else an item row; the head reads the rows'
      embeddings concatenated.
    labels: `[N]` bool.
    baseline_scores: `[N]` the head's scores on version j.
    baseline: the metric of `baseline_scores`.
  """
  name: str
  version: int
  head: LinearHead | MLPHead
  inputs: tuple[str, ...]
  rows: np.ndarray
  labels: np.ndarray
  metric: str
  baseline_scores: np.ndarray
  baseline: float

  def scores(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """`[N]` head scores on version-j tables `users`, `items`."""
    tables = {"user": users, "item": items}
    return self.head(np.concatenate(
        [tables[kind][self.rows[:, c]] for c, kind in enumerate(self.inputs)],
        axis=1))


@dataclasses.dataclass(frozen=True)
class FrozenIndex:
  """A frozen vector index built on version `version`.

  Attributes:
    items: `[I_j, d_j]` the indexed item vectors, as they were at version j.
    queries: `[Q]` user rows of the queries.
    relevant: `[P, 2]` (query position, item row) pairs to retrieve.
    excluded: `[E, 2]` (query position, item row) pairs never retrieved.
    k: the K of Recall@K.
    index_kind: "exact" or "hnsw" (`faiss_index`).
    baseline_recall: `[Q]` each query's Recall@K with version-j users.
    baseline: their mean.
  """
  name: str
  version: int
  items: np.ndarray
  queries: np.ndarray
  relevant: np.ndarray
  excluded: np.ndarray
  k: int
  index_kind: str
  baseline_recall: np.ndarray
  baseline: float

  def recall(self, index: faiss.Index, users: np.ndarray) -> np.ndarray:
    """`[Q]` Recall@K of `users[queries]` through `index` (`recall_at_k`)."""
    return recall_at_k(index, users[self.queries], self.relevant,
                       self.excluded, self.k)


def recall_at_k(index: faiss.Index, queries: np.ndarray, relevant: np.ndarray,
                excluded: np.ndarray, k: int) -> np.ndarray:
  """Per-query Recall@K through an index (method §5).

  Each query retrieves K plus its most excluded items (all at most), the
  excluded are filtered out, ties go to the lower item id
  (`faiss_index.search`), and recall is ``|top-K ∩ relevant| / |relevant|``.

  Args:
    index: an index, id = item row.
    queries: `[Q, d]` query vectors.
    relevant: `[P, 2]` (query, item) pairs; every query has one at least.
    excluded: `[E, 2]` (query, item) pairs never retrieved.
    k: K >= 1.

  Returns:
    `[Q]` float64 recalls.
  """
  num_queries, n = len(queries), index.ntotal
  most_excluded = int(np.bincount(excluded[:, 0], minlength=num_queries).max(
      initial=0))
  _, found = faiss_index.search(index, queries, min(k + most_excluded, n))
  keys = np.arange(num_queries)[:, None] * n + found
  kept = (found >= 0) & ~np.isin(keys, excluded[:, 0] * n + excluded[:, 1])
  hit = kept & (np.cumsum(kept, axis=1) <= k) & np.isin(
      keys, relevant[:, 0] * n + relevant[:, 1])
  return hit.sum(1) / np.bincount(relevant[:, 0], minlength=num_queries)


def metric_value(metric: str, scores: Any, labels: Any) -> float:
  """`METRICS[metric]` of one set of scores, as a Python float."""
  return float(METRICS[metric](jnp.asarray(scores), jnp.asarray(labels)))
