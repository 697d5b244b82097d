"""The built-in embedding model families, by name: the model and its inputs.

`build` gives an `EmbeddingModel` (`bcjax.models.interface`) for a version's
(d, L); `make_inputs` the pytree it reads for a version's training graph,
padded to the run's budget so every version shares one compiled program.
"""

from __future__ import annotations

from bcjax.data.splits import VersionSplit
from bcjax.models.interface import FlaxModel
from bcjax.models.lightgcn import LightGCN, make_lightgcn_inputs
from bcjax.models.pinsage import PinSage, make_graph_inputs

FAMILIES = ("pinsage", "lightgcn")


def check(name: str) -> str:
  """Validates a model family's name (`config.model`).

  Args:
    name: "pinsage" or "lightgcn" (`FAMILIES`).

  Returns:
    `name` itself.

  Raises:
    ValueError: an unknown family (the message lists the known ones).
  """
  if name not in FAMILIES:
    raise ValueError(f"unknown model {name!r}; known: {', '.join(FAMILIES)}")
  return name


def build(name: str, dim: int, num_layers: int,
          vocab_sizes: tuple[int, ...]) -> FlaxModel:
  """The family's model of embedding size `dim` with `num_layers` layers.

  Args:
    name: the family (`FAMILIES`).
    dim: the embedding size d.
    num_layers: L, the number of graph layers.
    vocab_sizes: the item attribute kinds' vocabulary sizes (PinSage's
      feature tables; LightGCN ignores them).

  Returns:
    The model as a `FlaxModel`, embedding `[num_users_pad + num_items_pad,
    dim]` nodes.

  Raises:
    ValueError: an unknown family.
  """
  if check(name) == "lightgcn":
    return FlaxModel(LightGCN(dim, num_layers))
  return FlaxModel(PinSage(dim, num_layers, vocab_sizes))


def make_inputs(name: str, split: VersionSplit, *, num_users_pad: int,
                num_items_pad: int, num_edges_pad: int,
                attribute_nnz_pad: dict[str, int], layout: str | None):
  """The family's inputs for one version's training graph (padded).

  Args:
    name: the family (`FAMILIES`).
    split: the version's split; its training interactions form the graph.
    num_users_pad, num_items_pad: the node budget shared by every version.
    num_edges_pad: the directed-edge budget.
    attribute_nnz_pad: per attribute kind, the budget of (item, value)
      entries (PinSage only).
    layout: aggregation layout, None to choose by size.

  Returns:
    `GraphInputs` (PinSage) or `LightGCNInputs` (LightGCN).

  Raises:
    ValueError: an unknown family, or a graph that exceeds the budget.
  """
  if check(name) == "lightgcn":
    return make_lightgcn_inputs(
        split.train_user, split.train_item, split.num_users, split.num_items,
        num_users_pad, num_items_pad, num_edges_pad=num_edges_pad,
        layout=layout)
  return make_graph_inputs(
      split.train_user, split.train_item, split.num_users, split.num_items,
      split.attributes, num_users_pad, num_items_pad,
      num_edges_pad=num_edges_pad, attribute_nnz_pad=attribute_nnz_pad,
      layout=layout)
