"""The model-agnostic trainer: the loop over epochs and `fit`.

Any embedding model (`bcjax.models.interface.EmbeddingModel`) with any
intended task (`bcjax.tasks.Task`) and any optax optimizer is trained here,
with or without backward compatibility (`bcjax.epoch` holds the objective,
the losses and the jitted epoch core). `fit` is the public entry point (one
version; it checks its inputs before anything is traced and returns the
selected model and W_k); `train_version` is the loop under it, written once
for every strategy (see `bcjax.strategies`) and every model family: model
selection, progress lines, checkpoints (`bcjax.checkpointing`) and the NaN
guard.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bcjax import checks, keys, sharding
from bcjax.backward import maps as backward_maps
from bcjax.checkpointing import Checkpointing, Selection, host_copy
from bcjax.epoch import (BC_ALIGNER, AlignmentInputs, EmbeddingLoss, Objective,
                         TrainState, adam, embed, epoch_core, init_state,
                         train_epoch)
from bcjax.models.interface import EmbeddingModel, Variables
from bcjax.progress import Progress, to_stderr
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

  Selecting on Recall@10 of held-out interactions (`bcjax.metrics`; users
  are nodes `0..num_users-1`, items the nodes after them):

    recall_inputs = bcjax.metrics.prepare_recall_inputs(
        train_user, train_item, val_user, val_item, num_items)

    def evaluate(variables, transform):
      z = bcjax.embed(model, variables, inputs)
      users, items = bcjax.split_nodes(z, (num_users, num_items))
      return bcjax.metrics.recall_metrics(users, items, recall_inputs)

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


def train_version(loss: EmbeddingLoss, data, batches: Callable[[jax.Array], Any],
                  state: TrainState, evaluate: Callable[[TrainState], dict],
                  key: jax.Array, schedule: Schedule, *, label: str = "train",
                  checkpointing: Checkpointing | None = None,
                  log: Callable[[str], None] | None = None
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
    log: where progress lines go (default stderr; `lambda _: None` silences).

  Returns:
    The best `Selection` (its state copied to host) and the history
    `[{"epoch", "loss", term, ..., metric, ...}]`: at each evaluation, the
    epoch's mean loss and mean terms (`task_loss`, `alignment`; see
    `EmbeddingLoss`) and the metrics.

  Raises:
    FloatingPointError: the loss, the parameters or a metric is NaN or Inf;
      the message names `label`, the epoch and the quantity, and the last
      checkpoint (written before the fault) is kept.
    KeyboardInterrupt: Ctrl-C, wherever it lands, re-raised with a message
      naming the last checkpoint (the same call resumes from it).
    ValueError: a checkpoint of another training (`Checkpointing.restore`),
      or a `schedule.select` that `evaluate` does not return.
    TypeError: `evaluate` names a metric with other than a str.
  """
  best, history, start = Selection(), [], 1
  if checkpointing is not None:
    restored = checkpointing.restore(label, state, key=key,
                                     epochs=schedule.epochs)
    if restored is not None:
      done, restored_state, best, history = restored
      # Back where the fresh state lives (one device, or a mesh).
      state = jax.device_put(restored_state,
                             jax.tree.map(lambda x: x.sharding, state))
      start = done + 1
      (log or to_stderr)(f"[{label}] resumed after epoch {done} from "
                         f"{checkpointing.path}")
  epochs, select_key = schedule.epochs, schedule.select
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
      state, means = _run_epoch(
          state, data, batches(keys.derive(key, "epoch", epoch)), loss)
      mean_loss = means["loss"]
      if not np.isfinite(mean_loss):
        raise fault(epoch, f"the loss ({mean_loss})")
      leaf = int(_first_non_finite(state.params))
      if leaf >= 0:
        path = jax.tree_util.tree_flatten_with_path(state.params)[0][leaf][0]
        raise fault(epoch, "parameter " + jax.tree_util.keystr(path))
      if not (epoch % schedule.eval_every and epoch != epochs):
        metrics = _checked_metrics(label, evaluate(state), select_key)
        bad = [k for k, v in metrics.items() if not np.isfinite(v)]
        if bad:
          raise fault(epoch, f"metric {bad[0]} (embeddings with NaN/Inf?)")
        history.append({"epoch": epoch, **means, **metrics})
        progress.update(epoch, mean_loss, select_key, metrics.get(select_key))
        score = sign * metrics[select_key] if select_key else -np.inf
        if epoch > schedule.min_select_epoch and score > best.score:
          best = Selection(score, epoch, host_copy(state), metrics)
      if checkpointing is not None and epoch % checkpointing.every == 0:
        checkpointing.save(label, epoch, state, best, history, key=key)
        saved = epoch
  except KeyboardInterrupt:  # Ctrl-C: say where the run can resume.
    raise interrupted(epoch) from None
  if best.state is None:  # Nothing selectable: keep the last epoch.
    last = history[-1]
    best = Selection(sign * last.get(select_key, np.nan), last["epoch"],
                     host_copy(state), last)
  return best, history


def _checked_metrics(label: str, metrics: dict, select: str | None
                     ) -> dict[str, float]:
  """`evaluate`'s metrics as floats, their names checked: strings (they
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
  return {name: float(value) for name, value in metrics.items()}


def _run_epoch(state, data, epoch, loss: EmbeddingLoss
               ) -> tuple[TrainState, dict[str, float]]:
  """One epoch given as one stacked pytree of batches, or as an iterator of
  equally shaped chunks (neighbour sampling: an epoch of sampled trees may
  not fit in memory at once); returns the state and the epoch's means of
  the loss and its terms (`epoch_core`)."""
  if not isinstance(epoch, collections.abc.Iterator):
    state, means = train_epoch(state, data, epoch, loss=loss)
    return state, {name: float(v) for name, v in means.items()}
  totals, count = {}, 0
  for chunk in epoch:
    # Real batches of the chunk, on the host (a vmapped call per chunk would
    # be traced again every time).
    real = int(np.any(np.asarray(loss.task.nodes(chunk)[1]), axis=-1).sum())
    state, means = train_epoch(state, data, chunk, loss=loss)
    for name, value in means.items():
      totals[name] = totals.get(name, 0.0) + float(value) * real
    count += real
  return state, {name: total / max(count, 1) for name, total in totals.items()}


@dataclasses.dataclass
class Result:
  """One trained version (host arrays).

  Attributes:
    variables: the selected model's variables, `{"params": ..., **state}`.
    transform: W_k `[d_k, d_{k-1}]` of the selected state, or None when
      the objective has no transformation.
    epoch: the selected epoch.
    metrics: the selected evaluation.
    history: every evaluation, `[{"epoch", "loss", "task_loss",
      "alignment", metric, ...}]`: the epoch's mean loss, its terms (those
      the objective has; `alignment` before its weight lambda) and metrics.
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
        known: Any | None = None,
        chain: Sequence[Any] | None = None,
        init_variables: Variables | None = None,
        evaluate: Callable[[Variables, np.ndarray | None], dict] | None = None,
        schedule: Schedule = Schedule(),
        tx: optax.GradientTransformation | None = None,
        label: str = "train",
        checkpointing: Checkpointing | None = None,
        mesh: jax.sharding.Mesh | None = None,
        log: Callable[[str], None] | None = None) -> Result:
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
    known: `[num_nodes]` bool, the nodes the previous version knew: the
      alignment term covers only those (new users and items of a
      transductive model have no previous embedding; see `bcjax.lineage`
      for the three ways to treat them). None: every node, but rows of
      `previous` that are all zero at nodes the batches use are refused:
      they are almost surely new nodes padded with zeros, and aligning them
      pulls their embeddings to zero. True: every node, zero rows included,
      on purpose.
    chain: (W_1, ..., W_{k-1}), the earlier versions' backward matrices;
      required by a multi-step objective (`()` at version 1), so that a
      forgotten chain never turns the multi-step loss into the single-step.
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
    log: where progress lines go (default stderr; `lambda _: None` silences).

  Returns:
    The `Result`.

  Raises:
    ValueError: inconsistent arguments (named), NaN or Inf in `inputs`.
    TypeError: `key` is not a JAX PRNG key (an int seed, None).
    FloatingPointError, KeyboardInterrupt: see `train_version`.

  Warns:
    UserWarning: the model's `dim` is below the previous version's: W_k
      then maps into a subspace, and the previous version's embeddings can
      only be approximated.
  """
  checks.prng_key(label, key)
  if objective.aligns and previous is None:
    raise ValueError(f"{label}: objective {objective} aligns, so `previous` "
                     "(the previous version's embeddings) is required")
  if objective.aligns and objective.multi_step and chain is None:
    raise ValueError(f"{label}: the multi-step objective needs `chain`, "
                     "(W_1, ..., W_{k-1}) of the earlier versions; pass "
                     "chain=() at version 1")
  if not objective.train_model and init_variables is None:
    raise ValueError(f"{label}: post-hoc training needs `init_variables`, "
                     "the fixed model")
  chain = () if chain is None else tuple(chain)
  checks.finite_inputs(label, inputs)
  num_nodes = checks.embedding_rows(label, model, inputs, init_variables)
  align, d_prev = AlignmentInputs(), None
  if objective.aligns:
    target = jnp.asarray(previous(inputs) if callable(previous) else previous)
    if target.ndim != 2 or target.shape[0] != num_nodes:
      raise ValueError(
          f"{label}: `previous` is {list(target.shape)} but the model embeds "
          f"{num_nodes} nodes here: pass the previous version's model applied "
          "to this version's inputs ([num_nodes, d_{k-1}]), not its own "
          "embeddings")
    d_prev = target.shape[1]
    checks.check_chain(label, [np.shape(w) for w in chain], d_prev)
    if model.dim < d_prev:
      warnings.warn(f"{label}: dim={model.dim} is below the previous "
                    f"version's {d_prev}: W_k maps into a {model.dim}-dim "
                    "subspace, so the previous embeddings (and the consumers "
                    "reading them) are only approximated", stacklevel=2)
    fixed = None
    if not objective.train_model:
      fixed = embed(model, init_variables, inputs)
    earlier = tuple(jnp.asarray(w) for w in reversed(chain))
    align = AlignmentInputs(target=target, embeddings=fixed,
                            earlier=earlier if objective.multi_step else (),
                            known=checks.known_mask(label, known, num_nodes))
  batches = checks.checked_ids(label, task, batches, num_nodes,
                               align.target if known is None else None)
  state = init_state(model, inputs, objective, keys.derive(key, "init"),
                     d_prev, tx,
                     model_variables=init_variables)
  if mesh is not None:
    state, inputs = sharding.replicate((state, inputs), mesh)
    align = AlignmentInputs(
        target=sharding.split_rows(align.target, mesh),
        earlier=sharding.replicate(align.earlier, mesh),
        embeddings=sharding.split_rows(align.embeddings, mesh),
        known=sharding.split_rows(align.known, mesh))
    unsharded = batches
    batches = lambda key: sharding.split_batches(unsharded(key), mesh)  # noqa: E731

  def matrix(state: TrainState) -> np.ndarray | None:
    if not objective.aligns:
      return None
    return np.asarray(backward_maps.get(objective.transform).matrix(
        state.params["transform"], model.dim, d_prev))

  def run_evaluate(state: TrainState) -> dict:
    return {} if evaluate is None else evaluate(state.model_variables(),
                                                matrix(state))

  if evaluate is None:
    schedule = dataclasses.replace(schedule, select=None)
  best, history = train_version(
      EmbeddingLoss(model, task, objective), (inputs, align), batches, state,
      run_evaluate, key, schedule, label=label, checkpointing=checkpointing,
      log=log)
  return Result(host_copy(best.state.model_variables()), matrix(best.state),
                best.epoch, best.metrics, history)
