"""Tests for bcjax.transforms: composition against plain sequential math."""

import math

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bcjax import transforms

# Compares floats of two computations: `make test-numerics` runs it under
# other XLA CPU kernels.
pytestmark = pytest.mark.numerics

KINDS = ("linear", "notrans")


def _random_chain(dims, seed):
  """Matrices `[dims[i], dims[i + 1]]` and a `[3, dims[0]]` batch."""
  rng = np.random.default_rng(seed)
  matrices = [rng.normal(size=(a, b)) for a, b in zip(dims, dims[1:])]
  return matrices, rng.normal(size=(3, dims[0]))


@settings(max_examples=40, deadline=None)
@given(dims=st.lists(st.integers(1, 9), min_size=2, max_size=7),
       seed=st.integers(0, 2**32 - 1))
def test_compose_equals_sequential_application_numpy(dims, seed):
  matrices, z = _random_chain(dims, seed)
  expected = z
  for m in matrices:
    expected = expected @ m
  composed = transforms.compose(matrices)
  assert isinstance(composed, np.ndarray)
  assert composed.shape == (dims[0], dims[-1])
  np.testing.assert_allclose(z @ composed, expected, rtol=1e-9, atol=1e-9)


@settings(max_examples=15, deadline=None)
@given(dims=st.lists(st.integers(1, 6), min_size=2, max_size=5),
       seed=st.integers(0, 2**32 - 1))
def test_compose_equals_sequential_application_jax(dims, seed):
  matrices, z = _random_chain(dims, seed)
  matrices = [jnp.asarray(m, jnp.float32) for m in matrices]
  expected = z.astype(np.float32)
  for m in matrices:
    expected = expected @ np.asarray(m)
  composed = jax.jit(transforms.compose)(matrices)
  assert isinstance(composed, jax.Array)
  np.testing.assert_allclose(z.astype(np.float32) @ np.asarray(composed),
                             expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=15, deadline=None)
@given(dims=st.lists(st.sampled_from((1, 3, 4, 8)), min_size=2, max_size=5),
       seed=st.integers(0, 2**31 - 1), data=st.data())
def test_chain_matrix_equals_sequential_apply(kind, dims, seed, data):
  # dims[v] is d_v; the prefix reading needs dims that grow with the version.
  # Few distinct dims keep the number of eagerly compiled shapes small.
  if kind == "notrans":
    dims = sorted(dims)
  transform = transforms.get(kind)
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
  chain = transforms.chain_matrix(matrices, k, j)
  assert np.shape(chain) == (dims[k], dims[j])
  np.testing.assert_allclose(z @ chain, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_apply_equals_product_with_matrix_and_jits(kind):
  transform = transforms.get(kind)
  params = transform.init(jax.random.key(0), 7, 5)
  z = jax.random.normal(jax.random.key(1), (3, 7))
  applied = jax.jit(transform.apply, static_argnums=2)(params, z, 5)
  assert applied.shape == (3, 5)
  np.testing.assert_allclose(applied, z @ transform.matrix(params, 7, 5),
                             rtol=1e-5, atol=1e-6)


def test_notrans_matrix_equals_slicing():
  notrans = transforms.notrans()
  assert notrans.init(jax.random.key(0), 6, 4) == {}
  z = np.arange(12.0).reshape(2, 6)
  matrix = notrans.matrix({}, 6, 4)
  np.testing.assert_array_equal(matrix, np.eye(6, 4))
  np.testing.assert_array_equal(z @ matrix, z[:, :4])
  np.testing.assert_array_equal(notrans.apply({}, z, 4), z[:, :4])


@pytest.mark.parametrize("d_in, d_out", [(1, 1), (16, 4), (256, 320)])
def test_linear_init_bounds_and_shape(d_in, d_out):
  params = transforms.linear().init(jax.random.key(3), d_in, d_out)
  kernel = params["kernel"]
  assert set(params) == {"kernel"}
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
    transforms.get(kind).init(jax.random.key(0), d_in, d_out)


def test_notrans_cannot_grow():
  notrans = transforms.notrans()
  for call in (lambda: notrans.init(jax.random.key(0), 3, 5),
               lambda: notrans.apply({}, jnp.ones((2, 3)), 5),
               lambda: notrans.matrix({}, 3, 5)):
    with pytest.raises(ValueError, match="cannot read 5 dims from a 3-dim"):
      call()


def test_linear_rejects_kernel_of_wrong_shape():
  linear = transforms.linear()
  params = linear.init(jax.random.key(0), 4, 3)
  with pytest.raises(ValueError, match=r"kernel has shape \(4, 3\), expected "
                     r"\(4, 2\)"):
    linear.matrix(params, 4, 2)
  with pytest.raises(ValueError, match=r"expected \(5, 3\)"):
    linear.apply(params, jnp.ones((2, 5)), 3)


def test_get_unknown_name_lists_known():
  with pytest.raises(ValueError, match="unknown backward transform 'mlp'; "
                     "known: linear, notrans"):
    transforms.get("mlp")


def test_compose_errors():
  with pytest.raises(ValueError, match=r"matrices\[0\] has shape \(3, 4\) but "
                     r"matrices\[1\] has shape \(5, 2\)"):
    transforms.compose([np.ones((3, 4)), np.ones((5, 2))])
  with pytest.raises(ValueError, match=r"matrices\[1\] has shape \(4,\)"):
    transforms.compose([np.ones((3, 4)), np.ones(4)])
  with pytest.raises(ValueError, match="no matrices"):
    transforms.compose([])


def test_chain_matrix_identity_and_errors():
  w1, w2 = np.ones((5, 4)), np.ones((6, 5))
  np.testing.assert_array_equal(transforms.chain_matrix([w1, w2], 2, 2),
                                np.eye(6))
  np.testing.assert_array_equal(transforms.chain_matrix([w1, w2], 0, 0),
                                np.eye(4))
  np.testing.assert_array_equal(transforms.chain_matrix([w1, w2], 2, 0),
                                w2 @ w1)
  with pytest.raises(ValueError, match="cannot map version 1 forward to the "
                     "newer version 2"):
    transforms.chain_matrix([w1, w2], 1, 2)
  with pytest.raises(ValueError, match=r"from_version=3 is out of range; the "
                     r"2 transforms cover versions 0\.\.2"):
    transforms.chain_matrix([w1, w2], 3, 0)
  with pytest.raises(ValueError, match="to_version=-1 is out of range"):
    transforms.chain_matrix([w1, w2], 2, -1)
  with pytest.raises(ValueError, match=r"W_2 has shape \(6, 3\) but W_1 has "
                     r"shape \(5, 4\)"):
    transforms.chain_matrix([w1, np.ones((6, 3))], 2, 0)
  with pytest.raises(ValueError, match="no transforms"):
    transforms.chain_matrix([], 0, 0)
