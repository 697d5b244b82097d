"""The consumer head of method §7: a two-layer MLP with BatchNorm and dropout.

Dense(h) -> BatchNorm -> ReLU -> Dropout, Dense(h) -> BatchNorm -> Dropout,
Dense(1), as in the paper's reference implementation (PyTorch conventions:
BatchNorm momentum 0.1, i.e. Flax's 0.9, eps 1e-5, unbiased running variance;
nn.Linear's uniform initialisation), with the GNN's `MaskedBatchNorm` so that
the padding rows of a last, partial batch stay out of the statistics. The
dropout rate is a static call argument: at rate 0 no random bits are drawn,
and on the CPU drawing a dropout mask (threefry) costs more than the
layer's matmul.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bcjax.models.batchnorm import MaskedBatchNorm
from bcjax.models.pinsage import torch_bias_init, torch_linear_init


def dropout(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
  """Inverted dropout at a static rate; rate 0 is the identity (no draw).

  Each entry is kept when a 16-bit uniform integer falls below
  round((1 - rate) * 2^16): the keep probability is exact for rates that
  are multiples of 2^-16 (0.25, 0.5, ...) and within 2^-17 otherwise. Two
  16-bit draws come from each 32-bit random word, half the bits (and half
  the time) of `jax.random.bernoulli`.

  Args:
    x: the activations, `[..., d]`.
    rate: the drop probability, a Python float in [0, 1).
    key: PRNG key of the mask.

  Returns:
    `x`'s shape: kept entries scaled by 1 / (1 - rate), the others 0.
  """
  if not 0.0 <= rate < 1.0:
    raise ValueError(f"dropout rate {rate} must lie in [0, 1)")
  if rate == 0.0:
    return x
  d = x.shape[-1]
  words = jax.random.bits(key, x.shape[:-1] + (-(-d // 2),), jnp.uint32)
  draws = jnp.concatenate([words & 0xFFFF, words >> 16], axis=-1)[..., :d]
  keep = 1.0 - rate
  kept = draws < np.uint32(round(keep * 65536))
  return jnp.where(kept, x / keep, 0.0)


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
  def __call__(self, x: jax.Array, train: bool = False, rate: float = 0.0,
               mask: jax.Array | None = None) -> jax.Array:
    """Logits of a batch.

    Args:
      x: `[B, d_in]` inputs.
      train: batch statistics and dropout (needs a "dropout" rng) if True,
        running statistics and no dropout otherwise.
      rate: the dropout probability, a Python float (static).
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
