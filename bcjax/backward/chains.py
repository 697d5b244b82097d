"""Chains of backward maps: version k's rows in version j's space, one way.

The chain from version k down to j <= k applies B_k, then B_{k-1}, ..., then
B_{j+1}. Training, the run directory, the compatibility matrices, the store
and search all map rows through `chain` / `apply_chain`, under one precision
rule, so a BC embedding read from a store is bit for bit the one a run's
report scored:

  * a chain of linear maps is one matrix, M_{k->j} = W_k @ ... @ W_{j+1},
    composed in float64 and rounded once to float32 (`chain_matrix`), then
    applied as one float32 product;
  * a chain with any other map applies the maps one by one, in float32;
  * rows are always mapped over the same fixed blocks of
    `PRODUCT_BLOCK_ROWS` consecutive rows (`blocked_map`): BLAS rounds a
    product differently for different shapes, so mapping a few rows computes
    just the blocks that hold them, and a row read alone is exactly that row
    of the bulk read, on any machine.

The multi-step alignment loss (`bcjax.core.losses`) is the one place that keeps
its own products: it needs every partial chain of the frozen W's inside the
jitted step, which it builds incrementally.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from bcjax.backward.maps import BackwardMap

Rows = Callable[[np.ndarray], np.ndarray]

# Rows per block of `blocked_map`: enough for BLAS to run at full speed on a
# bulk read, few enough that reading one row costs little.
PRODUCT_BLOCK_ROWS = 1024


def _check_range(num: int, from_version: int, to_version: int,
                 what: str) -> None:
  for name, v in (("from_version", from_version), ("to_version", to_version)):
    if not 0 <= v <= num:
      raise ValueError(f"{what}: {name}={v} is out of range; the {num} maps "
                       f"cover versions 0..{num}")
  if to_version > from_version:
    raise ValueError(f"{what}: cannot map version {from_version} forward to "
                     f"the newer version {to_version}")


def chain_matrix(matrices: Sequence[Any], from_version: int,
                 to_version: int) -> np.ndarray:
  """M_{from->to} = W_k @ ... @ W_{j+1}, composed in float64, as float32.

  Args:
    matrices: `[W_1, ..., W_K]`, `matrices[v - 1]` of shape `[d_v, d_{v-1}]`.
    from_version: k, in `0..K`.
    to_version: j, in `0..k`.

  Returns:
    `[d_k, d_j]` float32; the identity when j == k.

  Raises:
    ValueError: a version out of range, `to_version > from_version`, a W
      that is not 2-D, or consecutive W's whose dimensions do not chain
      (naming the versions).
  """
  num = len(matrices)
  _check_range(num, from_version, to_version, "chain_matrix")
  versions = range(from_version, to_version, -1)
  for v in versions:
    if np.ndim(matrices[v - 1]) != 2:
      raise ValueError(f"chain_matrix: W_{v} has shape "
                       f"{np.shape(matrices[v - 1])}, expected [d_v, d_(v-1)]")
  for v in versions[:-1]:
    newer, older = np.shape(matrices[v - 1]), np.shape(matrices[v - 2])
    if newer[1] != older[0]:
      raise ValueError(f"chain_matrix: W_{v} has shape {newer} but W_{v - 1} "
                       f"has shape {older}; version {v - 1} cannot have both "
                       f"{newer[1]} and {older[0]} dims")
  if not versions:
    if num == 0:
      raise ValueError("chain_matrix: no maps, so version 0's dimension is "
                       "unknown")
    dim = (np.shape(matrices[0])[1] if from_version == 0
           else np.shape(matrices[from_version - 1])[0])
    return np.eye(dim, dtype=np.float32)
  product = np.asarray(matrices[from_version - 1], np.float64)
  for v in versions[1:]:
    product = product @ np.asarray(matrices[v - 1], np.float64)
  return product.astype(np.float32)


def chain(maps: Sequence[BackwardMap | None], from_version: int,
          to_version: int) -> Rows:
  """`[n, d_k] -> [n, d_j]` float32 rows: B_{j+1}(... B_k(z)).

  Args:
    maps: `[B_1, ..., B_K]` (entries outside the chain may be None).
    from_version: k, in `0..K`.
    to_version: j, in `0..k`.

  Returns:
    The row function (the precision rule of the module docstring; not yet
    blocked: `apply_chain` is); float32 identity when j == k.

  Raises:
    ValueError: versions out of range, or maps whose dimensions do not chain.
  """
  _check_range(len(maps), from_version, to_version, "chain")
  links = [maps[v - 1] for v in range(from_version, to_version, -1)]
  for v, newer, older in zip(range(from_version, 0, -1), links, links[1:]):
    if newer.d_out != older.d_in:
      raise ValueError(f"chain: B_{v} gives {newer.d_out} dims but B_{v - 1} "
                       f"reads {older.d_in}")
  if all(m.kind == "linear" for m in links):
    if not links:
      return lambda z: np.asarray(z, np.float32)
    matrix = chain_matrix([m.matrix for m in maps[to_version:from_version]],
                          from_version - to_version, 0)
    return lambda z: np.asarray(z, np.float32) @ matrix

  def apply(z: np.ndarray) -> np.ndarray:
    for backward in links:
      z = backward(z)
    return z
  return apply


def apply_chain(maps: Sequence[BackwardMap | None], z: Any,
                from_version: int, to_version: int,
                rows: np.ndarray | None = None) -> np.ndarray:
  """Version k's rows `z` mapped into version j's space (`chain`, blocked).

  Args:
    maps: `[B_1, ..., B_K]`.
    z: `[n, d_k]` rows of version k = `from_version` (or one row `[d_k]`).
    from_version, to_version: k >= j, in 0..K.
    rows: which rows of `z` to map (None: all).

  Returns:
    `[n, d_j]` (or `[len(rows), d_j]`) float32.

  Raises:
    ValueError: versions out of range, or rows of the wrong width.
  """
  newest = maps[from_version - 1] if 0 < from_version <= len(maps) else None
  if newest is not None and np.shape(z)[-1] != newest.d_in:
    d_k = newest.d_in
    raise ValueError(f"apply_chain: version {from_version}'s rows have "
                     f"{d_k} dims, got shape {np.shape(z)}")
  return blocked_map(z, chain(maps, from_version, to_version), rows)


def blocked_map(table: Any, fn: Rows,
                rows: np.ndarray | None = None) -> np.ndarray:
  """`fn(table)[rows]` for a row-wise `fn`, computed over fixed blocks of
  `PRODUCT_BLOCK_ROWS` table rows, so that any subset of rows comes out
  bit for bit as in the bulk result.

  Args:
    table: `[n, d_in]` rows (a numpy array or memory map), or one row
      `[d_in]` (then the result is 1-D).
    fn: `[b, d_in] -> [b, d_out]`, each output row from its input row only.
    rows: `[r]` integer row indices into `table` (any order, repeats
      allowed); None for every row.

  Returns:
    `[r, d_out]` (or `[n, d_out]`), in `fn`'s result dtype.
  """
  if np.ndim(table) == 1:  # One row.
    return blocked_map(np.asarray(table)[None], fn, rows)[0]
  n, block = table.shape[0], PRODUCT_BLOCK_ROWS
  empty = np.asarray(fn(table[:0]))  # The output width and dtype, no rows.
  if rows is None:
    out = np.empty((n, empty.shape[1]), empty.dtype)
    for start in range(0, n, block):  # Written block by block: no concatenation.
      out[start:start + block] = fn(table[start:start + block])
    return out
  rows = np.asarray(rows, dtype=np.int64).reshape(-1)
  blocks, position = np.unique(rows // block, return_inverse=True)
  out = np.empty((rows.size, empty.shape[1]), empty.dtype)
  for b, start in enumerate(blocks * block):
    picked = position == b
    out[picked] = np.asarray(fn(table[start:start + block]))[rows[picked]
                                                              - start]
  return out
