"""The model-agnostic trainer: the loop over epochs and `fit`.

Any embedding model (`bcjax.models.interface.EmbeddingModel`) with any
intended task (`bcjax.tasks.Task`) and any optax optimizer is trained here,
with or without backward compatibility (`bcjax.epoch` holds the objective,
the losses and the jitted epoch core). `fit` is the public entry point (one version, returns the selected
model and W_k); `train_version` is the loop under it, written once for
every strategy (see `bcjax.strategies`) and every model family: model
selection, progress lines, checkpoints and the NaN guard.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bcjax import io, keys, sharding, transforms
from bcjax.progress import Progress
from bcjax.epoch import (BC_ALIGNER, AlignmentInputs, EmbeddingLoss, Objective,
                         TrainState, adam, embed, epoch_core, init_state,
                         train_epoch)
from bcjax.models.interface import EmbeddingModel, Variables
from bcjax.tasks import Task

__all__ = ["BC_ALIGNER", "AlignmentInputs", "Checkpointing", "EmbeddingLoss",
           "Objective", "Progress", "Result", "Schedule", "Selection",
           "TrainState", "adam", "embed", "epoch_core", "fit", "init_state",
           "train_epoch", "train_version"]


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


@dataclasses.dataclass(frozen=True)
class Schedule:
  """How long a version trains and which epoch it keeps.

  Attributes:
    epochs: epochs to train.
    eval_every: evaluate every this many epochs (and after the last).
    select: the metric that selects the kept epoch (strict improvement);
      None keeps the last epoch.
    lower_is_better: select on the lowest value instead of the highest.
    min_select_epoch: only evaluations strictly after this epoch select
      (method §6: the alignment term has had time to shrink).

  Raises:
    ValueError: `epochs` or `eval_every` below 1.
  """
  epochs: int = 1
  eval_every: int = 1
  select: str | None = None
  lower_is_better: bool = False
  min_select_epoch: int = 0

  def __post_init__(self):
    for name in ("epochs", "eval_every"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"Schedule: {name}={getattr(self, name)} must be >= 1")


@dataclasses.dataclass
class Selection:
  """The best evaluation so far (higher score is better)."""
  score: float = -np.inf
  epoch: int = -1
  state: Any = None
  metrics: dict | None = None


@dataclasses.dataclass(frozen=True)
class Checkpointing:
  """Where and how often `train_version` saves its progress.

  The file holds the train state (parameters, optimizer and model state),
  the epoch, the selection and the history, written atomically. Epoch e's
  randomness is `keys.derive(key, "epoch", e)`, so the epoch is the whole PRNG
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


def train_version(loss: EmbeddingLoss, data, batches: Callable[[jax.Array], Any],
                  state: TrainState, evaluate: Callable[[TrainState], dict],
                  key: jax.Array, schedule: Schedule, *, label: str = "train",
                  checkpointing: Checkpointing | None = None
                  ) -> tuple[Selection, list]:
  """Trains one version and keeps the best evaluated state.

  Args:
    loss: the model's loss under its objective (`EmbeddingLoss`).
    data: `(inputs, AlignmentInputs)`, shared by every batch.
    batches: epoch key -> the epoch's batches, stacked (see `epoch_core`),
      or an iterator of equally shaped stacked chunks.
    state: the initial train state (its optimizer trains).
    evaluate: state -> metrics dict, at the schedule's cadence.
    key: PRNG key; epoch e's batches come from `keys.derive(key, "epoch", e)`.
    schedule: epochs, evaluation cadence and selection.
    label: names the training in progress lines and errors ("nobc v2").
    checkpointing: save progress and resume from it (None: never).

  Returns:
    The best `Selection` (its state copied to host) and the history
    `[{"epoch", "loss", metric, ...}]`.

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
  epochs, select_key = schedule.epochs, schedule.select
  progress = Progress(label, epochs, first_epoch=start)
  sign = -1.0 if schedule.lower_is_better else 1.0

  def fault(epoch: int, quantity: str):
    kept = (f"; the last checkpoint is kept in {checkpointing.path}"
            if checkpointing is not None else "")
    return FloatingPointError(f"{label}: {quantity} is not finite at epoch "
                              f"{epoch}{kept}")

  for epoch in range(start, epochs + 1):
    state, mean_loss = _run_epoch(
        state, data, batches(keys.derive(key, "epoch", epoch)), loss)
    if not np.isfinite(mean_loss):
      raise fault(epoch, f"the loss ({mean_loss})")
    leaf = int(_first_non_finite(state.params))
    if leaf >= 0:
      path = jax.tree_util.tree_flatten_with_path(state.params)[0][leaf][0]
      raise fault(epoch, "parameter " + jax.tree_util.keystr(path))
    if not (epoch % schedule.eval_every and epoch != epochs):
      metrics = {k: float(v) for k, v in evaluate(state).items()}
      bad = [k for k, v in metrics.items() if not np.isfinite(v)]
      if bad:
        raise fault(epoch, f"metric {bad[0]} (embeddings with NaN/Inf?)")
      history.append({"epoch": epoch, "loss": mean_loss, **metrics})
      progress.update(epoch, mean_loss, select_key, metrics.get(select_key))
      score = sign * metrics[select_key] if select_key else -np.inf
      if epoch > schedule.min_select_epoch and score > best.score:
        best = Selection(score, epoch, _host_copy(state), metrics)
    if checkpointing is not None and epoch % checkpointing.every == 0:
      checkpointing.save(label, epoch, state, best, history)
  if best.state is None:  # Nothing selectable: keep the last epoch.
    last = history[-1]
    best = Selection(sign * last.get(select_key, np.nan), last["epoch"],
                     _host_copy(state), last)
  return best, history


def _run_epoch(state, data, epoch, loss: EmbeddingLoss):
  """One epoch given as one stacked pytree of batches, or as an iterator of
  equally shaped chunks (neighbour sampling: an epoch of sampled trees may
  not fit in memory at once); returns the state and the mean loss."""
  if not isinstance(epoch, collections.abc.Iterator):
    state, value = train_epoch(state, data, epoch, loss=loss)
    return state, float(value)
  total, count = 0.0, 0
  for chunk in epoch:
    real = int(np.sum(jax.vmap(loss.real)(chunk)))
    state, value = train_epoch(state, data, chunk, loss=loss)
    total, count = total + float(value) * real, count + real
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
        schedule: Schedule = Schedule(),
        tx: optax.GradientTransformation | None = None,
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
    key: the version's PRNG key: the model and B_k are initialised from
      `keys.derive(key, "init")`, epoch e's batches read
      `keys.derive(key, "epoch", e)` (`bcjax.keys`).
    objective: what to optimise (default BC-Aligner).
    previous: E_k(M_{k-1}) `[num_nodes, d_{k-1}]`, the previous version's
      model applied to this version's inputs, or a function `inputs ->` it.
      Required when the objective aligns.
    chain: (W_1, ..., W_{k-1}), the earlier versions' backward matrices
      (used by the multi-step loss).
    init_variables: start from these model variables (finetuning; the fixed
      model of post-hoc training); default a fresh `model.init`.
    evaluate: (variables, W_k or None) -> metrics, at the schedule's
      cadence; default no metrics and the last epoch is kept.
    schedule: epochs, evaluation cadence and selection (`Schedule`).
    tx: the optax optimizer (default `adam(1e-3)`); reuse one object across
      calls to reuse the compiled epoch.
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
  state = init_state(model, inputs, objective, keys.derive(key, "init"),
                     d_prev, adam(1e-3) if tx is None else tx,
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

  if evaluate is None:
    schedule = dataclasses.replace(schedule, select=None)
  best, history = train_version(
      EmbeddingLoss(model, task, objective), (inputs, align), batches, state,
      run_evaluate, key, schedule, label=label, checkpointing=checkpointing)
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
