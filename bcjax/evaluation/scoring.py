"""Cross-version scoring of frozen consumer heads.

Every (training seed, strategy, version, consumer seed) of a task is scored
in one jitted, vmapped call over padded, masked inputs (`evaluate_seeds`;
`evaluate` is its one-training-seed case); `evaluate_reference` is the plain
loop it is tested against, and `evaluate_consumers` scores the strategies of
one or several training seeds' runs and writes each run's
`consumers/auc.json`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bcjax.core import metrics
from bcjax.evaluation.consumers import Heads, features, load_embeddings
from bcjax.evaluation.unintended import (
  TaskData,
  UnintendedTask,
  padded_examples,
)
from bcjax.models.consumer import ConsumerMLP
from bcjax.runs.rundir import RunDir
from bcjax.util import io
from bcjax.util.numbers import finite_or_none

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
  """`[T, P, V, S]` ROC-AUC: training seeds vmapped, strategies mapped in
  batches, versions and consumer seeds vmapped."""
  model = ConsumerMLP(hidden)

  def one_training_seed(seed_variables, seed_tables):
    def one_version(version_tables, version_rows, version_labels,
                    version_mask):
      x = features(version_tables, version_rows)
      return jax.vmap(lambda v: metrics.roc_auc(
          model.apply(v, x), version_labels, version_mask))(seed_variables)

    def one_strategy(strategy_tables):
      return jax.vmap(one_version)(strategy_tables, rows, labels, mask)

    return jax.lax.map(one_strategy, seed_tables, batch_size=strategy_batch)

  return jax.vmap(one_training_seed)(variables, tables)


def evaluate_seeds(heads: Sequence[Heads], inputs: Sequence[EvalInputs]
                   ) -> list[dict[str, np.ndarray]]:
  """Every (training seed, strategy, version, consumer seed) of a task in
  one jitted, vmapped call.

  Args:
    heads: per training seed, its frozen consumers (same grid).
    inputs: per training seed, its `prepare_evaluation` (same strategies,
      versions and examples: only the embeddings differ).

  Returns:
    Per training seed, strategy -> `[V, S]` ROC-AUC, V the scored versions
    (`inputs[i].versions`), S the consumer seeds.

  Raises:
    ValueError: the seeds' heads or inputs do not match.
  """
  first = inputs[0]
  if len(heads) != len(inputs) or len({h.hidden for h in heads}) != 1:
    raise ValueError("evaluate_seeds: one Heads of one width per training "
                     f"seed; got {len(heads)} heads for {len(inputs)} inputs")
  for i, other in enumerate(inputs[1:], 1):
    same = (other.strategies == first.strategies
            and other.versions == first.versions
            and all(np.array_equal(a, b) for a, b in zip(
                (other.rows, other.labels, other.mask),
                (first.rows, first.labels, first.mask))))
    if not same:
      raise ValueError(f"evaluate_seeds: training seed {i} is scored on other "
                       "strategies, versions or examples than seed 0")
  num_seeds = len(heads[0].val_auc)
  width = heads[0].hidden * 3 + sum(t.shape[-1] for t in first.tables)
  per_strategy = (4 * len(heads) * len(first.versions) * num_seeds
                  * first.rows.shape[1] * width)
  batch = int(np.clip(_EVAL_BUDGET_BYTES // max(per_strategy, 1), 1,
                      len(first.strategies)))
  stack = lambda *leaves: jnp.stack([jnp.asarray(x) for x in leaves])  # noqa: E731
  auc = np.asarray(_evaluate(
      jax.tree.map(stack, *(h.variables for h in heads)),
      tuple(stack(*tables) for tables in zip(*(i.tables for i in inputs))),
      jnp.asarray(first.rows), jnp.asarray(first.labels),
      jnp.asarray(first.mask), hidden=heads[0].hidden, strategy_batch=batch))
  return [{s: auc[t, p] for p, s in enumerate(first.strategies)}
          for t in range(len(heads))]


def evaluate(heads: Heads, inputs: EvalInputs) -> dict[str, np.ndarray]:
  """Every (strategy, version, consumer seed) of a task in one jitted,
  vmapped call (`evaluate_seeds` of one training seed).

  Returns:
    strategy -> `[V, S]` ROC-AUC, V the scored versions (`inputs.versions`).
  """
  return evaluate_seeds([heads], [inputs])[0]


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


def evaluate_consumers(workdirs: Sequence[RunDir | str | os.PathLike],
                       data: Mapping[str, TaskData],
                       heads: Sequence[Mapping[str, Heads]],
                       strategies: Sequence[str],
                       num_versions: int) -> list[dict[str, dict[str, list]]]:
  """Scores every trained task on every strategy of every training seed's
  run (one `evaluate_seeds` call per task); writes each run's
  `consumers/auc.json`.

  Args:
    workdirs: the training seeds' run directories.
    data: the tasks (the same for every seed).
    heads: per run, task -> its frozen consumers.
    strategies, num_versions: what to score.

  Returns:
    Per run, task -> strategy -> per version (all `num_versions`): the
    per-consumer-seed AUCs, or None where the version is not scored.
  """
  run_dirs = [RunDir.of(w) for w in workdirs]
  embeddings = [load_embeddings(r, strategies, range(num_versions))
                for r in run_dirs]
  results = [{} for _ in run_dirs]
  for name in heads[0]:
    inputs = [prepare_evaluation(data[name], e, strategies) for e in embeddings]
    versions = inputs[0].versions
    for result, auc in zip(results, evaluate_seeds(
        [h[name] for h in heads], inputs)):
      result[name] = {s: [finite_or_none(auc[s][versions.index(k)])
                          if k in versions else None
                          for k in range(num_versions)] for s in strategies}
  for run_dir, result in zip(run_dirs, results):
    io.save_json(run_dir.auc_path, result)
  return results
