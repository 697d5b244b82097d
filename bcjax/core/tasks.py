"""Intended tasks: a loss over node embeddings and the nodes a batch touches.

The trainer (`bcjax.core.training`) needs two things of a task: `loss(z, batch)`,
the intended-task loss of one batch given every node's embedding
`z [num_nodes, d]`, and `nodes(batch)`, the node ids the batch reads with the
mask of its real rows (the alignment term is taken over those nodes, and a
batch whose mask is all False is padding and changes nothing). Batches are
pytrees of arrays with a leading batch axis; an epoch stacks them on a
leading `[num_batches]` axis. Tasks are static arguments of jitted
functions, so they are frozen dataclasses.

A task may also define `batch_inputs(inputs, batch) -> (inputs, nodes)`:
the model's inputs for that batch and the node ids of the rows the model
then returns (None: every node). Neighbour sampling is such a wrapper
(`bcjax.data.neighbours.SampledTask`); the trainer has no branch for it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import jax
import numpy as np

from bcjax.core import losses
from bcjax.data.sampling import TripleSampler, numpy_rng
from bcjax.util import padding


class Task(Protocol):
  """The protocol of an intended task (see the module docstring)."""

  def loss(self, z: jax.Array, batch: Any) -> jax.Array:
    """The intended-task loss of one batch.

    Args:
      z: `[num_nodes, d]` every node's embedding.
      batch: one batch (a pytree with a leading batch axis).

    Returns:
      The scalar loss (padding rows excluded).
    """
    ...

  def nodes(self, batch: Any) -> tuple[tuple[jax.Array, ...], jax.Array]:
    """The node ids a batch reads, for the alignment term.

    Args:
      batch: one batch.

    Returns:
      `(index, mask)`: a tuple of `[B]` int node-id arrays and the `[B]`
      bool mask of the batch's real rows.
    """
    ...


@dataclasses.dataclass(frozen=True)
class BPRTask:
  """BPR over (user, positive item, negative item) triples of node ids (method §5).

  A batch is `(user, pos, neg, mask)`, each `[B]`, items already offset to
  their node ids (see `epoch_batches`).

  Attributes:
    reg: the regularisation coefficient of `bcjax.core.losses.bpr_loss`.
  """
  reg: float = 0.01

  def nodes(self, batch) -> tuple[tuple[jax.Array, ...], jax.Array]:
    """The batch's node ids.

    Args:
      batch: `(user, pos, neg, mask)`, each `[B]`.

    Returns:
      `((user, pos, neg), mask)`, each `[B]`.
    """
    user, pos, neg, mask = batch
    return (user, pos, neg), mask

  def loss(self, z: jax.Array, batch) -> jax.Array:
    """The regularised BPR loss of one batch (`bcjax.core.losses.bpr_loss`).

    Args:
      z: `[num_nodes, d]` every node's embedding, users first.
      batch: `(user, pos, neg, mask)`, each `[B]`.

    Returns:
      The scalar loss over the rows where `mask` is True.
    """
    index, mask = self.nodes(batch)
    return losses.bpr_loss(*(z[i] for i in index), mask=mask, reg=self.reg)


def epoch_batches(sampler: TripleSampler, key: jax.Array, batch_size: int,
                  item_offset: int | None = None,
                  num_batches: int | None = None) -> tuple[np.ndarray, ...]:
  """One epoch of `BPRTask` batches: `[num_batches, batch_size]` arrays.

  Args:
    sampler: the version's triple sampler.
    key: the epoch's PRNG key.
    batch_size: triples per batch.
    item_offset: added to item indices to make node ids (users come first);
      default the sampler's `num_users`. A padded graph may place its items
      further on, never before (items would share node ids with users).
    num_batches: pad the epoch with empty batches (all-False mask) up to a
      count shared by every version of a run, so one program serves them all.

  Returns:
    `(user, pos, neg, mask)`, each `[num_batches, batch_size]`.

  Raises:
    ValueError: `item_offset` below the sampler's `num_users`, or the epoch
      needs more batches than `num_batches`.
  """
  if item_offset is None:
    item_offset = sampler.num_users
  if item_offset < sampler.num_users:
    raise ValueError(f"epoch_batches: item_offset={item_offset} would give "
                     f"items the node ids of users 0..{sampler.num_users - 1};"
                     f" users come first: pass item_offset >= num_users "
                     f"({sampler.num_users}), or leave it out")
  user, pos, neg = sampler.sample(numpy_rng(key))
  n = len(user)
  needed = padding.num_blocks(n, batch_size)
  num_batches = needed if num_batches is None else num_batches
  if num_batches < needed:
    raise ValueError(f"{n} triples need {needed} batches of {batch_size}, "
                     f"more than the budget {num_batches}")
  arrays, mask = padding.pad_rows(
      (user, pos + item_offset, neg + item_offset), num_batches * batch_size)
  return tuple(a.reshape(num_batches, -1) for a in (*arrays, mask))
