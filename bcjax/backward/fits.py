"""Backward maps fitted post hoc on paired rows (method §6, beyond the paper).

Given version k's vectors x `[n, d_k]` and version k-1's y `[n, d_{k-1}]` of
the same nodes, each fit returns a `BackwardMap` with B(x) close to y:

  lstsq           W minimising ||x W - y||^2 + ridge n ||W||^2 (closed form)
  procrustes      the (semi-)orthogonal W maximising tr(W^T x^T y)
  lowrank-affine  the best rank-r affine map (reduced-rank regression)
  residual-mlp    an affine map plus a ReLU correction, trained by Adam

The closed forms run in float64 and return float32 parameters.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bcjax.backward.maps import LOW_RANK_DIVISOR, BackwardMap, get
from bcjax.util import loop, names



def _check_pairs(x, y) -> tuple[np.ndarray, np.ndarray]:
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or not len(x):
    raise ValueError(f"backward fit: expected paired rows [n, d_in] and "
                     f"[n, d_out] (n >= 1), got {x.shape} and {y.shape}")
  if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
    raise ValueError("backward fit: NaN or infinite values in the pairs")
  return x, y


def lstsq_matrix(x, y, ridge: float = 1e-4) -> np.ndarray:
  """The W minimising ||x W - y||^2 + ridge * n * ||W||^2, in closed form.

  Returns:
    `[d_in, d_out]` float32.
  """
  x, y = _check_pairs(x, y)
  gram = x.T @ x + ridge * len(x) * np.eye(x.shape[1])
  return np.linalg.solve(gram, x.T @ y).astype(np.float32)


def procrustes_matrix(x, y) -> np.ndarray:
  """Orthogonal Procrustes: W = U V^T of svd(x^T y), maximising tr(W^T x^T y).

  Over (semi-)orthogonal W this minimises ||x W - y|| exactly when d_in ==
  d_out (or x^T x is a multiple of I); for d_in > d_out it is the usual
  semi-orthogonal relaxation.

  Returns:
    `[d_in, d_out]` float32 with orthonormal columns (d_in >= d_out) or rows.
  """
  x, y = _check_pairs(x, y)
  u, _, vt = np.linalg.svd(x.T @ y, full_matrices=False)
  return (u @ vt).astype(np.float32)


def low_rank_affine(x, y, rank: int, ridge: float = 1e-4) -> BackwardMap:
  """The rank-`rank` affine map minimising ||x A B + bias - y||^2.

  Closed form (reduced-rank regression): the ridge least-squares fit of the
  centred pairs, projected onto the top `rank` right singular vectors of its
  fitted values.

  Args:
    x: `[n, d_in]` version k's vectors; y: `[n, d_out]` version k-1's.
    rank: r, 1 <= r <= min(d_in, d_out).
    ridge: relative ridge of the least-squares step (`lstsq_matrix`).

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
  w = lstsq_matrix(x - x_mean, y - y_mean, ridge).astype(np.float64)
  _, _, vt = np.linalg.svd((x - x_mean) @ w, full_matrices=False)
  basis = vt[:rank].T  # [d_out, r]
  a, b = w @ basis, basis.T
  bias = y_mean - x_mean @ a @ b
  return BackwardMap("affine", {"a": a.astype(np.float32),
                                "b": b.astype(np.float32),
                                "bias": bias.astype(np.float32)})


def residual_mlp(x, y, key: jax.Array, hidden: int = 128, steps: int = 500,
                 lr: float = 1e-2) -> BackwardMap:
  """y ~ x w + bias + relu(x w1 + b1) w2, from the best affine map.

  The kind's `init` draws w1 (from `keys.derive(key, "w1")`); the affine
  part starts at the full-rank least-squares fit and w2 at zero, so training
  starts from the best affine map; then every parameter is trained full
  batch with Adam on the mean squared error for `steps` steps (one jitted
  scan, one epoch of the training loop `bcjax.util.loop.run`, whose NaN guard
  names a diverged fit).

  Args:
    x: `[n, d_in]` version k's vectors; y: `[n, d_out]` version k-1's.
    key: the map's key.
    hidden: the hidden width.
    steps: full-batch Adam steps.
    lr: Adam's learning rate.

  Returns:
    A "residual-mlp" `BackwardMap`.

  Raises:
    ValueError: bad pairs, or hidden or steps below 1.
    FloatingPointError: the training diverged (NaN or Inf).
  """
  x, y = _check_pairs(x, y)
  if hidden < 1 or steps < 1:
    raise ValueError(f"residual MLP: hidden={hidden} and steps={steps} must "
                     "be >= 1")
  d_in, d_out = x.shape[1], y.shape[1]
  affine = low_rank_affine(x, y, min(d_in, d_out))
  params = get("residual-mlp").init(key, d_in, d_out, hidden)
  params.update(w=jnp.asarray(affine.params["a"] @ affine.params["b"]),
                bias=jnp.asarray(affine.params["bias"]))
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)

  def epoch(params, _):  # The whole full-batch training: one epoch.
    params = _train_mse(params, x, y, steps=steps, lr=lr)
    return params, {"loss": _mse(params, x, y)}

  trained, _ = loop.run(epoch, params, loop.Schedule(epochs=1),
                        label=f"residual-MLP map {d_in}->{d_out}",
                        params=lambda params: params, log=lambda _: None)
  return BackwardMap("residual-mlp", dict(trained.state))


def fit(name: str, x, y, key: jax.Array) -> BackwardMap:
  """A post-hoc B_k fitted on paired rows, by its `Strategy.fit` name.

  Args:
    name: one of `FITS` ("lowrank-affine" has rank min(d_in, d_out) //
      `LOW_RANK_DIVISOR`; "residual-mlp" its defaults).
    x: `[n, d_in]` version k's vectors; y: `[n, d_out]` version k-1's.
    key: the map's key (read by "residual-mlp" only).

  Returns:
    The `BackwardMap`.

  Raises:
    ValueError: an unknown name (listing the known ones) or bad pairs.
  """
  return names.lookup(FITS, name, "backward fit")(x, y, key)


@jax.jit
def _mse(params, x, y) -> jax.Array:
  """The residual MLP's mean squared error on the pairs."""
  return jnp.mean((get("residual-mlp").apply(params, x, y.shape[1]) - y) ** 2)


@functools.partial(jax.jit, static_argnames=("steps", "lr"))
def _train_mse(params, x, y, *, steps: int, lr: float):
  """Full-batch Adam on the mean squared error of the residual MLP."""
  tx, apply = optax.adam(lr), get("residual-mlp").apply
  loss = lambda p: jnp.mean((apply(p, x, y.shape[1]) - y) ** 2)

  def step(carry, _):
    p, state = carry
    grads = jax.grad(loss)(p)
    updates, state = tx.update(grads, state, p)
    return (optax.apply_updates(p, updates), state), None

  (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None,
                                length=steps)
  return params


def _low_rank_by_divisor(x, y, key) -> BackwardMap:
  """`low_rank_affine` at rank min(d_in, d_out) // `LOW_RANK_DIVISOR`."""
  del key
  rank = max(1, min(np.shape(x)[1], np.shape(y)[1]) // LOW_RANK_DIVISOR)
  return low_rank_affine(x, y, rank)


# A post-hoc fit's name (`Strategy.fit`) -> `(x, y, key) -> BackwardMap`.
FITS = {
    "lstsq": lambda x, y, key: BackwardMap.from_matrix(lstsq_matrix(x, y)),
    "procrustes": lambda x, y, key: BackwardMap.from_matrix(
        procrustes_matrix(x, y)),
    "lowrank-affine": _low_rank_by_divisor,
    "residual-mlp": residual_mlp,
}
