"""The built-in embedding model families, by name: the model and its inputs.

`build` gives an `EmbeddingModel` (`bcjax.models.interface`) for a version's
(d, L); `make_inputs` the pytree it reads for a version's training graph,
padded to the run's `Budget` so every version shares one compiled program.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from bcjax.data.splits import VersionSplit
from bcjax.models.interface import FlaxModel
from bcjax.models.lightgcn import LightGCN, make_lightgcn_inputs
from bcjax.models.pinsage import PinSage, make_graph_inputs
from bcjax.util import names
from bcjax.util.padding import round_up

FAMILIES = ("pinsage", "lightgcn")
NODE_MULTIPLE, EDGE_MULTIPLE = 64, 1024


@dataclasses.dataclass(frozen=True)
class Budget:
  """Padded sizes shared by every version's inputs: one compiled program.

  Attributes:
    num_users_pad, num_items_pad: node rows (users first, then items).
    num_edges_pad: directed edges of the training graph (two per interaction).
    attribute_nnz_pad: per attribute kind, the (item, value) entries.
  """
  num_users_pad: int
  num_items_pad: int
  num_edges_pad: int
  attribute_nnz_pad: dict[str, int]

  @classmethod
  def covering(cls, splits: Sequence[VersionSplit]) -> "Budget":
    """The smallest budget (rounded up) that holds every one of `splits`:
    the most users, items and training interactions of any version, and
    the last version's attribute entries (items only grow)."""
    last = splits[-1]
    return cls(
        round_up(max(s.num_users for s in splits), NODE_MULTIPLE),
        round_up(max(s.num_items for s in splits), NODE_MULTIPLE),
        round_up(2 * max(s.num_train for s in splits), EDGE_MULTIPLE),
        {name: round_up(int(kind.offsets[last.num_items]), NODE_MULTIPLE)
         for name, kind in last.attributes.items()})


def check(name: str) -> str:
  """Validates a model family's name (`config.model`).

  Args:
    name: "pinsage" or "lightgcn" (`FAMILIES`).

  Returns:
    `name` itself.

  Raises:
    ValueError: an unknown family (the message lists the known ones).
  """
  return names.check(FAMILIES, name, "model")


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


def make_inputs(name: str, split: VersionSplit, budget: Budget,
                layout: str | None = None):
  """The family's inputs for one version's training graph (padded).

  Args:
    name: the family (`FAMILIES`).
    split: the version's split; its training interactions form the graph.
    budget: the padded sizes shared by every version (attribute entries are
      read by PinSage only).
    layout: aggregation layout, None to choose by size.

  Returns:
    `GraphInputs` (PinSage) or `LightGCNInputs` (LightGCN).

  Raises:
    ValueError: an unknown family, or a graph that exceeds the budget.
  """
  b = budget
  if check(name) == "lightgcn":
    return make_lightgcn_inputs(
        split.train_user, split.train_item, split.num_users, split.num_items,
        b.num_users_pad, b.num_items_pad, num_edges_pad=b.num_edges_pad,
        layout=layout)
  return make_graph_inputs(
      split.train_user, split.train_item, split.num_users, split.num_items,
      split.attributes, b.num_users_pad, b.num_items_pad,
      num_edges_pad=b.num_edges_pad, attribute_nnz_pad=b.attribute_nnz_pad,
      layout=layout)
