"""The PinSAGE-style embedding model of method §4, in Flax linen.

Users share one learned input vector (the model is inductive for users); an
item's input is the sum over attribute kinds of the mean of its attribute-value
embeddings. L GraphSAGE mean-aggregation layers follow, each with BatchNorm
(batch statistics in training, running statistics otherwise) and ReLU between
layers. Nodes are padded to a fixed budget per run so each (d, L) compiles
once; `GraphInputs.node_mask` keeps padding out of the BatchNorm statistics.

The first layer is computed in factorised form when the attribute vocabulary
is small (`FirstLayerInputs`): its input rows are linear in the attribute
embeddings, so mean_{i in N(u)} x_i = (A X)_u E with A X (users x attribute
values) precomputed, and an item's neighbours all carry the one shared user
vector. This is an exact identity (tests compare both forms) that removes the
first layer's aggregation and most of its matmuls from every step.
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse

from bcjax.data.neighbours import SampledInputs, Subgraph
from bcjax.models.aggregate import Adjacency, aggregate, make_adjacency
from bcjax.models.batchnorm import MaskedBatchNorm

# PyTorch's nn.Linear default initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
# as in the paper's reference implementation.
torch_linear_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
  """PyTorch's nn.Linear bias initialisation: U(-b, b), b = 1/sqrt(fan_in).

  Args:
    fan_in: the layer's input size.

  Returns:
    A Flax initializer `(key, shape, dtype=float32) -> array`.
  """
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
class FirstLayerInputs:
  """Precomputed operators of the factorised first layer.

  Attributes:
    user_attributes: per kind, `[num_users_pad, num_values]` the mean over a
      user's neighbours of their (mean-normalised) attribute indicators.
    item_has_neighbour: `[num_items_pad]` float, 1 for items with an edge.
  """
  user_attributes: tuple[jax.Array, ...]
  item_has_neighbour: jax.Array


@flax.struct.dataclass
class GraphInputs:
  """Everything the model reads about one version's graph (padded).

  Attributes:
    adjacency: the mean-aggregation operator of the training interactions.
    node_mask: `[num_users_pad + num_items_pad]` bool, real nodes.
    attributes: one `AttributeInputs` per attribute kind.
    first_layer: operators of the factorised first layer, or None for the
      plain form (large attribute vocabularies).
  """
  adjacency: Adjacency
  node_mask: jax.Array
  attributes: tuple[AttributeInputs, ...]
  first_layer: FirstLayerInputs | None = None

  @property
  def num_users(self) -> int:
    """num_users_pad, the user rows of the node array."""
    return self.adjacency.num_users

  @property
  def num_items(self) -> int:
    """num_items_pad, the item rows of the node array."""
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


# The factorised first layer stores users x attribute values floats.
FACTORISED_MAX_ENTRIES = 1 << 25


def _first_layer_inputs(train_user, train_item, attributes, num_items,
                        num_users_pad, num_items_pad) -> FirstLayerInputs:
  user = np.asarray(train_user, np.int64)
  item = np.asarray(train_item, np.int64)
  user_degree = np.bincount(user, minlength=num_users_pad).astype(np.float64)
  item_degree = np.bincount(item, minlength=num_items_pad)
  edges = scipy.sparse.csr_matrix(
      (1.0 / user_degree[user], (user, item)),
      shape=(num_users_pad, num_items_pad))
  per_kind = []
  for kind in attributes.values():
    counts = np.diff(kind.offsets)[:num_items]
    rows = np.repeat(np.arange(num_items), counts)
    indicator = scipy.sparse.csr_matrix(
        (1.0 / counts[rows], (rows, kind.values[:len(rows)])),
        shape=(num_items_pad, kind.num_values))
    per_kind.append(jnp.asarray((edges @ indicator).toarray(), jnp.float32))
  return FirstLayerInputs(tuple(per_kind),
                          jnp.asarray(item_degree > 0, jnp.float32))


def make_graph_inputs(train_user: np.ndarray, train_item: np.ndarray,
                      num_users: int, num_items: int, attributes,
                      num_users_pad: int, num_items_pad: int,
                      num_edges_pad: int | None = None,
                      attribute_nnz_pad: dict[str, int] | None = None,
                      layout: str | None = None,
                      factorise: bool | None = None) -> GraphInputs:
  """Builds the padded model inputs of one version's training graph.

  Args:
    train_user, train_item: `[T]` training interactions.
    num_users, num_items: real nodes (U1, I1).
    attributes: kind -> `bcjax.data.AttributeKind` (items < num_items used).
    num_users_pad, num_items_pad: node budget (>= real counts).
    num_edges_pad: directed-edge budget for sparse layouts.
    attribute_nnz_pad: per kind, the (item, value) pair budget.
    layout: aggregation layout, default chosen by size.
    factorise: compute the first layer in factorised form; default when
      users x attribute values is at most `FACTORISED_MAX_ENTRIES`.

  Returns:
    The `GraphInputs`.

  Raises:
    ValueError: the graph or an attribute kind's values exceed the budget,
      or an unknown layout.
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
  num_values = sum(kind.num_values for kind in attributes.values())
  if factorise is None:
    factorise = num_users_pad * num_values <= FACTORISED_MAX_ENTRIES
  first_layer = (_first_layer_inputs(train_user, train_item, attributes,
                                     num_items, num_users_pad, num_items_pad)
                 if factorise else None)
  return GraphInputs(adjacency=adjacency, node_mask=jnp.asarray(mask),
                     attributes=attrs, first_layer=first_layer)


class SAGEConv(nn.Module):
  """h' = W_l mean_{j in N(i)} h_j + b_l + W_r h_i (PyG's SAGEConv), d -> d."""
  dim: int

  def setup(self):
    """Declares W_l, b_l and W_r, each `[dim, dim]` or `[dim]`."""
    shape = (self.dim, self.dim)
    self.kernel_l = self.param("kernel_l", torch_linear_init, shape)
    self.bias_l = self.param("bias_l", torch_bias_init(self.dim), (self.dim,))
    self.kernel_r = self.param("kernel_r", torch_linear_init, shape)

  def __call__(self, adjacency: Adjacency, h):
    return self.combine(aggregate(adjacency, h), h)

  def combine(self, neighbours_mean, h):
    """The layer given the mean of the neighbours' rows.

    Args:
      neighbours_mean: `[n, dim]` mean of each row's neighbours.
      h: `[n, dim]` the rows themselves.

    Returns:
      `[n, dim]` h'.
    """
    # One matmul over [mean of neighbours, self] is faster than two.
    both = jnp.concatenate([neighbours_mean, h], axis=-1)
    return both @ jnp.concatenate([self.kernel_l, self.kernel_r]) + self.bias_l

  def first_layer(self, graph: "GraphInputs", user, tables):
    """The layer on input features, factorised (see the module docstring).

    Args:
      graph: inputs with `first_layer` set.
      user: `[d_in]` the shared user vector.
      tables: per attribute kind, `[num_values, d_in]` value embeddings.

    Returns:
      `[num_users_pad + num_items_pad, dim]`, equal to `__call__` on the
      explicit input rows.
    """
    kernel_l, bias_l, kernel_r = self.kernel_l, self.bias_l, self.kernel_r
    ops = graph.first_layer
    users = jnp.broadcast_to(user @ kernel_r + bias_l,
                             (graph.num_users, self.dim))
    items = ops.item_has_neighbour[:, None] * (user @ kernel_l) + bias_l
    for table, attr, user_attr in zip(tables, graph.attributes,
                                      ops.user_attributes):
      users += user_attr @ (table @ kernel_l)
      items += _item_mean(table @ kernel_r, attr, graph.num_items)
    return jnp.concatenate([users, items])


def _item_mean(table, attr: AttributeInputs, num_items: int):
  """`[num_items, d]` per item, the mean of its rows of `table`; zeros for
  a kind that kept no value (every value on too few items): it contributes
  nothing."""
  if not table.shape[0]:
    return jnp.zeros((num_items, table.shape[1]), table.dtype)
  return jax.ops.segment_sum(table[attr.value] * attr.weight[:, None],
                             attr.item, num_segments=num_items)


class PinSage(nn.Module):
  """Node embeddings `[num_users_pad + num_items_pad, dim]`, users first
  (or, given `SampledInputs`, `[n_0, dim]` for the sampled trees' roots).

  Attributes:
    dim: embedding size d (every layer).
    num_layers: L.
    vocab_sizes: number of values of each attribute kind, in the order of
      `GraphInputs.attributes`.
  """
  dim: int
  num_layers: int
  vocab_sizes: tuple[int, ...]

  @nn.compact
  def __call__(self, graph: GraphInputs, train: bool):
    normal = nn.initializers.normal(1.0)
    # The paper's code: the shared user vector ~ N(0, 0.1^2).
    user = self.param("user_embedding", nn.initializers.normal(0.1),
                      (self.dim,))
    tables = [self.param(f"attribute_{k}", normal, (size, self.dim))
              for k, size in enumerate(self.vocab_sizes)]
    convs = [SAGEConv(self.dim, name=f"conv_{l}")
             for l in range(self.num_layers)]
    if isinstance(graph, SampledInputs):
      return self._sampled(graph.graph, graph.subgraph, user, tables, convs,
                           train)
    if graph.first_layer is not None:
      h = convs[0].first_layer(graph, user, tables)
    else:
      items = sum((_item_mean(table, attr, graph.num_items)
                   for table, attr in zip(tables, graph.attributes)),
                  jnp.zeros((graph.num_items, self.dim)))
      users = jnp.broadcast_to(user, (graph.num_users, self.dim))
      h = convs[0](graph.adjacency, jnp.concatenate([users, items]))
    for layer in range(self.num_layers):
      if layer:
        h = convs[layer](graph.adjacency, h)
      h = MaskedBatchNorm(name=f"norm_{layer}")(h, graph.node_mask, train)
      if layer < self.num_layers - 1:
        h = nn.relu(h)
    return h

  def _sampled(self, graph: GraphInputs, subgraph: Subgraph, user, tables,
               convs, train: bool):
    """The layers over neighbourhood trees, deepest level first."""
    if len(subgraph.masks) != self.num_layers:
      raise ValueError(f"subgraph has {len(subgraph.masks)} levels for a "
                       f"{self.num_layers}-layer model")
    items = sum((_item_mean(table, attr, graph.num_items)
                 for table, attr in zip(tables, graph.attributes)),
                jnp.zeros((graph.num_items, self.dim)))
    leaves = subgraph.leaves
    item_rows = items[jnp.clip(leaves - graph.num_users, 0, graph.num_items - 1)]
    h = jnp.where((leaves < graph.num_users)[:, None], user, item_rows)
    for layer in range(self.num_layers):
      mask = subgraph.masks[self.num_layers - 1 - layer]
      h = h.reshape(mask.shape[0], mask.shape[1], self.dim)
      weight = mask[:, 1:, None].astype(h.dtype)
      mean = (jnp.sum(h[:, 1:] * weight, axis=1)
              / jnp.maximum(jnp.sum(weight, axis=1), 1.0))
      h = convs[layer].combine(mean, h[:, 0])
      h = MaskedBatchNorm(name=f"norm_{layer}")(h, mask[:, 0], train)
      if layer < self.num_layers - 1:
        h = nn.relu(h)
    return h
