"""Padding to fixed shapes: one compiled program for data of any size.

Jitted programs are compiled per shape, so the library pads what varies
(batches of an epoch, evaluation rows, node counts) up to a shared size and
carries a mask of the real rows; every consumer of a padded array reads
that mask, never the padding.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def num_blocks(n: int, size: int) -> int:
  """How many blocks of `size` hold `n` rows: ceil(n / size)."""
  return -(-int(n) // int(size))


def round_up(n: int, multiple: int) -> int:
  """The least positive multiple of `multiple` that is >= n."""
  return max(int(multiple), num_blocks(n, multiple) * int(multiple))


def pad_rows(arrays: Sequence, size: int) -> tuple[list, np.ndarray]:
  """Arrays of equal length n zero-padded along axis 0 to `size` rows.

  Works on numpy arrays (host) and on jax arrays (under a trace too).

  Args:
    arrays: arrays whose first axes have the same length n <= size.
    size: the padded length.

  Returns:
    (the padded arrays, dtypes kept; the `[size]` bool mask, True on the
    first n rows).

  Raises:
    ValueError: arrays of different lengths, or more than `size` rows.
  """
  n = len(arrays[0])
  if any(len(a) != n for a in arrays) or n > size:
    raise ValueError(f"pad_rows: lengths {[len(a) for a in arrays]} do not "
                     f"all equal one n <= {size}")
  xp = jnp if any(isinstance(a, jax.Array) for a in arrays) else np
  padded = [xp.concatenate([a, xp.zeros((size - n,) + a.shape[1:], a.dtype)])
            for a in arrays]
  return padded, np.arange(size) < n
