"""Backward maps that need not be one matrix, and the post-hoc adapters.

A backward map B_k : R^{d_k} -> R^{d_{k-1}} is a `BackwardMap`: a kind
(`KINDS`: "linear", "affine", "residual-mlp") and a dict of parameter
arrays, applied by the kind's function. A chain of maps from version k down
to j is applied map by map (`apply_chain`); a chain of linear maps keeps the
one-matrix fast path (`transforms.chain_matrix`), so it is the same product
as before.

The post-hoc adapters (method §6, beyond the paper) are the families a
vector-database team fits on paired (version k, version k-1) vectors:
`fit_low_rank_affine`, the best rank-r affine map in closed form (reduced-rank
regression), and `fit_residual_mlp`, an affine map plus a one-hidden-layer
ReLU correction, trained full batch with Adam on the mean squared error.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bcjax import keys, transforms


def _linear(params, z):
  return z @ params["w"]


def _affine(params, z):
  return (z @ params["a"]) @ params["b"] + params["bias"]


def _residual_mlp(params, z):
  hidden = jnp.maximum(z @ params["w1"] + params["b1"], 0.0)
  return z @ params["w"] + params["bias"] + hidden @ params["w2"]


# kind -> its apply(params, z).
_APPLY: dict[str, Callable[[Mapping[str, Any], Any], Any]] = {
    "linear": _linear, "affine": _affine, "residual-mlp": _residual_mlp}
KINDS = tuple(_APPLY)
# The parameter whose first / last axis is d_in / d_out, per kind.
_IN_OUT = {"linear": ("w", "w"), "affine": ("a", "b"),
           "residual-mlp": ("w", "w")}


@dataclasses.dataclass(frozen=True)
class BackwardMap:
  """One backward map B_k: `kind` (`KINDS`) and its parameter arrays.

  Raises:
    ValueError: an unknown kind or a missing parameter (naming it).
  """
  kind: str
  params: Mapping[str, np.ndarray]

  def __post_init__(self):
    if self.kind not in _APPLY:
      raise ValueError(f"unknown backward map kind {self.kind!r}; known: "
                       f"{', '.join(KINDS)}")
    for name in _IN_OUT[self.kind]:
      if np.ndim(self.params.get(name)) != 2:
        raise ValueError(f"a {self.kind} map needs a 2-D parameter "
                         f"{name!r}, got {sorted(self.params)}")

  @classmethod
  def from_matrix(cls, w) -> BackwardMap:
    """The linear map z -> z w."""
    return cls("linear", {"w": np.asarray(w, np.float32)})

  @property
  def d_in(self) -> int:
    return int(np.shape(self.params[_IN_OUT[self.kind][0]])[0])

  @property
  def d_out(self) -> int:
    return int(np.shape(self.params[_IN_OUT[self.kind][1]])[1])

  @property
  def matrix(self) -> np.ndarray | None:
    """W of a linear map; None for any other kind."""
    return self.params["w"] if self.kind == "linear" else None


def file_stem(kind: str, param: str) -> str:
  """The file name (without suffix) of a map's parameter, as run
  directories and stores both name it: a linear map's W is "transform",
  any other map's parameter p "backward_<p>"."""
  return "transform" if kind == "linear" else f"backward_{param}"


def apply(backward: BackwardMap, z) -> np.ndarray:
  """B(z) for `[n, d_in]` rows, as float32 numpy.

  Raises:
    ValueError: rows of another width than the map's input.
  """
  z = np.asarray(z, np.float32)
  if z.shape[-1] != backward.d_in:
    raise ValueError(f"a {backward.kind} map reads {backward.d_in} dims, the "
                     f"rows have {z.shape[-1]}")
  return np.asarray(_APPLY[backward.kind](backward.params, z), np.float32)


def apply_chain(maps: Sequence[BackwardMap], z, from_version: int,
                to_version: int) -> np.ndarray:
  """B_{j+1}(... B_k(z)): version k's rows mapped into version j's space.

  Args:
    maps: `[B_1, ..., B_K]`.
    z: `[n, d_k]` rows of version k = `from_version`.
    from_version, to_version: k >= j, in 0..K.

  Returns:
    `[n, d_j]` float32. A chain of linear maps is one product with
    `transforms.chain_matrix`; any other is applied map by map.

  Raises:
    ValueError: versions out of range or in the wrong order.
  """
  if not 0 <= to_version <= from_version <= len(maps):
    raise ValueError(f"apply_chain: cannot map version {from_version} to "
                     f"{to_version} with {len(maps)} maps")
  chain = maps[to_version:from_version]
  if all(m.kind == "linear" for m in chain):
    if not chain:
      return np.asarray(z, np.float32)
    return np.asarray(z, np.float32) @ transforms.compose(
        [m.matrix for m in reversed(chain)])
  for m in reversed(chain):
    z = apply(m, z)
  return np.asarray(z, np.float32)


def _check_pairs(x, y) -> tuple[np.ndarray, np.ndarray]:
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or not len(x):
    raise ValueError(f"adapter pairs: expected [n, d_in] and [n, d_out] rows "
                     f"(n >= 1), got {x.shape} and {y.shape}")
  if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
    raise ValueError("adapter pairs: NaN or infinite values")
  return x, y


def fit_low_rank_affine(x, y, rank: int, ridge: float = 1e-4) -> BackwardMap:
  """The rank-`rank` affine map minimising ||x A B + bias - y||^2.

  Closed form (reduced-rank regression): the ridge least-squares fit of the
  centred pairs, projected onto the top `rank` right singular vectors of its
  fitted values.

  Args:
    x: `[n, d_in]` version k's vectors; y: `[n, d_out]` version k-1's.
    rank: r, 1 <= r <= min(d_in, d_out).
    ridge: relative ridge of the least-squares step (`transforms.fit_lstsq`).

  Returns:
    An "affine" `BackwardMap`: a `[d_in, r]`, b `[r, d_out]`, bias `[1, d_out]`.

  Raises:
    ValueError: bad pairs or a rank out of range.
  """
  x, y = _check_pairs(x, y)
  if not 1 <= rank <= min(x.shape[1], y.shape[1]):
    raise ValueError(f"low-rank affine: rank {rank} outside "
                     f"[1, {min(x.shape[1], y.shape[1])}]")
  x_mean, y_mean = x.mean(0, keepdims=True), y.mean(0, keepdims=True)
  w = transforms.fit_lstsq(x - x_mean, y - y_mean, ridge).astype(np.float64)
  _, _, vt = np.linalg.svd((x - x_mean) @ w, full_matrices=False)
  basis = vt[:rank].T  # [d_out, r]
  a, b = w @ basis, basis.T
  bias = y_mean - x_mean @ a @ b
  return BackwardMap("affine", {"a": a.astype(np.float32),
                                "b": b.astype(np.float32),
                                "bias": bias.astype(np.float32)})


def fit_residual_mlp(x, y, key: jax.Array, hidden: int = 128,
                     steps: int = 500, lr: float = 1e-2) -> BackwardMap:
  """An affine map plus a ReLU correction, y ~ x w + bias + relu(x w1 + b1) w2.

  The affine part starts at the least-squares fit and w2 at zero, so
  training starts from the best affine map; then every parameter is
  trained full batch with Adam on the mean squared error for `steps`
  steps (one jitted scan).

  Args:
    x: `[n, d_in]` version k's vectors; y: `[n, d_out]` version k-1's.
    key: the adapter's key; w1 is drawn from `keys.derive(key, "w1")`,
      uniform in +-1/sqrt(d_in) (PyTorch's linear default).
    hidden: the hidden width.
    steps: full-batch Adam steps.
    lr: Adam's learning rate.

  Returns:
    A "residual-mlp" `BackwardMap`.

  Raises:
    ValueError: bad pairs, or hidden or steps below 1.
  """
  x, y = _check_pairs(x, y)
  if hidden < 1 or steps < 1:
    raise ValueError(f"residual MLP: hidden={hidden} and steps={steps} must "
                     "be >= 1")
  d_in, d_out = x.shape[1], y.shape[1]
  affine = fit_low_rank_affine(x, y, min(d_in, d_out))
  bound = 1.0 / np.sqrt(d_in)
  params = {
      "w": jnp.asarray(affine.params["a"] @ affine.params["b"]),
      "bias": jnp.asarray(affine.params["bias"]),
      "w1": jax.random.uniform(keys.derive(key, "w1"), (d_in, hidden),
                               jnp.float32, -bound, bound),
      "b1": jnp.zeros((1, hidden), jnp.float32),
      "w2": jnp.zeros((hidden, d_out), jnp.float32)}
  trained = _train(params, jnp.asarray(x, jnp.float32),
                   jnp.asarray(y, jnp.float32), steps=steps, lr=lr)
  return BackwardMap("residual-mlp",
                     {n: np.asarray(p) for n, p in trained.items()})


# The low-rank adapter's rank: min(d_in, d_out) // LOW_RANK_DIVISOR (at least 1).
LOW_RANK_DIVISOR = 4
FITS = ("lstsq", "procrustes", "lowrank-affine", "residual-mlp")


def fit(name: str, x, y, key: jax.Array) -> BackwardMap:
  """A post-hoc B_k fitted on paired rows, by its `Strategy.fit` name.

  Args:
    name: "lstsq" or "procrustes" (a matrix, `transforms.fit`),
      "lowrank-affine" (`fit_low_rank_affine`, rank min(d_in, d_out) //
      `LOW_RANK_DIVISOR`) or "residual-mlp" (`fit_residual_mlp` with its
      defaults).
    x: `[n, d_in]` version k's vectors; y: `[n, d_out]` version k-1's.
    key: the adapter's key (read by "residual-mlp" only).

  Returns:
    The `BackwardMap`.

  Raises:
    ValueError: an unknown name (listing the known ones) or bad pairs.
  """
  if name in ("lstsq", "procrustes"):
    return BackwardMap.from_matrix(transforms.fit(name, x, y))
  if name == "lowrank-affine":
    rank = max(1, min(np.shape(x)[1], np.shape(y)[1]) // LOW_RANK_DIVISOR)
    return fit_low_rank_affine(x, y, rank)
  if name == "residual-mlp":
    return fit_residual_mlp(x, y, key)
  raise ValueError(f"unknown post-hoc fit {name!r}; known: {', '.join(FITS)}")


@functools.partial(jax.jit, static_argnames=("steps", "lr"))
def _train(params, x, y, *, steps: int, lr: float):
  """Full-batch Adam on the mean squared error of the residual MLP."""
  tx = optax.adam(lr)
  loss = lambda p: jnp.mean((_residual_mlp(p, x) - y) ** 2)

  def step(carry, _):
    p, state = carry
    grads = jax.grad(loss)(p)
    updates, state = tx.update(grads, state, p)
    return (optax.apply_updates(p, updates), state), None

  (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None,
                                length=steps)
  return params
