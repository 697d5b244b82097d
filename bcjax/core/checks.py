"""What `bcjax.fit` checks before anything is traced.

A stranger's first attempt at backward compatible training tends to pass
the previous version's own embeddings (too few rows), forget the chain, mix
up node ids, or pad new nodes' previous rows with zeros. Each check here
names the array and the fix, instead of letting a shape error surface from
inside the jitted step (or, worse, a clamped id or a zero row train
silently). The model is traced abstractly (`jax.eval_shape`): nothing is
computed.
"""

from __future__ import annotations

import collections.abc

import jax
import jax.numpy as jnp
import numpy as np

from bcjax.core.tasks import Task
from bcjax.models.interface import EmbeddingModel, Variables


def prng_key(label: str, key) -> None:
  """`key` must be one JAX PRNG key: a typed key (`jax.random.key`) or a
  raw `uint32[2]` one, not an int seed or None."""
  dtype, shape = getattr(key, "dtype", None), np.shape(key)
  typed = dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)
  if not ((typed and shape == ()) or (dtype == np.uint32 and shape == (2,))):
    shown = f"{dtype}{list(shape)}" if dtype is not None else repr(key)
    raise TypeError(f"{label}: `key` must be one JAX PRNG key, got "
                    f"{type(key).__name__} {shown}; make it from a seed with "
                    "bcjax.keys.root(seed)")


def finite_inputs(label: str, inputs) -> None:
  """Every float array of `inputs` must be finite: a NaN feature would
  surface only as a NaN loss after the first epoch."""
  leaves = jax.tree_util.tree_flatten_with_path(inputs)[0]
  for path, x in leaves:
    if not jnp.issubdtype(getattr(x, "dtype", np.int32), jnp.inexact):
      continue
    bad = ~jnp.isfinite(jnp.asarray(x))
    if bool(bad.any()):
      where = np.unravel_index(int(jnp.argmax(bad.ravel())), bad.shape)
      raise ValueError(
          f"{label}: inputs{jax.tree_util.keystr(path)} has {int(bad.sum())} "
          f"NaN or Inf entries, the first at index {list(map(int, where))}; "
          "clean or impute them before training")


def embedding_rows(label: str, model: EmbeddingModel, inputs,
                   variables: Variables | None) -> int:
  """The model's node count on `inputs`, its output shape checked against
  its declared `dim` (traced abstractly: nothing is computed)."""
  if variables is None:
    variables = jax.eval_shape(model.init, jax.random.key(0), inputs)
  shape = jax.eval_shape(lambda v: model.apply(v, inputs, train=False)[0],
                         variables).shape
  if len(shape) != 2 or shape[1] != model.dim:
    raise ValueError(f"{label}: the model declares dim={model.dim} but embeds "
                     f"{list(shape)}; expected [num_nodes, {model.dim}]")
  return shape[0]


def known_mask(label: str, known, num_nodes: int) -> jax.Array | None:
  """`known` as a `[num_nodes]` bool array, its shape checked; None for
  None or True (every node: no mask)."""
  if known is None or known is True:
    return None
  known = np.asarray(known)
  if known.shape != (num_nodes,) or known.dtype != bool:
    raise ValueError(f"{label}: `known` is {known.dtype} {list(known.shape)}; "
                     f"expected bool [{num_nodes}], one flag per node")
  return jnp.asarray(known)


def checked_ids(label: str, task: Task, batches, num_nodes: int,
                target: jax.Array | None):
  """`batches` whose first epoch is checked on the host, once: its node ids
  against the model's node count (ids beyond it would be clamped silently
  inside the jitted step) and, unless `target` is None, the alignment
  target's rows at those nodes (an all-zero row is a new node padded with
  zeros, which the alignment would pull to zero)."""
  unchecked = [True]

  def epoch(key):
    out = batches(key)
    if unchecked[0] and not isinstance(out, collections.abc.Iterator):
      unchecked[0] = False
      stacked(label, task, out)
      index, mask = task.nodes(out)
      mask = np.asarray(mask, bool)
      used = []
      for field, ids in enumerate(index):
        real = np.asarray(ids)[mask]
        if not np.issubdtype(real.dtype, np.integer):
          raise TypeError(f"{label}: the batches' node ids (field {field} of "
                          f"task.nodes(batch)) are {real.dtype}; they must "
                          "be integers")
        if real.size and (real.min() < 0 or real.max() >= num_nodes):
          bad = real.max() if real.max() >= num_nodes else real.min()
          raise ValueError(
              f"{label}: the batches' node ids (field {field} of "
              f"task.nodes(batch)) include {int(bad)}, but the model embeds "
              f"{num_nodes} nodes (ids 0..{num_nodes - 1})")
        used.append(real)
      if target is not None:
        refuse_zero_rows(label, np.asarray(target),
                         np.unique(np.concatenate(used)))
    return out
  return epoch


def stacked(label: str, task: Task, epoch) -> None:
  """An epoch must stack its batches on a leading `[num_batches]` axis that
  every array shares: `task.nodes(epoch)` then gives `[num_batches, B]`
  ids and mask (one unstacked batch gives `[B]`, and the scan inside the
  jitted epoch would hand the task scalars)."""
  sizes = {np.shape(x)[:1] for x in jax.tree.leaves(epoch)}
  index, mask = task.nodes(epoch)
  shapes = [np.shape(mask), *map(np.shape, index)]
  if len(sizes) != 1 or () in sizes or len(shapes[0]) != 2 or any(
      shape != shapes[0] for shape in shapes):
    raise ValueError(
        f"{label}: one epoch's batches must be stacked on a leading axis "
        "that every array shares, [num_batches, batch_size, ...], so that "
        f"task.nodes(epoch) is [num_batches, batch_size]; got the mask "
        f"{list(shapes[0])} and ids {[list(s) for s in shapes[1:]]} (one "
        "batch? np.stack a list of batches, or reshape(num_batches, -1))")


def refuse_zero_rows(label: str, target: np.ndarray, nodes: np.ndarray):
  """Raises when `previous` has all-zero rows at nodes the batches use."""
  zero = nodes[~np.any(target[nodes] != 0, axis=1)]
  if zero.size:
    raise ValueError(
        f"{label}: `previous` is all zeros at {zero.size} of the "
        f"{nodes.size} nodes the batches use (e.g. node {int(zero[0])}): "
        "nodes the previous version never embedded, padded with zeros? "
        "Aligning them pulls their embeddings to zero. Pass `known` (False "
        "at those nodes) to leave them out of the alignment, fill their rows "
        "from their neighbours (bcjax.fill_from_neighbours), or pass "
        "known=True to align them to zero on purpose")


def check_chain(label: str, shapes: list[tuple[int, ...]], d_prev: int):
  """W_1 ... W_{k-1} must compose and end in the previous version's dims."""
  for j in range(1, len(shapes)):
    if len(shapes[j]) != 2 or shapes[j][1] != shapes[j - 1][0]:
      raise ValueError(f"{label}: chain W_{j + 1} has shape {shapes[j]}, which "
                       f"does not compose with W_{j} {shapes[j - 1]}")
  if shapes and shapes[-1][0] != d_prev:
    raise ValueError(f"{label}: W_{len(shapes)} maps {shapes[-1][0]} dims but "
                     f"`previous` has {d_prev}")
