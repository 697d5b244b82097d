"""Mean neighbour aggregation over the user-item graph, in several layouts.

Node layout everywhere: a `[num_nodes, d]` array with users in rows
`0..num_users_pad-1` and items after them. Aggregation of node i is
mean_{j in N(i)} h_j over the undirected interaction graph (each interaction
gives both directions; duplicates count as separate messages; a node without
neighbours gets zero).

XLA's scatter-add is serial on CPU, so the layout matters more than anything
else in a training step. `launch.benchmark` measures the candidates:

- `segment`: gather + `jax.ops.segment_sum` (jraph-style); differentiated by
  JAX, its backward is a gather.
- `sparse`: a CSR matrix product with a `jax.custom_vjp` whose backward is a
  second CSR product by the precomputed transposed matrix (no scatter), and
  a batching rule that keeps it one CSR product under `jax.vmap`.
- `dense`: the bipartite user x item matrix, normalised per row; two dense
  matmuls. Quadratic in the graph, unbeatable on small graphs.

`make_adjacency` builds the operator for the layout chosen by `choose_layout`
(or forced), and `aggregate` applies it. All operator arrays are pytree leaves,
passed as arguments (never closed over: XLA would constant-fold them).
"""

from __future__ import annotations

from typing import Literal

import flax.struct
import jax
from jax.experimental import sparse
import jax.numpy as jnp
import numpy as np

Layout = Literal["segment", "sparse", "dense"]
LAYOUTS: tuple[str, ...] = ("segment", "sparse", "dense")


@flax.struct.dataclass
class Adjacency:
  """A mean-aggregation operator in one layout; only `layout`'s fields are
  set."""
  layout: str = flax.struct.field(pytree_node=False)
  num_users: int = flax.struct.field(pytree_node=False)
  num_items: int = flax.struct.field(pytree_node=False)
  # segment: edges sorted by destination, padded edges carry weight 0.
  src: jax.Array | None = None
  dst: jax.Array | None = None
  weight: jax.Array | None = None
  # sparse: the normalised matrix and its transpose, both [N, N] CSR.
  matrix: sparse.BCSR | None = None
  matrix_t: sparse.BCSR | None = None
  # dense: [U, I] user rows normalised by user degree; [I, U] likewise.
  user_item: jax.Array | None = None
  item_user: jax.Array | None = None


def choose_layout(num_users: int, num_items: int,
                  backend: str | None = None) -> Layout:
  """The fastest layout measured for a graph of this size on this backend.

  On the CPU the CSR product won at every graph size measured, forward and
  backward (`launch.benchmark --sections=aggregation`; the figures are in
  docs/records.md). JAX lowers the CSR product to cuSPARSE on a GPU, so the
  same choice stands there until a measurement says otherwise.

  Args:
    num_users: user rows of the node array.
    num_items: item rows of the node array.
    backend: the JAX backend (default the current one); not yet consulted.

  Returns:
    The layout name, one of `LAYOUTS` (at present always "sparse").
  """
  del num_users, num_items, backend
  return "sparse"


def _directed_edges(user, item, num_users_pad):
  """Both directions of every interaction, as (src, dst) node ids."""
  user = np.asarray(user, np.int64)
  item = np.asarray(item, np.int64) + num_users_pad
  return np.concatenate([item, user]), np.concatenate([user, item])


def make_adjacency(user: np.ndarray, item: np.ndarray, num_users: int,
                   num_items: int, layout: Layout | None = None,
                   num_edges: int | None = None) -> Adjacency:
  """Builds the mean-aggregation operator of a set of interactions.

  Args:
    user: `[E]` user index of each interaction (< num_users).
    item: `[E]` item index of each interaction (< num_items).
    num_users: user rows of the node array (a padded budget is fine).
    num_items: item rows of the node array.
    layout: one of `LAYOUTS`; default `choose_layout`.
    num_edges: pad the `segment` and `sparse` layouts to this many directed
      edges (>= 2E) so graphs of one budget share a compiled program.

  Returns:
    The `Adjacency`, with device arrays.

  Raises:
    ValueError: an unknown layout, or more directed edges than `num_edges`.
  """
  layout = layout or choose_layout(num_users, num_items)
  if layout not in LAYOUTS:
    raise ValueError(f"unknown aggregation layout {layout!r}; use {LAYOUTS}")
  n = num_users + num_items
  src, dst = _directed_edges(user, item, num_users)
  degree = np.bincount(dst, minlength=n).astype(np.float64)
  weight = (1.0 / degree[dst]).astype(np.float32)
  pad = 0 if num_edges is None else num_edges - len(src)
  if pad < 0:
    raise ValueError(f"{len(src)} directed edges exceed the budget {num_edges}")
  base = Adjacency(layout=layout, num_users=num_users, num_items=num_items)
  if layout == "dense":
    user_item = np.zeros((num_users, num_items), np.float32)
    np.add.at(user_item, (user, item), 1.0)
    item_user = user_item.T.copy()
    user_item /= np.maximum(user_item.sum(1, keepdims=True), 1.0)
    item_user /= np.maximum(item_user.sum(1, keepdims=True), 1.0)
    return base.replace(user_item=jnp.asarray(user_item),
                        item_user=jnp.asarray(item_user))
  if layout == "segment":
    order = np.argsort(dst, kind="stable")
    src = np.concatenate([src[order], np.zeros(pad, np.int64)])
    dst = np.concatenate([dst[order], np.full(pad, n - 1, np.int64)])
    weight = np.concatenate([weight[order], np.zeros(pad, np.float32)])
    return base.replace(src=jnp.asarray(src, jnp.int32),
                        dst=jnp.asarray(dst, jnp.int32),
                        weight=jnp.asarray(weight))
  return base.replace(matrix=_csr(dst, src, weight, n, pad),
                      matrix_t=_csr(src, dst, weight, n, pad))


def _csr(rows, cols, values, n, pad) -> sparse.BCSR:
  """An [n, n] CSR matrix with `pad` explicit zeros appended to the last row."""
  order = np.lexsort((cols, rows))
  rows = np.concatenate([rows[order], np.full(pad, n - 1)])
  cols = np.concatenate([cols[order], np.zeros(pad, np.int64)])
  values = np.concatenate([values[order], np.zeros(pad, np.float32)])
  indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
  return sparse.BCSR((jnp.asarray(values), jnp.asarray(cols, jnp.int32),
                      jnp.asarray(indptr, jnp.int32)), shape=(n, n),
                     indices_sorted=True, unique_indices=False)


@jax.custom_batching.custom_vmap
def _csr_product(matrix: sparse.BCSR, h: jax.Array) -> jax.Array:
  return matrix @ h


@_csr_product.def_vmap
def _csr_product_vmap(axis_size, in_batched, matrix, h):
  """Under `jax.vmap` over `h` alone (a seed sweep, `bcjax.core.sweep`), the
  mapped axis is folded into the columns: one call of the CSR kernel,
  `[n, B * d]`, the same numbers. JAX's own batching rule for a CSR product
  goes through a COO gather and scatter, ~100x slower on CPU."""
  del axis_size
  matrix_batched, h_batched = in_batched
  if any(jax.tree.leaves(matrix_batched)) or not h_batched:
    axes = jax.tree.map(lambda b: 0 if b else None, matrix_batched)
    return jax.vmap(lambda m, x: m @ x,
                    in_axes=(axes, 0 if h_batched else None))(matrix, h), True
  x = jnp.moveaxis(h, 0, 1)  # [B, n, ...] -> [n, B, ...]
  y = _csr_product(matrix, x.reshape(x.shape[0], -1))
  return jnp.moveaxis(y.reshape((y.shape[0],) + x.shape[1:]), 1, 0), True


@jax.custom_vjp
def _csr_matmul(matrix: sparse.BCSR, matrix_t: sparse.BCSR,
                h: jax.Array) -> jax.Array:
  return _csr_product(matrix, h)


def _csr_matmul_fwd(matrix, matrix_t, h):
  return _csr_product(matrix, h), matrix_t


def _csr_matmul_bwd(matrix_t, grad):
  return None, None, _csr_product(matrix_t, grad)


_csr_matmul.defvjp(_csr_matmul_fwd, _csr_matmul_bwd)


def aggregate(adjacency: Adjacency, h: jax.Array) -> jax.Array:
  """Mean of the neighbours' rows of `h`.

  Args:
    adjacency: the operator from `make_adjacency`.
    h: `[num_users + num_items, d]` node features (users first).

  Returns:
    `[num_users + num_items, d]`.
  """
  layout, u = adjacency.layout, adjacency.num_users
  if layout == "dense":
    return jnp.concatenate([adjacency.user_item @ h[u:],
                            adjacency.item_user @ h[:u]])
  if layout == "segment":
    messages = h[adjacency.src] * adjacency.weight[:, None]
    return jax.ops.segment_sum(messages, adjacency.dst,
                               num_segments=h.shape[0],
                               indices_are_sorted=True)
  return _csr_matmul(adjacency.matrix, adjacency.matrix_t, h)
