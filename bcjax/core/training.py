"""The model-agnostic trainer, `fit`.

Any embedding model (`bcjax.models.interface.EmbeddingModel`) with any
intended task (`bcjax.core.tasks.Task`) and any optax optimizer is trained here,
with or without backward compatibility (`bcjax.core.epoch` holds the objective,
the losses and the jitted epoch core). `fit` trains one version: it checks
its inputs before anything is traced, runs the library's one training loop
(`bcjax.util.loop.run`: model selection, progress lines, checkpoints, the NaN
guard) for every strategy (see `bcjax.runs.strategies`) and every model family,
and returns the selected model and W_k.
"""

from __future__ import annotations

import collections.abc
import dataclasses
from typing import Any, Callable, Sequence
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bcjax.backward import maps as backward_maps
from bcjax.core import checks, sharding
from bcjax.core.epoch import (
  BC_ALIGNER,
  AlignmentInputs,
  EmbeddingLoss,
  Objective,
  TrainState,
  embed,
  init_state,
  train_epoch,
)
from bcjax.core.tasks import Task
from bcjax.models.interface import EmbeddingModel, Variables
from bcjax.util import keys, loop
from bcjax.util.checkpointing import Checkpointing, host_copy
from bcjax.util.loop import Schedule


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
  the other strategies (`bcjax.runs.strategies`): no transformation (nobc), the
  prefix reading (notrans), single-step, or post-hoc (`train_model=False`:
  only B_k is trained, on `init_variables`' fixed embeddings).

  Args:
    model: the embedding model (`bcjax.models.interface`).
    task: the intended task (`bcjax.core.tasks`).
    inputs: the model's inputs for this version's data.
    batches: epoch key -> one epoch's batches, stacked on a leading axis.
    key: the version's PRNG key: the model and B_k are initialised from
      `keys.derive(key, "init")`, epoch e's batches read
      `keys.derive(key, "epoch", e)` (`bcjax.util.keys`).
    objective: what to optimise (default BC-Aligner).
    previous: E_k(M_{k-1}) `[num_nodes, d_{k-1}]`, the previous version's
      model applied to this version's inputs, or a function `inputs ->` it.
      Required when the objective aligns.
    known: `[num_nodes]` bool, the nodes the previous version knew: the
      alignment term covers only those (new users and items of a
      transductive model have no previous embedding; see `bcjax.release.lineage`
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
    mesh: train across its devices (`bcjax.core.sharding`): batches data-parallel,
      per-node alignment arrays split by rows, the rest replicated.
    log: where progress lines go (default stderr; `lambda _: None` silences).

  Returns:
    The `Result`.

  Raises:
    ValueError: inconsistent arguments (named), NaN or Inf in `inputs`.
    TypeError: `key` is not a JAX PRNG key (an int seed, None).
    FloatingPointError, KeyboardInterrupt: see `bcjax.util.loop.run`.

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
  loss, data = EmbeddingLoss(model, task, objective), (inputs, align)
  best, history = loop.run(
      lambda state, epoch: _run_epoch(
          state, data, batches(keys.derive(key, "epoch", epoch)), loss),
      state, schedule, label=label, evaluate=run_evaluate,
      checkpointing=checkpointing, key=key, log=log)
  return Result(host_copy(best.state.model_variables()), matrix(best.state),
                best.epoch, best.metrics, history)
