"""Partial backfill of a run's legacy index at a version K (method §11; the
stages measure the last).

The frozen table is fix-m0's version-0 item embeddings (the legacy index of
`bcjax.evaluation.retrieval`); the newest is a strategy's version-K BC
embedding, whose rows beyond version 0's items are the items inserted
since. For every policy of `bcjax.release.backfill`
and every budget, the old items the budget covers are re-embedded and the
backfilled table is scored twice:

  recall@K       the version's users (queries: the strategy's version-K BC
                 users) through an exact index over the table (method §10)
  consumer_auc   the version-0 consumers of the item tasks (method §7)
                 reading the table: ROC-AUC at version K, the mean over
                 consumer seeds and over the item tasks that have heads
                 (absent when none has)

Budget 0 is then the frozen index with the new items inserted, budget 1 the
refreshed index. `evaluate_run` writes `backfill.json`; `complete` says
whether it holds the curves of given settings (the stage then skips).
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import jax
import numpy as np

from bcjax.core import metrics
from bcjax.data.splits import VersionSplit
from bcjax.evaluation import retrieval, scoring
from bcjax.evaluation.consumers import Heads
from bcjax.evaluation.unintended import TaskData, single_class
from bcjax.release import backfill
from bcjax.runs.configs import BackfillConfig
from bcjax.runs.rundir import METRICS, RunDir, listed_digest, read_record
from bcjax.store import faiss_index
from bcjax.util import io, keys

CONSUMER = "consumer_auc"


def random_key(seed: int) -> jax.Array:
  """The random policy's key of a training seed, the same for every
  strategy (common random numbers)."""
  return keys.derive(keys.root(seed), "backfill:random")


def item_counts(train_items, num_old: int) -> np.ndarray:
  """`[num_old]` training interactions per old item (popularity).

  Args:
    train_items: `[T]` the item of each training interaction of the version.
    num_old: the items of the frozen table.
  """
  train_items = np.asarray(train_items, np.int64)
  return np.bincount(train_items, minlength=num_old)[:num_old]


@jax.jit
def _auc(logits, labels):
  return jax.vmap(metrics.roc_auc, in_axes=(0, None))(logits, labels)


def consumer_score(heads: Mapping[str, Heads], tasks: Mapping[str, TaskData],
                   k: int):
  """The item tasks' consumers scored at version k.

  Returns:
    (`items [I_k, d_0] -> mean ROC-AUC` over the tasks and consumer seeds,
    the tasks: those reading items alone, with heads and both classes at
    version k; without any, no metric is measured).
  """
  chosen = [t for t, data in tasks.items()
            if data.task.inputs == ("item",) and t in heads
            and k in data.evaluation and not single_class(data.evaluation[k])]

  def score(items: np.ndarray) -> float:
    found = []
    for t in chosen:
      examples = tasks[t].evaluation[k]
      logits = scoring.predict(heads[t], [items], examples.rows)
      found.append(float(np.mean(_auc(logits, examples.labels))))
    return float(np.mean(found))

  return score, chosen


def settings_record(workdir: RunDir | str | os.PathLike,
                    config: BackfillConfig, strategies: Sequence[str],
                    version: int, seed: int) -> dict:
  """What backfill.json's curves were measured with (its `"settings"`):
  the config, version and seed, and the sha256 that the run's records list
  for the tables read (so curves of retrained versions are not reused)."""
  run_dir = RunDir.of(workdir)
  read = [(retrieval.FROZEN_SOURCE, 0, "bc_items.npy")] + [
      (s, version, f"bc_{kind}.npy") for s in strategies
      for kind in ("users", "items")]
  inputs = {f"{s}/v{k}/{name}": listed_digest(run_dir.path(s, k, METRICS), name)
            for s, k, name in read}
  return io.as_json({"version": version, "seed": seed,
                     "strategies": list(strategies),
                     "policies": list(config.policies),
                     "budgets": list(config.budgets), "ks": list(config.ks),
                     "inputs": inputs})


def complete(workdir: RunDir | str | os.PathLike, settings: Mapping) -> bool:
  """Whether the run's backfill.json holds the curves of `settings`
  (`settings_record`); an unreadable file is not complete."""
  path = RunDir.of(workdir).backfill_path
  if not path.is_file():
    return False
  try:
    record = read_record(path)
  except ValueError:
    return False
  measured = record.get("strategies")
  return (record.get("settings") == io.as_json(settings)
          and isinstance(measured, dict)
          and all(isinstance(measured.get(s), dict)
                  and all(p in measured[s] for p in settings["policies"])
                  for s in settings["strategies"]))


def _scorer(users: np.ndarray, queries: retrieval.Queries, ks: Sequence[int],
            score_consumers, consumer_tasks: Sequence[str]):
  """`items -> {"recall@K": ..., "consumer_auc": ...}` of one strategy."""

  def score(items: np.ndarray) -> dict[str, float]:
    found = retrieval.recall(faiss_index.build_index(items, "exact"), users,
                             queries, ks)
    scores = {f"recall@{k}": v for k, v in found.items()}
    if consumer_tasks:
      scores[CONSUMER] = score_consumers(items)
    return scores

  return score


def evaluate_run(workdir: RunDir | str | os.PathLike, split: VersionSplit,
                 recall_inputs: metrics.RecallInputs,
                 strategies: Sequence[str], config: BackfillConfig, *,
                 seed: int, heads: Mapping[str, Heads] | None = None,
                 tasks: Mapping[str, TaskData] | None = None) -> dict:
  """Backfill curves of every strategy and policy at one version (the
  stages measure the last); writes `backfill.json`.

  Args:
    workdir: a run whose strategies and fix-m0 are complete.
    split: the version's split (its training items rank popularity).
    recall_inputs: the version's Recall@K inputs.
    strategies: the strategies to measure.
    config: the budgets, policies and cut-offs.
    seed: the training seed (the random policy's key, `random_key`).
    heads, tasks: the consumers and their tasks (no consumer curve without).

  Returns:
    ``{"settings": settings_record(...), "consumer_tasks": [...],``
    ``"strategies": {s: {policy: {"recall@K": [...], "consumer_auc":``
    ``[...]}}}}``, one value per budget.
  """
  run_dir = RunDir.of(workdir)
  version = split.version
  frozen = run_dir.bc_tables(retrieval.FROZEN_SOURCE, 0)[1]
  queries = retrieval.Queries.of(recall_inputs)
  counts = item_counts(split.train_item, len(frozen))
  score_consumers, consumer_tasks = consumer_score(heads or {}, tasks or {},
                                                   version)
  key = random_key(seed)
  out = {"settings": settings_record(run_dir, config, strategies, version,
                                    seed),
         "consumer_tasks": consumer_tasks, "strategies": {}}
  for s in strategies:
    users, newest = run_dir.bc_tables(s, version)
    score = _scorer(users, queries, config.ks, score_consumers, consumer_tasks)
    out["strategies"][s] = {}
    for policy in config.policies:
      item_order = backfill.order(policy, frozen, newest, key=key,
                                  counts=counts, queries=users)
      found = backfill.curve(frozen, newest, item_order, config.budgets, score)
      out["strategies"][s][policy] = {name: values.tolist()
                                      for name, values in found.items()}
  io.save_json(run_dir.backfill_path, out)
  return out
