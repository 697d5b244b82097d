"""Backward transformations and their composition (method §1 and §6).

A backward transformation B_k maps version-k embeddings (`d_k` dims) into the
space of version k-1 (`d_{k-1}` dims). Embeddings are row vectors, so every
B_k is a bias-free linear map represented by a matrix W_k of shape
`[d_k, d_{k-1}]` and applied as `z @ W_k`. The chain from version k down to
version j <= k is one matrix:

  M_{k->j} = W_k @ W_{k-1} @ ... @ W_{j+1},  shape `[d_k, d_j]`.

In the mould of optax, a kind of transformation is a triple of pure functions
(`BackwardTransform`): `init` makes its parameters, `apply` maps embeddings and
`matrix` gives the W it stands for, so that `apply(p, z, d) == z @ matrix(p,
d_in, d)`. Static dimensions are arguments, never parameters, so the
parameters are a pytree of arrays that can be trained.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Params = dict[str, Any]


class BackwardTransform(NamedTuple):
  """A kind of backward transformation `R^{d_in} -> R^{d_out}`.

  Attributes:
    init: `init(key, d_in, d_out) -> params`, a dict of arrays (maybe empty).
    apply: `apply(params, z, d_out) -> z'` maps `[..., d_in]` embeddings to
      `[..., d_out]`. `d_out` is static (give it as a static argument under
      `jax.jit`); transformations without parameters need it.
    matrix: `matrix(params, d_in, d_out) -> [d_in, d_out]`, the matrix W with
      `apply(params, z, d_out) == z @ W`.
  """
  init: Callable[[jax.Array, int, int], Params]
  apply: Callable[[Params, jax.Array, int], jax.Array]
  matrix: Callable[[Params, int, int], jax.Array]


def _check_dims(name: str, d_in: int, d_out: int) -> None:
  if d_in < 1 or d_out < 1:
    raise ValueError(f"{name} transform: dimensions must be positive, got "
                     f"d_in={d_in}, d_out={d_out}")


def linear() -> BackwardTransform:
  """A learned bias-free linear map, params `{"kernel": [d_in, d_out]}`.

  The kernel starts uniform in `[-1/sqrt(d_in), 1/sqrt(d_in)]`, the default of
  PyTorch's `nn.Linear` that the paper's reference code uses.

  Returns:
    The `BackwardTransform`; `init` raises ValueError for non-positive dims and
    `apply` / `matrix` for a kernel whose shape disagrees with the dims.
  """

  def init(key: jax.Array, d_in: int, d_out: int) -> Params:
    _check_dims("linear", d_in, d_out)
    bound = 1.0 / math.sqrt(d_in)
    kernel = jax.random.uniform(key, (d_in, d_out), jnp.float32, -bound, bound)
    return {"kernel": kernel}

  def kernel_of(params: Params, d_in: int, d_out: int) -> jax.Array:
    kernel = params["kernel"]
    if np.shape(kernel) != (d_in, d_out):
      raise ValueError(f"linear transform: kernel has shape "
                       f"{np.shape(kernel)}, expected {(d_in, d_out)}")
    return kernel

  def apply(params: Params, z: jax.Array, d_out: int) -> jax.Array:
    return jnp.matmul(z, kernel_of(params, z.shape[-1], d_out))

  def matrix(params: Params, d_in: int, d_out: int) -> jax.Array:
    return jnp.asarray(kernel_of(params, d_in, d_out))

  return BackwardTransform(init, apply, matrix)


def notrans() -> BackwardTransform:
  """The prefix reading: the first `d_out` dims, no parameters.

  Its matrix is `[I_{d_out}; 0]` of shape `[d_in, d_out]`. It stands for the
  strategies that align (or just read) a prefix of the new embedding.

  Returns:
    The `BackwardTransform`; its functions raise ValueError unless
    `1 <= d_out <= d_in`.
  """

  def check(d_in: int, d_out: int) -> None:
    _check_dims("notrans", d_in, d_out)
    if d_out > d_in:
      raise ValueError(f"notrans transform: cannot read {d_out} dims from a "
                       f"{d_in}-dim embedding (needs d_out <= d_in)")

  def init(key: jax.Array, d_in: int, d_out: int) -> Params:
    del key
    check(d_in, d_out)
    return {}

  def apply(params: Params, z: jax.Array, d_out: int) -> jax.Array:
    del params
    check(z.shape[-1], d_out)
    return jnp.asarray(z)[..., :d_out]

  def matrix(params: Params, d_in: int, d_out: int) -> jax.Array:
    del params
    check(d_in, d_out)
    return jnp.eye(d_in, d_out, dtype=jnp.float32)

  return BackwardTransform(init, apply, matrix)


_KINDS: dict[str, Callable[[], BackwardTransform]] = {
    "linear": linear,
    "notrans": notrans,
}


def get(name: str) -> BackwardTransform:
  """The transformation kind called `name` ("linear" or "notrans").

  Args:
    name: the kind, e.g. `Objective.transform`.

  Returns:
    A fresh `BackwardTransform` of that kind.

  Raises:
    ValueError: for an unknown name (the message lists the known ones).
  """
  if name not in _KINDS:
    raise ValueError(f"unknown backward transform {name!r}; known: "
                     f"{', '.join(sorted(_KINDS))}")
  return _KINDS[name]()


def _matmul(a, b):
  """`a @ b`: numpy in, numpy out; jax otherwise, at full float32 precision."""
  if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
    return a @ b
  return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def compose(matrices: Sequence[Any]) -> Any:
  """Folds matrices, given in the order they are applied, into one.

  For the chain from version k down to j, pass `[W_k, W_{k-1}, ..., W_{j+1}]`:
  then `z @ compose(matrices) == z @ W_k @ W_{k-1} @ ... @ W_{j+1}`.

  Args:
    matrices: at least one 2-D array, `matrices[i]` of shape
      `[d_i, d_{i+1}]`. All numpy gives a numpy result; otherwise a jax array
      (jittable).

  Returns:
    `[d_0, d_n]`, the product `matrices[0] @ ... @ matrices[-1]`.

  Raises:
    ValueError: for a non-2-D matrix, inner dimensions that do not match
      (naming both positions and shapes), or an empty list.
  """
  if not matrices:
    raise ValueError("compose: no matrices; an empty chain has no dimension")
  for i, m in enumerate(matrices):
    if np.ndim(m) != 2:
      raise ValueError(f"compose: matrices[{i}] has shape {np.shape(m)}, "
                       "expected a 2-D matrix")
  for i in range(1, len(matrices)):
    prev, cur = np.shape(matrices[i - 1]), np.shape(matrices[i])
    if prev[1] != cur[0]:
      raise ValueError(f"compose: matrices[{i - 1}] has shape {prev} but "
                       f"matrices[{i}] has shape {cur}; inner dimensions "
                       f"{prev[1]} and {cur[0]} differ")
  product = matrices[0]
  for m in matrices[1:]:
    product = _matmul(product, m)
  return product


# Rows per block of `blocked_product`: enough for BLAS to run at full speed on
# a bulk read, few enough that reading one row costs little.
PRODUCT_BLOCK_ROWS = 1024


def blocked_product(table: np.ndarray, matrix: np.ndarray,
                    rows: np.ndarray | None = None) -> np.ndarray:
  """`(table @ matrix)[rows]`, every row computed the same way whatever is asked.

  BLAS rounds a product differently for different shapes (kernel choice,
  row tiles, threading), so `table[rows] @ matrix` need not equal
  `(table @ matrix)[rows]` bit for bit. Here the product is always taken over
  the same fixed blocks of `PRODUCT_BLOCK_ROWS` consecutive table rows (the
  last block shorter): asking for a few rows computes just the blocks that
  hold them, with the same shapes as the bulk product, so a row read alone is
  exactly that row of the bulk read on any machine.

  Args:
    table: `[n, d_in]` rows (a numpy array or memory map), or one row
      `[d_in]` (then the result is `[d_out]`).
    matrix: `[d_in, d_out]`.
    rows: `[r]` integer row indices into `table` (any order, repeats
      allowed); None for every row.

  Returns:
    `[r, d_out]` (or `[n, d_out]`), in the result dtype of `table @ matrix`.
  """
  return blocked_map(table, lambda block: block @ matrix, rows)


def blocked_map(table: np.ndarray, fn: Callable[[np.ndarray], Any],
                rows: np.ndarray | None = None) -> np.ndarray:
  """`fn(table)[rows]` for a row-wise `fn`, over `blocked_product`'s fixed
  blocks of rows: any map (a non-linear backward chain) gives a row read
  alone exactly as the bulk read does.

  Args:
    table: `[n, d_in]` rows, or one row `[d_in]` (then the result is 1-D).
    fn: `[b, d_in] -> [b, d_out]`, each output row from its input row only.
    rows: `[r]` integer row indices into `table`; None for every row.

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


def chain_matrix(transforms: Sequence[Any], from_version: int,
                 to_version: int) -> Any:
  """M_{from->to}, the matrix mapping version `from` into version `to`.

  Args:
    transforms: `[W_1, ..., W_K]`, `transforms[v - 1]` of shape
      `[d_v, d_{v-1}]` (numpy or jax).
    from_version: k, in `0..K`.
    to_version: j, in `0..k`.

  Returns:
    `[d_k, d_j]`: `W_k @ ... @ W_{j+1}`, the identity when j == k.

  Raises:
    ValueError: for a version out of range, `to_version > from_version`, or
      consecutive matrices whose dimensions do not chain (naming the versions).
  """
  num = len(transforms)
  for name, v in (("from_version", from_version), ("to_version", to_version)):
    if not 0 <= v <= num:
      raise ValueError(f"chain_matrix: {name}={v} is out of range; the "
                       f"{num} transforms cover versions 0..{num}")
  if to_version > from_version:
    raise ValueError(f"chain_matrix: cannot map version {from_version} forward "
                     f"to the newer version {to_version}")
  versions = range(from_version, to_version, -1)
  chain = [transforms[v - 1] for v in versions]
  for v, w in zip(versions, chain):
    if np.ndim(w) != 2:
      raise ValueError(f"chain_matrix: W_{v} has shape {np.shape(w)}, "
                       "expected [d_v, d_{v-1}]")
  for v, newer, older in zip(versions, chain, chain[1:]):
    if np.shape(newer)[1] != np.shape(older)[0]:
      raise ValueError(f"chain_matrix: W_{v} has shape {np.shape(newer)} but "
                       f"W_{v - 1} has shape {np.shape(older)}; version "
                       f"{v - 1} cannot have both {np.shape(newer)[1]} and "
                       f"{np.shape(older)[0]} dims")
  if chain:
    return compose(chain)
  if num == 0:
    raise ValueError("chain_matrix: no transforms, so version 0's dimension "
                     "is unknown")
  if from_version == 0:
    dim = np.shape(transforms[0])[1]
  else:
    dim = np.shape(transforms[from_version - 1])[0]
  return np.eye(dim, dtype=np.float32)


def fit_lstsq(x: np.ndarray, y: np.ndarray, ridge: float = 1e-4) -> np.ndarray:
  """The W minimising ||x W - y||^2 + ridge * n * ||W||^2, in closed form.

  Args:
    x: `[n, d_in]` source embeddings.
    y: `[n, d_out]` target embeddings.
    ridge: a small ridge, relative to the number of rows, for conditioning.

  Returns:
    `[d_in, d_out]` float32.
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  gram = x.T @ x + ridge * len(x) * np.eye(x.shape[1])
  return np.linalg.solve(gram, x.T @ y).astype(np.float32)


def fit_procrustes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Orthogonal Procrustes: W = U V^T of svd(x^T y), maximising tr(W^T x^T y).

  Over (semi-)orthogonal W this minimises ||x W - y|| exactly when
  d_in == d_out (or x^T x is a multiple of I); for d_in > d_out it is the
  usual semi-orthogonal relaxation.

  Args:
    x: `[n, d_in]` source embeddings.
    y: `[n, d_out]` target embeddings.

  Returns:
    `[d_in, d_out]` float32 with orthonormal columns (d_in >= d_out) or rows.
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  u, _, vt = np.linalg.svd(x.T @ y, full_matrices=False)
  return (u @ vt).astype(np.float32)


_FITS = {"lstsq": fit_lstsq, "procrustes": fit_procrustes}


def fit(name: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Fits a closed-form backward matrix ("lstsq" or "procrustes").

  Args:
    name: the fit, `fit_lstsq` or `fit_procrustes` without the prefix.
    x: `[n, d_in]` source embeddings (version k's).
    y: `[n, d_out]` target embeddings (version k-1's).

  Returns:
    W `[d_in, d_out]` float32 with `x @ W` close to `y`.

  Raises:
    ValueError: an unknown name (the message lists the known ones).
  """
  if name not in _FITS:
    raise ValueError(f"unknown closed-form fit {name!r}; known: "
                     f"{', '.join(_FITS)}")
  return _FITS[name](x, y)
