"""One run: every version of every strategy, into a run directory.

An `Experiment` is the strategies' dispatch over two parts it holds: the
versions' data (`versions`, `bcjax.runs.run_data.RunData`: inputs, batches,
models) and the trained versions on disk (`artifacts`,
`bcjax.runs.artifacts.RunArtifacts`: load, save, checkpoints, in the layout
of `bcjax.runs.rundir`). Version 0 is shared: every
strategy's v0 is nobc's (same key, same training). A strategy runs from its
description (`bcjax.runs.strategies`): one function per way of obtaining M_k,
every training through `bcjax.core.training.fit` against the strategy's own
`Lineage`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

import jax
import numpy as np

from bcjax.backward import fits
from bcjax.backward.maps import BackwardMap
from bcjax.core import sharding
from bcjax.core.epoch import adam, embed
from bcjax.core.training import Schedule, fit
from bcjax.data import DynamicGraph
from bcjax.runs.artifacts import RunArtifacts
from bcjax.runs.run_data import RunData
from bcjax.runs.rundir import GRAPH, RunDir
from bcjax.runs.strategies import NOBC, Strategy, get as get_strategy
from bcjax.util import io, keys
from bcjax.util.progress import to_stderr


class Experiment:
  """Trains strategies version by version into `workdir`, resumably.

  Creating one checks the config, prepares the versions' data (`RunData`:
  the padded budget shared by every version, inputs, batches, models) and
  writes `config.json` and the raw ids.

  Attributes:
    versions: the versions' data (`RunData`), whose `config` is the run's
      frozen, validated config.
    artifacts: the trained versions on disk (`RunArtifacts`).
    run_dir: the run folder (`RunDir`); `workdir` its path.
    mesh: the devices training is sharded over, or None for one.

  Args:
    graph: the dataset's canonical graph.
    config: the run config (`bcjax.runs.configs`; fields `times`, `dims`,
      `layers`, `batch_size`, `seed`, ...).
    workdir: the run directory (created if needed).
    join: join a run another process started (its config.json written):
      check the settings and write nothing (`RunDir.write_config`).

  Raises:
    ValueError: `dims` or `layers` do not have one entry per version, an
      unknown model family, more devices than there are, or a `workdir`
      trained with other training settings (`rundir.TRAINING_FIELDS`) or
      on another graph (refused before any file is written).
    DataError: bad `config.times`, or a version without validation
      interactions.
  """

  def __init__(self, graph: DynamicGraph, config, workdir: str | os.PathLike,
               join: bool = False):
    self.versions = RunData(graph, config)
    self.run_dir = RunDir(workdir)
    self.workdir = self.run_dir.root
    self.artifacts = RunArtifacts(self.versions, self.run_dir)
    devices = self.versions.config.devices
    # Several processes always train over a mesh (make_mesh checks it spans
    # all of them): one device each would be N separate trainings.
    self.mesh = (sharding.make_mesh(devices)
                 if devices != 1 or jax.process_count() > 1 else None)
    self.run_dir.write_config(
        {**config.to_dict(), "dataset": graph.name, GRAPH: graph.fingerprint()},
        graph.user_ids, graph.item_ids, join=join)

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
    if versions is None:
      versions = range(self.versions.num_versions)
    count = max(versions, default=-1) + 1
    plan = stages.strategy_stages(stages.SeedRun.of(self), [strategy], count)
    if count:
      workers.run_serial(plan, self.versions.graph,
                         cache=stages.cache_of([self]))

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

  def _alignment_target(self, strategy: str, k: int) -> jax.Array:
    """E_k(M_{k-1}): the previous best model on the current graph."""
    return self.artifacts.lineage(strategy, k).previous(
        self.versions.data(k).inputs)

  def _fit(self, strategy: Strategy, k: int, previous, *, eval_every: int,
           select: str, lower_is_better: bool = False, **kwargs):
    """`training.fit` of version k as `strategy` describes it: its objective
    (the run's lambda next to a task loss), epochs and selection, aligned
    (when the objective aligns) with `previous`, E_k(M_{k-1}), through the
    strategy's own chain W_1..W_{k-1}."""
    versions, config = self.versions, self.versions.config
    objective = strategy.objective
    if objective.train_model:
      objective = dataclasses.replace(objective, lam=config.lam)
    chain = (tuple(self.run_dir.chain(strategy.name, k - 1))
             if objective.aligns else ())
    late = strategy.selects_late and k > 0
    layers = config.layers[self.artifacts.size_version(k, strategy.name)]
    epochs = config[strategy.epochs if k else "epochs"]
    # A first line before the first epoch's, which a large graph delays.
    to_stderr(f"[{strategy.name} v{k}] training: {epochs} epochs of "
              f"{versions.num_batches} batches of {config.batch_size} over "
              f"{versions.num_users_pad + versions.num_items_pad} nodes")
    schedule = Schedule(
        epochs=epochs,
        eval_every=eval_every, select=select, lower_is_better=lower_is_better,
        min_select_epoch=config.min_select_epoch if late else 0)
    return fit(self.artifacts.strategy_model(k, strategy.name),
               versions.training_task, versions.data(k).inputs,
               versions.batches(k, layers), versions.key(k),
               objective=objective, previous=previous, chain=chain,
               # E_k(M_{k-1}) of every node, as the paper aligns it: a
               # LightGCN node with no neighbour known to M_{k-1} embeds
               # to zero there, and is aligned to it (method §6).
               known=True if objective.aligns else None,
               schedule=schedule, tx=adam(config.lr),
               label=f"{strategy.name} v{k}",
               checkpointing=self.artifacts.checkpointing(strategy.name, k),
               mesh=self.mesh, **kwargs)

  def _train_model(self, strategy: Strategy, k: int, init) -> None:
    """Trains M_k (from `init`, or fresh) on version k's intended task,
    selected on Recall@50."""
    model = self.artifacts.strategy_model(k, strategy.name)
    inputs = self.versions.data(k).inputs
    target = (self._alignment_target(strategy.name, k)
              if strategy.objective.aligns else None)

    def evaluate(variables, w):
      z = embed(model, variables, inputs)
      out = self.versions.recall(z, k)
      if w is not None:  # The alignment term's progress, for the curves.
        out["alignment_mse"] = _mse(np.asarray(z) @ np.asarray(w), target,
                                    self, k)
      return out

    result = self._fit(strategy, k, previous=target, init_variables=init,
                       evaluate=evaluate, select="recall@50",
                       eval_every=self.versions.config.eval_every)
    z = self.versions.embeddings(model, result.variables, k)
    backward = None
    if k:
      backward = BackwardMap.from_matrix(
          result.transform if result.transform is not None
          else self._backward_matrix(strategy.backward, k))
    self.artifacts.save(strategy.name, k, result.variables, z, backward,
                        {"best": result.metrics, "best_epoch": result.epoch,
                         "history": result.history})

  def _backward_matrix(self, kind: str, k: int) -> np.ndarray:
    """The fixed W_k of strategies that learn none: identity or notrans (the
    first d_{k-1} dims)."""
    dims = self.versions.config.dims
    if kind == "identity":
      return np.eye(dims[0], dtype=np.float32)
    return np.eye(dims[k], dims[k - 1], dtype=np.float32)

  def _scratch(self, strategy: Strategy, k: int) -> None:
    """A fresh M_k trained with the strategy's objective."""
    self._train_model(strategy, k, init=None)

  def _finetune(self, strategy: Strategy, k: int) -> None:
    """M_{k-1} trained further on version k."""
    self._train_model(
        strategy, k, init=self.artifacts.load(strategy.name, k - 1).variables)

  def _fixed(self, strategy: Strategy, k: int) -> None:
    """M_0 applied to version k's graph; its d is every version's."""
    variables = self.artifacts.load(strategy.name, 0).variables
    z = self.versions.embeddings(self.versions.model(0), variables, k)
    self.artifacts.save(
        strategy.name, k, variables, z,
        BackwardMap.from_matrix(self._backward_matrix(strategy.backward, k)),
        {"best": self.versions.recall(z, k), "best_epoch": 0, "history": []})

  def _posthoc(self, strategy: Strategy, k: int) -> None:
    """B_k trained alone by gradient on nobc's fixed M_k."""

    def learn(base, z, target):
      result = self._fit(
          strategy, k, previous=target, init_variables=base.variables,
          evaluate=lambda _, w: {
              "mse": _mse(np.asarray(z) @ np.asarray(w), target, self, k)},
          select="mse", lower_is_better=True,
          eval_every=self.versions.config.eval_every)
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
      real = np.asarray(self.versions.data(k).inputs.node_mask)
      backward = fits.fit(strategy.fit, np.asarray(z)[real],
                          np.asarray(target)[real],
                          keys.derive(self.versions.key(k), "adapter"))
      return backward, {"alignment_mse": _mse(backward(z), target, self, k)}
    self._on_base_model(strategy, k, learn)

  def _on_base_model(self, strategy: Strategy, k: int, learn) -> None:
    """Post-hoc: nobc's M_k with a B_k from `learn(base, z, target)`, which
    returns B_k and its metrics record; z is M_k's embeddings, target
    E_k(M_{k-1}) of nobc."""
    base = self.artifacts.load(strategy.base, k)
    z = self.versions.embeddings(self.versions.model(k), base.variables, k)
    target = self._alignment_target(strategy.base, k)
    backward, record = learn(base, z, target)
    self.artifacts.save(strategy.name, k, base.variables, z, backward,
                        {"best": base.metrics["best"],
                         "best_epoch": base.metrics["best_epoch"],
                         "history": base.metrics["history"], **record})


# How M_k (k >= 1) is obtained -> the function that obtains it (`Strategy`).
_KINDS = {"scratch": Experiment._scratch, "finetune": Experiment._finetune,
          "fixed": Experiment._fixed, "posthoc": Experiment._posthoc,
          "closed": Experiment._closed}


def _mse(mapped, target, experiment: Experiment, k: int) -> float:
  """Mean of the user MSE and the item MSE of B_k(z) against the target."""
  users, items = experiment.versions.real_rows(mapped, k)
  t_users, t_items = experiment.versions.real_rows(target, k)
  return float((np.mean((users - t_users) ** 2)
                + np.mean((items - t_items) ** 2)) / 2)
