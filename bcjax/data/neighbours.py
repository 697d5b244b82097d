"""Neighbour sampling for mini-batch training on large graphs (PinSage's own
approach), vectorized numpy, fixed shapes.

Full-graph training recomputes every node at every step, so an epoch costs
(interactions / batch) x (all nodes) and grows quadratically with the data.
With sampling, a step computes only the L-hop neighbourhood trees of its
batch's nodes: per level, every node keeps itself and `fanout` neighbours,
so level i has n_0 (fanout + 1)^i rows whatever the graph's size, and one
program serves every batch and every graph.

A node with at most `fanout` neighbours keeps all of them (the rest of its
slots are masked), so with `fanout` at least the largest degree the sampled
mean equals the full-graph mean exactly; otherwise `fanout` neighbours are
drawn uniformly with replacement (an unbiased estimate of the mean).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import flax.struct
import jax
import numpy as np


@flax.struct.dataclass
class Subgraph:
  """The sampled neighbourhood trees of n_0 target nodes, L levels deep.

  Level i + 1 lists, for every row of level i, itself then its sampled
  neighbours: `fanout + 1` consecutive rows.

  Attributes:
    leaves: `[n_0 (fanout + 1)^L]` node ids of the deepest level.
    masks: per level i < L, `[n_0 (fanout + 1)^i, fanout + 1]` bool: which
      of the row's children are real (self is real iff the row is).
  """
  leaves: jax.Array
  masks: tuple[jax.Array, ...]


@flax.struct.dataclass
class SampledInputs:
  """A model's inputs for one batch: the version's graph inputs (for the
  node features) and the batch's neighbourhood trees; a model given these
  embeds the trees' roots only."""
  graph: Any
  subgraph: Subgraph


@flax.struct.dataclass
class SampledBatch:
  """A task's batch with its own neighbourhood trees.

  Attributes:
    subgraph: the trees of the batch's nodes.
    nodes: `[n_0]` node ids of the trees' roots (where the alignment term
      reads the previous version's embeddings).
    batch: the task's batch, whose node ids index the roots (0 .. n_0 - 1).
  """
  subgraph: Subgraph
  nodes: jax.Array
  batch: Any


@dataclasses.dataclass(frozen=True)
class SampledTask:
  """A task whose batches are `SampledBatch` instances: the model embeds
  each batch's trees' roots instead of every node.

  The trainer sees an ordinary task (`bcjax.core.tasks.Task`) plus the
  `batch_inputs` hook, so sampling is a wrapper of the task and its
  batches, not a branch of the trainer.

  Attributes:
    task: the task of the unwrapped batches (node ids index the roots).
  """
  task: Any

  def loss(self, z: jax.Array, batch: SampledBatch) -> jax.Array:
    """The task's loss over the roots' embeddings `z [n_0, d]`."""
    return self.task.loss(z, batch.batch)

  def nodes(self, batch: SampledBatch):
    """The task's (root ids, mask) of the batch."""
    return self.task.nodes(batch.batch)

  def batch_inputs(self, inputs, batch: SampledBatch):
    """(the model's inputs for this batch, the roots' node ids)."""
    return SampledInputs(inputs, batch.subgraph), batch.nodes


class NeighbourSampler:
  """Samples neighbourhood trees over one version's training graph.

  Node ids put users first: user u is u, item i is `num_users_pad + i`.
  """

  def __init__(self, user: np.ndarray, item: np.ndarray, num_users_pad: int,
               num_items_pad: int):
    """Indexes both directions of the training interactions.

    Args:
      user, item: `[T]` training interactions.
      num_users_pad, num_items_pad: the node budget.
    """
    n = num_users_pad + num_items_pad
    src = np.concatenate([user, np.asarray(item) + num_users_pad]).astype(
        np.int64)
    dst = np.concatenate([np.asarray(item) + num_users_pad, user]).astype(
        np.int64)
    order = np.argsort(src, kind="stable")
    self._neighbours = dst[order].astype(np.int32)
    self._degree = np.bincount(src, minlength=n)
    self._offsets = np.concatenate([[0], np.cumsum(self._degree)[:-1]])

  @property
  def max_degree(self) -> int:
    """The largest node degree (a `fanout` this large samples exactly)."""
    return int(self._degree.max(initial=0))

  def _children(self, nodes: np.ndarray, valid: np.ndarray, fanout: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`[n, fanout + 1]` (self, neighbours) ids and their mask."""
    degree = np.where(valid, self._degree[nodes], 0)[:, None]
    slot = np.arange(fanout)[None, :]
    drawn = (rng.random((len(nodes), fanout)) * np.maximum(degree, 1)).astype(
        np.int64)
    pick = np.where(degree <= fanout, np.minimum(slot, np.maximum(degree - 1, 0)),
                    drawn)
    mask = np.where(degree <= fanout, slot < degree, True) & valid[:, None]
    ids = self._neighbours[np.minimum(self._offsets[nodes][:, None] + pick,
                                      max(len(self._neighbours) - 1, 0))]
    ids = np.where(mask, ids, 0)
    return (np.concatenate([nodes[:, None], ids], axis=1),
            np.concatenate([valid[:, None], mask], axis=1))

  def sample(self, targets: np.ndarray, valid: np.ndarray, fanout: int,
             num_layers: int, rng: np.random.Generator) -> Subgraph:
    """The neighbourhood trees of `targets`.

    Args:
      targets: `[n_0]` node ids (padding rows may hold anything).
      valid: `[n_0]` bool, the real rows.
      fanout: neighbours kept per node and level.
      num_layers: L.
      rng: the source of randomness.

    Returns:
      The `Subgraph` (numpy arrays).
    """
    nodes = np.where(valid, targets, 0).astype(np.int32)
    valid = np.asarray(valid, bool)
    masks = []
    for _ in range(num_layers):
      children, mask = self._children(nodes, valid, fanout, rng)
      masks.append(mask)
      nodes, valid = children.reshape(-1), mask.reshape(-1)
    return Subgraph(leaves=nodes.astype(np.int32), masks=tuple(masks))


def sampled_bpr_chunks(sampler: NeighbourSampler, batches: tuple[np.ndarray, ...],
                       fanout: int, num_layers: int, chunk: int,
                       rng: np.random.Generator) -> Iterator[SampledBatch]:
  """BPR batches (`bcjax.core.tasks.epoch_batches`) as stacked `SampledBatch`
  chunks of `chunk` batches (the last padded with empty ones).

  Each batch's roots are its users, positives and negatives (n_0 = 3B, in
  that order), so its triples become the local ids (b, B + b, 2B + b).

  Args:
    sampler: the version's neighbour sampler.
    batches: `(user, pos, neg, mask)`, each `[num_batches, B]`, node ids.
    fanout: neighbours kept per node and level.
    num_layers: L, the depth of the trees.
    chunk: batches per chunk.
    rng: the source of randomness.

  Yields:
    `SampledBatch` instances whose leaves are stacked on a leading `[chunk]`
    axis; each batch is `(user, pos, neg, mask)` of local root ids, `[B]`
    each.
  """
  user, pos, neg, mask = batches
  num_batches, size = user.shape
  local = np.arange(size, dtype=np.int32)
  for start in range(0, num_batches, chunk):
    parts = []
    for b in range(start, start + chunk):
      if b < num_batches:
        roots = np.concatenate([user[b], pos[b], neg[b]])
        real = np.tile(mask[b], 3)
      else:
        roots, real = np.zeros(3 * size, np.int32), np.zeros(3 * size, bool)
      parts.append(SampledBatch(
          sampler.sample(roots, real, fanout, num_layers, rng), roots,
          (local, size + local, 2 * size + local, real[:size])))
    yield jax.tree.map(lambda *x: np.stack(x), *parts)
