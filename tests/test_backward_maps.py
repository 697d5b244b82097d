"""Tests for bcjax.backward.maps and .chains: kinds and chains against plain
sequential math, and the precision rule."""

import math

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bcjax.backward import chains
from bcjax.backward import maps
from bcjax.backward.maps import BackwardMap

# Compares floats of two computations: `make test-numerics` runs it under
# other XLA CPU kernels.
pytestmark = pytest.mark.numerics

KINDS = ("linear", "notrans")


def _random_chain(dims, seed):
  """Matrices `[dims[i + 1], dims[i]]` (W_1.. of versions with d_v =
  dims[v]) and a `[3, dims[-1]]` batch of the newest version."""
  rng = np.random.default_rng(seed)
  matrices = [rng.normal(size=(b, a)).astype(np.float32)
              for a, b in zip(dims, dims[1:])]
  return matrices, rng.normal(size=(3, dims[-1])).astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(dims=st.lists(st.integers(1, 9), min_size=2, max_size=7),
       seed=st.integers(0, 2**32 - 1))
def test_chain_matrix_is_the_float64_product_rounded_once(dims, seed):
  matrices, z = _random_chain(dims, seed)
  k = len(matrices)
  expected = np.eye(dims[-1])
  for w in reversed(matrices):  # W_k first.
    expected = expected @ w.astype(np.float64)
  composed = chains.chain_matrix(matrices, k, 0)
  assert composed.dtype == np.float32 and composed.shape == (dims[-1], dims[0])
  np.testing.assert_array_equal(composed, expected.astype(np.float32))
  # Applied: the float32 product of the rows with that one matrix.
  maps_ = [BackwardMap.from_matrix(w) for w in matrices]
  np.testing.assert_array_equal(chains.apply_chain(maps_, z, k, 0),
                                z @ expected.astype(np.float32))


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=15, deadline=None)
@given(dims=st.lists(st.sampled_from((1, 3, 4, 8)), min_size=2, max_size=5),
       seed=st.integers(0, 2**31 - 1), data=st.data())
def test_chain_matrix_equals_sequential_apply(kind, dims, seed, data):
  # dims[v] is d_v; the prefix reading needs dims that grow with the version.
  # Few distinct dims keep the number of eagerly compiled shapes small.
  if kind == "notrans":
    dims = sorted(dims)
  transform = maps.get(kind)
  keys = jax.random.split(jax.random.key(seed), len(dims) - 1)
  params = [transform.init(key, d_in, d_out)
            for key, d_in, d_out in zip(keys, dims[1:], dims)]
  matrices = [transform.matrix(p, d_in, d_out)
              for p, d_in, d_out in zip(params, dims[1:], dims)]
  k = len(dims) - 1
  j = data.draw(st.integers(0, k))
  z = np.random.default_rng(seed).normal(size=(4, dims[k])).astype(np.float32)
  expected = z
  for v in range(k, j, -1):
    expected = transform.apply(params[v - 1], expected, dims[v - 1])
  chain = chains.chain_matrix(matrices, k, j)
  assert np.shape(chain) == (dims[k], dims[j])
  np.testing.assert_allclose(z @ chain, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_apply_equals_product_with_matrix_and_jits(kind):
  transform = maps.get(kind)
  params = transform.init(jax.random.key(0), 7, 5)
  z = jax.random.normal(jax.random.key(1), (3, 7))
  applied = jax.jit(transform.apply, static_argnums=2)(params, z, 5)
  assert applied.shape == (3, 5)
  np.testing.assert_allclose(applied, z @ transform.matrix(params, 7, 5),
                             rtol=1e-5, atol=1e-6)


def test_notrans_matrix_equals_slicing():
  notrans = maps.get("notrans")
  assert notrans.init(jax.random.key(0), 6, 4) == {}
  z = np.arange(12.0).reshape(2, 6)
  matrix = notrans.matrix({}, 6, 4)
  np.testing.assert_array_equal(matrix, np.eye(6, 4))
  np.testing.assert_array_equal(z @ matrix, z[:, :4])
  np.testing.assert_array_equal(notrans.apply({}, z, 4), z[:, :4])


@pytest.mark.parametrize("d_in, d_out", [(1, 1), (16, 4), (256, 320)])
def test_linear_init_bounds_and_shape(d_in, d_out):
  params = maps.get("linear").init(jax.random.key(3), d_in, d_out)
  kernel = params["w"]
  assert set(params) == {"w"}
  assert kernel.shape == (d_in, d_out) and kernel.dtype == jnp.float32
  bound = 1 / math.sqrt(d_in)
  assert float(jnp.abs(kernel).max()) <= bound
  if d_in * d_out >= 1000:  # uniform over the whole range, not a corner
    assert float(kernel.max()) > 0.9 * bound
    assert float(kernel.min()) < -0.9 * bound
    assert abs(float(kernel.mean())) < 0.05 * bound


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("d_in, d_out", [(0, 3), (3, 0), (-1, 2)])
def test_non_positive_dims_are_rejected(kind, d_in, d_out):
  with pytest.raises(ValueError, match="dimensions must be positive"):
    maps.get(kind).init(jax.random.key(0), d_in, d_out)


def test_notrans_cannot_grow():
  notrans = maps.get("notrans")
  for call in (lambda: notrans.init(jax.random.key(0), 3, 5),
               lambda: notrans.apply({}, jnp.ones((2, 3)), 5),
               lambda: notrans.matrix({}, 3, 5)):
    with pytest.raises(ValueError, match="cannot read 5 dims from a 3-dim"):
      call()


def test_linear_rejects_a_matrix_of_the_wrong_shape():
  linear = maps.get("linear")
  params = linear.init(jax.random.key(0), 4, 3)
  with pytest.raises(ValueError, match=r"w has shape \(4, 3\), expected "
                     r"\(4, 2\)"):
    linear.matrix(params, 4, 2)
  with pytest.raises(ValueError, match=r"expected \(5, 3\)"):
    linear.apply(params, jnp.ones((2, 5)), 3)


def test_get_unknown_name_lists_known():
  with pytest.raises(ValueError, match="unknown backward map kind 'mlp'; "
                     "known: linear, notrans, affine, residual-mlp"):
    maps.get("mlp")


def test_chain_matrix_identity_and_errors():
  w1, w2 = np.ones((5, 4)), np.ones((6, 5))
  np.testing.assert_array_equal(chains.chain_matrix([w1, w2], 2, 2),
                                np.eye(6))
  np.testing.assert_array_equal(chains.chain_matrix([w1, w2], 0, 0),
                                np.eye(4))
  np.testing.assert_array_equal(chains.chain_matrix([w1, w2], 2, 0),
                                (w2 @ w1).astype(np.float32))
  with pytest.raises(ValueError, match="cannot map version 1 forward to the "
                     "newer version 2"):
    chains.chain_matrix([w1, w2], 1, 2)
  with pytest.raises(ValueError, match=r"from_version=3 is out of range; the "
                     r"2 maps cover versions 0\.\.2"):
    chains.chain_matrix([w1, w2], 3, 0)
  with pytest.raises(ValueError, match="to_version=-1 is out of range"):
    chains.chain_matrix([w1, w2], 2, -1)
  with pytest.raises(ValueError, match=r"W_2 has shape \(6, 3\) but W_1 has "
                     r"shape \(5, 4\)"):
    chains.chain_matrix([w1, np.ones((6, 3))], 2, 0)
  with pytest.raises(ValueError, match="no maps"):
    chains.chain_matrix([], 0, 0)


@pytest.mark.parametrize("kind", ("affine", "residual-mlp"))
def test_non_linear_kinds_init_apply_under_jit_and_keep_as_maps(kind):
  """The registry's other kinds: init gives the shapes their `in_out` names,
  apply jits and equals the `BackwardMap` call, and they have no matrix."""
  spec = maps.get(kind)
  params = spec.init(jax.random.key(4), 9, 6)
  z = np.random.default_rng(4).normal(size=(5, 9)).astype(np.float32)
  applied = jax.jit(spec.apply, static_argnums=2)(params, z, 6)
  assert applied.shape == (5, 6) and spec.matrix is None
  backward = BackwardMap(kind, {n: np.asarray(p) for n, p in params.items()})
  assert (backward.d_in, backward.d_out) == (9, 6)
  assert backward.matrix is None
  np.testing.assert_allclose(backward(z), applied, rtol=1e-5, atol=1e-6)
  if kind == "affine":  # Rank min(d_in, d_out) // 4 at init.
    assert params["a"].shape == (9, 1) and params["b"].shape == (1, 6)
  else:  # w2 = 0: a fresh residual MLP is its affine part.
    np.testing.assert_allclose(backward(z), z @ np.asarray(params["w"]),
                               rtol=1e-5, atol=1e-6)


def test_a_notrans_map_is_kept_as_its_matrix():
  with pytest.raises(ValueError, match="keep its matrix"):
    BackwardMap("notrans", {})
  w = maps.get("notrans").matrix({}, 5, 3)
  z = np.arange(10, dtype=np.float32).reshape(2, 5)
  np.testing.assert_array_equal(BackwardMap.from_matrix(w)(z), z[:, :3])


def test_chains_refuse_maps_that_do_not_chain_and_rows_of_the_wrong_width():
  w1 = BackwardMap.from_matrix(np.ones((4, 3)))
  w2 = BackwardMap.from_matrix(np.ones((6, 5)))
  with pytest.raises(ValueError, match="B_2 gives 5 dims but B_1 reads 4"):
    chains.chain([w1, w2], 2, 0)
  with pytest.raises(ValueError, match="version 1's rows have 4 dims"):
    chains.apply_chain([w1, w2], np.ones((2, 6)), 1, 0)
  # Maps outside the chain are not read.
  np.testing.assert_array_equal(
      chains.apply_chain([None, w2], np.ones((2, 6)), 2, 1), np.full((2, 5), 6))
