"""Beyond the paper: the compatibility matrix of a strategy, per task.

Method §7 trains consumers once, at version 0. Here, for a strategy s and every
version j, a task's consumers are trained on s's own version-j embeddings
E_j(M_j) (`s/v<j>/users.npy`, `items.npy`, d_j dims) with version-j targets
(`unintended.task_data(..., train_version=j)`): trained on version j,
early-stopped on version j + `task.val_version` (clipped to the last; the
user tasks: j + 1), scored at every version k >= j + `task.first_version`
(activity tasks: k >= j + 2, the others k >= j + 1). Every table a version-j
consumer reads at version i (its early-stopping set included) is s's
version-i embedding mapped into version j's space by
M_{i->j} = W_i ... W_{j+1} (W_i from `s/v<i>/transform.npy`; the identity
when i == j), or B_{j+1}(... B_i(z)) map by map when a map of the chain is
not linear (`bcjax.backward.chains`).

Entry (j, k) of a task's matrix is the mean over seeds of ROC-AUC; it is
NaN (JSON null) where k < j + `task.first_version`, for a row whose training
or early-stopping labels have a single class, and for a single-class
version. A task's summary is the mean of its defined entries (the average
compatibility of the retrieval literature); a strategy's is the mean over
tasks. Row 0 is method §7's consumers, trained on s's (shared) version 0.

Consumers: one grid point per task, the (h, dropout) the main consumers chose
on validation (`consumers/<task>.json`) when present, else the first entry of
the consumer grid; `config.compat`'s epochs and seeds, the consumer batch
size and learning rate. Consumers of (task, j) start from the same key
for every strategy (common random numbers): `keys.derive(task_key(seed,
task), "compat", j)` (`consumers.task_key`, `bcjax.util.keys`).

In the run directory (`bcjax.runs.rundir`), `compatibility/<strategy>/<task>.json`
holds the settings and per-seed AUCs `auc[j][k]` (a list, or null) and
`matrix[j][k]` (their mean, or null); it is reused when its settings match.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from bcjax.backward.chains import blocked_map, chain
from bcjax.backward.maps import BackwardMap
from bcjax.data.splits import VersionSplit
from bcjax.data.targets import VersionTargets, version_targets
from bcjax.evaluation import consumers, scoring, unintended
from bcjax.runs.configs import CompatConfig, ConsumerConfig
from bcjax.runs.rundir import RunDir, read_json
from bcjax.runs.strategies import STRATEGIES
from bcjax.util import io, keys
from bcjax.util.numbers import finite_mean, finite_or_none, fmt
from bcjax.util.progress import to_stderr


class StrategyTables:
  """A strategy's own per-version embeddings and backward transformations.

  Args:
    tables: per version, (users, items) as in `tables` below.
    backward: B_1 ... B_K, one fewer than the versions: matrices W_k or
      `BackwardMap` instances.

  Attributes:
    tables: per version k, (users `[U1_k, d_k]`, items `[I1_k, d_k]`).
    maps: `[B_1, ..., B_K]` as `BackwardMap` instances.

  Raises:
    ValueError: the transforms do not number one fewer than the versions.
  """

  def __init__(self, tables: Sequence[tuple[np.ndarray, np.ndarray]],
               backward: Sequence[np.ndarray | BackwardMap]):
    if len(backward) != len(tables) - 1:
      raise ValueError(f"{len(tables)} versions need {len(tables) - 1} "
                       f"transforms, got {len(backward)}")
    self.tables = list(tables)
    self.maps = [b if isinstance(b, BackwardMap) else
                 BackwardMap.from_matrix(b) for b in backward]

  @property
  def transforms(self) -> list[np.ndarray | None]:
    """`[W_1, ..., W_K]`, W_k `[d_k, d_{k-1}]` (None for a non-linear B_k)."""
    return [m.matrix for m in self.maps]

  @classmethod
  def load(cls, workdir: RunDir | str | os.PathLike, strategy: str,
           num_versions: int) -> "StrategyTables":
    """Reads a strategy's saved versions from the run directory.

    Args:
      workdir: the run directory.
      strategy: the strategy's name (its subdirectory).
      num_versions: K + 1; reads `v<k>/users.npy`, `items.npy` for every k
        and every backward map B_k, k >= 1 (`RunDir.backward_maps`).

    Returns:
      The `StrategyTables`.
    """
    run_dir = RunDir.of(workdir)
    return cls([run_dir.tables(strategy, k) for k in range(num_versions)],
               run_dir.backward_maps(strategy, num_versions - 1))

  def mapped(self, k: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Version k's (users, items) in version j's space: `x @ M_{k->j}`, or
    the maps applied one by one when the chain is not linear.

    Args:
      k: the version whose tables are mapped.
      j: the target version (j <= k).

    Returns:
      (users `[U1_k, d_j]`, items `[I1_k, d_j]`), float32 unless k == j
      (then the stored tables themselves).
    """
    if k == j:
      return self.tables[k]
    to_j = chain(self.maps, k, j)  # Composed once, for users and items.
    return tuple(blocked_map(t, to_j) for t in self.tables[k])


def _inputs(task: unintended.UnintendedTask, pair) -> list[np.ndarray]:
  return [pair[0] if kind == "user" else pair[1] for kind in task.inputs]


def train_row(data: unintended.TaskData, tables: StrategyTables,
              train_version: int, config: ConsumerConfig,
              key: jax.Array, log: Callable[[str], None] | None = None,
              checkpoints: Path | None = None
              ) -> tuple[consumers.Heads, dict[int, np.ndarray]]:
  """Trains one row's consumers and scores them at every later version.

  Args:
    data: the task built with `train_version` (`unintended.task_data`).
    tables: the strategy's embeddings and transforms.
    train_version: j.
    config: a single grid point (one h, one dropout rate).
    key: the row's PRNG key.
    log: progress lines of `consumers.train_heads` (default: none).
    checkpoints: the stem of the heads' checkpoint files
      (`consumers.train_heads`; None: no checkpoints).

  Returns:
    (the heads, k -> `[seeds]` ROC-AUC for every scored version k).
  """
  j, num_versions = train_version, len(tables.tables)
  val_version = unintended.early_stop_version(data.task, j, num_versions)
  heads = consumers.train_heads(
      _inputs(data.task, tables.mapped(j, j)), data.train,
      _inputs(data.task, tables.mapped(val_version, j)), data.val, config, key,
      label=f"compat {data.task.name} v{j}", checkpoints=checkpoints,
      log=log or (lambda _: None))
  embeddings = {"s": {k: tables.mapped(k, j) for k in data.evaluation}}
  inputs = scoring.prepare_evaluation(data, embeddings, ["s"])
  auc = scoring.evaluate(heads, inputs)["s"]
  return heads, {k: auc[v] for v, k in enumerate(inputs.versions)}


def row_key(seed: int, task: str, train_version: int) -> jax.Array:
  """The PRNG key of row j's consumers, shared by every strategy.

  Args:
    seed: the run's seed.
    task: the task's name.
    train_version: j.

  Returns:
    `keys.derive(consumers.task_key(seed, task), "compat", j)`.
  """
  return keys.derive(consumers.task_key(seed, task), "compat", train_version)


def task_matrix(name: str, splits: Sequence[VersionSplit],
                targets: Sequence[VersionTargets], tables: StrategyTables,
                config: ConsumerConfig, seed: int = 0,
                log: Callable[[str], None] | None = None,
                checkpoints: Path | None = None) -> list[list]:
  """Per-seed AUCs of one task, every row j trained and scored.

  Args:
    name: the task (`unintended.TASKS`).
    splits: the run's splits, one per version.
    targets: `version_targets` of each split.
    tables: the strategy's embeddings and transforms.
    config: a single grid point (one h, one dropout rate).
    seed: the run's seed (see `row_key`).
    log: progress lines (default: none).
    checkpoints: a stem; row j's heads checkpoint at `<stem>.v<j>` while
      they train (`consumers.checkpoint_path`), removed once the row is
      scored (None: no checkpoints).

  Returns:
    `auc[j][k]`: `[K + 1][K + 1]`, a list of per-seed floats (NaN: None),
    or None where (j, k) is not scored or row j is skipped.
  """
  log = log or (lambda _: None)
  num_versions = len(splits)
  auc: list[list] = [[None] * num_versions for _ in range(num_versions)]
  for j in range(num_versions):
    data = unintended.task_data(name, splits, targets, train_version=j)
    if not data.evaluation:
      continue
    if consumers.single_class(data.train) or consumers.single_class(data.val):
      log(f"[compat {name} v{j}] skipped: its training or early-stopping "
          "labels have a single class")
      continue
    stem = (None if checkpoints is None
            else checkpoints.with_name(f"{checkpoints.name}.v{j}"))
    _, row = train_row(data, tables, j, config, row_key(seed, name, j),
                       checkpoints=stem)
    if stem is not None:
      io.remove(consumers.checkpoint_path(stem, config.hidden[0],
                                          config.dropout[0]))
    for k, values in row.items():
      auc[j][k] = finite_or_none(values)
  return auc


def matrix_means(auc: Sequence[Sequence]) -> np.ndarray:
  """The matrix of means over seeds of `task_matrix`'s AUCs.

  Args:
    auc: `auc[j][k]`, a list of per-seed values (None: NaN) or None.

  Returns:
    `[K + 1, K + 1]` float64: the mean over finite seeds of each entry,
    NaN where there is none.
  """
  out = np.full((len(auc), len(auc)), np.nan)
  for j, row in enumerate(auc):
    for k, seeds in enumerate(row):
      finite = [v for v in seeds or [] if v is not None and np.isfinite(v)]
      if finite:
        out[j, k] = float(np.mean(finite))
  return out


def _json_matrix(matrix: np.ndarray) -> list[list]:
  return [finite_or_none(row) for row in matrix]


def chosen_hyper(workdir: RunDir | str | os.PathLike, task: str,
                 consumer_config: ConsumerConfig) -> tuple[int, float]:
  """The consumer grid point of a task's compatibility matrices.

  Args:
    workdir: the run directory (reads `consumers/<task>.json` if present).
    task: the task's name.
    consumer_config: its grid's first entry is the fallback.

  Returns:
    (h, dropout): the main consumers' choice for `task`, else the first
    grid entry.
  """
  path = RunDir.of(workdir).consumer_stem(task).with_suffix(".json")
  if path.exists():
    meta = read_json(path)
    return int(meta["hidden"]), float(meta["dropout"])
  return consumer_config.hidden[0], consumer_config.dropout[0]


def run_compatibility(workdir: RunDir | str | os.PathLike,
                      splits: Sequence[VersionSplit], strategies: Sequence[str],
                      config: CompatConfig,
                      consumer_config: ConsumerConfig, seed: int = 0,
                      tasks: Sequence[str] | None = None,
                      log: Callable[[str], None] | None = None
                      ) -> dict[str, dict[str, dict]]:
  """Computes (or loads, if saved with the same settings) every matrix.

  Args:
    workdir: the run directory; each strategy's versions must be complete.
    splits: the run's splits.
    strategies: the strategies to compute.
    config: epochs and seeds (its `strategies` field is not read here).
    consumer_config: batch size, learning rate, and the grid fallback.
    seed: the run's seed.
    tasks: default all of `unintended.TASKS`.
    log: progress lines (default stderr), one per (strategy, task).

  Returns:
    strategy -> task -> the saved record (see the module docstring).
  """
  log = log or to_stderr
  tasks = list(tasks or unintended.TASKS)
  targets = [version_targets(s) for s in splits]
  run_dir = RunDir.of(workdir)
  results: dict[str, dict[str, dict]] = {}
  for strategy in strategies:
    tables, results[strategy] = None, {}
    for name in tasks:
      path = run_dir.compatibility_path(strategy, name)
      io.make_dir(path.parent)
      hidden, dropout = chosen_hyper(run_dir, name, consumer_config)
      head_config = dataclasses.replace(
          consumer_config, epochs=config.epochs, hidden=(hidden,),
          dropout=(dropout,), seeds=config.seeds)
      settings = {**io.as_json(dataclasses.asdict(head_config)),
                  "seed": seed, "num_versions": len(splits)}
      if path.exists():
        saved = read_json(path)
        if saved.get("config") == settings:
          results[strategy][name] = saved
          continue
        log(f"[compat {strategy} {name}] saved matrix has other settings; "
            "recomputing")
      tables = tables or StrategyTables.load(run_dir, strategy, len(splits))
      start = time.perf_counter()
      auc = task_matrix(name, splits, targets, tables, head_config, seed,
                        log=log, checkpoints=path.with_suffix(""))
      means = matrix_means(auc)
      record = {"strategy": strategy, "task": name, "hidden": hidden,
                "dropout": dropout, "config": settings,
                "mean": finite_mean(means), "matrix": _json_matrix(means),
                "auc": auc}
      io.save_json(path, record)
      results[strategy][name] = record
      log(f"[compat {strategy} {name}] mean AUC {fmt(record['mean'], 4)} "
          f"({time.perf_counter() - start:.1f}s)")
  return results


def load_results(workdir: RunDir | str | os.PathLike,
                 strategies: Sequence[str] | None = None
                 ) -> dict[str, dict[str, dict]]:
  """Reads the saved matrices of a run.

  Args:
    workdir: the run directory.
    strategies: keep only these (default: every saved strategy).

  Returns:
    strategy -> task -> the saved record; strategies in `STRATEGIES` order,
    then any others, tasks in `unintended.TASKS` order, then any others.
    Empty when nothing is saved.
  """
  root = RunDir.of(workdir).compatibility_dir
  if not root.is_dir():
    return {}
  found = sorted(p.name for p in root.iterdir() if p.is_dir())
  order = [s for s in STRATEGIES if s in found] + [
      s for s in found if s not in STRATEGIES]
  out = {}
  for s in order:
    if strategies is not None and s not in strategies:
      continue
    records = {p.stem: read_json(p)
               for p in (root / s).glob("*.json")}
    ordered = [t for t in unintended.TASKS if t in records] + sorted(
        t for t in records if t not in unintended.TASKS)
    if ordered:
      out[s] = {t: records[t] for t in ordered}
  return out


def summarize(results: Mapping[str, Mapping[str, Mapping[str, Any]]]
              ) -> dict[str, dict]:
  """Summarises compatibility matrices (the module docstring's means).

  Args:
    results: strategy -> task -> record with a `"matrix"` `[[float | None]]`
      (as `run_compatibility` or `load_results` return).

  Returns:
    strategy -> {"mean": mean over tasks (None if none), "tasks": task ->
    {"mean": mean of the defined entries, "matrix": `[[float | None]]`}}.
  """
  out = {}
  for s, by_task in results.items():
    tasks = {}
    for t, record in by_task.items():
      means = np.asarray([[np.nan if v is None else v for v in row]
                          for row in record["matrix"]], np.float64)
      tasks[t] = {"mean": finite_mean(means), "matrix": _json_matrix(means)}
    out[s] = {"mean": finite_mean([r["mean"] for r in tasks.values()
                                if r["mean"] is not None]),
              "tasks": tasks}
  return out
