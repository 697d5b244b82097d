"""One run: every version of every strategy, into a run directory.

The directory's layout is `bcjax.runs.rundir`'s; the versions' data (inputs,
batches, models) is `bcjax.runs.run_data`'s. Version 0 is shared: every
strategy's v0 is nobc's (same key, same training). A strategy runs from its
description (`bcjax.runs.strategies`): one function per way of obtaining M_k,
every training through `bcjax.core.training.fit` against the strategy's own
`Lineage`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
import shutil
from typing import Any

import flax.serialization
import jax
import numpy as np

from bcjax.backward import fits
from bcjax.backward.chains import apply_chain
from bcjax.backward.maps import BackwardMap
from bcjax.core import sharding
from bcjax.core.epoch import adam, embed
from bcjax.core.training import Checkpointing, Schedule, fit
from bcjax.data import DynamicGraph
from bcjax.models.interface import EmbeddingModel
from bcjax.release.lineage import Lineage
from bcjax.runs.run_data import RunData
from bcjax.runs.rundir import CHECKPOINT, GRAPH, VARIABLES, RunDir
from bcjax.runs.strategies import NOBC, Strategy, get as get_strategy
from bcjax.util import io, keys
from bcjax.util.progress import to_stderr


@dataclasses.dataclass
class Artifacts:
  """One completed (strategy, version): `transform` is W_k of a linear
  B_k (None for k = 0 or a non-linear map), `backward` B_k itself."""
  variables: Any
  transform: np.ndarray | None
  users: np.ndarray
  items: np.ndarray
  metrics: dict
  backward: BackwardMap | None = None


class Experiment(RunData):
  """Trains strategies version by version into `workdir`, resumably.

  Creating one checks the config, prepares the versions' data (`RunData`:
  the padded budget shared by every version, inputs, batches, models) and
  writes `config.json` and the raw ids.

  Args:
    graph: the dataset's canonical graph.
    config: the run config (`bcjax.runs.configs`; fields `times`, `dims`,
      `layers`, `batch_size`, `seed`, ...).
    workdir: the run directory (created if needed).

  Raises:
    ValueError: `dims` or `layers` do not have one entry per version, an
      unknown model family, more devices than there are, or a `workdir`
      trained with other training settings (`rundir.TRAINING_FIELDS`) or
      on another graph (refused before any file is written).
    DataError: bad `config.times`, or a version without validation
      interactions.
  """

  def __init__(self, graph: DynamicGraph, config, workdir: str | os.PathLike):
    super().__init__(graph, config)
    self.run_dir = RunDir(workdir)
    self.workdir = self.run_dir.root
    devices = int(config.get("devices", 1))
    # Several processes always train over a mesh (make_mesh checks it spans
    # all of them): one device each would be N separate trainings.
    self.mesh = (sharding.make_mesh(devices)
                 if devices != 1 or jax.process_count() > 1 else None)
    self.run_dir.write_config(
        {**config.to_dict(), "dataset": graph.name, GRAPH: graph.fingerprint()},
        graph.user_ids, graph.item_ids)

  def size_version(self, k: int, strategy: str) -> int:
    """The version whose (d, L) version k of `strategy` has: version 0's
    for strategies that keep it (`Strategy.keeps_first_size`)."""
    return 0 if get_strategy(strategy).keeps_first_size else k

  def strategy_model(self, k: int, strategy: str) -> EmbeddingModel:
    """Version k's model as `strategy` trains it (`size_version`)."""
    return self.model(k, self.size_version(k, strategy))

  # Run directory.

  def load(self, strategy: str, k: int) -> Artifacts:
    """Reads a completed version's artifacts, checked against its model.

    Args:
      strategy: the strategy's name.
      k: the version.

    Returns:
      The `Artifacts`: variables, W_k (None for k = 0 or a non-linear
      B_k), users `[U1, d_k]`, items `[I1, d_k]`, the metrics record and
      B_k.

    Raises:
      ValueError: variables that do not fit the model, or a metrics.json
        that is not valid JSON (each naming the file).
    """
    model = self.strategy_model(k, strategy)
    inputs = self.data(k).inputs  # Built outside the trace below.
    template = jax.eval_shape(lambda: model.init(jax.random.key(0), inputs))
    variables = _load_variables(self.run_dir.variables(strategy, k),
                                self.run_dir.path(strategy, k, VARIABLES),
                                template)
    backward = self.run_dir.backward_map(strategy, k) if k else None
    return Artifacts(variables, None if backward is None else backward.matrix,
                     *self.run_dir.tables(strategy, k),
                     self.run_dir.metrics(strategy, k), backward)

  def save(self, strategy: str, k: int, variables, z: jax.Array,
           backward: BackwardMap | None, record: dict) -> None:
    """Writes one version's artifacts; metrics.json last.

    Also writes the BC embeddings (mapped into version 0's space) and
    removes the version's checkpoint.

    Args:
      strategy: the strategy's name.
      k: the version.
      variables: the selected model's variables.
      z: `[num_users_pad + num_items_pad, d_k]` its embeddings.
      backward: B_k (k >= 1; ignored for k = 0); the BC embedding applies
        B_1..B_k (`bcjax.backward.chains.apply_chain`).
      record: metrics and history, saved in metrics.json.
    """
    users, items = self.real_rows(z, k)
    arrays, maps = {"users": users, "items": items}, []
    if k:
      files, fields = self.run_dir.backward_files(backward)
      arrays.update(files)
      record = {**record, **fields}
      maps = self.run_dir.backward_maps(strategy, k - 1) + [backward]
    arrays.update(bc_users=apply_chain(maps, users, k, 0),
                  bc_items=apply_chain(maps, items, k, 0))
    size = self.size_version(k, strategy)
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

  def run(self, strategy: str, versions=None) -> None:
    """Trains the given versions (default all) of a strategy, skipping those
    whose artifacts are complete.

    Earlier versions, version 0 (nobc's) and the base strategy of a
    post-hoc one are trained first when missing: the main job's stages for
    them (`bcjax.paper.stages`), run in this process.

    Args:
      strategy: the strategy's name (`bcjax.runs.strategies`).
      versions: the versions to train; None for all.

    Raises:
      ValueError: an unknown strategy.
      FloatingPointError: a training diverges (see `training.fit`).
    """
    # bcjax.paper.stages imports this module.
    from bcjax.paper import stages, workers
    versions = range(self.num_versions) if versions is None else versions
    count = max(versions, default=-1) + 1
    plan = stages.strategy_stages(stages.SeedRun.of(self), [strategy], count)
    if count:
      workers.run_serial(plan, self.graph, cache=stages.cache_of([self]))

  def run_version(self, strategy: str, k: int) -> None:
    """Trains version k of a strategy, whose inputs are complete: its
    earlier versions, version 0 of nobc and, for a post-hoc strategy, the
    base strategy's versions 0..k (`bcjax.paper.stages` orders them)."""
    strategy = get_strategy(strategy)
    if k > 0:
      return _KINDS[strategy.model](self, strategy, k)
    if strategy.name == NOBC:
      return self._train_model(strategy, 0, init=None)
    # Copied whole, then renamed: a crash never leaves a partial v0.
    io.build_dir(self.run_dir.version_dir(strategy.name, 0),
                 lambda staging: shutil.copytree(
                     self.run_dir.version_dir(NOBC, 0), staging))

  def lineage(self, strategy: str, k: int) -> Lineage:
    """Versions 0..k-1 of a strategy as the `Lineage` version k trains
    against: M_{k-1} (its selected variables) and W_1..W_{k-1}."""
    return Lineage((self.strategy_model(k - 1, strategy),
                    self.load(strategy, k - 1).variables),
                   self.run_dir.chain(strategy, k - 1))

  def _alignment_target(self, strategy: str, k: int) -> jax.Array:
    """E_k(M_{k-1}): the previous best model on the current graph."""
    return self.lineage(strategy, k).previous(self.data(k).inputs)

  def _fit(self, strategy: Strategy, k: int, previous, *, eval_every: int,
           select: str, lower_is_better: bool = False, **kwargs):
    """`training.fit` of version k as `strategy` describes it: its objective
    (the run's lambda next to a task loss), epochs and selection, aligned
    (when the objective aligns) with `previous`, E_k(M_{k-1}), through the
    strategy's own chain W_1..W_{k-1}."""
    objective = strategy.objective
    if objective.train_model:
      objective = dataclasses.replace(objective, lam=self.config.lam)
    chain = (tuple(self.run_dir.chain(strategy.name, k - 1))
             if objective.aligns else ())
    late = strategy.selects_late and k > 0
    layers = self.config.layers[self.size_version(k, strategy.name)]
    epochs = self.config[strategy.epochs if k else "epochs"]
    # A first line before the first epoch's, which a large graph delays.
    to_stderr(f"[{strategy.name} v{k}] training: {epochs} epochs of "
              f"{self.num_batches} batches of {self.config.batch_size} over "
              f"{self.num_users_pad + self.num_items_pad} nodes")
    schedule = Schedule(
        epochs=epochs,
        eval_every=eval_every, select=select, lower_is_better=lower_is_better,
        min_select_epoch=self.config.min_select_epoch if late else 0)
    return fit(self.strategy_model(k, strategy.name), self.training_task,
               self.data(k).inputs, self.batches(k, layers), self.key(k),
               objective=objective, previous=previous, chain=chain,
               # E_k(M_{k-1}) of every node, as the paper aligns it: a
               # LightGCN node with no neighbour known to M_{k-1} embeds
               # to zero there, and is aligned to it (method §6).
               known=True if objective.aligns else None,
               schedule=schedule, tx=adam(self.config.lr),
               label=f"{strategy.name} v{k}",
               checkpointing=self.checkpointing(strategy.name, k),
               mesh=self.mesh, **kwargs)

  def _train_model(self, strategy: Strategy, k: int, init) -> None:
    """Trains M_k (from `init`, or fresh) on version k's intended task,
    selected on Recall@50."""
    model, inputs = self.strategy_model(k, strategy.name), self.data(k).inputs
    target = (self._alignment_target(strategy.name, k)
              if strategy.objective.aligns else None)

    def evaluate(variables, w):
      z = embed(model, variables, inputs)
      out = self.recall(z, k)
      if w is not None:  # The alignment term's progress, for the curves.
        out["alignment_mse"] = _mse(np.asarray(z) @ np.asarray(w), target,
                                    self, k)
      return out

    result = self._fit(strategy, k, previous=target, init_variables=init,
                       evaluate=evaluate, select="recall@50",
                       eval_every=self.config.eval_every)
    z = self.embeddings(model, result.variables, k)
    backward = None
    if k:
      backward = BackwardMap.from_matrix(
          result.transform if result.transform is not None
          else self._backward_matrix(strategy.backward, k))
    self.save(strategy.name, k, result.variables, z, backward,
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
              BackwardMap.from_matrix(
                  self._backward_matrix(strategy.backward, k)),
              {"best": self.recall(z, k), "best_epoch": 0, "history": []})

  def _posthoc(self, strategy: Strategy, k: int) -> None:
    """B_k trained alone by gradient on nobc's fixed M_k."""

    def learn(base, z, target):
      result = self._fit(
          strategy, k, previous=target, init_variables=base.variables,
          evaluate=lambda _, w: {
              "mse": _mse(np.asarray(z) @ np.asarray(w), target, self, k)},
          select="mse", lower_is_better=True,
          eval_every=self.config.eval_every)
      return BackwardMap.from_matrix(result.transform), {
          "alignment_mse": result.metrics["mse"],
                                "alignment_epoch": result.epoch,
                                "alignment_history": result.history}
    self._on_base_model(strategy, k, learn)

  def _closed(self, strategy: Strategy, k: int) -> None:
    """B_k fitted post hoc on nobc's fixed M_k (real nodes only): a
    closed-form matrix or an adapter (`bcjax.backward.fits`)."""

    def learn(base, z, target):
      del base
      real = np.asarray(self.data(k).inputs.node_mask)
      backward = fits.fit(strategy.fit, np.asarray(z)[real],
                          np.asarray(target)[real],
                          keys.derive(self.key(k), "adapter"))
      return backward, {"alignment_mse": _mse(backward(z), target, self, k)}
    self._on_base_model(strategy, k, learn)

  def _on_base_model(self, strategy: Strategy, k: int, learn) -> None:
    """Post-hoc: nobc's M_k with a B_k from `learn(base, z, target)`, which
    returns B_k and its metrics record; z is M_k's embeddings, target
    E_k(M_{k-1}) of nobc."""
    base = self.load(strategy.base, k)
    z = self.embeddings(self.model(k), base.variables, k)
    target = self._alignment_target(strategy.base, k)
    backward, record = learn(base, z, target)
    self.save(strategy.name, k, base.variables, z, backward,
              {"best": base.metrics["best"],
               "best_epoch": base.metrics["best_epoch"],
               "history": base.metrics["history"], **record})


# How M_k (k >= 1) is obtained -> the function that obtains it (`Strategy`).
_KINDS = {"scratch": Experiment._scratch, "finetune": Experiment._finetune,
          "fixed": Experiment._fixed, "posthoc": Experiment._posthoc,
          "closed": Experiment._closed}


def _load_variables(data: bytes, path: Path, template) -> Any:
  """Model variables from the msgpack `data` of the file `path` (never
  pickle), checked leaf by leaf against the model's shapes and dtypes.

  Raises:
    ValueError: naming the file and the first leaf that does not fit.
  """
  try:
    variables = flax.serialization.from_bytes(template, data)
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


def _mse(mapped, target, experiment: Experiment, k: int) -> float:
  """Mean of the user MSE and the item MSE of B_k(z) against the target."""
  users, items = experiment.real_rows(mapped, k)
  t_users, t_items = experiment.real_rows(target, k)
  return float((np.mean((users - t_users) ** 2)
                + np.mean((items - t_items) ** 2)) / 2)
