"""The kinds of backward map, and `BackwardMap`, one map of a chain.

A backward map B_k : R^{d_k} -> R^{d_{k-1}} turns version-k embeddings (row
vectors) into version k-1's space (method §1). Every kind is one `Kind` of
the registry `KINDS`, a triple of pure functions in the mould of optax:

  linear        z @ w                          w `[d_in, d_out]`
  notrans       z[..., :d_out]                 no parameters: [I; 0]
  affine        (z @ a) @ b + bias             a `[d_in, r]`, b `[r, d_out]`
  residual-mlp  z @ w + bias + relu(z @ w1 + b1) @ w2

`init` makes parameters, `apply` maps rows (traceable under `jax.jit`: it is
what training differentiates) and `matrix` gives the one matrix a linear
kind stands for (None for the others), so that `apply(p, z, d) == z @
matrix(p, d_in, d)`. Static dimensions are arguments, never parameters.

A `BackwardMap` is a kind with its parameter arrays, as run directories and
stores keep B_k; its dimensions are read off its parameters, so a notrans map
is kept as its matrix (`BackwardMap.from_matrix`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bcjax.util import keys, names

Params = dict[str, Any]

# The affine kind's default rank: min(d_in, d_out) // LOW_RANK_DIVISOR (>= 1).
LOW_RANK_DIVISOR = 4


class Kind(NamedTuple):
  """One kind of backward map `R^{d_in} -> R^{d_out}`.

  Attributes:
    init: `init(key, d_in, d_out) -> params`, a dict of arrays (maybe empty).
    apply: `apply(params, z, d_out) -> z'`, `[..., d_in]` rows to
      `[..., d_out]`; `d_out` is static under `jax.jit`.
    matrix: `matrix(params, d_in, d_out) -> [d_in, d_out]`, the W with
      `apply(params, z, d_out) == z @ W`; None for a non-linear kind.
    in_out: the parameters whose first / last axis are d_in / d_out (None:
      the kind has no parameters, its dims are not in them).
  """
  init: Callable[[jax.Array, int, int], Params]
  apply: Callable[[Params, Any, int], Any]
  matrix: Callable[[Params, int, int], Any] | None
  in_out: tuple[str, str] | None


def _check_dims(name: str, d_in: int, d_out: int) -> None:
  if d_in < 1 or d_out < 1:
    raise ValueError(f"{name} map: dimensions must be positive, got "
                     f"d_in={d_in}, d_out={d_out}")


def _uniform(key: jax.Array, d_in: int, d_out: int) -> jax.Array:
  """Uniform in +-1/sqrt(d_in), PyTorch's `nn.Linear` default (the paper's
  reference code)."""
  bound = 1.0 / math.sqrt(d_in)
  return jax.random.uniform(key, (d_in, d_out), jnp.float32, -bound, bound)


def _linear_w(params: Params, d_in: int, d_out: int) -> Any:
  w = params["w"]
  if np.shape(w) != (d_in, d_out):
    raise ValueError(f"linear map: w has shape {np.shape(w)}, expected "
                     f"{(d_in, d_out)}")
  return w


def _linear_init(key: jax.Array, d_in: int, d_out: int) -> Params:
  _check_dims("linear", d_in, d_out)
  return {"w": _uniform(key, d_in, d_out)}


def _linear_apply(params: Params, z: Any, d_out: int) -> Any:
  return z @ _linear_w(params, z.shape[-1], d_out)


def _linear_matrix(params: Params, d_in: int, d_out: int) -> Any:
  return jnp.asarray(_linear_w(params, d_in, d_out))


def _notrans_check(d_in: int, d_out: int) -> None:
  _check_dims("notrans", d_in, d_out)
  if d_out > d_in:
    raise ValueError(f"notrans map: cannot read {d_out} dims from a "
                     f"{d_in}-dim embedding (needs d_out <= d_in)")


def _notrans_init(key: jax.Array, d_in: int, d_out: int) -> Params:
  del key
  _notrans_check(d_in, d_out)
  return {}


def _notrans_apply(params: Params, z: Any, d_out: int) -> Any:
  del params
  _notrans_check(z.shape[-1], d_out)
  return z[..., :d_out]


def _notrans_matrix(params: Params, d_in: int, d_out: int) -> Any:
  del params
  _notrans_check(d_in, d_out)
  return jnp.eye(d_in, d_out, dtype=jnp.float32)


def _affine_init(key: jax.Array, d_in: int, d_out: int) -> Params:
  _check_dims("affine", d_in, d_out)
  rank = max(1, min(d_in, d_out) // LOW_RANK_DIVISOR)
  return {"a": _uniform(keys.derive(key, "a"), d_in, rank),
          "b": _uniform(keys.derive(key, "b"), rank, d_out),
          "bias": jnp.zeros((1, d_out), jnp.float32)}


def _affine_apply(params: Params, z: Any, d_out: int) -> Any:
  del d_out
  return (z @ params["a"]) @ params["b"] + params["bias"]


def _residual_mlp_init(key: jax.Array, d_in: int, d_out: int,
                       hidden: int = 128) -> Params:
  _check_dims("residual-mlp", d_in, d_out)
  return {"w": _uniform(keys.derive(key, "w"), d_in, d_out),
          "bias": jnp.zeros((1, d_out), jnp.float32),
          "w1": _uniform(keys.derive(key, "w1"), d_in, hidden),
          "b1": jnp.zeros((1, hidden), jnp.float32),
          "w2": jnp.zeros((hidden, d_out), jnp.float32)}


def _residual_mlp_apply(params: Params, z: Any, d_out: int) -> Any:
  del d_out
  hidden = jnp.maximum(z @ params["w1"] + params["b1"], 0.0)
  return z @ params["w"] + params["bias"] + hidden @ params["w2"]


KINDS: dict[str, Kind] = {
    "linear": Kind(_linear_init, _linear_apply, _linear_matrix, ("w", "w")),
    "notrans": Kind(_notrans_init, _notrans_apply, _notrans_matrix, None),
    "affine": Kind(_affine_init, _affine_apply, None, ("a", "b")),
    "residual-mlp": Kind(_residual_mlp_init, _residual_mlp_apply, None,
                         ("w", "w")),
}
# The kinds a `BackwardMap` (a run directory, a store) keeps.
STORED_KINDS = tuple(k for k, kind in KINDS.items() if kind.in_out)


def get(name: str) -> Kind:
  """The kind called `name` (`KINDS`).

  Raises:
    ValueError: an unknown name (the message lists the known ones).
  """
  return names.lookup(KINDS, name, "backward map kind")


@dataclasses.dataclass(frozen=True)
class BackwardMap:
  """One backward map B_k: `kind` (`STORED_KINDS`) and its parameter arrays.

  Raises:
    ValueError: an unknown kind, or a kind's in/out parameter that is
      missing or not 2-D (naming it).
  """
  kind: str
  params: Mapping[str, Any]

  def __post_init__(self):
    in_out = get(self.kind).in_out
    if in_out is None:
      raise ValueError(f"a {self.kind} map has no parameters to keep; keep "
                       "its matrix (BackwardMap.from_matrix)")
    for name in in_out:
      if np.ndim(self.params.get(name)) != 2:
        raise ValueError(f"a {self.kind} map needs a 2-D parameter "
                         f"{name!r}, got {sorted(self.params)}")

  @classmethod
  def from_matrix(cls, w: Any) -> BackwardMap:
    """The linear map z -> z w, w as float32."""
    return cls("linear", {"w": np.asarray(w, np.float32)})

  @property
  def d_in(self) -> int:
    return int(np.shape(self.params[KINDS[self.kind].in_out[0]])[0])

  @property
  def d_out(self) -> int:
    return int(np.shape(self.params[KINDS[self.kind].in_out[1]])[1])

  @property
  def matrix(self) -> np.ndarray | None:
    """W of a linear map; None for any other kind."""
    return self.params["w"] if self.kind == "linear" else None

  def __call__(self, z: Any) -> np.ndarray:
    """B(z) for `[n, d_in]` rows, as float32 numpy (the kind's `apply`).

    Raises:
      ValueError: rows of another width than the map's input.
    """
    z = np.asarray(z, np.float32)
    if z.shape[-1] != self.d_in:
      raise ValueError(f"a {self.kind} map reads {self.d_in} dims, the rows "
                       f"have {z.shape[-1]}")
    return np.asarray(KINDS[self.kind].apply(self.params, z, self.d_out),
                      np.float32)


def file_stem(kind: str, param: str) -> str:
  """The file name (without suffix) of a map's parameter, as run directories
  and stores both name it: a linear map's W is "transform", any other map's
  parameter p "backward_<p>"."""
  return "transform" if kind == "linear" else f"backward_{param}"
