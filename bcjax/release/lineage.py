"""A version lineage: what training version k backward compatibly needs.

Version k's BC-Aligner training reads two things from the versions before
it: the previous model applied to version k's inputs, E_k(M_{k-1}) (the
alignment target), and the chain W_1 ... W_{k-1} of earlier backward
matrices (the multi-step loss). `Lineage` keeps exactly that state as
versions are added, and publishes each version to an embedding store::

  lineage = bcjax.Lineage()
  for k in range(num_versions):
    result = lineage.fit(model_k, task, inputs_k, batches_k, key_k,
                         schedule=bcjax.Schedule(epochs=30))
    users, items = bcjax.split_nodes(lineage.embed(inputs_k),
                                     (num_users_k, num_items_k))
    lineage.publish("store/", users, items, user_ids_k, item_ids_k)
    lineage.save("lineage/")   # a later process: Lineage.load(path, model)

Any model of the `bcjax.models.interface` protocol works; `Experiment` uses
the same class for the strategies of a run.

Nodes new in version k (users and items that arrived since version k-1)
have no embedding in version k-1, and there are three ways to treat them::

  inductive   the previous model applied to version k's inputs embeds them
              itself (PinSAGE from attributes, LightGCN by propagation, a
              two-tower model from features): the default, the paper's
              E_k(M_{k-1});
  left out    a transductive model (a learned row per node) cannot:
              `fit(..., previous_ids=ids)` maps each node of version k to
              its row in version k-1 (-1 for a new node;
              `bcjax.previous_ids` builds it from node counts or raw ids),
              and the alignment term covers only the nodes that had one;
  folded in   `fit(..., previous_ids=ids, neighbours=(src, dst))` also
              gives each new node the mean previous embedding of its known
              neighbours (`fill_from_neighbours`), and aligns it there.

Aligning new nodes to zero rows (what padding the previous embeddings with
zeros does) pulls them to zero and ruins them for every consumer;
`bcjax.fit` refuses all-zero target rows unless told to align them.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import numpy as np

from bcjax.backward import chains
from bcjax.core import checks
from bcjax.core.epoch import BC_ALIGNER, Objective, embed
from bcjax.core.training import Result, fit
from bcjax.models.interface import EmbeddingModel, Variables
from bcjax.release import saving
from bcjax.store import EmbeddingStore, StoreError

# The fix for a previous model that cannot embed the new version's nodes.
_TRANSDUCTIVE = ("a model with a learned row per node (transductive) knows "
                 "only its own version's nodes: pass `previous_ids`, each "
                 "node's row in the previous version or -1 if new "
                 "(bcjax.previous_ids builds it from the node counts or raw "
                 "ids)")


class Lineage:
  """The state a sequence of backward compatible versions carries forward.

  Args:
    last: `(model, variables)` of the newest version, or None for an empty
      lineage (version 0 comes next).
    backward: `[W_1, ..., W_K]` of the versions so far, W_j `[d_j, d_{j-1}]`
      (one fewer than the versions).
    last_inputs: the newest version's own inputs (what `previous_ids`
      reads its embeddings from); None when unknown.

  Raises:
    ValueError: `backward` without a `last` model.
  """

  def __init__(self, last: tuple[EmbeddingModel, Variables] | None = None,
               backward: Sequence[Any] = (), last_inputs: Any = None):
    if last is None and len(backward):
      raise ValueError("Lineage: backward matrices without a newest model")
    self.last = last
    self.last_inputs = last_inputs
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

  def target(self, inputs, previous_ids: Any = None,
             neighbours: tuple[Any, Any] | None = None
             ) -> tuple[jax.Array, np.ndarray | None]:
    """The next version's alignment target and the nodes it covers.

    Args:
      inputs: the next version's inputs.
      previous_ids: None: the newest model applied to `inputs` (inductive).
        Else `[num_nodes]` ints, each node's row in the newest version's
        own embeddings, -1 for a node it never saw (transductive models).
      neighbours: with `previous_ids`, `(src, dst)` node-id pairs of the
        next version's graph: new nodes are folded in from them
        (`fill_from_neighbours`).

    Returns:
      `(previous [num_nodes, d], known)`: `known` is None (every node) or
      the `[num_nodes]` bool mask of the nodes `previous` covers.

    Raises:
      ValueError: no version yet, `neighbours` without `previous_ids`, ids
        out of range, `previous_ids` without the newest inputs, or (without
        `previous_ids`) a newest model that cannot embed `inputs`.
    """
    k = self.num_versions
    if self.last is None:
      raise ValueError("Lineage.target: no version yet")
    if previous_ids is None:
      if neighbours is not None:
        raise ValueError(f"version {k}: `neighbours` folds in the nodes that "
                         "`previous_ids` marks new; pass both")
      model, variables = self.last
      try:  # Abstractly: a transductive Flax model fails on the new count.
        checks.embedding_rows(f"version {k - 1}", model, inputs, variables)
      except Exception as error:  # The model's own error, chained.
        raise ValueError(
            f"version {k}: version {k - 1}'s model cannot embed version "
            f"{k}'s inputs ({type(error).__name__}); {_TRANSDUCTIVE}"
        ) from error
      return self.previous(inputs), None
    if self.last_inputs is None:
      raise ValueError(f"version {k}: `previous_ids` reads version {k - 1}'s "
                       "own embeddings, but the lineage has no inputs of it "
                       "(Lineage(..., last_inputs=) or add(..., inputs=))")
    old = np.asarray(embed(*self.last, self.last_inputs))
    ids = np.asarray(previous_ids)
    if (ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer)
        or (ids.size and (ids.min() < -1 or ids.max() >= len(old)))):
      raise ValueError(
          f"version {k}: `previous_ids` must be a 1-D int array of rows of "
          f"version {k - 1}'s {len(old)} embeddings (-1: a new node); got "
          f"{ids.dtype} {list(ids.shape)}"
          + (f" with values {ids.min()}..{ids.max()}" if ids.size else ""))
    known = ids >= 0
    previous = np.where(known[:, None], old[np.maximum(ids, 0)], 0.0)
    if neighbours is not None:
      previous, known = fill_from_neighbours(previous, known, neighbours)
    return previous.astype(old.dtype), known

  def embed(self, inputs) -> jax.Array:
    """The newest model's embeddings of `inputs` (evaluation mode)."""
    if self.last is None:
      raise ValueError("Lineage.embed: no version yet")
    return embed(*self.last, inputs)

  def fit(self, model: EmbeddingModel, task, inputs, batches, key: jax.Array,
          *, objective: Objective | None = None, previous_ids: Any = None,
          neighbours: tuple[Any, Any] | None = None, **kwargs) -> Result:
    """Trains the next version with `training.fit` and adds it.

    Args:
      model, task, inputs, batches, key: as `training.fit`.
      objective: default the task alone for version 0 and BC-Aligner after;
        any objective that aligns gets the lineage's target and chain.
      previous_ids, neighbours: how nodes new in this version are treated
        (`target`; the module docstring): default, the previous model
        embeds them.
      **kwargs: the rest of `training.fit`'s arguments (schedule, evaluate,
        tx, label (default "version k"), ...); not `previous`, `known` or
        `chain`, which are the lineage's.

    Returns:
      The version's `Result` (its W_k is also kept here).

    Raises:
      ValueError: at version k >= 1 an objective that learns no backward
        transformation (nothing would map the version back); a `previous` /
        `chain` argument; `previous_ids` at version 0, or not one per node
        of this version; without `previous_ids`, a previous model that
        cannot embed this version's nodes (one with a row per node).
    """
    k = self.num_versions
    if objective is None:
      objective = BC_ALIGNER if k else Objective()
    for name in ("previous", "known", "chain"):
      if name in kwargs:
        raise ValueError(f"Lineage.fit: `{name}` is the lineage's own; pass "
                         "it to training.fit directly to override it")
    if k and not objective.aligns:
      raise ValueError(f"version {k}: objective {objective} learns no "
                       "backward transformation; use add() with a fixed W_k")
    if not objective.aligns and (previous_ids is not None
                                 or neighbours is not None):
      raise ValueError(f"version {k}: `previous_ids` and `neighbours` shape "
                       "the alignment target, and this version aligns to "
                       "nothing (version 0: pass None)")
    kwargs.setdefault("label", f"version {k}")
    aligned = {}
    if objective.aligns:
      num_nodes = checks.embedding_rows(kwargs["label"], model, inputs,
                                        kwargs.get("init_variables"))
      previous, known = self.target(inputs, previous_ids, neighbours)
      if len(previous) != num_nodes and previous_ids is not None:
        raise ValueError(
            f"version {k}: `previous_ids` has {len(previous)} entries, but "
            f"version {k}'s model embeds {num_nodes} nodes; give one per node "
            f"(its row in version {k - 1}, -1 if new): bcjax.previous_ids "
            "builds it from the node counts or raw ids")
      if len(previous) != num_nodes:
        raise ValueError(
            f"version {k}: version {k - 1}'s model embeds {len(previous)} "
            f"nodes of version {k}'s inputs, but version {k}'s model "
            f"{num_nodes}; {_TRANSDUCTIVE}")
      aligned = {"previous": previous, "known": known, "chain": self.chain()}
    result = fit(model, task, inputs, batches, key, objective=objective,
                 **aligned, **kwargs)
    self.add(model, result.variables, result.transform if k else None,
             inputs=inputs)
    return result

  def chain(self) -> tuple[np.ndarray, ...]:
    """`(W_1, ..., W_K)`: what the next version's multi-step loss reads."""
    return tuple(self.backward)

  def add(self, model: EmbeddingModel, variables: Variables,
          transform: Any | None = None, inputs: Any = None) -> None:
    """Adds a version trained elsewhere: its model, variables, W_k and its
    own inputs (needed only by a next version's `previous_ids`).

    Raises:
      ValueError: a transform at version 0, none at version k >= 1, or a W_k
        that is not `[d_k, d_{k-1}]` (the models' declared `dim` values).
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
    self.last, self.last_inputs = (model, variables), inputs

  def to_version_zero(self) -> np.ndarray:
    """M_{K->0}: maps the newest version's embeddings into version 0's."""
    k = self.num_versions - 1
    if k < 0:
      raise ValueError("Lineage.to_version_zero: no version yet")
    if k == 0:
      raise ValueError("Lineage.to_version_zero: version 0 is its own space")
    return chains.chain_matrix(self.backward, k, 0)

  def save(self, path: str | os.PathLike) -> None:
    """Saves what the lineage carries forward to the directory `path`
    (`saving`: the newest variables, W_1..W_K, the newest inputs when they
    are arrays, the store's path), replacing it atomically.

    Raises:
      ValueError: no version yet, or variables msgpack cannot hold.
      StoreError: a `path` inside an embedding store.
    """
    if self.last is None:
      raise ValueError("Lineage.save: no version yet")
    model = self.last[0]
    dims = [w.shape[1] for w in self.backward] + [model.dim]
    store = None if self.store is None else os.fspath(
        self.store.path.resolve())
    saving.write(path, self.last[1], self.backward, dims, self.last_inputs,
                 store)

  @classmethod
  def load(cls, path: str | os.PathLike, model: EmbeddingModel) -> Lineage:
    """The lineage saved at `path`, continuing where it stopped.

    Args:
      path: a directory written by `save`.
      model: the newest version's model object (models are code).

    Returns:
      A lineage whose next `fit` or `add` is the saved one's next version,
      publishing to the same store (reopened) when it had one.

    Raises:
      ValueError: a missing or malformed save, a file failing its sha256,
        or a `model` of another `dim` than the newest version's.
      StoreError: the saved store cannot be opened or holds other versions.
    """
    saved = saving.read(path, model.dim)
    lineage = cls((model, saved.variables), saved.backward, saved.last_inputs)
    if saved.store is not None:
      lineage.store = EmbeddingStore.open(saved.store)
      dims = [w.shape[1] for w in saved.backward] + [model.dim]
      if lineage.store.dims != dims[:len(lineage.store.dims)]:
        raise StoreError(f"{path}: the lineage's versions have dims {dims}, "
                         f"its store {saved.store} {lineage.store.dims}")
    return lineage

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


def fill_from_neighbours(previous: np.ndarray, known: np.ndarray,
                         neighbours: tuple[Any, Any]
                         ) -> tuple[np.ndarray, np.ndarray]:
  """Fills the rows of unknown nodes from their known neighbours.

  Each node that `known` marks False and that has at least one known
  neighbour gets the mean of those neighbours' `previous` rows, and counts
  as known from then on (one hop: a new item rated by old users is folded
  in; a new item rated only by new users stays unknown).

  Args:
    previous: `[N, d]` previous embeddings (unknown rows are ignored).
    known: `[N]` bool, the rows that hold real previous embeddings.
    neighbours: `(src, dst)` int node-id arrays `[E]`, the graph's edges
      (each read in both directions).

  Returns:
    `(previous, known)`: the filled `[N, d]` rows and the new `[N]` mask.

  Raises:
    ValueError: edges of different lengths or outside `0..N-1`.
  """
  previous, known = np.asarray(previous), np.asarray(known, bool)
  src, dst = (np.asarray(a).reshape(-1) for a in neighbours)
  n = len(previous)
  if src.shape != dst.shape or (src.size and (
      min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n)):
    raise ValueError(f"fill_from_neighbours: `neighbours` must be two equally "
                     f"long node-id arrays in 0..{n - 1}; got {src.shape} and "
                     f"{dst.shape}")
  a, b = np.concatenate([src, dst]), np.concatenate([dst, src])
  take = ~known[a] & known[b]  # an unknown node a reads a known b
  sums = np.zeros(previous.shape, np.float64)
  np.add.at(sums, a[take], previous[b[take]])
  counts = np.bincount(a[take], minlength=n)
  folded = counts > 0
  filled = previous.astype(np.float64, copy=True)
  filled[folded] = sums[folded] / counts[folded, None]
  return filled.astype(previous.dtype), known | folded
