"""Consumer targets of the unintended tasks (method §7), per version."""

from __future__ import annotations

import dataclasses

import numpy as np

from bcjax.data.splits import VersionSplit

MIN_ITEM_RATINGS = 10
POSITIVE_RATING = 4.0


@dataclasses.dataclass(frozen=True)
class ItemStats:
  """Rating statistics of the items with at least `MIN_ITEM_RATINGS` ratings.

  Attributes:
    item: `[N]` item indices, ascending.
    count: `[N]` number of ratings.
    mean: `[N]` mean rating.
    std: `[N]` unbiased standard deviation of the ratings.
  """
  item: np.ndarray
  count: np.ndarray
  mean: np.ndarray
  std: np.ndarray


@dataclasses.dataclass(frozen=True)
class VersionTargets:
  """The targets that version k's split defines.

  Attributes:
    train_edge_positive: `[T]` training interaction rating >= 4.
    val_edge_positive: `[V]` validation interaction rating >= 4.
    user_active: `[U1]` the user has a validation interaction in W_k.
    user_positive_active: `[U1]` the user's highest validation rating in W_k
      is >= 4 (False for users without validation interactions).
    item_stats_train: statistics over the training interactions.
    item_stats_all: statistics over training + validation interactions.
  """
  train_edge_positive: np.ndarray
  val_edge_positive: np.ndarray
  user_active: np.ndarray
  user_positive_active: np.ndarray
  item_stats_train: ItemStats
  item_stats_all: ItemStats


def item_stats(item: np.ndarray, rating: np.ndarray, num_items: int,
               min_count: int = MIN_ITEM_RATINGS) -> ItemStats:
  """Per-item count, mean and unbiased std of the ratings.

  Args:
    item: `[N]` item index of each rating (< num_items).
    rating: `[N]` the ratings.
    num_items: the number of items.
    min_count: keep items with at least this many ratings (and at least 2,
      for the standard deviation).

  Returns:
    The `ItemStats` of the kept items (float64 mean and std).
  """
  rating = np.asarray(rating, np.float64)
  count = np.bincount(item, minlength=num_items)
  total = np.bincount(item, weights=rating, minlength=num_items)
  kept = np.flatnonzero(count >= max(min_count, 2))
  mean = total[kept] / count[kept]
  squares = np.bincount(item, weights=(rating - (total / np.maximum(count, 1))[item]) ** 2,
                        minlength=num_items)
  std = np.sqrt(squares[kept] / (count[kept] - 1))
  return ItemStats(kept, count[kept], mean, std)


def version_targets(split: VersionSplit) -> VersionTargets:
  """Builds every consumer target of one version's split.

  Args:
    split: version k's split.

  Returns:
    The `VersionTargets` (bool arrays `[T]`, `[V]`, `[U1]`; item stats over
    training and over all interactions).
  """
  best = np.full(split.num_users, -np.inf)
  np.maximum.at(best, split.val_user, split.val_rating)
  all_item = np.concatenate([split.train_item, split.val_item])
  all_rating = np.concatenate([split.train_rating, split.val_rating])
  return VersionTargets(
      train_edge_positive=split.train_rating >= POSITIVE_RATING,
      val_edge_positive=split.val_rating >= POSITIVE_RATING,
      user_active=np.isfinite(best),
      user_positive_active=best >= POSITIVE_RATING,
      item_stats_train=item_stats(split.train_item, split.train_rating,
                                  split.num_items),
      item_stats_all=item_stats(all_item, all_rating, split.num_items),
  )
