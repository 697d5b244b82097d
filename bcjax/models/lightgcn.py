"""LightGCN (He et al., SIGIR 2020): learned node embeddings, no weights, no
non-linearity; propagated over the normalised user-item graph and averaged.

  e^(0) = table (one row per node), e^(l+1) = D^-1/2 A D^-1/2 e^(l),
  z = mean_{l = 0..L} e^(l).

The model is transductive: a node has an embedding only if it was in the
graph the model was trained on. bcjax's versions add users and items, so the
model records which nodes it was trained on (the `"nodes"` collection,
`seen`): applied to a later graph (the alignment target E_k(M_{k-1}), or
Fix-M0 on version k), a new node starts from a zero row and gets its
embedding from its neighbours only through the propagation; in training
every node of the current graph is seen (and `seen` grows to include it), so
a finetuned model learns rows for its new nodes.
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from bcjax.models.aggregate import Adjacency, aggregate, make_adjacency


@flax.struct.dataclass
class LightGCNInputs:
  """One version's graph for LightGCN (padded; users first).

  Attributes:
    adjacency: the mean-aggregation operator D^-1 A of the interactions.
    node_mask: `[num_users_pad + num_items_pad]` bool, nodes of this version.
    sqrt_degree: `[num_users_pad + num_items_pad]` sqrt of node degrees.
  """
  adjacency: Adjacency
  node_mask: jax.Array
  sqrt_degree: jax.Array

  @property
  def num_users(self) -> int:
    """num_users_pad, the user rows of the node array."""
    return self.adjacency.num_users


def make_lightgcn_inputs(train_user: np.ndarray, train_item: np.ndarray,
                         num_users: int, num_items: int, num_users_pad: int,
                         num_items_pad: int, num_edges_pad: int | None = None,
                         layout: str | None = None) -> LightGCNInputs:
  """Builds LightGCN's inputs of one version's training graph.

  Args:
    train_user, train_item: `[T]` training interactions.
    num_users, num_items: the version's nodes (U1, I1).
    num_users_pad, num_items_pad: node budget (>= the real counts).
    num_edges_pad: directed-edge budget (see `make_adjacency`).
    layout: aggregation layout, default chosen by size.

  Returns:
    The `LightGCNInputs`.

  Raises:
    ValueError: the graph exceeds the budget.
  """
  if num_users > num_users_pad or num_items > num_items_pad:
    raise ValueError(f"graph of {num_users} users and {num_items} items "
                     f"exceeds the budget {num_users_pad} x {num_items_pad}")
  n = num_users_pad + num_items_pad
  degree = np.bincount(np.concatenate([
      np.asarray(train_user, np.int64),
      np.asarray(train_item, np.int64) + num_users_pad]), minlength=n)
  mask = np.zeros(n, bool)
  mask[:num_users] = True
  mask[num_users_pad:num_users_pad + num_items] = True
  return LightGCNInputs(
      make_adjacency(train_user, train_item, num_users_pad, num_items_pad,
                     layout=layout, num_edges=num_edges_pad),
      jnp.asarray(mask), jnp.asarray(np.sqrt(degree), jnp.float32))


class LightGCN(nn.Module):
  """Node embeddings `[num_users_pad + num_items_pad, dim]`, users first.

  Attributes:
    dim: embedding size d.
    num_layers: L propagation steps.
    init_scale: standard deviation of the initial table.
  """
  dim: int
  num_layers: int
  init_scale: float = 0.1

  @nn.compact
  def __call__(self, graph: LightGCNInputs, train: bool):
    n = graph.node_mask.shape[0]
    table = self.param("embedding", nn.initializers.normal(self.init_scale),
                       (n, self.dim))
    seen = self.variable("nodes", "seen", lambda: graph.node_mask)
    known = graph.node_mask | seen.value if train else seen.value
    if train and not self.is_initializing():
      seen.value = known
    h = jnp.where(known[:, None], table, 0.0)
    # D^-1/2 A D^-1/2 h = D^1/2 (D^-1 A) (D^-1/2 h); isolated nodes stay 0.
    inverse = jnp.where(graph.sqrt_degree > 0, 1.0 / graph.sqrt_degree, 0.0)
    total = h
    for _ in range(self.num_layers):
      h = graph.sqrt_degree[:, None] * aggregate(graph.adjacency,
                                                 inverse[:, None] * h)
      total = total + h
    return total / (self.num_layers + 1)
