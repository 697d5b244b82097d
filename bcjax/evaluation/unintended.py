"""The unintended tasks (method §7) as data: examples per version.

A task is data: for the training set, the early-stopping set and every scored
version k, rows into the BC embedding tables (a user, an item, or a (user,
item) pair whose input is [z_u, z_i]) with binary labels, built from the
version targets (`bcjax.data.targets`). Consumers (`bcjax.evaluation.consumers`) train on
them and are scored on them (`bcjax.evaluation.scoring`).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

from bcjax.data.splits import VersionSplit
from bcjax.data.targets import VersionTargets, version_targets
from bcjax.util import keys, names, padding

STD_THRESHOLD = 1.0


@dataclasses.dataclass(frozen=True)
class UnintendedTask:
  """One unintended task.

  Attributes:
    name: the method §7 name.
    inputs: the embedding tables whose rows are concatenated, in order.
    val_version: the version whose labels (and fix-m0 embeddings) early-stop.
    first_version: the first scored version.
  """
  name: str
  inputs: tuple[str, ...]
  val_version: int
  first_version: int


TASKS: dict[str, UnintendedTask] = {t.name: t for t in (
    UnintendedTask("binary-edge-rating", ("user", "item"), 0, 1),
    UnintendedTask("user-activity", ("user",), 1, 2),
    UnintendedTask("user-positive-activity", ("user",), 1, 2),
    UnintendedTask("binary-item-rating-avg", ("item",), 0, 1),
    UnintendedTask("binary-item-rating-std", ("item",), 0, 1),
)}


@dataclasses.dataclass(frozen=True)
class Examples:
  """`rows`: `[N, len(task.inputs)]` int32 table rows; `labels`: `[N]` bool."""
  rows: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class TaskData:
  """Training (version 0 unless built with another `train_version`),
  early-stopping and per-version scoring examples."""
  task: UnintendedTask
  train: Examples
  val: Examples
  evaluation: dict[int, Examples]


def _examples(name: str, split: VersionSplit, targets: VersionTargets,
              side: str, avg_threshold: float) -> Examples:
  """A task's examples on one split; side "train" or "eval" (method §7 table)."""
  if name == "binary-edge-rating":
    user, item, label = ((split.train_user, split.train_item,
                          targets.train_edge_positive) if side == "train" else
                         (split.val_user, split.val_item,
                          targets.val_edge_positive))
    return Examples(np.stack([user, item], 1).astype(np.int32),
                    np.asarray(label, bool))
  if name in ("user-activity", "user-positive-activity"):
    label = (targets.user_active if name == "user-activity"
             else targets.user_positive_active)
    return Examples(np.arange(split.num_users, dtype=np.int32)[:, None],
                    np.asarray(label, bool))
  stats = targets.item_stats_train if side == "train" else targets.item_stats_all
  label = (stats.mean >= avg_threshold if name == "binary-item-rating-avg"
           else stats.std >= STD_THRESHOLD)
  return Examples(stats.item.astype(np.int32)[:, None], np.asarray(label, bool))


def task_key(seed: int, task: str) -> jax.Array:
  """The key of a task's consumers, `keys.derive(keys.root(seed),
  "consumers:<task>")`: the same for every strategy (common random
  numbers)."""
  return keys.derive(keys.root(seed), f"consumers:{task}")


def early_stop_version(task: UnintendedTask, train_version: int,
                       num_versions: int) -> int:
  """The version whose labels early-stop consumers trained on `train_version`:
  `train_version + task.val_version`, clipped to the last version."""
  return min(train_version + task.val_version, num_versions - 1)


def task_data(name: str, splits: Sequence[VersionSplit],
              targets: Sequence[VersionTargets] | None = None,
              train_version: int = 0) -> TaskData:
  """Builds one task's examples from a run's splits.

  With `train_version` j (method §7 is j = 0), the consumers train on version
  j's examples, early-stop on version j + `task.val_version` (clipped to the
  last version) and are scored at every version k >= j + `task.first_version`;
  the rating-average threshold is the median of version j's training means.

  Args:
    name: a key of `TASKS`.
    splits: every version's split, version 0 first.
    targets: their `version_targets` (computed if None).
    train_version: j, the version the consumers train on.

  Raises:
    ValueError: an unknown task, too few versions for its early stopping, or
      a training version out of range.
  """
  task = names.lookup(TASKS, name, "task")
  if len(splits) <= task.val_version:
    raise ValueError(f"task {name}: needs {task.val_version + 1} versions, "
                     f"the run has {len(splits)}")
  if not 0 <= train_version < len(splits):
    raise ValueError(f"task {name}: train_version={train_version} is out of "
                     f"range 0..{len(splits) - 1}")
  targets = targets or [version_targets(s) for s in splits]
  j = train_version
  threshold = float(np.median(targets[j].item_stats_train.mean))
  examples = lambda k, side: _examples(name, splits[k], targets[k], side,
                                       threshold)
  val_version = early_stop_version(task, j, len(splits))
  return TaskData(task, examples(j, "train"), examples(val_version, "eval"),
                  {k: examples(k, "eval")
                   for k in range(j + task.first_version, len(splits))})


def all_task_data(splits: Sequence[VersionSplit]) -> dict[str, TaskData]:
  targets = [version_targets(s) for s in splits]
  return {name: task_data(name, splits, targets) for name in TASKS}


def single_class(examples: Examples) -> bool:
  return len(examples) == 0 or examples.labels.all() or not examples.labels.any()


def padded_examples(examples: Examples, multiple: int):
  """`(rows, labels, mask)` padded to a positive multiple of `multiple`
  rows; `mask` is True on the real ones."""
  (rows, labels), mask = padding.pad_rows(
      (examples.rows.astype(np.int32), examples.labels.astype(bool)),
      padding.round_up(len(examples), multiple))
  return rows, labels, mask
