"""Versions and their train/validation splits (method §3)."""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from bcjax.data.graph import AttributeKind, DataError, DynamicGraph

PAPER_TIMES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclasses.dataclass(frozen=True)
class VersionSplit:
  """What version k trains and validates on.

  Attributes:
    version: k.
    time_train: tau_k.
    time_val: tau_{k+1}.
    num_existing_users: U0 = U(tau_k).
    num_users: U1 = U(tau_{k+1}); the version's graph has users 0..U1-1.
    num_items: I1 = I(tau_{k+1}).
    train_index: `[T]` int64 rows of the graph, in time order.
    val_index: `[V]` int64 rows of the graph, in time order.
    train_user, train_item, train_rating: `[T]` the training interactions.
    val_user, val_item, val_rating: `[V]` the validation interactions.
    attributes: the item attributes of items < I1.
  """
  version: int
  time_train: float
  time_val: float
  num_existing_users: int
  num_users: int
  num_items: int
  train_index: np.ndarray
  val_index: np.ndarray
  train_user: np.ndarray
  train_item: np.ndarray
  train_rating: np.ndarray
  val_user: np.ndarray
  val_item: np.ndarray
  val_rating: np.ndarray
  attributes: Mapping[str, AttributeKind]

  @property
  def num_train(self) -> int:
    """T, the number of training interactions."""
    return len(self.train_index)

  @property
  def num_val(self) -> int:
    """V, the number of validation interactions."""
    return len(self.val_index)


def check_times(times: Sequence[float]) -> tuple[float, ...]:
  """Validates a version time list: >= 2 strictly increasing values in [0, 1].

  Args:
    times: the version times tau_0 < tau_1 < ... (edge ratios).

  Returns:
    The times as a tuple of floats.

  Raises:
    DataError: not numbers, fewer than two, outside [0, 1], or not strictly
      increasing.
  """
  try:
    times = tuple(float(t) for t in times)
  except (TypeError, ValueError) as error:
    raise DataError(f"version times {times!r}: not a list of numbers "
                    f"({error})") from None
  if len(times) < 2:
    raise DataError(f"version times {times}: need at least two values")
  if any(not 0.0 <= t <= 1.0 for t in times):
    raise DataError(f"version times {times}: every value must lie in [0, 1]")
  if any(b <= a for a, b in zip(times, times[1:])):
    raise DataError(f"version times {times}: not strictly increasing")
  return times


def window_validation_mask(window_user: np.ndarray,
                           num_existing_users: int) -> np.ndarray:
  """Which interactions of a window W_k go to validation (method §3).

  Args:
    window_user: `[W]` user index of each window interaction, in time order.
    num_existing_users: U0; users below it are existing users.

  Returns:
    `[W]` bool: every interaction of an existing user, and the last one of
    each new user that has more than one interaction in the window.
  """
  existing = window_user < num_existing_users
  positions = np.arange(len(window_user))
  new_users = window_user[~existing]
  # Last position and count of each new user in the window.
  last = np.full(int(window_user.max(initial=-1)) + 1, -1, dtype=np.int64)
  np.maximum.at(last, new_users, positions[~existing])
  counts = np.bincount(new_users, minlength=len(last))
  is_last = (last[window_user] == positions) & (counts[window_user] > 1)
  return existing | (~existing & is_last)


def version_split(graph: DynamicGraph, version: int, time_train: float,
                  time_val: float) -> VersionSplit:
  """The split of one version: the graph up to tau_k plus the window
  (tau_k, tau_{k+1}], split by `window_validation_mask`.

  Args:
    graph: the canonical graph.
    version: k.
    time_train: tau_k.
    time_val: tau_{k+1} (> tau_k).

  Returns:
    The `VersionSplit`; its training interactions are the graph up to tau_k
    and the window's non-validation ones.
  """
  n0, n1 = graph.num_edges_at(time_train), graph.num_edges_at(time_val)
  u0, u1 = graph.num_users_at(time_train), graph.num_users_at(time_val)
  i1 = graph.num_items_at(time_val)
  val_mask = window_validation_mask(np.asarray(graph.user[n0:n1]), u0)
  window = np.arange(n0, n1, dtype=np.int64)
  train_index = np.concatenate([np.arange(n0, dtype=np.int64),
                                window[~val_mask]])
  val_index = window[val_mask]
  return VersionSplit(
      version=version, time_train=time_train, time_val=time_val,
      num_existing_users=u0, num_users=u1, num_items=i1,
      train_index=train_index, val_index=val_index,
      train_user=graph.user[train_index], train_item=graph.item[train_index],
      train_rating=graph.rating[train_index],
      val_user=graph.user[val_index], val_item=graph.item[val_index],
      val_rating=graph.rating[val_index],
      attributes={k: a.prefix(i1) for k, a in graph.attributes.items()},
  )


def check_splits(graph: DynamicGraph,
                 splits: Sequence[VersionSplit]) -> None:
  """Checks that every version can be trained and validated.

  Args:
    graph: the canonical graph.
    splits: its versions (`make_splits`).

  Raises:
    DataError: naming the first version whose window (tau_k, tau_{k+1}]
      holds no interaction of the graph, or none that goes to validation.
  """
  for s in splits:
    window = f"({s.time_train}, {s.time_val}]"
    if graph.num_edges_at(s.time_val) == graph.num_edges_at(s.time_train):
      raise DataError(f"{graph.name}: version {s.version}: the window "
                      f"{window} holds none of the {graph.num_interactions} "
                      "interactions; use version times further apart")
    if s.num_val == 0:
      raise DataError(f"{graph.name}: version {s.version}: no validation "
                      f"interactions in the window {window} (every one is a "
                      "new user's only interaction there)")


def make_splits(graph: DynamicGraph, times: Sequence[float] = PAPER_TIMES,
                require_validation: bool = False) -> list[VersionSplit]:
  """All versions of a graph: version k spans (times[k], times[k+1]].

  Args:
    graph: the canonical graph.
    times: the version times tau_0 < tau_1 < ...; len(times) - 1 versions.
    require_validation: also check with `check_splits` that no window is
      empty and every version has validation interactions (training needs
      them; statistics do not).

  Returns:
    One `VersionSplit` per version.

  Raises:
    DataError: a bad time list, or with `require_validation` an empty window
      or a version without validation interactions.
  """
  times = check_times(times)
  splits = [version_split(graph, k, a, b)
            for k, (a, b) in enumerate(zip(times, times[1:]))]
  if require_validation:
    check_splits(graph, splits)
  return splits
