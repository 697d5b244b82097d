"""Intended-task and alignment losses (method §5 and §6).

Every loss works on a fixed-size batch of B rows (users, positives, negatives)
with an optional `mask [B]` marking the real rows. Padding rows are zeroed
before anything is computed, so whatever they hold changes nothing: the loss
ignores them and its gradient with respect to them is zero. Every denominator
counts real rows only; a batch without real rows gives a loss of zero.

The alignment losses also take a mask per row group (a tuple of three `[B]`
masks): the rows of nodes the previous version did not know are left out of
their group's mean (`batch_alignment`'s `known`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

Rows = tuple[jax.Array, jax.Array, jax.Array]


def _real_rows(mask: jax.Array | None, num_rows: int) -> tuple[jax.Array,
                                                                jax.Array]:
  """The boolean row mask `[B]` and the number of real rows (at least 1)."""
  if mask is None:
    keep = jnp.ones((num_rows,), bool)
  else:
    keep = jnp.asarray(mask).astype(bool)
  count = jnp.maximum(jnp.sum(keep, dtype=jnp.float32), 1.0)
  return keep, count


def _group_masks(mask, num_rows: int, groups: int):
  """One `(keep [B], count)` per row group: a tuple of masks gives each
  group its own, a single mask (or None) is shared by every group."""
  if isinstance(mask, tuple):
    return [_real_rows(m, num_rows) for m in mask]
  return [_real_rows(mask, num_rows)] * groups


def _zero_padding(x: jax.Array, keep: jax.Array) -> jax.Array:
  """`x [B, d]` with the rows where `keep [B]` is False set to zero."""
  return jnp.where(keep[:, None], x, jnp.zeros_like(x))


def bpr_loss(z_user: jax.Array, z_pos: jax.Array, z_neg: jax.Array,
             mask: jax.Array | None = None, reg: float = 0.01) -> jax.Array:
  """BPR loss with L2 regularisation of the batch embeddings (method §5)::

    loss = mean_b softplus(<z_u, z_neg> - <z_u, z_pos>)
         + reg * (||z_u||_F^2 + ||z_pos||_F^2 + ||z_neg||_F^2) / (2 * n),

  with the mean, the Frobenius norms and n over the real rows.

  Args:
    z_user: `[B, d]` user embeddings.
    z_pos: `[B, d]` embeddings of the positive items.
    z_neg: `[B, d]` embeddings of the negative items.
    mask: optional `[B]` bool or 0/1 float, True on real rows; None means all.
    reg: weight of the regularisation term.

  Returns:
    The scalar loss.
  """
  keep, count = _real_rows(mask, z_user.shape[0])
  z_user, z_pos, z_neg = (
      _zero_padding(z, keep) for z in (z_user, z_pos, z_neg))
  margin = jnp.sum(z_user * z_neg, -1) - jnp.sum(z_user * z_pos, -1)
  ranking = jnp.sum(jnp.where(keep, jax.nn.softplus(margin), 0.0)) / count
  squares = jnp.sum(z_user**2) + jnp.sum(z_pos**2) + jnp.sum(z_neg**2)
  return ranking + reg * squares / (2.0 * count)


def alignment(diff_rows: Rows, mask: jax.Array | None = None) -> jax.Array:
  """A(x) of method §6: the summed mean squares of the three row groups.

  A(x) = mean(x_u^2) + mean(x_{i+}^2) + mean(x_{i-}^2), each mean over the
  real rows and all dimensions.

  Args:
    diff_rows: `(x_u, x_pos, x_neg)`, each `[B, d]`.
    mask: optional `[B]` bool or 0/1 float, True on real rows; None means
      all; or a tuple of one such mask per group, each group's mean over
      its own rows.

  Returns:
    The scalar A(x).
  """
  groups = _group_masks(mask, diff_rows[0].shape[0], len(diff_rows))
  return sum(
      jnp.sum(_zero_padding(x, keep)**2) / (count * x.shape[-1])
      for x, (keep, count) in zip(diff_rows, groups))


def single_step_alignment(target_rows: Rows, predicted_rows: Rows,
                          mask: jax.Array | None = None) -> jax.Array:
  """Single-step alignment loss A(target - predicted) (method §6).

  Args:
    target_rows: `(users, positives, negatives)`, each `[B, d_{k-1}]`: the
      previous model's embeddings E_k(M_{k-1}) of the batch rows.
    predicted_rows: the same three groups, each `[B, d_{k-1}]`: the new
      embeddings mapped to version k-1 (B_k z_k, or the first d_{k-1} dims).
    mask: optional `[B]` bool or 0/1 float, True on real rows; None means all
      (or one mask per group, as `alignment`).

  Returns:
    The scalar loss.
  """
  return alignment(tuple(t - p for t, p in zip(target_rows, predicted_rows)),
                   mask)


def multi_step_alignment(target_rows: Rows, predicted_rows: Rows,
                         earlier: Sequence[jax.Array],
                         mask: jax.Array | None = None) -> jax.Array:
  """Multi-step alignment loss (method §6): the error in every older space.

  With D = target - predicted (in version k-1's space) and
  `earlier = [W_{k-1}, W_{k-2}, ..., W_1]`,

    loss = (1/k) * [A(D) + A(D @ W_{k-1}) + A(D @ W_{k-1} @ W_{k-2}) + ...
                    + A(D @ W_{k-1} @ ... @ W_1)],   k = 1 + len(earlier).

  The earlier transformations are frozen: no gradient reaches them. With
  `earlier` empty this is `single_step_alignment`.

  Args:
    target_rows: `(users, positives, negatives)`, each `[B, d_{k-1}]`.
    predicted_rows: the same three groups, each `[B, d_{k-1}]`.
    earlier: the previous backward matrices, *newest first*: W_{k-1}
      `[d_{k-1}, d_{k-2}]`, then W_{k-2} `[d_{k-2}, d_{k-3}]`, ..., down to
      W_1 `[d_1, d_0]`; the order in which the chain applies them to D.
    mask: optional `[B]` bool or 0/1 float, True on real rows; None means all
      (or one mask per group, as `alignment`).

  Returns:
    The scalar loss.
  """
  diff = tuple(t - p for t, p in zip(target_rows, predicted_rows))
  total = alignment(diff, mask)
  for matrix in earlier:
    frozen = jax.lax.stop_gradient(matrix)
    diff = tuple(x @ frozen for x in diff)
    total = total + alignment(diff, mask)
  return total / (1 + len(earlier))


def node_alignment(target: jax.Array, predicted: jax.Array,
                   index: tuple[jax.Array, jax.Array, jax.Array],
                   earlier: Sequence[jax.Array] = (),
                   mask: jax.Array | None = None) -> jax.Array:
  """`multi_step_alignment` with the batch given as node indices.

  Equal to `multi_step_alignment` of the gathered rows: A(x) over the batch
  rows is sum_n c_n ||x_n||^2 / (rows x d) with c_n the number of real rows
  that are node n. So the chain D @ W_{k-1} @ ... runs once per node, and
  no row is gathered (whose gradient would be a serial scatter on CPU): the
  cheaper order whenever the graph has fewer nodes than 3 x batch rows.

  Args:
    target: `[N, d_{k-1}]` E_k(M_{k-1}) of every node.
    predicted: `[N, d_{k-1}]` the new embeddings of every node, mapped.
    index: `(users, positives, negatives)` node ids, each `[B]`.
    earlier: `[W_{k-1}, ..., W_1]`, newest first (frozen).
    mask: optional `[B]`, True on real rows, or one such mask per group.

  Returns:
    The scalar loss.
  """
  weight = jnp.zeros(target.shape[0], jnp.float32)
  # One mask per group: each group's rows weigh 1 / its own count. A single
  # mask keeps its own path, one division after the sums, so every run
  # without `known` computes what it did before, bit for bit.
  if isinstance(mask, tuple):
    for ids, (keep, count) in zip(index, _group_masks(mask, index[0].shape[0],
                                                   len(index))):
      weight = weight.at[ids].add(keep.astype(jnp.float32) / count,
                                  mode="drop")
    weight = weight[:, None]
  else:
    keep, count = _real_rows(mask, index[0].shape[0])
    for ids in index:
      weight = weight.at[ids].add(keep.astype(jnp.float32), mode="drop")
    weight = weight[:, None] / count

  def term(x):  # Nodes outside the batch count zero, whatever they hold.
    return jnp.sum(jnp.where(weight > 0, weight * x**2, 0.0)) / x.shape[-1]

  diff = target - predicted
  total = term(diff)
  for matrix in earlier:
    diff = diff @ jax.lax.stop_gradient(matrix)
    total = total + term(diff)
  return total / (1 + len(earlier))


def batch_alignment(target: jax.Array, z: jax.Array,
                    transform: Callable[[jax.Array], jax.Array],
                    index: Sequence[jax.Array],
                    earlier: Sequence[jax.Array] = (),
                    mask: jax.Array | None = None,
                    known: jax.Array | None = None) -> jax.Array:
  """The alignment term of a batch's rows, in the cheaper of two exact forms.

  With no more nodes than gathered rows, every node is mapped once and
  weighted by its count (`node_alignment`); otherwise the rows are gathered
  first (`multi_step_alignment`). Both give the same value (method §6);
  `earlier=()` is the single-step loss.

  `known` leaves out the nodes the previous version never embedded (new
  users and items of a transductive model): each row group is averaged over
  its real rows whose node is known, so a new node is neither pulled towards
  whatever its target row holds nor counted in a denominator.

  Args:
    target: `[N, d_{k-1}]` E_k(M_{k-1}) of every node.
    z: `[N, d_k]` the new embeddings of every node.
    transform: B_k, `[..., d_k] -> [..., d_{k-1}]`.
    index: the batch's node ids, a tuple of `[B]` arrays.
    earlier: `[W_{k-1}, ..., W_1]`, newest first (frozen).
    mask: optional `[B]`, True on real rows.
    known: optional `[N]` bool, True on the nodes the previous version
      knew; None: every node.

  Returns:
    The scalar loss.
  """
  if known is not None:
    real = (jnp.ones(index[0].shape, bool) if mask is None
            else jnp.asarray(mask).astype(bool))
    mask = tuple(real & known[i] for i in index)
  if z.shape[0] <= sum(i.shape[0] for i in index):
    return node_alignment(target, transform(z), index, earlier, mask=mask)
  return multi_step_alignment(tuple(target[i] for i in index),
                              tuple(transform(z[i]) for i in index), earlier,
                              mask=mask)
