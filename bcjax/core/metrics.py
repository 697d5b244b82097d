"""Evaluation metrics: Recall@K (method §5), ROC-AUC (method §7), alignment error.

Recall@K is split in two so that it compiles once per version: the host
prepares, once, fixed-shape batches of evaluation users with their excluded
(training) and validation pairs (`prepare_recall_inputs`); a jitted per-batch
function scores and ranks (`batch_hits`); `recall_at_k` loops over the batches.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bcjax.util import padding

RECALL_KS = (10, 20, 50, 100)


@dataclasses.dataclass(frozen=True)
class RecallInputs:
  """Fixed-shape Recall@K inputs of one version, in batches of users.

  Pairs are `(row_in_batch, item)`; padding pairs have row = batch_users, out
  of range, so a scatter with mode='drop' ignores them. Every batch has the
  same number of pairs of each kind, hence one compiled `batch_hits`.

  Attributes:
    users: `[num_batches, batch_users]` int32 user indices; padding slots of
      the last batch hold user 0.
    user_mask: `[num_batches, batch_users]` bool, True on evaluation users.
    excluded: `[num_batches, P, 2]` int32 distinct (row, item) training pairs
      of the batch's users: items never ranked for that user.
    validation: `[num_batches, Q, 2]` int32 distinct (row, item) validation
      pairs of the batch's users.
    num_items: I1, the number of rankable items; item table rows from
      `num_items` on are padding and never ranked.
    num_users: the number of evaluation users (those with a validation pair).
  """
  users: np.ndarray
  user_mask: np.ndarray
  excluded: np.ndarray
  validation: np.ndarray
  num_items: int
  num_users: int

  @property
  def batch_users(self) -> int:
    """Users per batch (padding slots included)."""
    return self.users.shape[1]


def _batched_pairs(position: np.ndarray, item: np.ndarray, num_items: int,
                   batch_users: int, num_batches: int) -> np.ndarray:
  """Groups (user position, item) pairs by batch, padded to a common length.

  Args:
    position: `[N]` rank of each pair's user among the evaluation users.
    item: `[N]` item of each pair, < num_items.
    num_items: the number of items.
    batch_users: users per batch.
    num_batches: number of batches.

  Returns:
    `[num_batches, max pairs per batch, 2]` int32 distinct (row, item) pairs;
    padding pairs are (batch_users, 0).
  """
  keys = np.unique(position.astype(np.int64) * num_items + item)
  position, item = keys // num_items, keys % num_items
  batch = position // batch_users
  count = np.bincount(batch, minlength=num_batches)
  first = np.concatenate([[0], np.cumsum(count)[:-1]])
  slot = np.arange(len(keys)) - first[batch]
  pairs = np.zeros((num_batches, max(int(count.max()), 1), 2), np.int32)
  pairs[..., 0] = batch_users
  pairs[batch, slot, 0] = position % batch_users
  pairs[batch, slot, 1] = item
  return pairs


def prepare_recall_inputs(train_user: np.ndarray, train_item: np.ndarray,
                          val_user: np.ndarray, val_item: np.ndarray,
                          num_items: int,
                          batch_users: int = 256) -> RecallInputs:
  """Builds the fixed-shape Recall@K batches of one version (numpy, once).

  The evaluation users are those with at least one validation interaction,
  in increasing index order. Duplicate pairs are kept once.

  Args:
    train_user: `[T]` training users; their items are excluded from ranking.
    train_item: `[T]` training items (< num_items).
    val_user: `[V]` validation users.
    val_item: `[V]` validation items (< num_items).
    num_items: I1, the number of rankable items.
    batch_users: users per batch; the last batch is padded.

  Returns:
    The `RecallInputs`.

  Raises:
    ValueError: no validation interaction, an item out of range, mismatched
      lengths, or batch_users < 1.
  """
  train_user, train_item, val_user, val_item = (
      np.asarray(a, np.int64)
      for a in (train_user, train_item, val_user, val_item))
  if len(train_user) != len(train_item) or len(val_user) != len(val_item):
    raise ValueError("recall inputs: user and item arrays differ in length")
  if batch_users < 1:
    raise ValueError(f"recall inputs: batch_users={batch_users} < 1")
  if len(val_user) == 0:
    raise ValueError("recall inputs: no validation interaction")
  for name, item in (("training", train_item), ("validation", val_item)):
    if len(item) and (item.min() < 0 or item.max() >= num_items):
      raise ValueError(f"recall inputs: a {name} item is outside "
                       f"[0, {num_items})")
  eval_users = np.unique(val_user)
  num_batches = padding.num_blocks(len(eval_users), batch_users)
  (users,), user_mask = padding.pad_rows((eval_users.astype(np.int32),),
                                         num_batches * batch_users)

  at = np.minimum(np.searchsorted(eval_users, train_user), len(eval_users) - 1)
  evaluated = eval_users[at] == train_user
  return RecallInputs(
      users=users.reshape(num_batches, batch_users),
      user_mask=user_mask.reshape(num_batches, batch_users),
      excluded=_batched_pairs(at[evaluated], train_item[evaluated], num_items,
                              batch_users, num_batches),
      validation=_batched_pairs(np.searchsorted(eval_users, val_user), val_item,
                                num_items, batch_users, num_batches),
      num_items=int(num_items),
      num_users=len(eval_users))


@functools.partial(jax.jit, static_argnames=("ks",))
def batch_hits(users: jax.Array, items: jax.Array, item_mask: jax.Array,
               excluded: jax.Array, validation: jax.Array,
               ks: Sequence[int] = RECALL_KS) -> tuple[jax.Array, jax.Array]:
  """Top-K validation hits of one batch of users.

  Items are ranked by score <z_u, z_i>, excluded and padding items removed;
  ties go to the lower item index. When K exceeds the number of rankable items
  of a user, the top-K list is all of them (K is clamped to the item count).

  Args:
    users: `[B, d]` embeddings of the batch's users.
    items: `[I_pad, d]` item embeddings, possibly padded to a budget.
    item_mask: `[I_pad]` bool, True on the real (rankable) items.
    excluded: `[P, 2]` int32 (row, item) pairs never ranked; rows >= B ignored.
    validation: `[Q, 2]` int32 (row, item) validation pairs; rows >= B
      ignored; duplicates count once.
    ks: the cut-offs K, static.

  Returns:
    hits: `[B, len(ks)]` int32, ``|top-K ∩ V_u|`` for each K.
    num_val: `[B]` int32, ``|V_u|``, the distinct validation items of each user.
  """
  num_rows, num_items = users.shape[0], items.shape[0]
  scores = users @ items.T
  scores = jnp.where(item_mask[None, :], scores, -jnp.inf)
  scores = scores.at[excluded[:, 0], excluded[:, 1]].set(-jnp.inf, mode="drop")
  is_val = jnp.zeros((num_rows, num_items), bool)
  is_val = is_val.at[validation[:, 0], validation[:, 1]].set(True, mode="drop")

  depth = min(max(ks), num_items)
  top_scores, top_items = jax.lax.top_k(scores, depth)
  hit = jnp.take_along_axis(is_val, top_items, axis=1) & (top_scores > -jnp.inf)
  cumulative = jnp.cumsum(hit, axis=1, dtype=jnp.int32)
  hits = cumulative[:, [min(k, depth) - 1 for k in ks]]
  return hits, jnp.sum(is_val, axis=1, dtype=jnp.int32)


def recall_at_k(user_emb: jax.Array, item_emb: jax.Array,
                eval_inputs: RecallInputs,
                ks: Sequence[int] = RECALL_KS) -> dict[int, float]:
  """Recall@K averaged over the evaluation users (method §5).

  Recall of a user = ``|top-K ∩ V_u| / |V_u|`` with V_u its distinct
  validation items; its training items are never ranked. Compiles
  `batch_hits` once for a given item table shape, whatever the number of
  batches.

  Args:
    user_emb: `[num_users, d]` user embeddings (rows beyond the evaluation
      users are allowed).
    item_emb: `[I_pad, d]` item embeddings, I_pad >= eval_inputs.num_items;
      rows from num_items on are padding.
    eval_inputs: the version's `prepare_recall_inputs` result.
    ks: the cut-offs K, each >= 1.

  Returns:
    ``{K: recall@K}`` as Python floats.

  Raises:
    ValueError: a K below 1, or an embedding table too small.
  """
  ks = tuple(int(k) for k in ks)
  if min(ks) < 1:
    raise ValueError(f"recall@K: every K must be >= 1, got {ks}")
  if item_emb.shape[0] < eval_inputs.num_items:
    raise ValueError(f"recall@K: {item_emb.shape[0]} item rows for "
                     f"{eval_inputs.num_items} items")
  if user_emb.shape[0] <= int(eval_inputs.users.max()):
    raise ValueError(f"recall@K: {user_emb.shape[0]} user rows, but user "
                     f"{int(eval_inputs.users.max())} is evaluated")
  user_emb, item_emb = jnp.asarray(user_emb), jnp.asarray(item_emb)
  item_mask = jnp.arange(item_emb.shape[0]) < eval_inputs.num_items
  results = [
      batch_hits(user_emb[users], item_emb, item_mask, excluded, validation,
                 ks=ks)
      for users, excluded, validation in zip(
          eval_inputs.users, eval_inputs.excluded, eval_inputs.validation)
  ]
  hits, num_val = (np.stack(a) for a in jax.device_get(tuple(zip(*results))))
  recall = hits / np.maximum(num_val, 1)[..., None]
  total = np.sum(recall * eval_inputs.user_mask[..., None], axis=(0, 1))
  return {k: float(t) / eval_inputs.num_users for k, t in zip(ks, total)}


def recall_metrics(user_emb: jax.Array, item_emb: jax.Array,
                   eval_inputs: RecallInputs,
                   ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
  """`recall_at_k` named as `fit`'s `evaluate` returns metrics:
  `{"recall@10": ..., ...}`, what `Schedule(select="recall@10")` reads."""
  result = recall_at_k(user_emb, item_emb, eval_inputs, ks)
  return {f"recall@{k}": value for k, value in result.items()}


def roc_auc(scores: jax.Array, labels: jax.Array,
            mask: jax.Array | None = None) -> jax.Array:
  """Rank-based ROC-AUC, ties counted as one half; jittable and vmappable.

  Equals the average-rank (Mann-Whitney) formula: the fraction of
  (positive, negative) pairs of real entries where the positive scores
  higher, a tie counting 1/2. Computed by sorting, in O(N log N).

  Args:
    scores: `[N]` real-valued scores (no NaN among real entries).
    labels: `[N]` bool or 0/1, True for the positive class.
    mask: optional `[N]` bool, True on the entries to score; the others are
      ignored entirely. None means all.

  Returns:
    The scalar AUC (float32), NaN if the real entries lack a class.
  """
  scores, labels = jnp.asarray(scores), jnp.asarray(labels).astype(bool)
  real = (jnp.ones(scores.shape, bool) if mask is None else
          jnp.asarray(mask).astype(bool))
  positive, negative = real & labels, real & ~labels
  # Masked entries stay in the sort but count for nothing; zeroing them keeps
  # garbage such as NaN from upsetting the order.
  scores = jnp.where(real, scores, jnp.zeros_like(scores))
  order = jnp.argsort(scores)
  ordered = scores[order]
  negatives_up_to = jnp.concatenate([
      jnp.zeros((1,), jnp.int32),
      jnp.cumsum(negative[order], dtype=jnp.int32)])
  below = negatives_up_to[jnp.searchsorted(ordered, scores, side="left")]
  up_to = negatives_up_to[jnp.searchsorted(ordered, scores, side="right")]
  wins = jnp.where(positive, below + 0.5 * (up_to - below), 0.0)
  num_pairs = (jnp.sum(positive, dtype=jnp.float32) *
               jnp.sum(negative, dtype=jnp.float32))
  return jnp.where(num_pairs > 0, jnp.sum(wins) / num_pairs, jnp.nan)


def alignment_error(users_a: jax.Array, items_a: jax.Array,
                    users_b: jax.Array, items_b: jax.Array) -> jax.Array:
  """Mean L2 distance between corresponding embedding rows (method §8).

  Users and items are pooled: the mean runs over all U + I rows.

  Args:
    users_a: `[U, d]` user embeddings of one strategy.
    items_a: `[I, d]` item embeddings of one strategy.
    users_b: `[U, d]` the reference user embeddings (fix-m0's).
    items_b: `[I, d]` the reference item embeddings.

  Returns:
    The scalar mean distance.
  """
  diff = jnp.concatenate([users_a - users_b, items_a - items_b])
  return jnp.mean(jnp.linalg.norm(diff, axis=-1))
