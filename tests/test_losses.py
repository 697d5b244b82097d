"""Tests of bcjax.core.losses against plain numpy formulas."""

from float32_bounds import tolerance
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bcjax.core import losses

# Compares floats of two computations: `make test-numerics` runs it under
# other XLA CPU kernels.
pytestmark = pytest.mark.numerics

B, D = 9, 5


def _rows(rng, num_rows, dim):
  return tuple(rng.normal(size=(num_rows, dim)).astype(np.float32)
               for _ in range(3))


def _numpy_bpr(z_user, z_pos, z_neg, reg):
  margin = (z_user * z_neg).sum(-1) - (z_user * z_pos).sum(-1)
  squares = (z_user**2).sum() + (z_pos**2).sum() + (z_neg**2).sum()
  return np.mean(np.logaddexp(0.0, margin)) + reg * squares / (2 * len(z_user))


def _numpy_alignment(diff_rows):
  return sum(np.mean(x**2) for x in diff_rows)


def _alignment_size(diff_rows, earlier=()):
  """The multi-step alignment of |D| through |W_{k-1}|, |W_{k-2}|, ...: its
  value had no product cancelled, the scale of its float32 rounding. An
  empty row group counts zero."""
  rows = [np.abs(np.asarray(x, np.float64)) for x in diff_rows]
  size = lambda rows: sum(np.mean(x**2) if x.size else 0.0 for x in rows)
  total = size(rows)
  for w in earlier:
    rows = [x @ np.abs(np.asarray(w, np.float64)) for x in rows]
    total += size(rows)
  return total / (1 + len(earlier))


def _bpr_tolerance(rows):
  """XLA against numpy, both float32: each row's margin is 2D products that
  may cancel (the atol part, at their absolute sum averaged over the rows),
  then means over B rows and squared norms of B x D terms (depth 2)."""
  u, p, n = (np.abs(r) for r in rows)
  return tolerance(terms=B * D, scale=float(np.mean(np.sum(u * (p + n), -1))),
                   depth=2)


def _with_garbage(rows, num_pad):
  """Appends num_pad rows of huge values and NaN to each array."""
  garbage = np.full((num_pad, rows[0].shape[1]), 1e30, np.float32)
  garbage[0, 0] = np.nan
  return tuple(np.concatenate([r, garbage]) for r in rows)


def _mask(num_real, num_pad):
  return np.arange(num_real + num_pad) < num_real


@pytest.mark.parametrize("reg", [0.0, 0.01, 0.5])
def test_bpr_matches_numpy(reg):
  rows = _rows(np.random.default_rng(0), B, D)
  np.testing.assert_allclose(losses.bpr_loss(*rows, reg=reg),
                             _numpy_bpr(*rows, reg), **_bpr_tolerance(rows))


@pytest.mark.parametrize("mask_dtype", [bool, np.float32])
def test_bpr_ignores_padding_rows(mask_dtype):
  rows = _rows(np.random.default_rng(1), B, D)
  padded = _with_garbage(rows, 4)
  mask = _mask(B, 4).astype(mask_dtype)
  loss = losses.bpr_loss(*padded, mask=mask)
  np.testing.assert_allclose(loss, _numpy_bpr(*rows, 0.01),
                             **_bpr_tolerance(rows))
  grads = jax.grad(lambda z: losses.bpr_loss(*z, mask=mask))(padded)
  for grad in grads:
    assert np.isfinite(grad).all()
    np.testing.assert_array_equal(grad[B:], 0.0)


def test_alignment_ignores_padding_rows():
  rows = _rows(np.random.default_rng(2), B, D)
  # Means of B x D squares against numpy's float32, padded or not.
  bound = tolerance(terms=(B + 3) * D, scale=_alignment_size(rows))
  np.testing.assert_allclose(losses.alignment(rows), _numpy_alignment(rows),
                             **bound)
  padded = _with_garbage(rows, 3)
  np.testing.assert_allclose(losses.alignment(padded, _mask(B, 3)),
                             _numpy_alignment(rows), **bound)


def test_single_step_is_alignment_of_difference():
  rng = np.random.default_rng(3)
  target, predicted = _rows(rng, B, D), _rows(rng, B, D)
  diff = tuple(t - p for t, p in zip(target, predicted))
  # The same float32 differences; means of B x D squares as numpy's.
  np.testing.assert_allclose(
      losses.single_step_alignment(target, predicted),
      _numpy_alignment(diff),
      **tolerance(terms=B * D, scale=_alignment_size(diff)))


def _earlier(rng, dims):
  """Returns [W_{k-1}, ..., W_1] for dims = [d_0, ..., d_{k-1}]."""
  return [rng.normal(size=(dims[j], dims[j - 1])).astype(np.float32)
          for j in range(len(dims) - 1, 0, -1)]


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_multi_step_matches_explicit_formula(k):
  rng = np.random.default_rng(10 + k)
  dims = [3, 4, 6, 7][:k]
  target, predicted = _rows(rng, B, dims[-1]), _rows(rng, B, dims[-1])
  earlier = _earlier(rng, dims)
  diff = [t.astype(np.float64) - p for t, p in zip(target, predicted)]
  expected = _numpy_alignment(diff)
  for m in range(1, k):
    # m-th term: D @ W_{k-1} @ ... @ W_{k-m}.
    chain = np.eye(dims[-1])
    for j in range(k - 1, k - 1 - m, -1):
      chain = chain @ earlier[k - 1 - j]
    expected += _numpy_alignment([x @ chain for x in diff])
  expected /= k
  loss = jax.jit(losses.multi_step_alignment)(target, predicted, earlier)
  # float32 against float64: up to k - 1 chained products (<= 7 terms) that
  # may cancel, then means of B x d squares.
  np.testing.assert_allclose(
      loss, expected, **tolerance(terms=B * dims[-1], depth=k,
                                  scale=_alignment_size(diff, earlier)))


@pytest.mark.parametrize("k", [2, 3])
def test_multi_step_ignores_padding_rows(k):
  rng = np.random.default_rng(20 + k)
  dims = [3, 4, 6][:k]
  target, predicted = _rows(rng, B, dims[-1]), _rows(rng, B, dims[-1])
  earlier = _earlier(rng, dims)
  expected = losses.multi_step_alignment(target, predicted, earlier)
  loss = losses.multi_step_alignment(_with_garbage(target, 2),
                                     _with_garbage(predicted, 2), earlier,
                                     mask=_mask(B, 2))
  # 11 rows (2 zeroed) against 9: the sums may run in another order.
  diff = [t - p for t, p in zip(target, predicted)]
  np.testing.assert_allclose(
      loss, expected, **tolerance(terms=(B + 2) * dims[-1], depth=k,
                                  scale=_alignment_size(diff, earlier)))


def test_multi_step_with_k1_is_single_step():
  rng = np.random.default_rng(4)
  target, predicted = _rows(rng, B, D), _rows(rng, B, D)
  mask = _mask(B - 2, 2)
  # The same computation, A(D) / 1: the same bits.
  np.testing.assert_array_equal(
      losses.multi_step_alignment(target, predicted, [], mask=mask),
      losses.single_step_alignment(target, predicted, mask=mask))


def test_multi_step_gradient_skips_earlier():
  rng = np.random.default_rng(5)
  dims = [3, 4, 5]
  target, z = _rows(rng, B, dims[-1]), _rows(rng, B, dims[-1])
  earlier = _earlier(rng, dims)
  w_new = jnp.eye(dims[-1]) * 0.5

  def loss(w_new, earlier):
    predicted = tuple(x @ w_new for x in z)
    return losses.multi_step_alignment(target, predicted, earlier)

  grad_new, grad_earlier = jax.grad(loss, argnums=(0, 1))(w_new, earlier)
  assert np.abs(grad_new).max() > 0
  for grad in grad_earlier:
    np.testing.assert_array_equal(grad, 0.0)


def test_node_alignment_equals_row_alignment_of_gathered_rows():
  """Chaining per node then gathering gives the per-row multi-step loss."""
  rng = np.random.default_rng(7)
  dims = [5, 4, 3]
  num_nodes, batch = 11, 6
  target = jnp.asarray(rng.normal(size=(num_nodes, dims[0])), jnp.float32)
  predicted = jnp.asarray(rng.normal(size=(num_nodes, dims[0])), jnp.float32)
  earlier = [jnp.asarray(rng.normal(size=(a, b)), jnp.float32)
             for a, b in zip(dims, dims[1:])]
  index = tuple(jnp.asarray(rng.integers(num_nodes, size=batch)) for _ in range(3))
  mask = jnp.asarray([1, 1, 1, 1, 0, 0], bool)
  for chain in (earlier[:0], earlier[:1], earlier):
    expected = losses.multi_step_alignment(
        tuple(target[i] for i in index), tuple(predicted[i] for i in index),
        chain, mask=mask)
    got = losses.node_alignment(target, predicted, index, chain, mask=mask)
    # Weighted sums over 11 nodes x 5 dims against means over the gathered
    # rows, after the same chained products (<= 5 terms) that may cancel.
    real = [(np.asarray(target) - np.asarray(predicted))[np.asarray(i)][:4]
            for i in index]
    np.testing.assert_allclose(
        got, expected,
        **tolerance(terms=num_nodes * dims[0], depth=len(chain) + 1,
                    scale=_alignment_size(real, chain)))


@pytest.mark.parametrize("batch", [2, 5])  # 6 rows < 10 nodes; 15 rows > 10.
def test_batch_alignment_is_the_gathered_multi_step_loss_in_either_form(batch):
  rng = np.random.default_rng(batch)
  n, d, d_prev = 10, 4, 3
  target = jnp.asarray(rng.normal(size=(n, d_prev)), jnp.float32)
  z = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(d, d_prev)), jnp.float32)
  earlier = (jnp.asarray(rng.normal(size=(d_prev, 2)), jnp.float32),)
  index = tuple(jnp.asarray(rng.integers(0, n, batch)) for _ in range(3))
  mask = jnp.arange(batch) < batch - 1
  got = losses.batch_alignment(target, z, lambda x: x @ w, index, earlier,
                               mask=mask)
  # The definition (k = 2): (1/2) [A(D) + A(D W_1)], A summing the mean
  # square of each row group over its real rows and dimensions.
  keep = np.asarray(mask)
  a = lambda groups: sum(np.mean(x[keep] ** 2) for x in groups)
  diff = [np.asarray(target)[np.asarray(i)] -
          np.asarray(z)[np.asarray(i)] @ np.asarray(w) for i in index]
  want = (a(diff) + a([x @ np.asarray(earlier[0]) for x in diff])) / 2
  # Against numpy's float32: products through W (4 terms) and W_1 (3 terms)
  # that may cancel, then sums over up to 10 nodes x 3 dims.
  size = _alignment_size(
      [(np.abs(np.asarray(target)) + np.abs(np.asarray(z)) @ np.abs(
          np.asarray(w)))[np.asarray(i)][keep] for i in index], earlier)
  np.testing.assert_allclose(
      got, want, **tolerance(terms=n * d_prev, scale=size, depth=3))


@pytest.mark.parametrize("batch", [2, 5])  # node form, then gathered form
def test_batch_alignment_leaves_out_unknown_nodes_group_by_group(batch):
  """With `known`, each row group is averaged over its real rows whose node
  is known: unknown nodes' targets (here huge) change nothing."""
  rng = np.random.default_rng(10 + batch)
  n, d, d_prev = 10, 4, 3
  known = np.arange(n) % 3 != 0            # nodes 0, 3, 6, 9 are new
  target = rng.normal(size=(n, d_prev)).astype(np.float32)
  target[~known] = 1e6                     # whatever a new node's row holds
  z = rng.normal(size=(n, d)).astype(np.float32)
  w = rng.normal(size=(d, d_prev)).astype(np.float32)
  earlier = (rng.normal(size=(d_prev, 2)).astype(np.float32),)
  index = tuple(rng.integers(0, n, batch) for _ in range(3))
  index = (np.r_[0, index[0][1:]], np.r_[1, index[1][1:]], index[2])
  mask = np.arange(batch) < batch - 1
  got = losses.batch_alignment(jnp.asarray(target), jnp.asarray(z),
                               lambda x: x @ w, tuple(map(jnp.asarray, index)),
                               earlier, mask=mask, known=jnp.asarray(known))

  def a(groups):  # each group's own rows: real and known
    return sum(np.mean(x[mask & known[i]] ** 2) if np.any(mask & known[i])
               else 0.0 for x, i in zip(groups, index))
  diff = [target[i] - z[i] @ w for i in index]
  want = (a(diff) + a([x @ earlier[0] for x in diff])) / 2
  assert np.isfinite(got)
  # As in the test above, over each group's real, known rows.
  size = _alignment_size(
      [(np.abs(target) + np.abs(z) @ np.abs(w))[i][mask & known[i]]
       for i in index], earlier)
  np.testing.assert_allclose(
      got, want, **tolerance(terms=n * d_prev, scale=size, depth=3))


def test_batch_alignment_with_every_node_known_is_the_plain_loss():
  rng = np.random.default_rng(3)
  n = 8
  target = jnp.asarray(rng.normal(size=(n, 3)), jnp.float32)
  z = jnp.asarray(rng.normal(size=(n, 3)), jnp.float32)
  index = tuple(jnp.asarray(rng.integers(0, n, 4)) for _ in range(3))
  mask = jnp.asarray([1, 1, 1, 0], bool)
  plain = losses.batch_alignment(target, z, lambda x: x, index, mask=mask)
  every = losses.batch_alignment(target, z, lambda x: x, index, mask=mask,
                                 known=jnp.ones(n, bool))
  # Per-group weights against one shared mask: sums of squares over up to
  # 8 nodes x 3 dims (no cancellation: the value is its own scale).
  np.testing.assert_allclose(every, plain,
                             **tolerance(terms=n * 3, scale=float(plain)))
  # No known node in the batch: the term is zero, not NaN.
  none = losses.batch_alignment(target, z, lambda x: x, index, mask=mask,
                                known=jnp.zeros(n, bool))
  assert float(none) == 0.0
