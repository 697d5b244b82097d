"""Tests of bcjax.backward.fits: planted maps recovered, chains applied map by
map."""

import numpy as np
import pytest

from bcjax.backward import chains, fits
from bcjax.backward.maps import BackwardMap
from bcjax.util import keys

# Compares floats of two computations: `make test-numerics` runs it under
# other XLA CPU kernels.
pytestmark = pytest.mark.numerics


def _pairs(seed, n=2000, d_in=24, d_out=16):
  rng = np.random.default_rng(seed)
  return rng, rng.normal(size=(n, d_in)).astype(np.float32)


def test_low_rank_affine_recovers_a_planted_low_rank_affine_map():
  rng, x = _pairs(0)
  a, b = rng.normal(size=(24, 4)), rng.normal(size=(4, 16))
  bias = rng.normal(size=(1, 16))
  y = x @ a @ b + bias
  fitted = fits.low_rank_affine(x, y, rank=4, ridge=0.0)
  assert fitted.kind == "affine" and fitted.params["a"].shape == (24, 4)
  assert (fitted.d_in, fitted.d_out) == (24, 16)
  assert np.allclose(fitted.params["a"] @ fitted.params["b"], a @ b, atol=1e-3)
  assert np.allclose(fitted.params["bias"], bias, atol=1e-3)
  fresh = rng.normal(size=(50, 24)).astype(np.float32)
  assert np.allclose(fitted(fresh), fresh @ a @ b + bias,
                     atol=1e-3)
  # A lower rank is the best rank-2 fit: worse, but still a fit.
  low = fits.low_rank_affine(x, y, rank=2)
  assert np.mean((low(x) - y) ** 2) > 1e-2


def test_residual_mlp_recovers_a_planted_nonlinear_map():
  """y = x W + relu(x U) V: the MLP's error is a small fraction of the best
  affine map's, on the training pairs and on fresh ones."""
  rng, x = _pairs(1, d_in=8, d_out=6)
  w, u, v = (rng.normal(size=s) for s in ((8, 6), (8, 16), (16, 6)))
  planted = lambda z: z @ w + np.maximum(z @ u, 0) @ v
  y = planted(x)
  mlp = fits.residual_mlp(x, y, keys.derive(keys.root(0), "test"),
                                  hidden=64, steps=1500)
  affine = fits.low_rank_affine(x, y, rank=6)
  fresh = rng.normal(size=(500, 8)).astype(np.float32)
  for z in (x, fresh):
    mse = lambda m: np.mean((m(z) - planted(z)) ** 2)
    assert mse(mlp) < 0.05 * mse(affine), (mse(mlp), mse(affine))


def test_a_linear_chain_is_one_matrix_and_a_mixed_chain_map_by_map():
  rng = np.random.default_rng(2)
  dims = [5, 7, 9, 11]  # d_0 .. d_3
  matrices = [rng.normal(size=(dims[k], dims[k - 1])).astype(np.float32)
              for k in range(1, 4)]
  linear = [BackwardMap.from_matrix(w) for w in matrices]
  z = rng.normal(size=(20, 11)).astype(np.float32)
  for j in range(4):
    assert np.array_equal(chains.apply_chain(linear, z, 3, j),
                          z @ chains.chain_matrix(matrices, 3, j))
  x3, x2 = (rng.normal(size=(300, d)).astype(np.float32) for d in (11, 9))
  mlp = fits.residual_mlp(x3, x2, keys.derive(keys.root(0), "chain"),
                                  hidden=8, steps=5)
  mixed = [linear[0], linear[1], mlp]
  expected = linear[0](linear[1](mlp(z)))
  assert np.allclose(chains.apply_chain(mixed, z, 3, 0), expected,
                     atol=1e-5)
  assert np.array_equal(chains.apply_chain(mixed, z, 3, 3), z)


def test_bad_input_is_refused_by_name():
  _, x = _pairs(3, n=10)
  with pytest.raises(ValueError, match="rank 30 outside"):
    fits.low_rank_affine(x, x[:, :16], rank=30)
  with pytest.raises(ValueError, match="backward fit: expected paired rows"):
    fits.low_rank_affine(x, x[:5], rank=2)
  with pytest.raises(ValueError, match="NaN"):
    fits.low_rank_affine(np.full((4, 2), np.nan), x[:4, :2], rank=1)
  with pytest.raises(ValueError, match="unknown backward map kind"):
    BackwardMap("spline", {})
  with pytest.raises(ValueError, match="needs a 2-D parameter 'w'"):
    BackwardMap("linear", {})
  with pytest.raises(ValueError, match="reads 24 dims"):
    BackwardMap.from_matrix(np.eye(24))(x[:, :3])
  with pytest.raises(ValueError, match="from_version=1 is out of range"):
    chains.apply_chain([], x, 1, 2)
