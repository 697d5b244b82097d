"""What bcjax asks of an embedding model, and adapters for Flax and plain JAX.

Backward compatibility does not care what the embedding model is. The
trainer (`bcjax.core.training`) needs only two pure functions:

  init(key, inputs) -> variables
  apply(variables, inputs, train) -> (z, state)

`inputs` is any pytree of arrays describing the data (a graph, feature
tables); `variables` is a dict with the trainable `"params"` and any other
collections (BatchNorm statistics, masks), which `apply` may update in
training and returns as `state` (every collection but `"params"`). `z` is
`[num_nodes, d]`: the embedding of every node the trainer may index.

Models are static arguments of jitted functions, so they must be hashable
and compare equal when they describe the same computation: Flax modules and
frozen dataclasses are; define the functions of a `FunctionalModel` once, at
module level, not in a loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

import flax.linen as nn
import jax

Variables = dict[str, Any]


class EmbeddingModel(Protocol):
  """The protocol every embedding model satisfies (see the module docstring)."""
  dim: int

  def init(self, key: jax.Array, inputs: Any) -> Variables:
    """Initialises the model's variables.

    Args:
      key: PRNG key.
      inputs: the model's inputs (a pytree of arrays).

    Returns:
      The variables, ``{"params": ..., **other collections}``.
    """
    ...

  def apply(self, variables: Variables, inputs: Any,
            train: bool) -> tuple[jax.Array, Variables]:
    """Embeds every node.

    Args:
      variables: as `init` returns them.
      inputs: the model's inputs.
      train: training mode (batch statistics, state updates).

    Returns:
      `(z, state)`: `[num_nodes, dim]` embeddings and the new state (every
      collection but `"params"`; unchanged outside training).
    """
    ...


def state_of(variables: Variables) -> Variables:
  """Every collection of `variables` except the trainable `"params"`.

  Args:
    variables: `{"params": ..., **collections}`.

  Returns:
    The other collections (a new dict; may be empty).
  """
  return {name: value for name, value in variables.items() if name != "params"}


@dataclasses.dataclass(frozen=True)
class FlaxModel:
  """A Flax module whose `__call__(inputs, train)` returns `[num_nodes, d]`.

  Every collection but `"params"` is mutable in training (BatchNorm
  statistics, for instance) and comes back as the new state.

  Attributes:
    module: the module; it must have an integer attribute `dim`.
  """
  module: nn.Module

  @property
  def dim(self) -> int:
    """The module's embedding size."""
    return self.module.dim

  def init(self, key: jax.Array, inputs: Any) -> Variables:
    """`module.init` in evaluation mode (see `EmbeddingModel.init`).

    Args:
      key: PRNG key.
      inputs: the module's inputs.

    Returns:
      The module's variables as a dict.
    """
    return dict(self.module.init(key, inputs, train=False))

  def apply(self, variables: Variables, inputs: Any,
            train: bool) -> tuple[jax.Array, Variables]:
    """`module.apply`, the state collections mutable in training.

    Args:
      variables: the module's variables.
      inputs: the module's inputs.
      train: training mode.

    Returns:
      `(z [num_nodes, dim], state)`; the state is the updated collections
      in training, else the given ones.
    """
    state = state_of(variables)
    if not (train and state):
      return self.module.apply(variables, inputs, train=train), state
    z, updates = self.module.apply(variables, inputs, train=True,
                                   mutable=list(state))
    return z, dict(updates)


@dataclasses.dataclass(frozen=True)
class FunctionalModel:
  """A plain-JAX model of two functions, without state.

  `params = init_fn(key, inputs, dim)`, `z = apply_fn(params, inputs)`: one
  pair of functions serves every version's size.

  Attributes:
    init_fn: `(key, inputs, dim) -> params` (any pytree), for embeddings
      of `dim` dimensions.
    apply_fn: `(params, inputs) -> [num_nodes, dim]`.
    dim: the embedding size.
  """
  init_fn: Callable[[jax.Array, Any, int], Any]
  apply_fn: Callable[[Any, Any], jax.Array]
  dim: int

  def init(self, key: jax.Array, inputs: Any) -> Variables:
    """`{"params": init_fn(key, inputs, dim)}`.

    Args:
      key: PRNG key.
      inputs: the model's inputs.

    Returns:
      The variables, `"params"` only.
    """
    return {"params": self.init_fn(key, inputs, self.dim)}

  def apply(self, variables: Variables, inputs: Any,
            train: bool) -> tuple[jax.Array, Variables]:
    """`apply_fn(params, inputs)`, with no state.

    Args:
      variables: `{"params": ...}`.
      inputs: the model's inputs.
      train: ignored (the model has no mode).

    Returns:
      `(z [num_nodes, dim], {})`.
    """
    del train
    return self.apply_fn(variables["params"], inputs), {}
