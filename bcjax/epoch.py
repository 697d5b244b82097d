"""One epoch of training: the objective, the train state, the batch loss and
the jitted, scanned epoch.

An `Objective` says what one version's training optimises: the intended-task
loss on the model's embeddings and/or an alignment term through a backward
transformation B_k towards the previous version's embeddings. `epoch_core`
runs one epoch as a `lax.scan` of Adam steps; `train_epoch` is its jitted
form (the state donated), and `bcjax.sweep` vmaps the core over seeds. The
loop around it (selection, checkpoints, the NaN guard) is `bcjax.training`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from bcjax import losses, transforms
from bcjax.data.neighbours import SampledBatch, SampledInputs
from bcjax.models.interface import EmbeddingModel, Variables, state_of
from bcjax.tasks import Task

Params = Any


@dataclasses.dataclass(frozen=True)
class Objective:
  """What one version's training optimises.

  Attributes:
    train_model: the intended-task loss on the model's embeddings, the model
      trainable. False: the post-hoc case, the model's embeddings are fixed
      and only the transformation is trained, on the alignment term alone.
    transform: None, or the name of the backward transformation B_k
      (`bcjax.transforms.get`) whose output is aligned to the target.
    multi_step: use the multi-step alignment loss (else single-step).
    lam: weight of the alignment term (next to the intended-task loss; the
      post-hoc strategies, without a task loss, use 1).
  """
  train_model: bool = True
  transform: str | None = None
  multi_step: bool = False
  lam: float = 16.0

  @property
  def aligns(self) -> bool:
    """Whether the objective has an alignment term (a transformation)."""
    return self.transform is not None


BC_ALIGNER = Objective(transform="linear", multi_step=True)


@flax.struct.dataclass
class TrainState:
  """A plain pytree: everything an epoch updates."""
  step: jax.Array
  params: Params          # {"model": ..., "transform": ...}, trainable parts
  frozen: Params          # parts that enter the loss but are not trained
  model_state: Params     # the model's other collections (e.g. batch_stats)
  opt_state: optax.OptState

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
  """
  target: jax.Array | None = None
  earlier: tuple[jax.Array, ...] = ()
  embeddings: jax.Array | None = None


def make_optimizer(lr: float) -> optax.GradientTransformation:
  """The optimizer of every training (Adam), shared by init and update.

  Args:
    lr: learning rate.

  Returns:
    The optax Adam transformation.
  """
  return optax.adam(lr)


def init_state(model: EmbeddingModel, inputs, objective: Objective,
               key: jax.Array, d_prev: int | None, lr: float,
               model_variables: Variables | None = None) -> TrainState:
  """A fresh train state; `model_variables` continues an earlier model.

  Args:
    model: the embedding model.
    inputs: the model's inputs (used by `model.init`).
    objective: decides which parts are trained and whether B_k exists.
    key: PRNG key of the model's and B_k's initialisation.
    d_prev: the previous version's dimension d_{k-1} (B_k's output size);
      None when the objective does not align.
    lr: learning rate of the optimizer state.
    model_variables: start from these variables instead of `model.init`.

  Returns:
    The `TrainState` at step 0: the model's params trainable (or frozen
    when `objective.train_model` is False) and B_k's params if it aligns.
  """
  model_key, transform_key = jax.random.split(key)
  if model_variables is None:
    model_variables = model.init(model_key, inputs)
  # Fresh buffers: the state is donated, and init may return input arrays.
  model_variables = jax.tree.map(jnp.array, model_variables)
  params, frozen = {}, {}
  (params if objective.train_model else frozen)["model"] = (
      model_variables["params"])
  if objective.aligns:
    params["transform"] = transforms.get(objective.transform).init(
        transform_key, model.dim, d_prev)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    frozen=frozen, model_state=state_of(model_variables),
                    opt_state=make_optimizer(lr).init(params))


def batch_loss(model: EmbeddingModel, task: Task, objective: Objective,
                params, state: TrainState, inputs, align: AlignmentInputs,
                batch):
  """Loss of one batch; returns (loss, the model's new state)."""
  if isinstance(batch, SampledBatch):  # The model embeds the trees' roots.
    inputs = SampledInputs(inputs, batch.subgraph)
    rows = lambda x: None if x is None else x[batch.nodes]  # noqa: E731
    align = align.replace(target=rows(align.target),
                          embeddings=rows(align.embeddings))
    batch = batch.batch
  if objective.train_model:
    z, new_state = model.apply({"params": params["model"], **state.model_state},
                               inputs, train=True)
    loss = task.loss(z, batch)
  else:
    z, new_state, loss = align.embeddings, state.model_state, 0.0
  if objective.aligns:
    index, mask = task.nodes(batch)
    transform = transforms.get(objective.transform)
    d_prev = align.target.shape[1]
    term = losses.batch_alignment(
        align.target, z,
        lambda x: transform.apply(params["transform"], x, d_prev), index,
        align.earlier if objective.multi_step else (), mask=mask)
    loss = loss + objective.lam * term
  return loss, new_state


def epoch_core(state: TrainState, inputs, align: AlignmentInputs, batches, *,
               model: EmbeddingModel, task: Task, objective: Objective,
               lr: float) -> tuple[TrainState, jax.Array]:
  """One epoch: a `lax.scan` of Adam steps over the epoch's batches.

  Not jitted, so that callers can transform it (`bcjax.sweep` vmaps it over
  seeds); `train_epoch` is its jitted form.

  Args:
    state: the train state (donated by `train_epoch`).
    inputs: the model's inputs (e.g. the version's padded graph).
    align: fixed alignment inputs.
    batches: the task's batches stacked on a leading `[num_batches]` axis;
      batches whose mask is all False (padding) change nothing.
    model, task, objective, lr: static configuration.

  Returns:
    The new state and the mean loss over the epoch's real batches.
  """
  optimizer = make_optimizer(lr)

  def update(state, batch):
    grad_fn = jax.value_and_grad(
        lambda p: batch_loss(model, task, objective, p, state, inputs, align,
                              batch), has_aux=True)
    (loss, new_state), grads = grad_fn(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params,
                         model_state=new_state, opt_state=opt_state), loss

  def real(batch):
    return jnp.any(task.nodes(task_batch(batch))[1])

  def step(state, batch):
    return jax.lax.cond(real(batch), update,
                        lambda state, _: (state, jnp.zeros(())), state, batch)

  state, batch_losses = jax.lax.scan(step, state, batches)
  num_real = jnp.sum(jax.vmap(real)(batches))
  return state, jnp.sum(batch_losses) / jnp.maximum(num_real, 1)


train_epoch = jax.jit(epoch_core,
                      static_argnames=("model", "task", "objective", "lr"),
                      donate_argnames=("state",))


def task_batch(batch):
  """The task's own batch (unwrapped from a `SampledBatch`)."""
  return batch.batch if isinstance(batch, SampledBatch) else batch


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
