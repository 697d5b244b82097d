"""The consumer head of method §7: a two-layer MLP with BatchNorm and dropout.

Dense(h) -> BatchNorm -> ReLU -> Dropout, Dense(h) -> BatchNorm -> Dropout,
Dense(1), as in the paper's reference implementation (PyTorch conventions:
BatchNorm momentum 0.1, i.e. Flax's 0.9, eps 1e-5, unbiased running variance;
nn.Linear's uniform initialisation), with the GNN's `MaskedBatchNorm` so that
the padding rows of a last, partial batch stay out of the statistics. The
dropout rate is a call argument, not a module attribute, so that one compiled
program can `jax.vmap` over a grid of rates.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bcjax.models.pinsage import (MaskedBatchNorm, torch_bias_init,
                                  torch_linear_init)


def dropout(x: jax.Array, rate: jax.Array, key: jax.Array) -> jax.Array:
  """Inverted dropout with a traced rate; rate 0 is the identity.

  Args:
    x: the activations, any shape.
    rate: the drop probability, a scalar in [0, 1) (may be traced).
    key: PRNG key of the mask.

  Returns:
    `x`'s shape: kept entries scaled by 1 / (1 - rate), the others 0.
  """
  keep = 1.0 - rate
  kept = jax.random.bernoulli(key, keep, x.shape)
  return jnp.where(kept, x / jnp.maximum(keep, 1e-12), 0.0)


class ConsumerMLP(nn.Module):
  """Binary classification head on (concatenated) embeddings.

  Attributes:
    hidden: the hidden width h.
  """
  hidden: int

  def _dense(self, features: int, fan_in: int, name: str) -> nn.Dense:
    return nn.Dense(features, kernel_init=torch_linear_init,
                    bias_init=torch_bias_init(fan_in), name=name)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False,
               rate: jax.Array | float = 0.0,
               mask: jax.Array | None = None) -> jax.Array:
    """Logits of a batch.

    Args:
      x: `[B, d_in]` inputs.
      train: batch statistics and dropout (needs a "dropout" rng) if True,
        running statistics and no dropout otherwise.
      rate: the dropout probability, a scalar (may be traced).
      mask: optional `[B]` bool, the real rows; padding rows stay out of the
        BatchNorm statistics.

    Returns:
      `[B]` logits.
    """
    mask = jnp.ones(x.shape[:1], bool) if mask is None else mask
    h = self._dense(self.hidden, x.shape[-1], "dense_0")(x)
    h = nn.relu(MaskedBatchNorm(name="norm_0")(h, mask, train))
    if train:
      h = dropout(h, rate, self.make_rng("dropout"))
    h = self._dense(self.hidden, self.hidden, "dense_1")(h)
    h = MaskedBatchNorm(name="norm_1")(h, mask, train)
    if train:
      h = dropout(h, rate, self.make_rng("dropout"))
    return self._dense(1, self.hidden, "output")(h)[:, 0]
