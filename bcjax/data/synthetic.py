"""A synthetic dynamic graph from latent factors (method §2), vectorized numpy.

Users and items carry latent factors and arrival times; a third of each are
present from the start, the rest arrive uniformly over time. Each interaction
picks a user by a heavy-tailed activity weight, happens at a uniform time
after the user's arrival, and picks the best-matching of a few candidate
items that have arrived by then. Ratings grow with the user-item affinity;
an item's categories are its best-matching category prototypes and its brand
the best-matching brand prototype (some items have none).
"""

from __future__ import annotations

import numpy as np

from bcjax.data.graph import DynamicGraph, build_graph

START_TIMESTAMP = 1_500_000_000
SPAN_SECONDS = 3 * 365 * 86400
NUM_CANDIDATES = 4
MAX_CATEGORIES = 3
UNBRANDED_FRACTION = 0.2
CHUNK = 1 << 18


def _arrivals(rng: np.random.Generator, count: int) -> np.ndarray:
  """Sorted arrival times in [0, 1): a third at 0, the rest uniform."""
  return np.sort(np.maximum(rng.uniform(-0.5, 1.0, count), 0.0))


def _pick_items(rng, user_factors, item_factors, user, arrived):
  """For each interaction, the best of a few candidates among arrived items.

  Returns:
    (item per interaction, affinity of that item) over chunks of interactions.
  """
  items, affinities = [], []
  for start in range(0, len(user), CHUNK):
    # np.take gathers rows several times faster than fancy indexing.
    users = np.take(user_factors, user[start:start + CHUNK], axis=0)
    count = arrived[start:start + CHUNK, None]
    candidates = (rng.random((len(users), NUM_CANDIDATES)) * count
                  ).astype(np.int64)
    scores = np.einsum("cd,ckd->ck", users,
                       np.take(item_factors, candidates, axis=0))
    best = np.argmax(scores, axis=1)
    items.append(np.take_along_axis(candidates, best[:, None], 1)[:, 0])
    affinities.append(np.take_along_axis(scores, best[:, None], 1)[:, 0])
  return np.concatenate(items), np.concatenate(affinities)


def _attributes(rng, item_factors, num_categories: int, num_brands: int):
  """Category lists and brands of every item, as build_graph mappings."""
  dim = item_factors.shape[1]
  category_scores = item_factors @ rng.standard_normal((dim, num_categories))
  top = np.argsort(-category_scores, axis=1)[:, :MAX_CATEGORIES]
  num_kept = rng.integers(1, MAX_CATEGORIES + 1, len(item_factors))
  brand = np.argmax(item_factors @ rng.standard_normal((dim, num_brands)), 1)
  branded = rng.random(len(item_factors)) >= UNBRANDED_FRACTION
  categories = {
      str(i): [f"category{c}" for c in row[:n]]
      for i, (row, n) in enumerate(zip(top.tolist(), num_kept.tolist()))}
  brands = {str(i): [f"brand{b}"]
            for i, b in zip(np.flatnonzero(branded).tolist(),
                            brand[branded].tolist())}
  return {"category": categories, "brand": brands}


def make_synthetic(num_interactions: int,
                   num_users: int | None = None,
                   num_items: int | None = None,
                   dim: int = 16,
                   num_categories: int = 20,
                   num_brands: int = 50,
                   seed: int = 0) -> DynamicGraph:
  """Generates a synthetic graph; the same arguments give the same graph.

  Args:
    num_interactions: E, the number of interactions.
    num_users: latent users (default E // 20, at least 10); those never
      drawn do not appear in the graph.
    num_items: latent items (default E // 40, at least 10); likewise.
    dim: size of the latent factors.
    num_categories: category prototypes (kind `category`, 1 to 3 per item).
    num_brands: brand prototypes (kind `brand`, at most one per item).
    seed: the random seed.

  Returns:
    The canonical graph named `synthetic`, ratings 1..5.

  Raises:
    ValueError: a size below 1.
  """
  if num_users is None:
    num_users = max(10, num_interactions // 20)
  if num_items is None:
    num_items = max(10, num_interactions // 40)
  sizes = dict(num_interactions=num_interactions, num_users=num_users,
               num_items=num_items, dim=dim, num_categories=num_categories,
               num_brands=num_brands)
  if min(sizes.values()) < 1:
    raise ValueError(f"synthetic sizes must be at least 1: {sizes}")
  rng = np.random.default_rng(seed)
  user_factors = rng.standard_normal((num_users, dim), np.float32)
  item_factors = rng.standard_normal((num_items, dim), np.float32)
  user_arrival = _arrivals(rng, num_users)
  item_arrival = _arrivals(rng, num_items)
  activity = rng.lognormal(0.0, 1.0, num_users)
  counts = rng.multinomial(num_interactions, activity / activity.sum())
  # Interactions grouped by user for now; sorted by time below.
  user = np.repeat(np.arange(num_users), counts)
  arrival = user_arrival[user]
  time = arrival + (1.0 - arrival) * rng.random(num_interactions)
  order = np.argsort(time)
  user, time = user[order], time[order]
  arrived = np.maximum(np.searchsorted(item_arrival, time, side="right"), 1)
  item, affinity = _pick_items(rng, user_factors, item_factors, user, arrived)
  noise = rng.normal(0.0, 0.5, num_interactions)
  rating = np.clip(np.rint(2.5 + affinity / np.sqrt(dim) + noise), 1, 5)
  timestamp = START_TIMESTAMP + (time * SPAN_SECONDS).astype(np.int64)
  return build_graph("synthetic", user, item, rating, timestamp,
                     _attributes(rng, item_factors, num_categories, num_brands),
                     rating_range=(1.0, 5.0))
