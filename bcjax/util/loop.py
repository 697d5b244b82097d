"""The one training loop: epochs, evaluation, best-keeping, NaN guard,
checkpoints and progress, for every training of the library.

`run` drives an epoch function over a state. The state may be one model or
a stack of models on a leading axis (seeds under `vmap`, the consumer
grid): the loss and the metrics are then `[M]` arrays, and the best is kept
per model by the same rule (`keep_best`, a pytree update that selects per
leading index). Its callers:

  `training.fit`          one embedding model, selected on a metric
  `consumers.train_heads` M consumer heads per grid point, selected on AUC
  `sweep.train_seeds`     N seeds of one embedding model under `vmap`
  `backward.fits`         a residual-MLP map's full-batch Adam (one epoch)

so each gets the same guard against NaN/Inf (loss, parameters, metrics),
the same checkpoints (`bcjax.util.checkpointing`: a run killed at any moment
resumes bitwise) and the same progress lines (`bcjax.util.progress`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from bcjax.util.checkpointing import Checkpointing, Selection, host_copy
from bcjax.util.progress import Progress, to_stderr


@dataclasses.dataclass(frozen=True)
class Schedule:
  """How long a training runs and which epoch it keeps.

  Attributes:
    epochs: epochs to train.
    eval_every: evaluate every this many epochs (and after the last).
    select: the metric that selects the kept epoch (strict improvement);
      None keeps the last epoch.
    lower_is_better: select on the lowest value instead of the highest.
    min_select_epoch: only evaluations strictly after this epoch select
      (method §6: the alignment term has had time to shrink).

  Selecting on Recall@10 of held-out interactions (`bcjax.core.metrics`; users
  are nodes `0..num_users-1`, items the nodes after them):

    recall_inputs = bcjax.core.metrics.prepare_recall_inputs(
        train_user, train_item, val_user, val_item, num_items)

    def evaluate(variables, transform):
      z = bcjax.embed(model, variables, inputs)
      users, items = bcjax.split_nodes(z, (num_users, num_items))
      return bcjax.core.metrics.recall_metrics(users, items, recall_inputs)

    bcjax.fit(..., evaluate=evaluate,
              schedule=bcjax.Schedule(epochs=30, select="recall@10"))

  Raises:
    ValueError: `epochs` or `eval_every` not an integer >= 1,
      `min_select_epoch` not one >= 0.
    TypeError: `select` neither None nor a metric name. A name that
      `evaluate` does not return is refused at the first evaluation.
  """
  epochs: int = 1
  eval_every: int = 1
  select: str | None = None
  lower_is_better: bool = False
  min_select_epoch: int = 0

  def __post_init__(self):
    for name, low in (("epochs", 1), ("eval_every", 1),
                      ("min_select_epoch", 0)):
      value = getattr(self, name)
      if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
          or value < low):
        raise ValueError(f"Schedule: {name}={value!r} must be an integer "
                         f">= {low}")
    if self.select is not None and not (isinstance(self.select, str)
                                        and self.select):
      raise TypeError(f"Schedule: select={self.select!r} must be None or the "
                      "name of a metric that `evaluate` returns, e.g. "
                      "'recall@10'")


def keep_best(improved: Any, new: Any, old: Any) -> Any:
  """The one best-keeping rule: `new` where `improved`, else `old`.

  Args:
    improved: a bool (one model), or `[M]` bools (models stacked on a
      leading axis of every leaf).
    new, old: pytrees of the same structure (a `Selection`, a state).

  Returns:
    `new` or `old` for one model; for a stack, each leaf's rows taken from
    `new` where improved, from `old` elsewhere (works under `jax.jit`).
  """
  if np.ndim(improved) == 0 and not isinstance(improved, jax.core.Tracer):
    return new if bool(improved) else old
  improved = jnp.asarray(improved)
  pick = lambda n, o: jnp.where(
      improved.reshape(improved.shape + (1,) * (jnp.ndim(n) - improved.ndim)),
      n, o)
  return jax.tree.map(pick, new, old)


@jax.jit
def _first_non_finite(tree) -> jax.Array:
  """Index of the first leaf of `tree` holding a NaN or Inf, or -1."""
  bad = jnp.array([~jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
                  + [True])
  index = jnp.argmax(bad)
  return jnp.where(index == len(bad) - 1, -1, index)


def _checked_metrics(label: str, metrics: dict, select: str | None) -> dict:
  """`evaluate`'s metrics as host values, their names checked: strings (they
  become history columns and JSON keys) and `select` among them."""
  for name in metrics:
    if not isinstance(name, str):
      raise TypeError(f"{label}: `evaluate` must return {{name: value}} with "
                      f"str names, got {name!r} (bcjax.metrics.recall_metrics "
                      "names Recall@K 'recall@K')")
  if select is not None and select not in metrics:
    raise ValueError(f"{label}: Schedule(select={select!r}) names no metric "
                     f"of `evaluate`, which returned {list(metrics)}; select "
                     "one of those")
  return {name: _host(value) for name, value in metrics.items()}


def _host(value: Any) -> float | np.ndarray:
  """A float, or a numpy array for a stacked `[M]` value."""
  value = np.asarray(value)
  return float(value) if value.ndim == 0 else value


def _which(value: Any) -> str:
  """" of model i" for the first non-finite entry of a stacked value."""
  if np.ndim(value) == 0:
    return ""
  return f" of model {int(np.flatnonzero(~np.isfinite(value))[0])}"


def _record(values: dict) -> dict:
  """History values as JSON: floats, or lists for stacked values."""
  return {name: v.tolist() if isinstance(v, np.ndarray) else v
          for name, v in values.items()}


def run(epoch_fn: Callable[[Any, int], tuple[Any, dict]], state: Any,
        schedule: Schedule, *, label: str,
        evaluate: Callable[[Any], dict] | None = None,
        best: Selection | None = None,
        snapshot: Callable[[Any], Any] = host_copy,
        params: Callable[[Any], Any] = lambda state: state.params,
        checkpointing: Checkpointing | None = None,
        key: jax.Array | None = None,
        log: Callable[[str], None] | None = None) -> tuple[Selection, list]:
  """Trains `schedule.epochs` epochs and keeps the best evaluated state.

  Args:
    epoch_fn: `(state, epoch) -> (state, means)`: one epoch (1-based);
      `means` holds at least "loss", a float or an `[M]` array.
    state: the initial state (one model, or M stacked).
    schedule: epochs, evaluation cadence and selection.
    label: names the training in progress lines and errors ("nobc v2").
    evaluate: state -> metrics (floats or `[M]` arrays), at the schedule's
      cadence; None evaluates nothing (the history records the loss).
    best: the selection before any epoch (a stack starts from its initial
      models: score -inf, epoch 0); None for one model (nothing yet).
    snapshot: state -> what the selection keeps (default a host copy; a
      stack keeps device arrays, since `keep_best` copies them).
    params: state -> the parameters the NaN guard checks.
    checkpointing: save progress and resume from it (None: never).
    key: the training's PRNG key, recorded in (and checked against) the
      checkpoint.
    log: where progress lines go (default stderr).

  Returns:
    The best `Selection` (the last epoch's when nothing selects) and the
    history `[{"epoch", **means, **metrics}]` of every evaluation.

  Raises:
    FloatingPointError: the loss, a parameter or a metric is NaN or Inf;
      the message names `label`, the epoch, the quantity (and the model of
      a stack), and the last checkpoint (written before the fault) is kept.
    KeyboardInterrupt: Ctrl-C, wherever it lands, re-raised with a message
      naming the last checkpoint (the same call resumes from it).
    ValueError: a checkpoint of another training, or a `schedule.select`
      that `evaluate` does not return.
    TypeError: `evaluate` names a metric with other than a str.
  """
  log = log or to_stderr
  best = Selection() if best is None else best
  history, start = [], 1
  if checkpointing is not None:
    restored = checkpointing.restore(label, state, key=key,
                                     epochs=schedule.epochs,
                                     best=best, snapshot=snapshot(state))
    if restored is not None:
      done, restored_state, best, history = restored
      # Back where the fresh state lives (one device, or a mesh).
      state = jax.device_put(restored_state, jax.tree.map(
          lambda x: getattr(x, "sharding", None), state))
      start = done + 1
      log(f"[{label}] resumed after epoch {done} from {checkpointing.path}")
  epochs, select = schedule.epochs, schedule.select
  progress = Progress(label, epochs, log=log)
  sign = -1.0 if schedule.lower_is_better else 1.0

  def fault(epoch: int, quantity: str):
    kept = ""
    if checkpointing is not None:
      kept = (f"; the last checkpoint is kept in {checkpointing.path}"
              if checkpointing.path.exists() else
              "; no checkpoint was written before it")
    return FloatingPointError(f"{label}: {quantity} is not finite at epoch "
                              f"{epoch}{kept}")

  def interrupted(epoch: int):
    if checkpointing is None:
      kept = ("nothing was saved (fit(..., checkpointing=bcjax.Checkpointing("
              "path)) makes a run resumable)")
    elif saved is None:
      kept = (f"no checkpoint was written yet (every {checkpointing.every} "
              "epochs)")
    else:
      kept = (f"the last checkpoint, {checkpointing.path}, holds epoch "
              f"{saved}: run the same call again to resume from it")
    return KeyboardInterrupt(f"{label}: interrupted in epoch {epoch}; {kept}")

  saved = start - 1 if start > 1 else None  # The epoch the checkpoint holds.
  epoch = start
  try:
    for epoch in range(start, epochs + 1):
      state, means = epoch_fn(state, epoch)
      means = {name: _host(v) for name, v in means.items()}
      if not np.all(np.isfinite(means["loss"])):
        raise fault(epoch, f"the loss{_which(means['loss'])} "
                    f"({means['loss']})")
      leaf = int(_first_non_finite(params(state)))
      if leaf >= 0:
        path = jax.tree_util.tree_flatten_with_path(params(state))[0][leaf][0]
        raise fault(epoch, "parameter " + jax.tree_util.keystr(path))
      if not (epoch % schedule.eval_every and epoch != epochs):
        metrics = _checked_metrics(
            label, {} if evaluate is None else evaluate(state), select)
        bad = [k for k, v in metrics.items() if not np.all(np.isfinite(v))]
        if bad:
          raise fault(epoch, f"metric {bad[0]}{_which(metrics[bad[0]])} "
                      "(embeddings with NaN/Inf?)")
        history.append({"epoch": epoch, **_record(means), **_record(metrics)})
        shown = None if select is None else float(np.mean(metrics[select]))
        progress.update(epoch, float(np.mean(means["loss"])), select, shown)
        if select is not None:
          score = sign * np.asarray(metrics[select])
          improved = (score > best.score) & (epoch > schedule.min_select_epoch)
          best = keep_best(improved, Selection(
              score, np.full_like(score, epoch, np.int32) if score.ndim
              else epoch, snapshot(state), metrics), best)
      if checkpointing is not None and epoch % checkpointing.every == 0:
        checkpointing.save(label, epoch, state, best, history, key=key)
        saved = epoch
  except KeyboardInterrupt:  # Ctrl-C: say where the run can resume.
    raise interrupted(epoch) from None
  if best.state is None:  # Nothing selectable: keep the last epoch.
    last = history[-1]
    best = Selection(sign * last.get(select, np.nan), last["epoch"],
                     snapshot(state), last)
  return best, history
