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

from bcjax.models.interface import EmbeddingModel, Variables
from bcjax.tasks import Task


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
      index, mask = task.nodes(out)
      mask = np.asarray(mask, bool)
      used = []
      for field, ids in enumerate(index):
        real = np.asarray(ids)[mask]
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
