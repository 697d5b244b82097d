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
  """`name` if it is a known family; ValueError listing them otherwise."""
  if name not in FAMILIES:
    raise ValueError(f"unknown model {name!r}; known: {', '.join(FAMILIES)}")
  return name


def build(name: str, dim: int, num_layers: int,
          vocab_sizes: tuple[int, ...]) -> FlaxModel:
  """The family's model of embedding size `dim` with `num_layers` layers."""
  if check(name) == "lightgcn":
    return FlaxModel(LightGCN(dim, num_layers))
  return FlaxModel(PinSage(dim, num_layers, vocab_sizes))


def make_inputs(name: str, split: VersionSplit, *, num_users_pad: int,
                num_items_pad: int, num_edges_pad: int,
                attribute_nnz_pad: dict[str, int], layout: str | None):
  """The family's inputs for one version's training graph (padded)."""
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
