"""BatchNorm over the real rows of a padded batch, with a hand-written VJP.

Used by the embedding model (padded nodes) and the consumer heads (the last,
partial batch). The statistics are weighted by the row mask `w`:
mean = w x / n and var = w (x - mean)^2 / n with n = sum(w), as row-vector
products. The backward is written out instead of differentiated by JAX::

  dbias = sum_i g_i        dscale = sum_i g_i xhat_i      dxhat = g scale
  dx = r (dxhat - (w / n) scale (dbias + xhat dscale))
       + (w / n) (g_mean + 2 g_var (x - mean))

(r = 1 / sqrt(var + eps); the last line carries cotangents of the returned
statistics, zero in training). It needs two column sums where JAX's own
derivative of the same forward makes a dozen reductions and elementwise
passes, and the reductions are a visible part of an embedding training step
on the CPU (`launch/benchmark.py --sections=batchnorm` measures both forms). `tests/test_batchnorm.py` checks it against JAX's derivative.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


def _column_sum(weights: jax.Array, x: jax.Array) -> jax.Array:
  """`weights @ x`, `[d]`: XLA runs a row-vector product faster than the
  equivalent multiply-and-reduce on the CPU."""
  return jnp.dot(weights, x, precision=jax.lax.Precision.HIGHEST)


def masked_batch_norm_autodiff(x: jax.Array, w: jax.Array, scale: jax.Array,
                               bias: jax.Array, epsilon: float
                               ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`masked_batch_norm`'s forward, left for JAX to differentiate (the
  reference of the tests and the benchmark)."""
  n = jnp.sum(w)
  mean = _column_sum(w, x) / n
  centred = x - mean
  var = _column_sum(w, centred * centred) / n
  xhat = centred * jax.lax.rsqrt(var + epsilon)
  return xhat * scale + bias, mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def masked_batch_norm(x: jax.Array, w: jax.Array, scale: jax.Array,
                      bias: jax.Array, epsilon: float
                      ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Normalises `x` with the statistics of its rows weighted by `w`.

  Args:
    x: `[B, d]` activations.
    w: `[B]` float row weights, 1 for real rows and 0 for padding.
    scale, bias: `[d]` the affine parameters.
    epsilon: added to the variance (static).

  Returns:
    (`[B, d]` the normalised, scaled and shifted rows; `[d]` the weighted
    mean; `[d]` the weighted biased variance).
  """
  return masked_batch_norm_autodiff(x, w, scale, bias, epsilon)


def _forward(x, w, scale, bias, epsilon):
  out, mean, var = masked_batch_norm_autodiff(x, w, scale, bias, epsilon)
  r = jax.lax.rsqrt(var + epsilon)
  xhat = (x - mean) * r  # Recomputed: XLA fuses it into the forward.
  return (out, mean, var), (xhat, r, w, scale)


def _backward(epsilon, residuals, cotangents):
  del epsilon
  xhat, r, w, scale = residuals
  g, g_mean, g_var = cotangents
  ones = jnp.ones_like(w)
  dbias = _column_sum(ones, g)
  dscale = _column_sum(ones, g * xhat)
  share = (w / jnp.sum(w))[:, None]
  dx = (r * (g * scale - share * scale * (dbias + xhat * dscale))
        + share * (g_mean + 2.0 * g_var * xhat / r))
  return dx, jnp.zeros_like(w), dscale, dbias


masked_batch_norm.defvjp(_forward, _backward)


class MaskedBatchNorm(nn.Module):
  """BatchNorm over the real rows only, with PyTorch's conventions.

  Normalises with the biased batch variance; the running variance is updated
  with the unbiased one, running = 0.9 running + 0.1 batch, eps 1e-5.
  """
  momentum: float = 0.9
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, mask, train: bool):
    d = x.shape[-1]
    running_mean = self.variable("batch_stats", "mean", jnp.zeros, (d,))
    running_var = self.variable("batch_stats", "var", jnp.ones, (d,))
    scale = self.param("scale", nn.initializers.ones, (d,))
    bias = self.param("bias", nn.initializers.zeros, (d,))
    if not train:
      return ((x - running_mean.value)
              * jax.lax.rsqrt(running_var.value + self.epsilon) * scale + bias)
    w = mask.astype(x.dtype)
    out, mean, var = masked_batch_norm(x, w, scale, bias, self.epsilon)
    if not self.is_initializing():
      m, n = self.momentum, jnp.sum(w)
      running_mean.value = m * running_mean.value + (1 - m) * mean
      running_var.value = (m * running_var.value
                           + (1 - m) * var * n / jnp.maximum(n - 1, 1))
    return out
