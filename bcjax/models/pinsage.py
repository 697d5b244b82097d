"""The PinSAGE-style embedding model of SPEC 4, in Flax linen.

Users share one learned input vector (the model is inductive for users); an
item's input is the sum over attribute kinds of the mean of its attribute-value
embeddings. L GraphSAGE mean-aggregation layers follow, each with BatchNorm
(batch statistics in training, running statistics otherwise) and ReLU between
layers. Nodes are padded to a fixed budget per run so each (d, L) compiles
once; `GraphInputs.node_mask` keeps padding out of the BatchNorm statistics.
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from bcjax.models.aggregate import Adjacency, aggregate, make_adjacency

# PyTorch's nn.Linear default initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
# as in the paper's reference implementation.
torch_linear_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
  bound = 1.0 / np.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
      key, shape, dtype, -bound, bound)


@flax.struct.dataclass
class AttributeInputs:
  """One attribute kind as (item, value, weight) triples, weight = 1/count.

  Padding entries have item == num_items (dropped by the segment sum).
  """
  item: jax.Array
  value: jax.Array
  weight: jax.Array


@flax.struct.dataclass
class GraphInputs:
  """Everything the model reads about one version's graph (padded).

  Attributes:
    adjacency: the mean-aggregation operator of the training interactions.
    node_mask: `[num_users_pad + num_items_pad]` bool, real nodes.
    attributes: one `AttributeInputs` per attribute kind.
  """
  adjacency: Adjacency
  node_mask: jax.Array
  attributes: tuple[AttributeInputs, ...]

  @property
  def num_users(self) -> int:
    return self.adjacency.num_users

  @property
  def num_items(self) -> int:
    return self.adjacency.num_items


def _attribute_inputs(kind, num_items: int, num_items_pad: int,
                      nnz_budget: int) -> AttributeInputs:
  """Items < num_items; padding entries point at num_items_pad (dropped)."""
  counts = np.diff(kind.offsets)[:num_items]
  item = np.repeat(np.arange(len(counts)), counts)
  weight = 1.0 / counts[item]
  pad = nnz_budget - len(item)
  if pad < 0:
    raise ValueError(f"attribute {kind.name!r}: {len(item)} values exceed the "
                     f"budget {nnz_budget}")
  return AttributeInputs(
      item=jnp.asarray(np.concatenate([item, np.full(pad, num_items_pad)]),
                       jnp.int32),
      value=jnp.asarray(np.concatenate([kind.values[:len(item)],
                                        np.zeros(pad, np.int32)]), jnp.int32),
      weight=jnp.asarray(np.concatenate([weight, np.zeros(pad)]), jnp.float32))


def make_graph_inputs(train_user: np.ndarray, train_item: np.ndarray,
                      num_users: int, num_items: int, attributes,
                      num_users_pad: int, num_items_pad: int,
                      num_edges_pad: int | None = None,
                      attribute_nnz_pad: dict[str, int] | None = None,
                      layout: str | None = None) -> GraphInputs:
  """Builds the padded model inputs of one version's training graph.

  Args:
    train_user, train_item: `[T]` training interactions.
    num_users, num_items: real nodes (U1, I1).
    attributes: kind -> `bcjax.data.AttributeKind` (items < num_items used).
    num_users_pad, num_items_pad: node budget (>= real counts).
    num_edges_pad: directed-edge budget for sparse layouts.
    attribute_nnz_pad: per kind, the (item, value) pair budget.
    layout: aggregation layout, default chosen by size.

  Returns:
    The `GraphInputs`.
  """
  if num_users > num_users_pad or num_items > num_items_pad:
    raise ValueError(f"graph of {num_users} users and {num_items} items "
                     f"exceeds the budget {num_users_pad} x {num_items_pad}")
  adjacency = make_adjacency(train_user, train_item, num_users_pad,
                             num_items_pad, layout=layout,
                             num_edges=num_edges_pad)
  mask = np.zeros(num_users_pad + num_items_pad, bool)
  mask[:num_users] = True
  mask[num_users_pad:num_users_pad + num_items] = True
  nnz_pad = attribute_nnz_pad or {}
  attrs = tuple(
      _attribute_inputs(kind, num_items, num_items_pad,
                        nnz_pad.get(name, int(kind.offsets[num_items])))
      for name, kind in attributes.items())
  return GraphInputs(adjacency=adjacency, node_mask=jnp.asarray(mask),
                     attributes=attrs)


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
    if train:
      w = mask.astype(x.dtype)[:, None]
      n = jnp.sum(w)
      mean = jnp.sum(x * w, axis=0) / n
      var = jnp.sum(jnp.square(x - mean) * w, axis=0) / n
      if not self.is_initializing():
        m = self.momentum
        running_mean.value = m * running_mean.value + (1 - m) * mean
        running_var.value = (m * running_var.value
                             + (1 - m) * var * n / jnp.maximum(n - 1, 1))
    else:
      mean, var = running_mean.value, running_var.value
    return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


class SAGEConv(nn.Module):
  """h' = W_l mean_{j in N(i)} h_j + b_l + W_r h_i."""
  dim: int

  @nn.compact
  def __call__(self, adjacency: Adjacency, h):
    fan_in = h.shape[-1]
    neighbours = nn.Dense(self.dim, kernel_init=torch_linear_init,
                          bias_init=torch_bias_init(fan_in), name="lin_l")
    root = nn.Dense(self.dim, use_bias=False, kernel_init=torch_linear_init,
                    name="lin_r")
    return neighbours(aggregate(adjacency, h)) + root(h)


class PinSage(nn.Module):
  """Node embeddings `[num_users_pad + num_items_pad, dim]`, users first.

  Attributes:
    dim: embedding size d (every layer).
    num_layers: L.
    vocab_sizes: number of values of each attribute kind, in the order of
      `GraphInputs.attributes`.
  """
  dim: int
  num_layers: int
  vocab_sizes: tuple[int, ...]

  def item_features(self, graph: GraphInputs):
    features = jnp.zeros((graph.num_items, self.dim))
    for k, (size, attr) in enumerate(zip(self.vocab_sizes, graph.attributes)):
      table = nn.Embed(size, self.dim, embedding_init=nn.initializers.normal(1.0),
                       name=f"attribute_{k}")
      features += jax.ops.segment_sum(table(attr.value) * attr.weight[:, None],
                                      attr.item, num_segments=graph.num_items)
    return features

  @nn.compact
  def __call__(self, graph: GraphInputs, train: bool):
    user = self.param("user_embedding", nn.initializers.normal(1.0), (self.dim,))
    h = jnp.concatenate([jnp.broadcast_to(user, (graph.num_users, self.dim)),
                         self.item_features(graph)])
    for layer in range(self.num_layers):
      h = SAGEConv(self.dim, name=f"conv_{layer}")(graph.adjacency, h)
      h = MaskedBatchNorm(name=f"norm_{layer}")(h, graph.node_mask, train)
      if layer < self.num_layers - 1:
        h = nn.relu(h)
    return h
