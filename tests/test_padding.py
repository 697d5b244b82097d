"""Padding to fixed shapes (bcjax.util.padding), on host and under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bcjax.util import padding


@pytest.mark.parametrize("n,multiple,expected", [(0, 4, 4), (1, 4, 4),
                                                 (4, 4, 4), (5, 4, 8),
                                                 (1023, 1024, 1024)])
def test_round_up_is_the_least_positive_multiple(n, multiple, expected):
  assert padding.round_up(n, multiple) == expected
  assert padding.num_blocks(n, multiple) == -(-n // multiple)


def test_pad_rows_keeps_rows_and_dtypes_and_masks_the_rest():
  ids = np.array([3, 1, 2], np.int32)
  rows = np.arange(6, dtype=np.float32).reshape(3, 2)
  (ids_p, rows_p), mask = padding.pad_rows((ids, rows), 5)
  assert ids_p.dtype == np.int32 and rows_p.dtype == np.float32
  np.testing.assert_array_equal(ids_p, [3, 1, 2, 0, 0])
  np.testing.assert_array_equal(rows_p[:3], rows)
  np.testing.assert_array_equal(rows_p[3:], 0.0)
  np.testing.assert_array_equal(mask, [True, True, True, False, False])


def test_pad_rows_under_jit_matches_the_host():
  x = np.arange(7, dtype=np.int32)
  host, host_mask = padding.pad_rows((x,), 12)
  traced = jax.jit(lambda a: padding.pad_rows((a,), 12))(jnp.asarray(x))
  np.testing.assert_array_equal(traced[0][0], host[0])
  np.testing.assert_array_equal(traced[1], host_mask)


def test_pad_rows_names_bad_lengths():
  with pytest.raises(ValueError, match=r"lengths \[3, 2\]"):
    padding.pad_rows((np.zeros(3), np.zeros(2)), 4)
  with pytest.raises(ValueError, match="n <= 2"):
    padding.pad_rows((np.zeros(3),), 2)
