"""A run's trained versions on disk: load, save and checkpoint them.

`RunArtifacts` joins the versions' data (`bcjax.runs.run_data.RunData`: the
models and the padded rows) with the run folder (`bcjax.runs.rundir.RunDir`:
its layout and checked records). It reads a completed (strategy, version)
back as `Artifacts`, checked against the model that trained it, and writes
one, with its BC embeddings, metrics.json last. It trains nothing: the
strategies' dispatch is `bcjax.paper.experiment`'s.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np

from bcjax.backward.chains import blocked_map, chain
from bcjax.backward.maps import BackwardMap
from bcjax.models.interface import EmbeddingModel
from bcjax.release.lineage import Lineage
from bcjax.runs.run_data import RunData
from bcjax.runs.rundir import CHECKPOINT, VARIABLES, RunDir
from bcjax.runs.strategies import get as get_strategy
from bcjax.util.checkpointing import Checkpointing


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


class RunArtifacts:
  """The trained versions of one run folder.

  Args:
    versions: the run's versions' data (models, padded rows, config).
    run_dir: the run folder.
  """

  def __init__(self, versions: RunData, run_dir: RunDir):
    self.versions = versions
    self.run_dir = run_dir

  def size_version(self, k: int, strategy: str) -> int:
    """The version whose (d, L) version k of `strategy` has: version 0's
    for strategies that keep it (`Strategy.keeps_first_size`)."""
    return 0 if get_strategy(strategy).keeps_first_size else k

  def strategy_model(self, k: int, strategy: str) -> EmbeddingModel:
    """Version k's model as `strategy` trains it (`size_version`)."""
    return self.versions.model(k, self.size_version(k, strategy))

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
    inputs = self.versions.data(k).inputs  # Built outside the trace below.
    template = jax.eval_shape(lambda: model.init(jax.random.key(0), inputs))
    variables = load_variables(self.run_dir.variables(strategy, k),
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
        B_1..B_k (`bcjax.backward.chains.chain`, over fixed blocks).
      record: metrics and history, saved in metrics.json.
    """
    users, items = self.versions.real_rows(z, k)
    arrays, maps = {"users": users, "items": items}, []
    if k:
      files, fields = self.run_dir.backward_files(backward)
      arrays.update(files)
      record = {**record, **fields}
      maps = self.run_dir.backward_maps(strategy, k - 1) + [backward]
    to_zero = chain(maps, k, 0)  # Composed once, for users and items.
    arrays.update(bc_users=blocked_map(users, to_zero),
                  bc_items=blocked_map(items, to_zero))
    size = self.size_version(k, strategy)
    config = self.versions.config
    self.run_dir.save_version(
        strategy, k, flax.serialization.to_bytes(jax.device_get(variables)),
        arrays, {"strategy": strategy, "version": k,
                 "dim": config.dims[size], "layers": config.layers[size],
                 **record})

  def checkpointing(self, strategy: str, k: int) -> Checkpointing | None:
    """Where version k of `strategy` checkpoints its training: every
    `config.checkpoint_every` epochs; None when that is below 1."""
    every = self.versions.config.checkpoint_every
    if every < 1:
      return None
    return Checkpointing(self.run_dir.path(strategy, k, CHECKPOINT), every)

  def lineage(self, strategy: str, k: int) -> Lineage:
    """Versions 0..k-1 of a strategy as the `Lineage` version k trains
    against: M_{k-1} (its selected variables) and W_1..W_{k-1}."""
    return Lineage((self.strategy_model(k - 1, strategy),
                    self.load(strategy, k - 1).variables),
                   self.run_dir.chain(strategy, k - 1))


def load_variables(data: bytes, path: Path, template) -> Any:
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
