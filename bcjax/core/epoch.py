"""One epoch of training: the objective, the train state, the losses and the
jitted, scanned epoch core.

An `Objective` says what one version's training optimises: the intended-task
loss on the model's embeddings and/or an alignment term through a backward
transformation B_k towards the previous version's embeddings. `epoch_core`
runs one epoch of any `Loss` as a `lax.scan` of optimizer steps, the optax
transformation held in the `TrainState`; `train_epoch` is its jitted form
(the state donated). Every training of the library is a use of it: the
embedding model's (`EmbeddingLoss`, through `bcjax.core.training`), the seed
sweeps (`bcjax.core.sweep` vmaps the core over seeds) and the consumer grid
(`bcjax.evaluation.consumers` vmaps it over seeds and dropout rates).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Protocol

import flax.struct
import jax
import jax.numpy as jnp
import optax

from bcjax.backward import maps as backward_maps
from bcjax.core import losses
from bcjax.core.tasks import Task
from bcjax.models.interface import EmbeddingModel, Variables, state_of
from bcjax.util import numbers

Params = Any


@dataclasses.dataclass(frozen=True)
class Objective:
  """What one version's training optimises.

  Attributes:
    train_model: the intended-task loss on the model's embeddings, the model
      trainable. False: the post-hoc case, the model's embeddings are fixed
      and only the transformation is trained, on the alignment term alone.
    transform: None, or the name of the backward transformation B_k
      (`bcjax.backward.maps.get`: a kind with a matrix) whose output is aligned to the target.
    multi_step: use the multi-step alignment loss (else single-step).
    lam: weight of the alignment term (next to the intended-task loss; the
      post-hoc strategies, without a task loss, use 1), finite and >= 0: a
      negative weight would maximise the misalignment.

  Raises:
    ValueError: an unknown `transform`, or a `lam` that is negative or not
      finite.
  """
  train_model: bool = True
  transform: str | None = None
  multi_step: bool = False
  lam: float = 16.0

  def __post_init__(self):
    numbers.finite_float("Objective.lam", self.lam, 0)
    if self.transform is not None:
      if backward_maps.get(self.transform).matrix is None:
        raise ValueError(f"Objective.transform={self.transform!r}: training "
                         "learns a linear kind (one with a matrix)")

  @property
  def aligns(self) -> bool:
    """Whether the objective has an alignment term (a transformation)."""
    return self.transform is not None


BC_ALIGNER = Objective(transform="linear", multi_step=True)


@functools.cache
def adam(lr: float) -> optax.GradientTransformation:
  """`optax.adam(lr)`, one object per learning rate.

  The optimizer is part of the train state's static structure, so jitted
  epochs are compiled once per optimizer object: passing the same object
  (as this cache does) keeps one compiled program per run.
  """
  return optax.adam(lr)


@flax.struct.dataclass
class TrainState:
  """A plain pytree: everything an epoch updates, and its optimizer."""
  step: jax.Array
  params: Params          # {"model": ..., "transform": ...}, trainable parts
  frozen: Params          # parts that enter the loss but are not trained
  model_state: Params     # the model's other collections (e.g. batch_stats)
  opt_state: optax.OptState
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, params: Params, tx: optax.GradientTransformation,
             frozen: Params | None = None,
             model_state: Params | None = None) -> "TrainState":
    """The state at step 0 of training `params` with `tx`."""
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               frozen=frozen or {}, model_state=model_state or {},
               opt_state=tx.init(params), tx=tx)

  def model_variables(self) -> Variables:
    """The model's variables: `{"params": ..., **model_state}`."""
    params = self.params.get("model", self.frozen.get("model"))
    return {"params": params, **self.model_state}


@flax.struct.dataclass
class AlignmentInputs:
  """Fixed arrays of the alignment term (absent leaves are None).

  Attributes:
    target: `[num_nodes, d_{k-1}]` E_k(M_{k-1}), the previous version's
      best model on the current data.
    earlier: (W_{k-1}, ..., W_1) frozen matrices for the multi-step loss.
    embeddings: `[num_nodes, d_k]` fixed E_k(M_k) for post-hoc training.
    known: `[num_nodes]` bool, the nodes the previous version knew (the
      alignment term covers only those); None: every node.
  """
  target: jax.Array | None = None
  earlier: tuple[jax.Array, ...] = ()
  embeddings: jax.Array | None = None
  known: jax.Array | None = None

  def rows(self, nodes: jax.Array | None) -> "AlignmentInputs":
    """The per-node arrays at `nodes` only (None: all of them)."""
    if nodes is None:
      return self
    pick = lambda x: None if x is None else x[nodes]  # noqa: E731
    return self.replace(target=pick(self.target),
                        embeddings=pick(self.embeddings),
                        known=pick(self.known))


def init_state(model: EmbeddingModel, inputs, objective: Objective,
               key: jax.Array, d_prev: int | None,
               tx: optax.GradientTransformation | None = None,
               model_variables: Variables | None = None) -> TrainState:
  """A fresh train state; `model_variables` continues an earlier model.

  Args:
    model: the embedding model.
    inputs: the model's inputs (used by `model.init`).
    objective: decides which parts are trained and whether B_k exists.
    key: PRNG key of the model's and B_k's initialisation.
    d_prev: the previous version's dimension d_{k-1} (B_k's output size);
      None when the objective does not align.
    tx: the optimizer; None: `adam(1e-3)`, every training's default.
    model_variables: start from these variables instead of `model.init`.

  Returns:
    The `TrainState` at step 0: the model's params trainable (or frozen
    when `objective.train_model` is False) and B_k's params if it aligns.
  """
  model_key, transform_key = jax.random.split(key)
  if model_variables is None:
    model_variables = initial_variables(model, model_key, inputs)
  # Fresh buffers: the state is donated, and init may return input arrays.
  model_variables = jax.tree.map(jnp.array, model_variables)
  params, frozen = {}, {}
  (params if objective.train_model else frozen)["model"] = (
      model_variables["params"])
  if objective.aligns:
    params["transform"] = backward_maps.get(objective.transform).init(
        transform_key, model.dim, d_prev)
  return TrainState.create(params, adam(1e-3) if tx is None else tx, frozen,
                           state_of(model_variables))


@functools.partial(jax.jit, static_argnames=("model",))
def initial_variables(model: EmbeddingModel, key: jax.Array,
                      inputs) -> Variables:
  """`model.init(key, inputs)`, jitted: run eagerly, a PinSAGE init
  dispatches every operation of a full-graph forward one by one, which on a
  large graph costs far more than the compiled program."""
  return model.init(key, inputs)


class Loss(Protocol):
  """What `epoch_core` trains: hashable (a static argument of jit)."""

  def __call__(self, params: Params, state: TrainState, data: Any,
               batch: Any) -> tuple[jax.Array, tuple[Params, dict]]:
    """`(loss, (model_state, terms))` at `params`: the batch's scalar loss,
    the model's new state and a dict of the scalar terms named by `terms`;
    `data` is what every batch of the epoch shares."""
    ...

  @property
  def terms(self) -> tuple[str, ...]:
    """The names of the float32 scalar terms `__call__` reports."""
    ...

  def real(self, batch: Any) -> jax.Array:
    """Whether a batch holds real rows (False: padding, skipped)."""
    ...


@dataclasses.dataclass(frozen=True)
class EmbeddingLoss:
  """The embedding model's loss under an `Objective` (the `Loss` of
  `bcjax.core.training`); `data` is `(inputs, AlignmentInputs)`.

  A task may narrow the model's inputs per batch (neighbour sampling,
  `bcjax.data.neighbours.SampledTask`): its optional
  `batch_inputs(inputs, batch) -> (inputs, nodes)` gives the batch's inputs
  and the node ids the model's output rows are (None: every node).

  Its terms: `task_loss` (when the model trains) and `alignment`, the
  alignment term before its weight lambda (when the objective aligns).
  """
  model: EmbeddingModel
  task: Task
  objective: Objective

  def __call__(self, params, state: TrainState, data, batch):
    inputs, align = data
    narrow = getattr(self.task, "batch_inputs", None)
    if narrow is not None:
      inputs, nodes = narrow(inputs, batch)
      align = align.rows(nodes)
    objective, terms = self.objective, {}
    if objective.train_model:
      z, new_state = self.model.apply(
          {"params": params["model"], **state.model_state}, inputs, train=True)
      loss = terms["task_loss"] = self.task.loss(z, batch)
    else:
      z, new_state, loss = align.embeddings, state.model_state, 0.0
    if objective.aligns:
      index, mask = self.task.nodes(batch)
      transform = backward_maps.get(objective.transform)
      d_prev = align.target.shape[1]
      term = losses.batch_alignment(
          align.target, z,
          lambda x: transform.apply(params["transform"], x, d_prev), index,
          align.earlier if objective.multi_step else (), mask=mask,
          known=align.known)
      loss = loss + objective.lam * term
      terms["alignment"] = term
    return loss, (new_state, terms)

  @property
  def terms(self) -> tuple[str, ...]:
    return (("task_loss",) * self.objective.train_model
            + ("alignment",) * self.objective.aligns)

  def real(self, batch) -> jax.Array:
    return jnp.any(self.task.nodes(batch)[1])


def epoch_core(state: TrainState, data, batches, *, loss: Loss
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One epoch: a `lax.scan` of `state.tx` steps over the epoch's batches.

  Not jitted, so that callers can transform it (`bcjax.core.sweep` and
  `bcjax.evaluation.consumers` vmap it); `train_epoch` is its jitted form.

  Args:
    state: the train state (donated by `train_epoch`).
    data: what every batch shares (the model's inputs, fixed arrays).
    batches: batches stacked on a leading `[num_batches]` axis; a batch
      that is not `loss.real` (padding) changes nothing.
    loss: the `Loss` (static).

  Returns:
    The new state and the means over the epoch's real batches of the loss
    (`"loss"`) and of each of its terms (by the names the loss gives them).
  """
  def update(state, batch):
    (value, (new_state, terms)), grads = jax.value_and_grad(
        lambda p: loss(p, state, data, batch), has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params,
                         model_state=new_state, opt_state=opt_state), {
                             "loss": value, **terms}

  def skip(state, _):  # Padding: nothing changes, every value is zero.
    return state, {name: jnp.zeros((), jnp.float32)
                   for name in ("loss", *loss.terms)}

  def step(state, batch):
    return jax.lax.cond(loss.real(batch), update, skip, state, batch)

  state, values = jax.lax.scan(step, state, batches)
  num_real = jnp.maximum(jnp.sum(jax.vmap(loss.real)(batches)), 1)
  return state, jax.tree.map(lambda v: jnp.sum(v) / num_real, values)


train_epoch = jax.jit(epoch_core, static_argnames=("loss",),
                      donate_argnames=("state",))


@functools.partial(jax.jit, static_argnames=("model",))
def embed(model: EmbeddingModel, variables: Variables, inputs) -> jax.Array:
  """Every node's embedding in evaluation mode (jitted).

  Args:
    model: the embedding model (static).
    variables: the model's variables, `{"params": ..., **state}`.
    inputs: the model's inputs (e.g. the version's padded graph).

  Returns:
    `[num_nodes, d]` float embeddings.
  """
  return model.apply(variables, inputs, train=False)[0]
