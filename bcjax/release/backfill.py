"""Partial backfill: which old items to re-embed first, and what each budget
buys (method §11).

Re-embedding every item with the newest model is the expensive part of an
upgrade. A consumer's legacy index holds version 0's vectors of the old
items (the frozen table, `[n, d]`); backfilling an item replaces its
vector by the newest model's, mapped into version 0's space (its BC
embedding). A budget b in [0, 1] re-embeds the first `budget_count(b, n)`
items of an order; the backfill curve is a metric at each budget (budget 0:
the frozen table, budget 1: every item refreshed) and `area` its normalised
area. The orders (`POLICIES`)::

  random       a permutation drawn from a key: the baseline
  residual     largest alignment residual ||newest - frozen|| first: the
               items whose frozen vector is furthest from the newest model's
  popularity   most training interactions first (counts given)
  score-error  largest root-mean-square score error over the queries,
               sqrt(mean_q (q . (newest - frozen))^2): the residual weighted
               by the directions the queries look in

Everything here is model-agnostic: tables of any model and any score
function (Recall@K through a `bcjax.store.faiss_index` index, a consumer's
metric).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import jax
import numpy as np

from bcjax.data.sampling import numpy_rng
from bcjax.util import names

POLICIES = ("random", "residual", "popularity", "score-error")
# What `order` needs beyond the two tables, by policy.
_NEEDS = {"random": "key", "popularity": "counts", "score-error": "queries"}


def budget_count(budget: float, n: int) -> int:
  """How many of `n` items a budget re-embeds: b n, rounded half up."""
  return int(np.floor(float(budget) * n + 0.5))


def check_budgets(budgets: Sequence[float], what: str = "budgets"
                  ) -> np.ndarray:
  """`budgets` as a float64 array, strictly increasing, from 0 to 1.

  Raises:
    ValueError: naming `what`, when the budgets are not finite, not strictly
      increasing, or do not start at 0 and end at 1.
  """
  array = np.asarray(budgets, np.float64)
  if (array.ndim != 1 or array.size < 2 or not np.all(np.isfinite(array))
      or np.any(np.diff(array) <= 0) or array[0] != 0.0 or array[-1] != 1.0):
    raise ValueError(f"{what} must increase strictly from 0 to 1, got "
                     f"{np.asarray(budgets).tolist()}")
  return array


def _tables(frozen, newest) -> tuple[np.ndarray, np.ndarray]:
  """The frozen `[n, d]` and newest `[m, d]` tables (m >= n), checked."""
  frozen, newest = np.asarray(frozen), np.asarray(newest)
  if (frozen.ndim != 2 or newest.ndim != 2 or frozen.shape[1] != newest.shape[1]
      or len(newest) < len(frozen)):
    raise ValueError(f"backfill: frozen vectors {frozen.shape} and newest "
                     f"vectors {newest.shape} must be [n, d] and [m, d], "
                     "m >= n (rows beyond n: items new since)")
  return frozen, newest


def _descending(scores: np.ndarray) -> np.ndarray:
  """Indices by decreasing score, equal scores to the lower index."""
  return np.argsort(-scores, kind="stable")


def random_order(n: int, key: jax.Array) -> np.ndarray:
  """A uniformly random order of `n` items, reproducible for `key`."""
  return numpy_rng(key).permutation(int(n))


def residual_order(frozen, newest) -> np.ndarray:
  """The old items by decreasing alignment residual ||newest_i - frozen_i||.

  Args:
    frozen: `[n, d]` the legacy vectors.
    newest: `[m, d]` the newest BC embeddings, m >= n (the first n rows are
      the old items).
  """
  frozen, newest = _tables(frozen, newest)
  residual = newest[:len(frozen)].astype(np.float64) - frozen
  return _descending(np.linalg.norm(residual, axis=1))


def popularity_order(counts) -> np.ndarray:
  """The items by decreasing count (training interactions), ties to the
  lower index.

  Raises:
    ValueError: counts that are not a finite, non-negative `[n]` array.
  """
  counts = np.asarray(counts, np.float64)
  if counts.ndim != 1 or not np.all(np.isfinite(counts)) or np.any(counts < 0):
    raise ValueError("popularity: counts must be a finite, non-negative [n] "
                     f"array, got shape {counts.shape}")
  return _descending(counts)


def score_error_order(frozen, newest, queries) -> np.ndarray:
  """The old items by decreasing root-mean-square score error over the
  queries, sqrt(mean_q (q . (newest_i - frozen_i))^2).

  Args:
    frozen, newest: as `residual_order`.
    queries: `[q, d]` query vectors in the same space (the users' newest BC
      embeddings).
  """
  frozen, newest = _tables(frozen, newest)
  queries = np.asarray(queries, np.float64)
  if (queries.ndim != 2 or queries.shape[1] != frozen.shape[1]
      or not len(queries)):
    raise ValueError(f"score-error: queries {queries.shape} must be [q, d] "
                     f"with d = {frozen.shape[1]} and q >= 1")
  residual = newest[:len(frozen)].astype(np.float64) - frozen
  moment = queries.T @ queries / len(queries)
  mean_square = np.einsum("id,de,ie->i", residual, moment, residual)
  return _descending(np.sqrt(np.maximum(mean_square, 0.0)))


def order(policy: str, frozen, newest, *, key: jax.Array | None = None,
          counts=None, queries=None) -> np.ndarray:
  """The order of the old items under `policy` (`POLICIES`).

  Args:
    policy: the policy's name.
    frozen, newest: as `residual_order`.
    key: random's key.
    counts: popularity's `[n]` counts.
    queries: score-error's `[q, d]` queries.

  Raises:
    ValueError: an unknown policy, or the input it needs missing.
  """
  given = {"random": key, "popularity": counts, "score-error": queries}
  names.check(POLICIES, policy, "backfill policy")
  if policy in given and given[policy] is None:
    raise ValueError(f"backfill policy {policy!r} needs its "
                     f"{_NEEDS[policy]}")
  n = len(_tables(frozen, newest)[0])
  if policy == "random":
    return random_order(n, key)
  if policy == "residual":
    return residual_order(frozen, newest)
  if policy == "score-error":
    return score_error_order(frozen, newest, queries)
  if len(counts) != n:
    raise ValueError(f"popularity: {len(counts)} counts for {n} old items")
  return popularity_order(counts)


def backfilled(frozen, newest, item_order, budget: float) -> np.ndarray:
  """The table a consumer holds after re-embedding a budget's items.

  Args:
    frozen: `[n, d]` the legacy vectors.
    newest: `[m, d]` the newest vectors, m >= n.
    item_order: a permutation of 0..n-1, re-embedded first to last.
    budget: the fraction of the n items re-embedded (`budget_count`).

  Returns:
    `[m, d]`: row i < n is newest_i if i is among the first
    `budget_count(budget, n)` of the order, else frozen_i; rows from n on
    (items new since the frozen table) are the newest.
  """
  frozen, newest = _tables(frozen, newest)
  item_order = np.asarray(item_order)
  n = len(frozen)
  if item_order.shape != (n,) or not np.array_equal(np.sort(item_order),
                                                    np.arange(n)):
    raise ValueError(f"backfill: the order must be a permutation of the {n} "
                     f"old items, got shape {item_order.shape}")
  if not 0.0 <= float(budget) <= 1.0:
    raise ValueError(f"backfill: budget {budget} outside [0, 1]")
  table = np.concatenate([frozen, newest[n:]]).astype(
      np.result_type(frozen, newest))
  chosen = item_order[:budget_count(budget, n)]
  table[chosen] = newest[chosen]
  return table


def curve(frozen, newest, item_order, budgets: Sequence[float],
          score_fn: Callable[[np.ndarray], float | Mapping[str, float]]):
  """The backfill curve: `score_fn` of the backfilled table at each budget.

  Args:
    frozen, newest, item_order: as `backfilled`.
    budgets: increasing fractions in [0, 1].
    score_fn: `[m, d]` table -> a metric, or a mapping of named metrics.

  Returns:
    `[B]` float64 values, one per budget; or, when `score_fn` returns
    mappings, name -> `[B]` values.
  """
  budgets = np.asarray(budgets, np.float64)
  if budgets.ndim != 1 or np.any(np.diff(budgets) <= 0):
    raise ValueError(f"backfill: budgets must increase strictly, got "
                     f"{budgets.tolist()}")
  found = [score_fn(backfilled(frozen, newest, item_order, b)) for b in budgets]
  if found and isinstance(found[0], Mapping):
    return {name: np.asarray([f[name] for f in found], np.float64)
            for name in found[0]}
  return np.asarray(found, np.float64)


def area(budgets: Sequence[float], values: Sequence[float]) -> float:
  """The area under a backfill curve: the trapezoid rule over budgets from
  0 to 1 (so a flat curve at v has area v).

  Raises:
    ValueError: budgets not from 0 to 1 (`check_budgets`), or values that
      are missing, non-finite or not one per budget.
  """
  budgets = check_budgets(budgets)
  values = np.asarray([np.nan if v is None else v for v in values], np.float64)
  if values.shape != budgets.shape or not np.all(np.isfinite(values)):
    raise ValueError(f"area: {values.size} values for {budgets.size} budgets, "
                     "each finite")
  return float(np.sum((values[1:] + values[:-1]) / 2 * np.diff(budgets)))


def value_at(budgets: Sequence[float], values: Sequence[float],
             budget: float) -> float:
  """The curve at `budget`, linear between the measured budgets."""
  return float(np.interp(budget, np.asarray(budgets, np.float64),
                         np.asarray(values, np.float64)))
