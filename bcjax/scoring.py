"""Cross-version scoring of frozen consumer heads.

Every (strategy, version, seed) of a task is scored in one jitted, vmapped
call over padded, masked inputs (`evaluate`); `evaluate_reference` is the
plain loop it is tested against, and `evaluate_consumers` scores a run's
strategies and writes `consumers/auc.json`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bcjax import io, metrics
from bcjax.consumers import Heads, features, load_embeddings
from bcjax.models.consumer import ConsumerMLP
from bcjax.numbers import finite_or_none
from bcjax.rundir import RunDir
from bcjax.unintended import TaskData, UnintendedTask, padded_examples

_EVAL_BUDGET_BYTES = 1 << 30


@dataclasses.dataclass(frozen=True)
class EvalInputs:
  """Every (strategy, version) of one task, padded to common shapes.

  Attributes:
    strategies: P names; versions: V scored versions.
    tables: one `[P, V, R_pad, d]` array per task input (zero padding rows).
    rows: `[V, N_pad, c]` int32; labels, mask: `[V, N_pad]` bool.
  """
  strategies: tuple[str, ...]
  versions: tuple[int, ...]
  tables: tuple[np.ndarray, ...]
  rows: np.ndarray
  labels: np.ndarray
  mask: np.ndarray


def _table(embeddings, task: UnintendedTask, strategy: str, k: int,
           j: int) -> np.ndarray:
  users, items = embeddings[strategy][k]
  return users if task.inputs[j] == "user" else items


def prepare_evaluation(data: TaskData, embeddings: Mapping[str, Mapping[int, Any]],
                       strategies: Sequence[str]) -> EvalInputs:
  """Pads and stacks the scored versions of `strategies` (host, numpy).

  Args:
    data: the task.
    embeddings: strategy -> version -> (bc_users `[U1_k, d0]`, bc_items
      `[I1_k, d0]`).
    strategies: the strategies to score.
  """
  task, versions = data.task, tuple(sorted(data.evaluation))
  n_pad = max(len(data.evaluation[k]) for k in versions)
  padded = [padded_examples(data.evaluation[k], n_pad) for k in versions]
  tables = []
  for j in range(len(task.inputs)):
    r_pad = max(_table(embeddings, task, s, k, j).shape[0]
                for s in strategies for k in versions)
    d = _table(embeddings, task, strategies[0], versions[0], j).shape[1]
    stacked = np.zeros((len(strategies), len(versions), r_pad, d), np.float32)
    for p, s in enumerate(strategies):
      for v, k in enumerate(versions):
        t = _table(embeddings, task, s, k, j)
        stacked[p, v, :len(t)] = t
    tables.append(stacked)
  return EvalInputs(tuple(strategies), versions, tuple(tables),
                    *(np.stack(a) for a in zip(*padded)))


@functools.partial(jax.jit, static_argnames=("hidden", "strategy_batch"))
def _evaluate(variables, tables, rows, labels, mask, *, hidden: int,
              strategy_batch: int) -> jax.Array:
  """`[P, V, S]` ROC-AUC: strategies mapped in batches, versions and seeds vmapped."""
  model = ConsumerMLP(hidden)

  def one_version(version_tables, version_rows, version_labels, version_mask):
    x = features(version_tables, version_rows)
    return jax.vmap(lambda v: metrics.roc_auc(
        model.apply(v, x), version_labels, version_mask))(variables)

  def one_strategy(strategy_tables):
    return jax.vmap(one_version)(strategy_tables, rows, labels, mask)

  return jax.lax.map(one_strategy, tables, batch_size=strategy_batch)


def evaluate(heads: Heads, inputs: EvalInputs) -> dict[str, np.ndarray]:
  """Every (strategy, version, seed) of a task in one jitted, vmapped call.

  Returns:
    strategy -> `[V, S]` ROC-AUC, V the scored versions (`inputs.versions`).
  """
  num_seeds = len(heads.val_auc)
  width = heads.hidden * 3 + sum(t.shape[-1] for t in inputs.tables)
  per_strategy = 4 * len(inputs.versions) * num_seeds * inputs.rows.shape[1] * width
  batch = int(np.clip(_EVAL_BUDGET_BYTES // max(per_strategy, 1), 1,
                      len(inputs.strategies)))
  auc = _evaluate(heads.variables, tuple(jnp.asarray(t) for t in inputs.tables),
                  jnp.asarray(inputs.rows), jnp.asarray(inputs.labels),
                  jnp.asarray(inputs.mask), hidden=heads.hidden,
                  strategy_batch=batch)
  auc = np.asarray(auc)
  return {s: auc[p] for p, s in enumerate(inputs.strategies)}


@functools.partial(jax.jit, static_argnames=("hidden",))
def _logits(variables, tables, rows: jax.Array, *, hidden: int) -> jax.Array:
  x = features(tables, rows)
  return jax.vmap(lambda v: ConsumerMLP(hidden).apply(v, x))(variables)


def predict(heads: Heads, tables: Sequence[Any], rows: Any) -> np.ndarray:
  """Every seed's eval-mode logits on some examples: what a frozen consumer
  predicts from the embeddings it is given.

  Args:
    heads: the frozen consumers.
    tables: the embedding tables of the task's inputs (`task.inputs` order),
      `[rows, d]` each, in the space the heads were trained in.
    rows: `[N, len(tables)]` rows into the tables, e.g. `Examples.rows`.

  Returns:
    `[seeds, N]` float32 logits.

  Raises:
    ValueError: if the tables' total width is not the heads' input width
      (embeddings of another version, say).
  """
  d_in = heads.variables["params"]["dense_0"]["kernel"].shape[-2]
  tables = tuple(jnp.asarray(t, jnp.float32) for t in tables)
  width = sum(t.shape[1] for t in tables)
  if width != d_in:
    raise ValueError(f"the consumers read {d_in} input dims, the tables give "
                     f"{width}: embeddings of another version?")
  rows = jnp.asarray(rows, jnp.int32).reshape(-1, len(tables))
  return np.asarray(_logits(heads.variables, tables, rows,
                            hidden=heads.hidden))


@functools.partial(jax.jit, static_argnames=("hidden",))
def _score(variables, x: jax.Array, labels: jax.Array, *, hidden: int):
  return metrics.roc_auc(ConsumerMLP(hidden).apply(variables, x), labels)


def evaluate_reference(heads: Heads, data: TaskData,
                       embeddings: Mapping[str, Mapping[int, Any]],
                       strategies: Sequence[str]) -> dict[str, np.ndarray]:
  """`evaluate` as plain loops over strategies, versions and seeds, unpadded:
  one small jitted call per (strategy, version, seed).

  Agrees with `evaluate` up to float rounding: identical input rows (say a
  repeated interaction) may round differently at different positions of the
  batched computation, which can break their AUC tie (half a pair).
  """
  out = {}
  for s in strategies:
    per_version = []
    for k in sorted(data.evaluation):
      examples = data.evaluation[k]
      tables = [_table(embeddings, data.task, s, k, j)
                for j in range(len(data.task.inputs))]
      x = np.concatenate([t[examples.rows[:, j]] for j, t in enumerate(tables)], 1)
      per_version.append([
          float(_score(jax.tree.map(lambda a: a[seed], heads.variables), x,
                       examples.labels, hidden=heads.hidden))
          for seed in range(len(heads.val_auc))])
    out[s] = np.asarray(per_version)
  return out


def evaluate_consumers(workdir: RunDir | str | os.PathLike, data: Mapping[str, TaskData],
                       heads: Mapping[str, Heads], strategies: Sequence[str],
                       num_versions: int) -> dict[str, dict[str, list]]:
  """Scores every trained task on every strategy; writes `consumers/auc.json`.

  Returns:
    task -> strategy -> per version (all `num_versions`): the per-seed AUCs,
    or None where the version is not scored.
  """
  run_dir = RunDir.of(workdir)
  embeddings = load_embeddings(run_dir, strategies, range(num_versions))
  result = {}
  for name, h in heads.items():
    inputs = prepare_evaluation(data[name], embeddings, strategies)
    auc = evaluate(h, inputs)
    result[name] = {s: [finite_or_none(auc[s][inputs.versions.index(k)])
                        if k in inputs.versions else None
                        for k in range(num_versions)] for s in strategies}
  io.save_json(run_dir.auc_path, result)
  return result
