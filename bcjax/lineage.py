"""A version lineage: what training version k backward compatibly needs.

Version k's BC-Aligner training reads two things from the versions before
it: the previous model applied to version k's inputs, E_k(M_{k-1}) (the
alignment target), and the chain W_1 ... W_{k-1} of earlier backward
matrices (the multi-step loss). `Lineage` keeps exactly that state as
versions are added, and publishes each version to an embedding store:

  lineage = bcjax.Lineage()
  for k in range(num_versions):
    result = lineage.fit(model_k, task, inputs_k, batches_k, key_k,
                         schedule=bcjax.Schedule(epochs=30))
    users, items = ...                         # rows of lineage.embed(inputs_k)
    lineage.publish("store/", users, items, user_ids_k, item_ids_k)

Any model of the `bcjax.models.interface` protocol works; `Experiment` uses
the same class for the strategies of a run.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import numpy as np

from bcjax import transforms
from bcjax.models.interface import EmbeddingModel, Variables
from bcjax.store import EmbeddingStore, StoreError
from bcjax.training import BC_ALIGNER, Objective, Result, embed, fit


class Lineage:
  """The state a sequence of backward compatible versions carries forward.

  Args:
    last: `(model, variables)` of the newest version, or None for an empty
      lineage (version 0 comes next).
    backward: `[W_1, ..., W_K]` of the versions so far, W_j `[d_j, d_{j-1}]`
      (one fewer than the versions).

  Raises:
    ValueError: `backward` without a `last` model.
  """

  def __init__(self, last: tuple[EmbeddingModel, Variables] | None = None,
               backward: Sequence[Any] = ()):
    if last is None and len(backward):
      raise ValueError("Lineage: backward matrices without a newest model")
    self.last = last
    self.backward = [np.asarray(w) for w in backward]
    self.store: EmbeddingStore | None = None

  @property
  def num_versions(self) -> int:
    """The versions added so far; the next one is version `num_versions`."""
    return 0 if self.last is None else len(self.backward) + 1

  def previous(self, inputs) -> jax.Array | None:
    """E_k(M_{k-1}): the newest model applied to the next version's inputs
    (None before version 0)."""
    return None if self.last is None else embed(*self.last, inputs)

  def embed(self, inputs) -> jax.Array:
    """The newest model's embeddings of `inputs` (evaluation mode)."""
    if self.last is None:
      raise ValueError("Lineage.embed: no version yet")
    return embed(*self.last, inputs)

  def fit(self, model: EmbeddingModel, task, inputs, batches, key: jax.Array,
          *, objective: Objective | None = None, **kwargs) -> Result:
    """Trains the next version with `training.fit` and adds it.

    Args:
      model, task, inputs, batches, key: as `training.fit`.
      objective: default the task alone for version 0 and BC-Aligner after;
        any objective that aligns gets the lineage's target and chain.
      **kwargs: the rest of `training.fit`'s arguments (schedule, evaluate,
        tx, ...); not `previous` or `chain`, which are the
        lineage's.

    Returns:
      The version's `Result` (its W_k is also kept here).

    Raises:
      ValueError: at version k >= 1 an objective that learns no backward
        transformation (nothing would map the version back), or a
        `previous` / `chain` argument.
    """
    k = self.num_versions
    if objective is None:
      objective = BC_ALIGNER if k else Objective()
    for name in ("previous", "chain"):
      if name in kwargs:
        raise ValueError(f"Lineage.fit: `{name}` is the lineage's own; pass "
                         "it to training.fit directly to override it")
    if k and not objective.aligns:
      raise ValueError(f"version {k}: objective {objective} learns no "
                       "backward transformation; use add() with a fixed W_k")
    aligned = {}
    if objective.aligns:
      aligned = {"previous": self.previous(inputs), "chain": self.chain()}
    result = fit(model, task, inputs, batches, key, objective=objective,
                 **aligned, **kwargs)
    self.add(model, result.variables, result.transform if k else None)
    return result

  def chain(self) -> tuple[np.ndarray, ...]:
    """`(W_1, ..., W_K)`: what the next version's multi-step loss reads."""
    return tuple(self.backward)

  def add(self, model: EmbeddingModel, variables: Variables,
          transform: Any | None = None) -> None:
    """Adds a version trained elsewhere: its model, variables and W_k.

    Raises:
      ValueError: a transform at version 0, none at version k >= 1, or a W_k
        that is not `[d_k, d_{k-1}]` (the models' declared `dim`s).
    """
    k = self.num_versions
    if (transform is None) != (k == 0):
      raise ValueError(f"version {k}: "
                       + ("version 0 has no backward transformation" if k == 0
                          else "needs W_k, its backward transformation"))
    if k:
      transform = np.asarray(transform)
      expected = (model.dim, self.last[0].dim)  # [d_k, d_{k-1}]
      if transform.shape != expected:
        raise ValueError(f"version {k}: W_{k} has shape {transform.shape}, "
                         f"expected {list(expected)} ([d_{k}, d_{k - 1}])")
      self.backward.append(transform)
    self.last = (model, variables)

  def to_version_zero(self) -> np.ndarray:
    """M_{K->0}: maps the newest version's embeddings into version 0's."""
    k = self.num_versions - 1
    if k < 0:
      raise ValueError("Lineage.to_version_zero: no version yet")
    if k == 0:
      raise ValueError("Lineage.to_version_zero: version 0 is its own space")
    return transforms.chain_matrix(self.backward, k, 0)

  def publish(self, path: str | os.PathLike, users: Any, items: Any,
              user_ids: Any, item_ids: Any, dataset: str = "",
              strategy: str = "", replace: bool = False) -> EmbeddingStore:
    """Publishes the newest version: creates the store at `path` for version
    0, appends with W_k after (`EmbeddingStore`).

    Args:
      path: the store directory (used for version 0).
      users, items: the newest version's `[num_users, d]`, `[num_items, d]`.
      user_ids, item_ids: their raw ids (the stored ids must be a prefix).
      dataset, strategy: recorded in the manifest at version 0.
      replace: at version 0, replace a store already at `path`.

    Returns:
      The open store.

    Raises:
      StoreError: see `EmbeddingStore.create` and `append_version`; also a
        version published twice or out of order.
    """
    k = self.num_versions - 1
    if k == 0:
      self.store = EmbeddingStore.create(path, users, items, user_ids,
                                         item_ids, dataset=dataset,
                                         strategy=strategy, replace=replace)
      return self.store
    if self.store is None:
      self.store = EmbeddingStore.open(path)
    stored = self.store.latest_version
    if stored != k - 1:
      raise StoreError(f"version {k}: the store at {self.store.path} holds "
                       f"versions 0..{stored}; publish every version in turn")
    self.store.append_version(users, items, self.backward[-1], user_ids,
                              item_ids)
    return self.store
