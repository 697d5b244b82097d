"""The model-agnostic trainer: train state, the jitted epoch, model selection.

Any embedding model (`bcjax.models.interface.EmbeddingModel`) with any
intended task (`bcjax.tasks.Task`) is trained here, with or without
backward compatibility. An `Objective` says what one version's training
optimises: the intended-task loss on the model and/or an alignment term
through a backward transformation B_k towards the previous version's
embeddings. `fit` is the public entry point (one version, returns the
selected model and W_k); `train_version` is the loop under it, written once
for every strategy (see `bcjax.strategies`) and every model family.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.serialization
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bcjax import io, losses, sharding, transforms
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


def _batch_loss(model: EmbeddingModel, task: Task, objective: Objective,
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
    earlier = align.earlier if objective.multi_step else ()
    rows = sum(i.shape[0] for i in index)
    if z.shape[0] <= rows:  # Map every node once, then weight by counts.
      term = losses.node_alignment(
          align.target, transform.apply(params["transform"], z, d_prev),
          index, earlier, mask=mask)
    else:
      target = tuple(align.target[i] for i in index)
      predicted = tuple(transform.apply(params["transform"], z[i], d_prev)
                        for i in index)
      term = losses.multi_step_alignment(target, predicted, earlier, mask=mask)
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
        lambda p: _batch_loss(model, task, objective, p, state, inputs, align,
                              batch), has_aux=True)
    (loss, new_state), grads = grad_fn(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params,
                         model_state=new_state, opt_state=opt_state), loss

  def real(batch):
    return jnp.any(task.nodes(_task_batch(batch))[1])

  def step(state, batch):
    return jax.lax.cond(real(batch), update,
                        lambda state, _: (state, jnp.zeros(())), state, batch)

  state, batch_losses = jax.lax.scan(step, state, batches)
  num_real = jnp.sum(jax.vmap(real)(batches))
  return state, jnp.sum(batch_losses) / jnp.maximum(num_real, 1)


train_epoch = jax.jit(epoch_core,
                      static_argnames=("model", "task", "objective", "lr"),
                      donate_argnames=("state",))


def _task_batch(batch):
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


@jax.jit
def _first_non_finite(tree) -> jax.Array:
  """Index of the first leaf of `tree` holding a NaN or Inf, or -1."""
  bad = jnp.array([~jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
                  + [True])
  index = jnp.argmax(bad)
  return jnp.where(index == len(bad) - 1, -1, index)


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
  """Progress lines (epoch, loss, metric, rate, ETA), at most one per
  `interval` seconds besides the first and the last epoch.

  Args:
    label: prefix of each line ("nobc v2").
    total_epochs: the last epoch (for the ETA).
    stream: where lines go (default stderr).
    first_epoch: the first epoch of this run (> 1 when resumed).
    interval: minimum seconds between lines.
  """

  def __init__(self, label: str, total_epochs: int, stream=None,
               first_epoch: int = 1, interval: float = 1.0):
    self.label, self.total, self.first = label, total_epochs, first_epoch
    self.stream = stream or sys.stderr
    self.start = time.perf_counter()
    self.interval, self.last_line = interval, -np.inf

  def update(self, epoch: int, loss: float, metric_name: str | None,
             metric: float | None):
    """Prints the line of a finished epoch, unless one was printed lately.

    Args:
      epoch: the finished epoch.
      loss: its mean loss.
      metric_name: the metric shown, or None.
      metric: its value, or None to show no metric.
    """
    now = time.perf_counter()
    if (now - self.last_line < self.interval and epoch != self.first
        and epoch != self.total):
      return
    self.last_line = now
    done = epoch - self.first + 1
    rate = done / (now - self.start) if now > self.start else float("nan")
    eta = (self.total - epoch) / rate if rate > 0 else float("nan")
    shown = f" {metric_name} {metric:.4f}" if metric is not None else ""
    print(f"[{self.label}] epoch {epoch}/{self.total} loss {loss:.4f}{shown} "
          f"| {rate:.2f} epochs/s ETA {eta:.0f}s", file=self.stream, flush=True)


@dataclasses.dataclass(frozen=True)
class Checkpointing:
  """Where and how often `train_version` saves its progress.

  The file holds the train state (parameters, optimizer and model state),
  the epoch, the selection and the history, written atomically. Per-epoch
  randomness is `fold_in(key, epoch)`, so the epoch is the whole PRNG
  position: a run resumed from the file is bitwise the run never stopped.

  Attributes:
    path: the checkpoint file (msgpack).
    every: save after every `every` epochs.
  """
  path: Path
  every: int = 1

  def save(self, label: str, epoch: int, state: TrainState, best: Selection,
           history: list) -> None:
    """Writes the progress after `epoch` to `path`, atomically.

    Args:
      label: names the training; `restore` checks it.
      epoch: the last finished epoch.
      state: the current train state (copied to host).
      best: the selection so far.
      history: the evaluations so far.
    """
    # Arrays as msgpack; the rest as JSON (exact floats, key order kept).
    record = {"label": label, "epoch": epoch, "history": history,
              "best": {"score": best.score, "epoch": best.epoch,
                       "metrics": best.metrics}}
    payload = {"record": json.dumps(record), "state": _host_copy(state),
               "best_state": best.state if best.state is not None else {}}
    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
    io.save_bytes(self.path, flax.serialization.msgpack_serialize(
        flax.serialization.to_state_dict(payload)))

  def restore(self, label: str, state: TrainState
              ) -> tuple[int, TrainState, Selection, list] | None:
    """(epoch, state, selection, history) from the file, or None if absent.

    Args:
      label: the training's label; must match the saved one.
      state: a train state of the same structure (the restore template).

    Returns:
      `(epoch, state, selection, history)` as saved by `save` (arrays on
      host), or None when the file does not exist.

    Raises:
      ValueError: the file is not a checkpoint of this training.
    """
    if not Path(self.path).exists():
      return None
    try:
      raw = flax.serialization.msgpack_restore(Path(self.path).read_bytes())
      record = json.loads(raw["record"])
      if record["label"] != label:
        raise ValueError(f"it belongs to {record['label']!r}")
      restored = flax.serialization.from_state_dict(state, raw["state"])
      best_state = (flax.serialization.from_state_dict(state, raw["best_state"])
                    if raw["best_state"] else None)
    except (KeyError, TypeError, ValueError) as error:
      raise ValueError(f"{self.path}: not a checkpoint of {label!r} ({error}); "
                       "delete it to restart this version") from None
    best = record["best"]
    selection = Selection(float(best["score"]), int(best["epoch"]), best_state,
                          best["metrics"])
    return int(record["epoch"]), restored, selection, record["history"]


def train_version(model: EmbeddingModel, task: Task, inputs,
                  batches: Callable[[jax.Array], Any], objective: Objective,
                  state: TrainState, align: AlignmentInputs,
                  evaluate: Callable[[TrainState], dict],
                  select_key: str | None,
                  key: jax.Array, *, epochs: int, eval_every: int,
                  min_select_epoch: int, lr: float, label: str = "train",
                  lower_is_better: bool = False,
                  checkpointing: Checkpointing | None = None
                  ) -> tuple[Selection, list]:
  """Trains one version and keeps the best evaluated state.

  Args:
    model, task, inputs, objective, state, align: what to train.
    batches: epoch key -> the epoch's batches, stacked (see `train_epoch`),
      or an iterator of equally shaped stacked chunks.
    evaluate: state -> metrics dict, run every `eval_every` epochs.
    select_key: the metric that selects (strict improvement); None keeps
      the last epoch.
    key: PRNG key; epoch e's batches come from `fold_in(key, e)`.
    epochs, eval_every, lr: schedule.
    min_select_epoch: evaluations before this epoch never select.
    label: names the training in progress lines and errors ("nobc v2").
    lower_is_better: select on the lowest value instead of the highest.
    checkpointing: save progress and resume from it (None: never).

  Returns:
    The best `Selection` (its state copied to host) and the history
    `[{"epoch", "loss", select_key, ...}]`.

  Raises:
    FloatingPointError: the loss, the parameters or a metric is NaN or Inf;
      the message names `label`, the epoch and the quantity, and the last
      checkpoint (written before the fault) is kept.
  """
  best, history, start = Selection(), [], 1
  if checkpointing is not None:
    restored = checkpointing.restore(label, state)
    if restored is not None:
      done, restored_state, best, history = restored
      # Back where the fresh state lives (one device, or a mesh).
      state = jax.device_put(restored_state,
                             jax.tree.map(lambda x: x.sharding, state))
      start = done + 1
      print(f"[{label}] resumed after epoch {done} from {checkpointing.path}",
            file=sys.stderr, flush=True)
  progress = Progress(label, epochs, first_epoch=start)
  sign = -1.0 if lower_is_better else 1.0

  def fault(epoch: int, quantity: str):
    kept = (f"; the last checkpoint is kept in {checkpointing.path}"
            if checkpointing is not None else "")
    return FloatingPointError(f"{label}: {quantity} is not finite at epoch "
                              f"{epoch}{kept}")

  for epoch in range(start, epochs + 1):
    state, loss = _run_epoch(state, inputs, align,
                             batches(jax.random.fold_in(key, epoch)),
                             model=model, task=task, objective=objective,
                             lr=lr)
    if not np.isfinite(loss):
      raise fault(epoch, f"the loss ({loss})")
    leaf = int(_first_non_finite(state.params))
    if leaf >= 0:
      path = jax.tree_util.tree_flatten_with_path(state.params)[0][leaf][0]
      raise fault(epoch, "parameter " + jax.tree_util.keystr(path))
    if not (epoch % eval_every and epoch != epochs):
      metrics = {k: float(v) for k, v in evaluate(state).items()}
      bad = [k for k, v in metrics.items() if not np.isfinite(v)]
      if bad:
        raise fault(epoch, f"metric {bad[0]} (embeddings with NaN/Inf?)")
      history.append({"epoch": epoch, "loss": loss, **metrics})
      progress.update(epoch, loss, select_key, metrics.get(select_key))
      score = sign * metrics[select_key] if select_key else -np.inf
      if epoch >= min_select_epoch and score > best.score:
        best = Selection(score, epoch, _host_copy(state), metrics)
    if checkpointing is not None and epoch % checkpointing.every == 0:
      checkpointing.save(label, epoch, state, best, history)
  if best.state is None:  # Nothing selectable: keep the last epoch.
    last = history[-1]
    best = Selection(sign * last.get(select_key, np.nan), last["epoch"],
                     _host_copy(state), last)
  return best, history


def _run_epoch(state, inputs, align, epoch, *, model, task, objective, lr):
  """One epoch given as one stacked pytree of batches, or as an iterator of
  equally shaped chunks (neighbour sampling: an epoch of sampled trees may
  not fit in memory at once); returns the state and the mean loss."""
  if not isinstance(epoch, collections.abc.Iterator):
    state, loss = train_epoch(state, inputs, align, epoch, model=model,
                              task=task, objective=objective, lr=lr)
    return state, float(loss)
  total, count = 0.0, 0
  for chunk in epoch:
    real = int(np.any(task.nodes(_task_batch(chunk))[1], axis=1).sum())
    state, loss = train_epoch(state, inputs, align, chunk, model=model,
                              task=task, objective=objective, lr=lr)
    total, count = total + float(loss) * real, count + real
  return state, total / max(count, 1)


@dataclasses.dataclass
class Result:
  """One trained version (host arrays).

  Attributes:
    variables: the selected model's variables, `{"params": ..., **state}`.
    transform: W_k `[d_k, d_{k-1}]` of the selected state, or None when
      the objective has no transformation.
    epoch: the selected epoch.
    metrics: the selected evaluation.
    history: every evaluation, `[{"epoch", "loss", ...}]`.
  """
  variables: Variables
  transform: np.ndarray | None
  epoch: int
  metrics: dict
  history: list


def fit(model: EmbeddingModel, task: Task, inputs,
        batches: Callable[[jax.Array], Any], key: jax.Array, *,
        objective: Objective = BC_ALIGNER,
        previous: jax.Array | Callable[[Any], jax.Array] | None = None,
        chain: Sequence[Any] = (), init_variables: Variables | None = None,
        evaluate: Callable[[Variables, np.ndarray | None], dict] | None = None,
        select_key: str | None = None, lower_is_better: bool = False,
        epochs: int = 1, eval_every: int = 1, min_select_epoch: int = 0,
        lr: float = 1e-3, init_key: jax.Array | None = None,
        label: str = "train",
        checkpointing: Checkpointing | None = None,
        mesh: jax.sharding.Mesh | None = None) -> Result:
  """Trains version k of any embedding model, backward compatibly.

  With the default objective this is BC-Aligner: the task loss plus lambda
  times the multi-step alignment of B_k(z_k) with the previous version's
  embeddings through the frozen chain W_{k-1} ... W_1. Other objectives give
  the other strategies (`bcjax.strategies`): no transformation (nobc), the
  prefix reading (notrans), single-step, or post-hoc (`train_model=False`:
  only B_k is trained, on `init_variables`' fixed embeddings).

  Args:
    model: the embedding model (`bcjax.models.interface`).
    task: the intended task (`bcjax.tasks`).
    inputs: the model's inputs for this version's data.
    batches: epoch key -> one epoch's batches, stacked on a leading axis.
    key: PRNG key; epoch e's batches use `fold_in(key, e)`.
    objective: what to optimise (default BC-Aligner).
    previous: E_k(M_{k-1}) `[num_nodes, d_{k-1}]`, the previous version's
      model applied to this version's inputs, or a function `inputs ->` it.
      Required when the objective aligns.
    chain: (W_1, ..., W_{k-1}), the earlier versions' backward matrices
      (used by the multi-step loss).
    init_variables: start from these model variables (finetuning; the fixed
      model of post-hoc training); default a fresh `model.init`.
    evaluate: (variables, W_k or None) -> metrics, every `eval_every` epochs;
      default no metrics and the last epoch is kept.
    select_key: the metric that selects the best epoch.
    lower_is_better: select on the lowest value.
    epochs, eval_every, min_select_epoch, lr: schedule.
    init_key: key of the model's and B_k's initialisation
      (default `fold_in(key, 0)`).
    label: names this training in progress lines and errors.
    checkpointing: save every N epochs and resume (see `Checkpointing`).
    mesh: train across its devices (`bcjax.sharding`): batches data-parallel,
      per-node alignment arrays split by rows, the rest replicated.

  Returns:
    The `Result`.

  Raises:
    ValueError: inconsistent arguments (named).
    FloatingPointError: see `train_version`.
  """
  if objective.aligns and previous is None:
    raise ValueError(f"{label}: objective {objective} aligns, so `previous` "
                     "(the previous version's embeddings) is required")
  if not objective.train_model and init_variables is None:
    raise ValueError(f"{label}: post-hoc training needs `init_variables`, "
                     "the fixed model")
  align, d_prev = AlignmentInputs(), None
  if objective.aligns:
    target = jnp.asarray(previous(inputs) if callable(previous) else previous)
    d_prev = target.shape[1]
    _check_chain(label, [np.shape(w) for w in chain], d_prev)
    fixed = None
    if not objective.train_model:
      fixed = embed(model, init_variables, inputs)
      if fixed.shape[0] != target.shape[0]:
        raise ValueError(f"{label}: `previous` has {target.shape[0]} rows but "
                         f"the model embeds {fixed.shape[0]} nodes")
    earlier = tuple(jnp.asarray(w) for w in reversed(tuple(chain)))
    align = AlignmentInputs(target=target, embeddings=fixed,
                            earlier=earlier if objective.multi_step else ())
  init_key = jax.random.fold_in(key, 0) if init_key is None else init_key
  state = init_state(model, inputs, objective, init_key, d_prev, lr,
                     model_variables=init_variables)
  if mesh is not None:
    state, inputs = sharding.replicate((state, inputs), mesh)
    align = AlignmentInputs(
        target=sharding.split_rows(align.target, mesh),
        earlier=sharding.replicate(align.earlier, mesh),
        embeddings=sharding.split_rows(align.embeddings, mesh))
    unsharded = batches
    batches = lambda key: sharding.split_batches(unsharded(key), mesh)  # noqa: E731

  def matrix(state: TrainState) -> np.ndarray | None:
    if not objective.aligns:
      return None
    return np.asarray(transforms.get(objective.transform).matrix(
        state.params["transform"], model.dim, d_prev))

  def run_evaluate(state: TrainState) -> dict:
    return {} if evaluate is None else evaluate(state.model_variables(),
                                                matrix(state))

  best, history = train_version(
      model, task, inputs, batches, objective, state, align, run_evaluate,
      select_key if evaluate is not None else None, key, epochs=epochs,
      eval_every=eval_every, min_select_epoch=min_select_epoch, lr=lr,
      label=label, lower_is_better=lower_is_better,
      checkpointing=checkpointing)
  return Result(_host_copy(best.state.model_variables()), matrix(best.state),
                best.epoch, best.metrics, history)


def _check_chain(label: str, shapes: list[tuple[int, ...]], d_prev: int):
  """W_1 ... W_{k-1} must compose and end in the previous version's dims."""
  for j in range(1, len(shapes)):
    if len(shapes[j]) != 2 or shapes[j][1] != shapes[j - 1][0]:
      raise ValueError(f"{label}: chain W_{j + 1} has shape {shapes[j]}, which "
                       f"does not compose with W_{j} {shapes[j - 1]}")
  if shapes and shapes[-1][0] != d_prev:
    raise ValueError(f"{label}: W_{len(shapes)} maps {shapes[-1][0]} dims but "
                     f"`previous` has {d_prev}")
