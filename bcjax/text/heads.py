"""Training-time compatibility for frozen encoders: a trainable head over an
encoder's features, trained for retrieval through the public bcjax API.

Version k's embedding model is `Head` over encoder k's frozen features
(a linear map plus a one-hidden-layer ReLU correction). Every version's
inputs hold every encoder's features of every text (`{encoder: [n, d]}`), so
version k-1's head applied to version k's inputs is E_k(M_{k-1}), the
alignment target, and `bcjax.Lineage` trains the heads with BC-Aligner as it
trains any model. The task (`PairTask`) is same-movie retrieval: InfoNCE over
(anchor, positive) pairs of texts of one movie with the batch's other
movies as negatives; a batch reads only its own rows (`batch_inputs`).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import bcjax
from bcjax.data.sampling import numpy_rng

HIDDEN = 256
BATCH = 256
EPOCHS = 30
LR = 3e-3
# One optimizer object for every lineage: jitted epochs compile once per
# shape, across versions' equal shapes and across seeds.
OPTIMIZER = optax.adam(LR)
TEMPERATURE = 0.05


class Head(nn.Module):
  """`[n, dim]` from the features `inputs[feature]`."""
  dim: int
  feature: str
  hidden: int = HIDDEN

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    x = inputs[self.feature]
    hidden = nn.relu(nn.Dense(self.hidden, name="hidden")(x))
    return nn.Dense(self.dim, name="linear")(x) + nn.Dense(
        self.dim, name="out")(hidden)


@dataclasses.dataclass(frozen=True)
class PairTask:
  """InfoNCE over same-movie pairs (`bcjax.core.tasks.Task`).

  A batch is `(rows [2B], group [B], mask [B])`: the text ids of B anchors
  then their B positives, the anchors' movies, and the real pairs. The
  model embeds only those 2B rows (`batch_inputs`), so `nodes` are
  positions in the batch (2B of them, so B is at most half the texts).
  Other pairs of the anchor's movie are not
  counted as negatives.
  """
  temperature: float = TEMPERATURE

  def batch_inputs(self, inputs, batch):
    rows = batch[0]
    return jax.tree.map(lambda x: x[rows], inputs), rows

  def nodes(self, batch):
    group, mask = batch[1], batch[2]
    position = jnp.broadcast_to(jnp.arange(group.shape[-1]), group.shape)
    return (position, group.shape[-1] + position), mask

  def loss(self, z, batch):
    _, group, mask = batch
    b = group.shape[0]
    unit = z / jnp.maximum(jnp.linalg.norm(z, axis=1, keepdims=True), 1e-9)
    logits = unit[:b] @ unit[b:].T / self.temperature
    same = (group[:, None] == group[None, :]) & ~jnp.eye(b, dtype=bool)
    logits = jnp.where(same | ~mask[None, :], -1e9, logits)
    nll = -jnp.diagonal(jax.nn.log_softmax(logits, axis=1))
    return jnp.sum(jnp.where(mask, nll, 0.0)) / jnp.maximum(mask.sum(), 1)


def pair_batches(train_rows: np.ndarray, groups: np.ndarray, key: jax.Array,
                 batch: int, num_batches: int) -> tuple[np.ndarray, ...]:
  """One epoch of `PairTask` batches: every training text once as an
  anchor (shuffled), with a random other training text of its movie.

  Args:
    train_rows: `[m]` text ids that may be used.
    groups: `[n]` every text's movie.
    key: the epoch's key (its numpy generator draws everything).
    batch, num_batches: the epoch's shape (padded with masked pairs).

  Raises:
    ValueError: more pairs than `batch * num_batches`.
  """
  rng = numpy_rng(key)
  rows = np.asarray(train_rows, np.int64)
  by_group: dict[int, list[int]] = {}
  for r in rows:
    by_group.setdefault(int(groups[r]), []).append(int(r))
  anchors = np.asarray([r for r in rng.permutation(rows)
                        if len(by_group[int(groups[r])]) > 1], np.int64)
  positives = np.empty_like(anchors)
  for i, a in enumerate(anchors):
    members = by_group[int(groups[a])]
    choice = members[rng.integers(len(members) - 1)]
    positives[i] = choice if choice != a else members[-1]
  size = batch * num_batches
  if len(anchors) > size:
    raise ValueError(f"{len(anchors)} pairs exceed {num_batches} batches of "
                     f"{batch}")
  pad = size - len(anchors)
  anchor = np.concatenate([anchors, np.zeros(pad, np.int64)])
  positive = np.concatenate([positives, np.zeros(pad, np.int64)])
  mask = np.arange(size) < len(anchors)
  anchor, positive = anchor.reshape(num_batches, batch), positive.reshape(
      num_batches, batch)
  return (np.concatenate([anchor, positive], axis=1).astype(np.int32),
          np.asarray(groups)[anchor].astype(np.int32),
          mask.reshape(num_batches, batch))


def train_lineage(features: Mapping[str, np.ndarray],
                  order: Sequence[str], dims: Sequence[int],
                  train_rows: Sequence[np.ndarray], groups: np.ndarray,
                  key: jax.Array, compatible: bool, epochs: int = EPOCHS
                  ) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
  """Trains one head per version, with BC-Aligner or independently.

  Args:
    features: encoder name -> `[n, d]` features of every text.
    order: the encoder of each version.
    dims: the head's width at each version.
    train_rows: per version, the text ids its training may read.
    groups: `[n]` every text's movie.
    key: this lineage's key; version k trains from
      `keys.derive(key, "version", k)`.
    compatible: BC-Aligner through `bcjax.Lineage` (version 0 the task
      alone), or every version on its own (No-BC, `bcjax.fit` with the task
      alone).
    epochs: epochs per version.

  Returns:
    `(embeddings, maps)`: every version's `[n, dims[k]]` head output for
    every text, and W_k `[d_k, d_{k-1}]` per version (None at version 0 and
    without compatibility).
  """
  inputs = {name: jnp.asarray(x, jnp.float32) for name, x in features.items()}
  # Batch positions are node ids to bcjax.fit's checks: at most n of them.
  batch = min(BATCH, len(groups) // 2)
  num_batches = -(-max(len(r) for r in train_rows) // batch)
  tx, task, lineage = OPTIMIZER, PairTask(), bcjax.Lineage()
  embeddings, maps = [], []
  for k, (name, dim) in enumerate(zip(order, dims)):
    model = bcjax.FlaxModel(Head(dim, name))
    batches = (lambda epoch_key, rows=np.asarray(train_rows[k]):
               pair_batches(rows, groups, epoch_key, batch, num_batches))
    args = (model, task, inputs, batches, bcjax.util.keys.derive(key, "version", k))
    options = dict(schedule=bcjax.Schedule(epochs=epochs), tx=tx,
                   label=f"head v{k}", log=lambda _: None)
    if compatible:
      result = lineage.fit(*args, **options)
      z = lineage.embed(inputs)
    else:
      result = bcjax.fit(*args, objective=bcjax.Objective(), **options)
      z = bcjax.embed(model, result.variables, inputs)
    embeddings.append(np.asarray(z, np.float32))
    maps.append(None if result.transform is None
                else np.asarray(result.transform, np.float32))
  return embeddings, maps
