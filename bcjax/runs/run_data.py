"""The versions of one run: splits, padded inputs, batches, models, Recall@K.

`RunData` builds what every version's training and evaluation read, once per
run and lazily per version: the splits of the dataset at `config.times`, one
padded budget shared by every version (one compiled program), the model
inputs, the BPR batches (full-graph, or neighbour-sampled with
`config.fanout`), the model of each version and the Recall@K evaluation.
`bcjax.paper.experiment.Experiment` adds the strategies and the run directory.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from bcjax.core import metrics
from bcjax.core.tasks import BPRTask, epoch_batches
from bcjax.core.epoch import embed
from bcjax.data import (
  DynamicGraph,
  TripleSampler,
  VersionSplit,
  make_splits,
  numpy_rng,
)
from bcjax.data.neighbours import (
  NeighbourSampler,
  SampledTask,
  sampled_bpr_chunks,
)
from bcjax.models import families
from bcjax.models.interface import EmbeddingModel
from bcjax.runs import configs
from bcjax.util import keys, memory


@dataclasses.dataclass
class VersionData:
  """Everything version k's training reads, built once per run."""
  split: VersionSplit
  inputs: Any
  sampler: TripleSampler
  recall: metrics.RecallInputs


class RunData:
  """The versions of a dataset under a run config (see the module docstring).

  Args:
    graph: the dataset's canonical graph.
    config: the run config (`bcjax.runs.configs`; fields `times`, `dims`,
      `layers`, `batch_size`, `seed`, `model`, `fanout`, ...); the run keeps
      it resolved and frozen (`configs.resolve`: the caller's is untouched).

  Raises:
    ValueError: a bad config field (`configs.validate`: `dims` or `layers`
      without one entry per version, an unknown model family, ...), or a
      training that would need more memory than there is (`bcjax.util.memory`:
      the estimate in the message).
    DataError: bad `config.times`, or a version without validation
      interactions.
  """

  def __init__(self, graph: DynamicGraph, config):
    # Every version needs validation interactions: fail before any work.
    self.splits = make_splits(graph, config.times, require_validation=True)
    # Read-only from here on: what every stage of the run reads.
    self.graph, self.config = graph, configs.resolve(config)
    config = self.config
    self.vocab_sizes = tuple(a.num_values for a in graph.attributes.values())
    self.budget = families.Budget.covering(self.splits)
    self.num_users_pad = self.budget.num_users_pad
    self.num_items_pad = self.budget.num_items_pad
    self.num_batches = -(-max(s.num_train for s in self.splits)
                         // config.batch_size)
    num_nodes = self.num_users_pad + self.num_items_pad
    memory.check(memory.training_bytes(
        num_nodes, sum(self.vocab_sizes), max(config.dims), max(config.layers),
        config.batch_size, self.num_batches),
        f"training {num_nodes} nodes with config.batch_size="
        f"{config.batch_size} and config.dims={tuple(config.dims)}")
    self.root_key = keys.root(config.seed)
    self.family = families.check(config.model)
    self.task = BPRTask(reg=config.weight_decay)
    # The task training reads: with neighbour sampling, over sampled trees.
    self.training_task = (SampledTask(self.task) if config.fanout
                          else self.task)
    self._data: dict[int, VersionData] = {}
    self._neighbours: dict[int, NeighbourSampler] = {}

  @property
  def num_versions(self) -> int:
    """K + 1, the number of versions of the run."""
    return len(self.splits)

  def data(self, k: int) -> VersionData:
    """Version k's padded model inputs, triple sampler and Recall@K inputs.

    Built on first use and cached.

    Args:
      k: the version.

    Returns:
      The `VersionData`.

    Raises:
      ValueError: version k has no validation interactions.
    """
    if k not in self._data:
      split = self.splits[k]
      if split.num_val == 0:
        raise ValueError(f"version {k}: no validation interactions in "
                         f"({split.time_train}, {split.time_val}]")
      inputs = families.make_inputs(self.family, split, self.budget,
                                    layout=self.config.layout or None)
      self._data[k] = VersionData(
          split, inputs,
          TripleSampler(split.train_user, split.train_item, split.num_users,
                        split.num_items),
          metrics.prepare_recall_inputs(
              split.train_user, split.train_item, split.val_user,
              split.val_item, split.num_items,
              batch_users=self.config.recall_batch_users))
    return self._data[k]

  def model(self, k: int, size: int | None = None) -> EmbeddingModel:
    """Version k's model of the run's family (`config.model`).

    Args:
      k: the version.
      size: the version whose `config.dims` and `config.layers` the model
        has (default k; a strategy may keep version 0's).

    Returns:
      The (untrained) `EmbeddingModel`.
    """
    size = k if size is None else size
    return families.build(self.family, self.config.dims[size],
                          self.config.layers[size], self.vocab_sizes)

  def embeddings(self, model: EmbeddingModel, variables, k: int) -> jax.Array:
    """Embeddings of `model` on version k's graph, in evaluation mode.

    Args:
      model: an embedding model of the run.
      variables: its variables.
      k: the version whose graph it is applied to.

    Returns:
      `[num_users_pad + num_items_pad, d]`, users first.
    """
    return embed(model, variables, self.data(k).inputs)

  def batches(self, k: int, num_layers: int | None = None):
    """Version k's BPR batches, as `training.fit` reads them.

    Args:
      k: the version.
      num_layers: depth of the sampled trees (default version k's L); used
        only with `config.fanout` > 0.

    Returns:
      A function epoch key -> one epoch: `(user, pos, neg, mask)`, each
      `[num_batches, batch_size]`, padded to the run's batch count; with
      `config.fanout` > 0, an iterator of stacked `SampledBatch` chunks of
      `config.chunk_batches` batches with their neighbourhood trees.
    """
    sampler, config = self.data(k).sampler, self.config
    fanout = int(config.fanout)
    if not fanout:
      return lambda key: epoch_batches(sampler, keys.derive(key, "triples"),
                                       config.batch_size, self.num_users_pad,
                                       self.num_batches)
    chunk = int(config.chunk_batches)
    num_batches = -(-self.num_batches // chunk) * chunk
    trees = self.neighbour_sampler(k)
    num_layers = num_layers or config.layers[k]

    def epoch(key):
      batches = epoch_batches(sampler, keys.derive(key, "triples"),
                              config.batch_size, self.num_users_pad,
                              num_batches)
      return sampled_bpr_chunks(trees, batches, fanout, num_layers, chunk,
                                numpy_rng(keys.derive(key, "neighbours")))
    return epoch

  def neighbour_sampler(self, k: int) -> NeighbourSampler:
    """Version k's neighbour sampler over its training graph (cached).

    Args:
      k: the version.

    Returns:
      The `NeighbourSampler`, node ids padded as the model's inputs.
    """
    if k not in self._neighbours:
      split = self.splits[k]
      self._neighbours[k] = NeighbourSampler(
          split.train_user, split.train_item, self.num_users_pad,
          self.num_items_pad)
    return self._neighbours[k]

  def real_rows(self, z, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Version k's real users and items of padded node embeddings.

    Args:
      z: `[num_users_pad + num_items_pad, d]`, users first.
      k: the version.

    Returns:
      (users `[U1, d]`, items `[I1, d]`) as numpy arrays.
    """
    split = self.splits[k]
    z = np.asarray(z)
    return (z[:split.num_users],
            z[self.num_users_pad:self.num_users_pad + split.num_items])

  def recall(self, z: jax.Array, k: int) -> dict[str, float]:
    """Recall@K of node embeddings on version k's validation interactions.

    Args:
      z: `[num_users_pad + num_items_pad, d]`, users first.
      k: the version.

    Returns:
      ``{"recall@K": value}`` for every K of `metrics.RECALL_KS`.
    """
    return metrics.recall_metrics(z[:self.num_users_pad],
                                  z[self.num_users_pad:], self.data(k).recall)

  def key(self, k: int) -> jax.Array:
    """Version k's key; shared by strategies so they see the same triples
    and start from the same initialisation (common random numbers).

    Args:
      k: the version.

    Returns:
      `keys.derive(keys.root(config.seed), "version", k)`.
    """
    return keys.derive(self.root_key, "version", k)
