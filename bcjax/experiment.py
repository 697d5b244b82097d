"""One run: every version of every strategy, into a run directory.

The directory's layout is `bcjax.rundir`'s. Version 0 is shared: every strategy's v0 is nobc's (same key, same training).
The embedding model is a family of `bcjax.models.families` (`config.model`,
PinSAGE by default); every strategy trains through `bcjax.training.fit`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np

from bcjax import metrics, sharding, transforms
from bcjax.data import (DynamicGraph, TripleSampler, VersionSplit, make_splits,
                        numpy_rng)
from bcjax.data.neighbours import NeighbourSampler, sampled_bpr_chunks
from bcjax.lineage import Lineage
from bcjax.models import families
from bcjax.models.interface import EmbeddingModel
from bcjax.rundir import CHECKPOINT, VARIABLES, RunDir
from bcjax.strategies import Strategy, get as get_strategy
from bcjax.tasks import BPRTask, epoch_batches
from bcjax.training import Checkpointing, embed, fit

NOBC = "nobc"


@dataclasses.dataclass
class VersionData:
  """Everything version k's training reads, built once per run."""
  split: VersionSplit
  inputs: Any
  sampler: TripleSampler
  recall: metrics.RecallInputs


@dataclasses.dataclass
class Artifacts:
  """One completed (strategy, version)."""
  variables: Any
  transform: np.ndarray | None
  users: np.ndarray
  items: np.ndarray
  metrics: dict


class Experiment:
  """Trains strategies version by version into `workdir`, resumably.

  Creating one checks the config, prepares the padded node and edge budgets
  shared by every version, and writes `config.json` and the raw ids.

  Args:
    graph: the dataset's canonical graph.
    config: the run config (`bcjax.configs`; fields `times`, `dims`,
      `layers`, `batch_size`, `seed`, ...).
    workdir: the run directory (created if needed).

  Raises:
    ValueError: `dims` or `layers` do not have one entry per version, an
      unknown model family, more devices than there are, or a `workdir`
      trained with other training settings (`rundir.TRAINING_FIELDS`).
    DataError: bad `config.times`, or a version without validation
      interactions.
  """

  def __init__(self, graph: DynamicGraph, config, workdir: str | os.PathLike):
    self.graph, self.config = graph, config
    self.run_dir = RunDir(workdir)
    self.workdir = self.run_dir.root
    # Every version needs validation interactions: fail before any work.
    self.splits = make_splits(graph, config.times, require_validation=True)
    if len(config.dims) != len(self.splits) or len(config.layers) != len(self.splits):
      raise ValueError(f"config: {len(self.splits)} versions but dims "
                       f"{tuple(config.dims)} and layers {tuple(config.layers)}")
    self.vocab_sizes = tuple(a.num_values for a in graph.attributes.values())
    self.budget = families.Budget.covering(self.splits)
    self.num_users_pad = self.budget.num_users_pad
    self.num_items_pad = self.budget.num_items_pad
    self.num_batches = -(-max(s.num_train for s in self.splits)
                         // config.batch_size)
    self.root_key = jax.random.key(config.seed)
    self.family = families.check(config.get("model", "pinsage"))
    self.task = BPRTask(reg=config.weight_decay)
    devices = int(config.get("devices", 1))
    self.mesh = sharding.make_mesh(devices) if devices != 1 else None
    self._data: dict[int, VersionData] = {}
    self._neighbours: dict[int, NeighbourSampler] = {}
    self.run_dir.write_config({**config.to_dict(), "dataset": graph.name})
    self.run_dir.save_ids(graph.user_ids, graph.item_ids)

  @property
  def num_versions(self) -> int:
    """K + 1, the number of versions of the run."""
    return len(self.splits)

  # Data and models.

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

  @staticmethod
  def _size_version(k: int, strategy: str | None) -> int:
    """The version whose (d, L) version k's model has: version 0's for
    strategies that keep it (`Strategy.keeps_first_size`)."""
    if strategy and get_strategy(strategy).keeps_first_size:
      return 0
    return k

  def model(self, k: int, strategy: str | None = None) -> EmbeddingModel:
    """Version k's model of the run's family (`config.model`).

    Args:
      k: the version; its `config.dims[k]` and `config.layers[k]`.
      strategy: fix-m0 and finetune-m0 keep version 0's (d, L).

    Returns:
      The (untrained) `EmbeddingModel`.
    """
    size = self._size_version(k, strategy)
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
    fanout = int(config.get("fanout", 0))
    if not fanout:
      return lambda key: epoch_batches(sampler, key, config.batch_size,
                                       self.num_users_pad, self.num_batches)
    chunk = int(config.chunk_batches)
    num_batches = -(-self.num_batches // chunk) * chunk
    trees = self.neighbour_sampler(k)
    num_layers = num_layers or config.layers[k]

    def epoch(key):
      batches = epoch_batches(sampler, key, config.batch_size,
                              self.num_users_pad, num_batches)
      return sampled_bpr_chunks(trees, batches, fanout, num_layers, chunk,
                                numpy_rng(jax.random.fold_in(key, 1)))
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
      `{"recall@K": value}` for every K of `metrics.RECALL_KS`.
    """
    result = metrics.recall_at_k(z[:self.num_users_pad],
                                 z[self.num_users_pad:], self.data(k).recall)
    return {f"recall@{K}": v for K, v in result.items()}

  # Run directory.

  def load(self, strategy: str, k: int) -> Artifacts:
    """Reads a completed version's artifacts, checked against its model.

    Args:
      strategy: the strategy's name.
      k: the version.

    Returns:
      The `Artifacts`: variables, W_k (None for k = 0), users `[U1, d_k]`,
      items `[I1, d_k]` and the metrics record.

    Raises:
      ValueError: variables that do not fit the model, or a metrics.json
        that is not valid JSON (each naming the file).
    """
    model = self.model(k, strategy)
    inputs = self.data(k).inputs  # Built outside the trace below.
    template = jax.eval_shape(lambda: model.init(jax.random.key(0), inputs))
    variables = _load_variables(self.run_dir.path(strategy, k, VARIABLES),
                                template)
    transform = self.run_dir.transform(strategy, k) if k else None
    return Artifacts(variables, transform, *self.run_dir.tables(strategy, k),
                     self.run_dir.metrics(strategy, k))

  def chain(self, strategy: str, k: int, latest: np.ndarray | None = None
            ) -> list[np.ndarray]:
    """W_1..W_k of a strategy, read from its saved versions.

    Args:
      strategy: the strategy's name.
      k: the last version of the chain.
      latest: stands in for W_k if given (not yet saved).

    Returns:
      `[W_1, ..., W_k]`, W_j `[d_j, d_{j-1}]`.
    """
    # Only the matrices: loading whole artifacts would read every model.
    if latest is None:
      return self.run_dir.chain(strategy, k)
    return self.run_dir.chain(strategy, k - 1) + [latest]

  def save(self, strategy: str, k: int, variables, z: jax.Array,
           transform: np.ndarray | None, record: dict) -> None:
    """Writes one version's artifacts; metrics.json last.

    Also writes the BC embeddings (mapped into version 0's space) and
    removes the version's checkpoint.

    Args:
      strategy: the strategy's name.
      k: the version.
      variables: the selected model's variables.
      z: `[num_users_pad + num_items_pad, d_k]` its embeddings.
      transform: W_k `[d_k, d_{k-1}]` (k >= 1; ignored for k = 0).
      record: metrics and history, saved in metrics.json.
    """
    users, items = self.real_rows(z, k)
    arrays = {"users": users, "items": items}
    to_v0 = np.eye(users.shape[1], dtype=np.float32)
    if k:
      arrays["transform"] = transform
      to_v0 = transforms.chain_matrix(self.chain(strategy, k, latest=transform),
                                      k, 0)
    arrays.update(bc_users=users @ to_v0, bc_items=items @ to_v0)
    size = self._size_version(k, strategy)
    self.run_dir.save_version(
        strategy, k, flax.serialization.to_bytes(jax.device_get(variables)),
        arrays, {"strategy": strategy, "version": k,
                 "dim": self.config.dims[size],
                 "layers": self.config.layers[size], **record})

  def checkpointing(self, strategy: str, k: int) -> Checkpointing | None:
    """Where version k of `strategy` checkpoints its training.

    Args:
      strategy: the strategy's name.
      k: the version.

    Returns:
      The `Checkpointing`, every `config.checkpoint_every` epochs; None
      when that is below 1 (or unset).
    """
    every = int(self.config.get("checkpoint_every", 0))
    if every < 1:
      return None
    return Checkpointing(self.run_dir.path(strategy, k, CHECKPOINT), every)

  # Training.

  def key(self, k: int) -> jax.Array:
    """Version k's key; shared by strategies so they see the same triples.

    Args:
      k: the version.

    Returns:
      `fold_in(key(config.seed), k)`.
    """
    return jax.random.fold_in(self.root_key, k)

  def run(self, strategy: str, versions=None) -> None:
    """Trains the given versions (default all) of a strategy, skipping those
    whose artifacts are complete.

    Earlier versions, and the base strategy of a post-hoc one, are trained
    first when missing.

    Args:
      strategy: the strategy's name (`bcjax.strategies`).
      versions: the versions to train; None for all.

    Raises:
      ValueError: an unknown strategy.
      FloatingPointError: a training diverges (see `training.fit`).
    """
    versions = range(self.num_versions) if versions is None else versions
    for k in versions:
      if not self.run_dir.complete(strategy, k):
        self._run_version(get_strategy(strategy), k)

  def _run_version(self, strategy: Strategy, k: int) -> None:
    for j in range(k):  # Earlier versions are inputs of this one.
      if not self.run_dir.complete(strategy.name, j):
        self._run_version(strategy, j)
    if strategy.base and not self.run_dir.complete(strategy.base, k):
      self.run(strategy.base, range(k + 1))
    if k > 0:
      return _KINDS[strategy.model](self, strategy, k)
    if strategy.name == NOBC:
      return self._train_model(strategy, 0, init=None)
    self.run(NOBC, [0])
    # Copied whole, then renamed: a crash never leaves a partial v0.
    target = self.run_dir.version_dir(strategy.name, 0)
    staging = target.with_name(".v0.partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(self.run_dir.version_dir(NOBC, 0), staging)
    os.replace(staging, target)

  def lineage(self, strategy: str, k: int) -> Lineage:
    """Versions 0..k-1 of a strategy as the `Lineage` version k trains
    against: M_{k-1} (its selected variables) and W_1..W_{k-1}."""
    return Lineage((self.model(k - 1, strategy),
                    self.load(strategy, k - 1).variables),
                   self.run_dir.chain(strategy, k - 1))

  def _alignment_target(self, strategy: str, k: int) -> jax.Array:
    """E_k(M_{k-1}): the previous best model on the current graph."""
    return self.lineage(strategy, k).previous(self.data(k).inputs)

  def _fit(self, strategy: Strategy, k: int, previous=None, **kwargs):
    """`training.fit` of version k as `strategy` describes it: its objective
    (the run's lambda next to a task loss), epochs and selection; `previous`
    defaults to the strategy's own E_k(M_{k-1}) when the objective aligns."""
    objective = strategy.objective
    if objective.train_model:
      objective = dataclasses.replace(objective, lam=self.config.lam)
    chain = ()
    if objective.aligns:
      lineage = self.lineage(strategy.name, k)
      if previous is None:
        previous = lineage.previous(self.data(k).inputs)
      chain = lineage.chain()
    late = strategy.selects_late and k > 0
    layers = self.config.layers[self._size_version(k, strategy.name)]
    return fit(self.model(k, strategy.name), self.task, self.data(k).inputs,
               self.batches(k, layers), self.key(k), objective=objective,
               previous=previous, chain=chain, lr=self.config.lr,
               label=f"{strategy.name} v{k}",
               checkpointing=self.checkpointing(strategy.name, k),
               mesh=self.mesh,
               epochs=self.config[strategy.epochs if k else "epochs"],
               min_select_epoch=self.config.min_select_epoch if late else 0,
               **kwargs)

  def _train_model(self, strategy: Strategy, k: int, init) -> None:
    """Trains M_k (from `init`, or fresh) on version k's intended task,
    selected on Recall@50."""
    model, inputs = self.model(k, strategy.name), self.data(k).inputs
    result = self._fit(
        strategy, k, init_variables=init,
        evaluate=lambda variables, _: self.recall(
            embed(model, variables, inputs), k),
        select_key="recall@50", eval_every=self.config.eval_every,
        init_key=jax.random.fold_in(self.key(k), 1))
    z = self.embeddings(model, result.variables, k)
    transform = None
    if k:
      transform = (result.transform if result.transform is not None
                   else self._backward_matrix(strategy.backward, k))
    self.save(strategy.name, k, result.variables, z, transform,
              {"best": result.metrics, "best_epoch": result.epoch,
               "history": result.history})

  def _backward_matrix(self, kind: str, k: int) -> np.ndarray:
    """The fixed W_k of strategies that learn none: identity or notrans (the
    first d_{k-1} dims)."""
    if kind == "identity":
      d = self.config.dims[0]
      return np.eye(d, dtype=np.float32)
    return np.eye(self.config.dims[k], self.config.dims[k - 1],
                  dtype=np.float32)

  def _scratch(self, strategy: Strategy, k: int) -> None:
    """A fresh M_k trained with the strategy's objective."""
    self._train_model(strategy, k, init=None)

  def _finetune(self, strategy: Strategy, k: int) -> None:
    """M_{k-1} trained further on version k."""
    self._train_model(strategy, k, init=self.load(strategy.name, k - 1).variables)

  def _fixed(self, strategy: Strategy, k: int) -> None:
    """M_0 applied to version k's graph; its d is every version's."""
    variables = self.load(strategy.name, 0).variables
    z = self.embeddings(self.model(0), variables, k)
    self.save(strategy.name, k, variables, z,
              self._backward_matrix(strategy.backward, k),
              {"best": self.recall(z, k), "best_epoch": 0, "history": []})

  def _posthoc(self, strategy: Strategy, k: int) -> None:
    """B_k trained alone by gradient on nobc's fixed M_k."""

    def learn(base, z, target):
      result = self._fit(
          strategy, k, previous=target, init_variables=base.variables,
          evaluate=lambda _, w: {"mse": _mse(z, target, w, self, k)},
          select_key="mse", lower_is_better=True, eval_every=1,
          init_key=jax.random.fold_in(self.key(k), 2))
      return result.transform, {"alignment_mse": result.metrics["mse"],
                                "alignment_epoch": result.epoch,
                                "alignment_history": result.history}
    self._on_base_model(strategy, k, learn)

  def _closed(self, strategy: Strategy, k: int) -> None:
    """B_k fitted in closed form on nobc's fixed M_k (real nodes only)."""

    def learn(base, z, target):
      del base
      real = np.asarray(self.data(k).inputs.node_mask)
      transform = transforms.fit(strategy.fit, np.asarray(z)[real],
                                 np.asarray(target)[real])
      return transform, {"alignment_mse": _mse(z, target, transform, self, k)}
    self._on_base_model(strategy, k, learn)

  def _on_base_model(self, strategy: Strategy, k: int, learn) -> None:
    """Post-hoc: nobc's M_k with a B_k from `learn(base, z, target)`, which
    returns W_k and its metrics record; z is M_k's embeddings, target
    E_k(M_{k-1}) of nobc."""
    base = self.load(strategy.base, k)
    z = self.embeddings(self.model(k), base.variables, k)
    target = self._alignment_target(strategy.base, k)
    transform, record = learn(base, z, target)
    self.save(strategy.name, k, base.variables, z, transform,
              {"best": base.metrics["best"],
               "best_epoch": base.metrics["best_epoch"],
               "history": base.metrics["history"], **record})


# How M_k (k >= 1) is obtained -> the function that obtains it (`Strategy`).
_KINDS = {"scratch": Experiment._scratch, "finetune": Experiment._finetune,
          "fixed": Experiment._fixed, "posthoc": Experiment._posthoc,
          "closed": Experiment._closed}


def _load_variables(path: Path, template) -> Any:
  """Model variables from msgpack (never pickle), checked leaf by leaf
  against the model's shapes and dtypes.

  Raises:
    ValueError: naming the file and the first leaf that does not fit.
  """
  try:
    variables = flax.serialization.from_bytes(template, path.read_bytes())
  except (ValueError, TypeError, KeyError) as error:
    raise ValueError(f"{path}: not the variables of this model ({error})"
                     ) from None
  expected = jax.tree_util.tree_flatten_with_path(template)[0]
  for (where, want), got in zip(expected, jax.tree.leaves(variables)):
    got = np.asarray(got)
    if got.shape != want.shape or got.dtype != want.dtype:
      raise ValueError(f"{path}: {jax.tree_util.keystr(where)} is "
                       f"{got.dtype}{list(got.shape)}, the model needs "
                       f"{want.dtype}{list(want.shape)}")
  return variables


def _mse(z, target, w, experiment: Experiment, k: int) -> float:
  """Mean of the user MSE and the item MSE of z @ w against the target."""
  users, items = experiment.real_rows(np.asarray(z) @ np.asarray(w), k)
  t_users, t_items = experiment.real_rows(target, k)
  return float((np.mean((users - t_users) ** 2)
                + np.mean((items - t_items) ** 2)) / 2)
