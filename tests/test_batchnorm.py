"""The masked BatchNorm's hand-written VJP against JAX's derivative, and its
statistics against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bcjax.models.batchnorm import (MaskedBatchNorm, masked_batch_norm,
                                    masked_batch_norm_autodiff)
from float32_bounds import tolerance

# Compares floats of two computations: `make test-numerics` runs it under
# other XLA CPU kernels.
pytestmark = pytest.mark.numerics


def _inputs(seed, rows=40, d=6, real=0.7):
  rng = np.random.default_rng(seed)
  x = (3.0 * rng.standard_normal((rows, d)) + 1.5).astype(np.float32)
  w = (rng.uniform(size=rows) < real).astype(np.float32)
  w[0] = 1.0
  scale = rng.standard_normal(d).astype(np.float32)
  bias = rng.standard_normal(d).astype(np.float32)
  return x, w, scale, bias


def test_statistics_are_those_of_the_real_rows_by_numpy():
  x, w, scale, bias = _inputs(0)
  out, mean, var = masked_batch_norm(x, w, scale, bias, 1e-5)
  real = x[w > 0]
  np.testing.assert_allclose(mean, real.mean(0), rtol=1e-5, atol=1e-5)
  # Against numpy's float32: weighted sums over 40 rows, the mean and then
  # the centred squares (depth 2); the variances are about 9.
  np.testing.assert_allclose(var, real.var(0),
                             **tolerance(terms=40, scale=10.0, depth=2))
  expected = (x - real.mean(0)) / np.sqrt(real.var(0) + 1e-5) * scale + bias
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vjp_equals_jax_derivative_of_the_same_forward(seed):
  """Every cotangent, those of the returned statistics included."""
  x, w, scale, bias = _inputs(seed)
  rng = np.random.default_rng(seed + 10)
  cotangents = (rng.standard_normal(x.shape).astype(np.float32),
                rng.standard_normal(x.shape[1]).astype(np.float32),
                rng.standard_normal(x.shape[1]).astype(np.float32))
  grads = []
  for f in (masked_batch_norm, masked_batch_norm_autodiff):
    _, vjp = jax.vjp(lambda x, s, b, f=f: f(x, w, s, b, 1e-5), x, scale, bias)
    grads.append(vjp(cotangents))
  for ours, jaxs in zip(*grads):
    np.testing.assert_allclose(ours, jaxs, rtol=2e-4, atol=2e-5)


def test_padding_rows_get_no_influence_on_real_rows():
  """Changing a padding row changes neither the real rows' outputs nor the
  real rows' gradients."""
  x, w, scale, bias = _inputs(3)
  pad = int(np.flatnonzero(w == 0)[0])
  moved = x.copy()
  moved[pad] += 100.0
  loss = lambda x: jnp.sum(jnp.sin(masked_batch_norm(x, w, scale, bias,
                                                     1e-5)[0]) * w[:, None])
  real = w > 0
  # Two evaluations that may sum in another order: the 40-row statistics
  # (depth 2) in outputs xhat * scale + bias of size below 10; a leaking
  # padding row (moved by 100) would move them by about 1.
  np.testing.assert_allclose(
      masked_batch_norm(moved, w, scale, bias, 1e-5)[0][real],
      masked_batch_norm(x, w, scale, bias, 1e-5)[0][real],
      **tolerance(terms=40, scale=10.0, depth=2))
  np.testing.assert_allclose(jax.grad(loss)(moved)[real],
                             jax.grad(loss)(x)[real], rtol=1e-4, atol=1e-6)


def test_module_updates_running_statistics_with_unbiased_variance():
  x, w, _, _ = _inputs(4)
  module = MaskedBatchNorm()
  variables = module.init(jax.random.key(0), x, w > 0, train=False)
  _, updates = module.apply(variables, x, w > 0, train=True,
                            mutable=["batch_stats"])
  real = x[w > 0]
  np.testing.assert_allclose(updates["batch_stats"]["mean"],
                             0.1 * real.mean(0), rtol=1e-5, atol=1e-6)
  # Against numpy's float32 as above; 0.9 + 0.1 var is about 2.
  np.testing.assert_allclose(updates["batch_stats"]["var"],
                             0.9 + 0.1 * real.var(0, ddof=1),
                             **tolerance(terms=40, scale=3.0, depth=2))
