"""Tests of bcjax.models.aggregate against a plain numpy mean aggregation.

The reference builds the dense `[N, N]` operator of method §4 directly: every
interaction (u, i) is a message i -> u and a message u -> i, duplicates are
separate messages, each row is divided by its number of messages, and a node
without messages gets a zero row. Nodes are padded as the model pads them:
users in rows `0..num_users_pad-1`, items after them.
"""

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bcjax.models import aggregate as agg
import float32_bounds

# Compares floats of two computations: `make test-numerics` runs it under
# other XLA CPU kernels.
pytestmark = pytest.mark.numerics


def _reference_operator(user, item, num_users_pad, num_items_pad):
  """Dense `[N, N]` float64 mean-aggregation matrix (users first)."""
  n = num_users_pad + num_items_pad
  counts = np.zeros((n, n))
  for u, i in zip(user, item):
    counts[u, num_users_pad + i] += 1.0   # message item -> user
    counts[num_users_pad + i, u] += 1.0   # message user -> item
  degree = counts.sum(1, keepdims=True)
  return np.divide(counts, degree, out=np.zeros_like(counts),
                   where=degree > 0)


def _random_graph(rng, num_users, num_items, num_interactions):
  user = rng.integers(num_users, size=num_interactions)
  item = rng.integers(num_items, size=num_interactions)
  # Force duplicates: repeat a few interactions verbatim.
  repeat = rng.integers(num_interactions, size=max(1, num_interactions // 4))
  return (np.concatenate([user, user[repeat]]),
          np.concatenate([item, item[repeat]]))


# Fixed budgets, always larger than the real graph, so every example has the
# same shapes and each layout compiles once.
NUM_USERS_PAD, NUM_ITEMS_PAD, NUM_EDGES_PAD = 12, 14, 128

graphs = st.fixed_dictionaries({
    "num_users": st.integers(1, 9),
    "num_items": st.integers(1, 9),
    "num_interactions": st.integers(1, 40),
    "seed": st.integers(0, 2**31 - 1),
})


@jax.jit
def _forward_and_grad(adjacency, h, g):
  """aggregate(h), and the gradient of <aggregate(h), g> w.r.t. h."""
  out, vjp = jax.vjp(lambda h: agg.aggregate(adjacency, h), h)
  return out, vjp(g)[0]


@pytest.mark.parametrize("layout", agg.LAYOUTS)
@settings(max_examples=25, deadline=None)
@given(case=graphs)
def test_aggregate_and_gradient_match_numpy(layout, case):
  rng = np.random.default_rng(case["seed"])
  user, item = _random_graph(rng, case["num_users"], case["num_items"],
                             case["num_interactions"])
  adjacency = agg.make_adjacency(user, item, NUM_USERS_PAD, NUM_ITEMS_PAD,
                                 layout=layout, num_edges=NUM_EDGES_PAD)
  reference = _reference_operator(user, item, NUM_USERS_PAD, NUM_ITEMS_PAD)
  n = NUM_USERS_PAD + NUM_ITEMS_PAD
  h = rng.normal(size=(n, 3)).astype(np.float32)
  g = rng.normal(size=(n, 3)).astype(np.float32)
  out, grad = _forward_and_grad(adjacency, jnp.asarray(h), jnp.asarray(g))
  assert out.shape == h.shape
  # Sparse kernels against a dense float64 product: rounding of each sum.
  float32_bounds.assert_matches_product(out, reference, h)
  # The backward pass is the transposed operator: d<A h, g>/dh = A^T g.
  float32_bounds.assert_matches_product(grad, reference.T, g)


@pytest.mark.parametrize("layout", agg.LAYOUTS)
def test_edge_budget_does_not_change_result(layout):
  rng = np.random.default_rng(7)
  user, item = _random_graph(rng, 5, 4, 9)
  h = jnp.asarray(rng.normal(size=(NUM_USERS_PAD + NUM_ITEMS_PAD, 2)),
                  jnp.float32)
  outs = [np.asarray(agg.aggregate(
      agg.make_adjacency(user, item, NUM_USERS_PAD, NUM_ITEMS_PAD,
                         layout=layout, num_edges=budget), h))
          for budget in (None, 2 * len(user), NUM_EDGES_PAD)]
  for out in outs[1:]:
    np.testing.assert_allclose(out, outs[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layout", agg.LAYOUTS)
def test_isolated_and_padding_nodes_get_zero(layout):
  # Users 0..3 real (user 2 isolated), items 0..2 real (item 1 isolated),
  # budgets 6 users x 5 items, a generous edge budget.
  user = np.array([0, 0, 1, 3, 3, 3])
  item = np.array([0, 2, 0, 2, 2, 0])
  adjacency = agg.make_adjacency(user, item, 6, 5, layout=layout,
                                 num_edges=40)
  h = jnp.asarray(np.random.default_rng(0).normal(size=(11, 4)), jnp.float32)
  out = np.asarray(agg.aggregate(adjacency, h))
  zero_rows = [2, 4, 5, 6 + 1, 6 + 3, 6 + 4]
  np.testing.assert_array_equal(out[zero_rows], 0.0)
  # User 3: items 2, 2, 0 -> the duplicate counts twice.
  np.testing.assert_allclose(out[3], (2 * h[6 + 2] + h[6 + 0]) / 3, rtol=1e-5,
                             atol=1e-6)
  # Item 0: users 0, 1, 3.
  np.testing.assert_allclose(out[6], (h[0] + h[1] + h[3]) / 3, rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("layout", agg.LAYOUTS)
def test_layouts_under_jit_match(layout):
  rng = np.random.default_rng(3)
  user, item = _random_graph(rng, 7, 5, 20)
  adjacency = agg.make_adjacency(user, item, 8, 8, layout=layout,
                                 num_edges=2 * len(user) + 10)
  h = rng.normal(size=(16, 2)).astype(np.float32)
  got = jax.jit(agg.aggregate)(adjacency, jnp.asarray(h))
  float32_bounds.assert_matches_product(
      got, _reference_operator(user, item, 8, 8), h)


def test_edge_budget_too_small_raises():
  with pytest.raises(ValueError, match="budget"):
    agg.make_adjacency(np.array([0, 1]), np.array([0, 0]), 2, 1,
                       layout="sparse", num_edges=3)


def test_unknown_layout_raises():
  with pytest.raises(ValueError, match="layout"):
    agg.make_adjacency(np.array([0]), np.array([0]), 1, 1, layout="coo")
