"""Train state, the jitted epoch, and model selection, shared by all strategies.

An `Objective` says what one version's training optimises: the intended-task
loss on the embedding model (BPR + regularisation) and/or an alignment term
through a backward transformation B_k towards fixed target embeddings. Every
strategy is a choice of `Objective` plus which earlier artifacts it starts
from (see `bcjax.strategies`); the loop below is written once.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bcjax import losses, transforms
from bcjax.data.sampling import TripleSampler, numpy_rng
from bcjax.models.pinsage import GraphInputs, PinSage

Params = Any


@dataclasses.dataclass(frozen=True)
class Objective:
  """What one version's training optimises.

  Attributes:
    train_model: BPR + regularisation on the model's embeddings, the model
      trainable. False: the post-hoc case, the model's embeddings are fixed
      and only the transformation is trained, on the alignment term alone.
    transform: None, or the name of the backward transformation B_k
      (`bcjax.transforms.get`) whose output is aligned to the target.
    multi_step: use the multi-step alignment loss (else single-step).
    lam: weight of the alignment term next to the intended-task loss.
    reg: regularisation coefficient of the BPR loss.
  """
  train_model: bool = True
  transform: str | None = None
  multi_step: bool = False
  lam: float = 16.0
  reg: float = 0.01

  @property
  def aligns(self) -> bool:
    return self.transform is not None


@flax.struct.dataclass
class TrainState:
  """A plain pytree: everything an epoch updates."""
  step: jax.Array
  params: Params          # {"model": ..., "transform": ...}, trainable parts
  frozen: Params          # parts that enter the loss but are not trained
  batch_stats: Params
  opt_state: optax.OptState


@flax.struct.dataclass
class AlignmentInputs:
  """Fixed arrays of the alignment term (absent leaves are None).

  Attributes:
    target: `[num_nodes_pad, d_{k-1}]` E_k(M_{k-1}), the previous version's
      best model on the current graph.
    earlier: (W_{k-1}, ..., W_1) frozen matrices for the multi-step loss.
    embeddings: `[num_nodes_pad, d_k]` fixed E_k(M_k) for post-hoc training.
  """
  target: jax.Array | None = None
  earlier: tuple[jax.Array, ...] = ()
  embeddings: jax.Array | None = None


def make_optimizer(lr: float) -> optax.GradientTransformation:
  return optax.adam(lr)


def init_state(model: PinSage, graph: GraphInputs, objective: Objective,
               key: jax.Array, d_prev: int | None, lr: float,
               model_variables: Params | None = None) -> TrainState:
  """A fresh train state; `model_variables` continues an earlier model."""
  model_key, transform_key = jax.random.split(key)
  if model_variables is None:
    model_variables = model.init(model_key, graph, train=False)
  params, frozen = {}, {}
  (params if objective.train_model else frozen)["model"] = (
      model_variables["params"])
  if objective.aligns:
    params["transform"] = transforms.get(objective.transform).init(
        transform_key, model.dim, d_prev)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    frozen=frozen, batch_stats=model_variables["batch_stats"],
                    opt_state=make_optimizer(lr).init(params))


def _batch_loss(model: PinSage, objective: Objective, params, state,
                graph: GraphInputs, align: AlignmentInputs, batch):
  """Loss of one batch of triples; returns (loss, new batch statistics)."""
  user, pos, neg, mask = batch
  items = graph.num_users + jnp.stack([pos, neg])
  if objective.train_model:
    variables = {"params": params["model"], "batch_stats": state.batch_stats}
    z, updates = model.apply(variables, graph, train=True,
                             mutable=["batch_stats"])
    new_stats = updates["batch_stats"]
  else:
    z, new_stats = align.embeddings, state.batch_stats
  index = (user, items[0], items[1])
  rows = tuple(z[i] for i in index)
  loss = 0.0
  if objective.train_model:
    loss = losses.bpr_loss(*rows, mask=mask, reg=objective.reg)
  if objective.aligns:
    transform = transforms.get(objective.transform)
    d_prev = align.target.shape[1]
    earlier = align.earlier if objective.multi_step else ()
    if z.shape[0] <= 3 * user.shape[0]:  # Map every node once, then gather.
      term = losses.node_alignment(
          align.target, transform.apply(params["transform"], z, d_prev),
          index, earlier, mask=mask)
    else:
      target = tuple(align.target[i] for i in index)
      predicted = tuple(transform.apply(params["transform"], r, d_prev)
                        for r in rows)
      term = losses.multi_step_alignment(target, predicted, earlier, mask=mask)
    loss = loss + (objective.lam if objective.train_model else 1.0) * term
  return loss, new_stats


@functools.partial(jax.jit, static_argnames=("model", "objective", "lr"),
                   donate_argnames=("state",))
def train_epoch(state: TrainState, graph: GraphInputs, align: AlignmentInputs,
                batches, *, model: PinSage, objective: Objective,
                lr: float) -> tuple[TrainState, jax.Array]:
  """One epoch: a `lax.scan` of Adam steps over the epoch's batches.

  Args:
    state: the train state (donated).
    graph: the version's padded graph.
    align: fixed alignment inputs.
    batches: (user, pos, neg, mask), each `[num_batches, batch_size]`.
    model, objective, lr: static configuration.

  Returns:
    The new state and the mean loss over the epoch's batches.
  """
  optimizer = make_optimizer(lr)

  def update(state, batch):
    grad_fn = jax.value_and_grad(
        lambda p: _batch_loss(model, objective, p, state, graph, align, batch),
        has_aux=True)
    (loss, new_stats), grads = grad_fn(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params,
                         batch_stats=new_stats, opt_state=opt_state), loss

  def step(state, batch):
    # Batches of padding (epochs padded to a run-wide count) change nothing.
    return jax.lax.cond(jnp.any(batch[3]), update,
                        lambda state, _: (state, jnp.zeros(())), state, batch)

  state, batch_losses = jax.lax.scan(step, state, batches)
  real = jnp.any(batches[3], axis=1)
  return state, jnp.sum(batch_losses) / jnp.maximum(jnp.sum(real), 1)


@functools.partial(jax.jit, static_argnames=("model",))
def embed(model: PinSage, model_params: Params, batch_stats: Params,
          graph: GraphInputs) -> jax.Array:
  """All node embeddings with running statistics, `[num_nodes_pad, d]`."""
  return model.apply({"params": model_params, "batch_stats": batch_stats},
                     graph, train=False)


def epoch_batches(sampler: TripleSampler, key: jax.Array, batch_size: int,
                  num_batches: int | None = None) -> tuple[np.ndarray, ...]:
  """One epoch's triples as `[num_batches, batch_size]` arrays plus a mask.

  `num_batches` pads the epoch with empty batches (all-False mask) up to a
  count shared by every version of a run, so one program serves them all.
  """
  user, pos, neg = sampler.sample(numpy_rng(key))
  n = len(user)
  needed = -(-n // batch_size)
  num_batches = needed if num_batches is None else num_batches
  if num_batches < needed:
    raise ValueError(f"{n} triples need {needed} batches of {batch_size}, "
                     f"more than the budget {num_batches}")
  pad = num_batches * batch_size - n
  mask = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)])
  shaped = [np.concatenate([a, np.zeros(pad, a.dtype)]).reshape(num_batches, -1)
            for a in (user, pos, neg)]
  return (*shaped, mask.reshape(num_batches, -1))


def _host_copy(tree):
  """A numpy copy (never a view of a buffer that a later step donates)."""
  return jax.tree.map(np.array, tree)


@dataclasses.dataclass
class Selection:
  """The best evaluation so far (higher score is better)."""
  score: float = -np.inf
  epoch: int = -1
  state: Any = None
  metrics: dict | None = None


class Progress:
  """One progress line per evaluation: epoch, loss, metric, rate, ETA."""

  def __init__(self, label: str, total_epochs: int, stream=None):
    self.label, self.total = label, total_epochs
    self.stream = stream or sys.stderr
    self.start = time.perf_counter()

  def update(self, epoch: int, loss: float, metric_name: str, metric: float):
    elapsed = time.perf_counter() - self.start
    rate = epoch / elapsed if elapsed > 0 else float("nan")
    eta = (self.total - epoch) / rate if rate > 0 else float("nan")
    print(f"[{self.label}] epoch {epoch}/{self.total} loss {loss:.4f} "
          f"{metric_name} {metric:.4f} | {rate:.2f} epochs/s ETA {eta:.0f}s",
          file=self.stream, flush=True)


def train_version(model: PinSage, graph: GraphInputs, sampler: TripleSampler,
                  objective: Objective, state: TrainState,
                  align: AlignmentInputs, evaluate: Callable[[TrainState], dict],
                  select_key: str, key: jax.Array, *, epochs: int,
                  eval_every: int, min_select_epoch: int, batch_size: int,
                  lr: float, label: str = "train",
                  lower_is_better: bool = False,
                  num_batches: int | None = None) -> tuple[Selection, list]:
  """Trains one version and keeps the best evaluated state.

  Args:
    model, graph, sampler, objective, state, align: what to train.
    evaluate: state -> metrics dict, run every `eval_every` epochs.
    select_key: the metric that selects (strict improvement).
    key: PRNG key; epoch e's triples come from `fold_in(key, e)`.
    epochs, eval_every, batch_size, lr: schedule.
    min_select_epoch: evaluations before this epoch never select.
    label: prefix of the progress lines.
    lower_is_better: select on the lowest value instead of the highest.
    num_batches: pad every epoch to this many batches (see `epoch_batches`).

  Returns:
    The best `Selection` (its state copied to host) and the history
    `[{"epoch", "loss", select_key, ...}]`.
  """
  best, history = Selection(), []
  progress = Progress(label, epochs)
  sign = -1.0 if lower_is_better else 1.0
  for epoch in range(1, epochs + 1):
    batches = epoch_batches(sampler, jax.random.fold_in(key, epoch),
                            batch_size, num_batches)
    state, loss = train_epoch(state, graph, align, batches, model=model,
                              objective=objective, lr=lr)
    if epoch % eval_every and epoch != epochs:
      continue
    metrics = {k: float(v) for k, v in evaluate(state).items()}
    loss = float(loss)
    if not np.isfinite(loss):
      raise FloatingPointError(f"{label}: loss is {loss} at epoch {epoch}")
    history.append({"epoch": epoch, "loss": loss, **metrics})
    progress.update(epoch, loss, select_key, metrics[select_key])
    score = sign * metrics[select_key]
    if epoch >= min_select_epoch and score > best.score:
      best = Selection(score, epoch, _host_copy(state), metrics)
  if best.state is None:  # Nothing evaluated after min_select_epoch.
    best = Selection(sign * history[-1][select_key], history[-1]["epoch"],
                     _host_copy(state), history[-1])
  return best, history
