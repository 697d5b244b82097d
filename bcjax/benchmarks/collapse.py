"""A chain of residual-MLP backward maps against its one-map collapses
(`bcjax.backward.collapse`), on paired tables of a graph's versions.

Version k's embeddings are a cheap real model of its training interactions:
the rank-d_k truncated SVD R_k = U S V^T, users U S and items V S (scores
U S^2 V^T). B_k is a residual MLP (`fits.residual_mlp`) fitted on the nodes
of version k-1, except a held-out fifth of version 0's nodes, on which every
error is measured; the 4-hop chain K -> 0 is then distilled into one direct
map of each kind on the version-K table (`collapse`, its own held-out rows).
Serving: the version-K users, mapped by the chain or a collapse, query a
frozen version-0 index (`bcjax.evaluation.retrieval`, exact and HNSW) holding version
0's items and, inserted, the later items mapped by the chain; Recall@50 of
the users' validation items, training items filtered out.
"""

from __future__ import annotations

import time

import numpy as np

from bcjax.backward import collapse as collapse_lib, fits
from bcjax.data import PAPER_TIMES, DynamicGraph, make_splits
from bcjax.evaluation import retrieval
from bcjax.store import faiss_index
from bcjax.util import keys

RECALL_K = 50
# The target: within the budget, Recall@50 at most this many points
# below the chain's (through the exact frozen index).
TARGET_RECALL_POINTS = 1.0


def spectral_tables(graph: DynamicGraph, dims) -> tuple[list, list]:
  """(splits, `[(users_k, items_k)]`): one version per dimension, on the
  last `len(dims) + 1` of the paper's version times.

  Raises:
    ValueError: more versions than the paper's, or a d_k above version k's
      users or items.
  """
  if not 1 <= len(dims) < len(PAPER_TIMES):
    raise ValueError(f"{len(dims)} versions; at most {len(PAPER_TIMES) - 1}")
  splits = make_splits(graph, PAPER_TIMES[len(PAPER_TIMES) - len(dims) - 1:])
  tables = []
  for split, d in zip(splits, dims):
    if d > min(split.num_users, split.num_items):
      raise ValueError(f"version {split.version}: rank {d} above its "
                       f"{split.num_users} users or {split.num_items} items")
    r = np.zeros((split.num_users, split.num_items), np.float32)
    r[split.train_user, split.train_item] = 1.0
    u, s, vt = np.linalg.svd(r, full_matrices=False)
    tables.append((u[:, :d] * s[:d], vt[:d].T * s[:d]))
  return splits, tables


def _rows(tables, k: int, users, items) -> np.ndarray:
  return np.concatenate([tables[k][0][users], tables[k][1][items]])


def _queries(split) -> retrieval.Queries:
  """The users with validation items, their training and validation items."""
  users = np.unique(split.val_user)
  excluded = np.zeros((len(users), split.num_items), bool)
  validation = np.zeros_like(excluded)
  known = np.isin(split.train_user, users)
  excluded[np.searchsorted(users, split.train_user[known]),
           split.train_item[known]] = True
  validation[np.searchsorted(users, split.val_user), split.val_item] = True
  return retrieval.Queries(users, excluded, validation)


def chain_collapse(graph: DynamicGraph, dims=(256, 320, 384, 448, 512),
                   budget_us: float = 10.0, steps: int = 500,
                   hidden: int = 128, repeats: int = 9,
                   seed: int = 0) -> dict:
  """The residual-MLP chain K -> 0 against its collapses.

  Args:
    graph: the interactions (MovieLens-100k in `launch.benchmark`).
    dims: d_0 .. d_K.
    budget_us: the latency budget per query `choose_within_budget` meets.
    steps, hidden: each residual MLP's Adam steps and hidden width (the
      chain's maps and the residual-MLP collapse).
    repeats: timed rounds (`collapse.measure`: every option once a round).
    seed: the root of the keys (`maps/k`, `hops`, `collapse`).

  Returns:
    The record: "hops" (`collapse.hop_errors`), "options" (by name: the
    held-out error's `collapse.Error` fields, the cost in us per query
    "us" and "us_spread" from `collapse.measure` on every version-K user,
    "recall" through the exact and HNSW frozen index, "overlap" and
    "overlap_held_out", the mean share of its top 50 in the chain's for
    every user and for the users held out of the distillation, and
    "meets_target"), "choices" (the option `choose_within_budget` picks
    ranked by held-out error and by exact Recall@50), sizes and timings.
  """
  begin, key = time.perf_counter(), keys.root(seed)
  splits, tables = spectral_tables(graph, dims)
  top = len(dims) - 1
  n_users, n_items = splits[0].num_users, splits[0].num_items
  train, held = collapse_lib.held_out_split(n_users + n_items,
                                            keys.derive(key, "nodes"))
  held_users, held_items = held[held < n_users], held[held >= n_users] - n_users
  maps = []
  for k in range(1, top + 1):
    users = np.setdiff1d(np.arange(splits[k - 1].num_users), held_users)
    items = np.setdiff1d(np.arange(splits[k - 1].num_items), held_items)
    maps.append(fits.residual_mlp(
        _rows(tables, k, users, items), _rows(tables, k - 1, users, items),
        keys.derive(key, "maps", k), hidden=hidden, steps=steps))
  fit_s = time.perf_counter() - begin
  common = [_rows(tables, v, np.arange(n_users), np.arange(n_items))
            for v in range(top + 1)]
  hops = collapse_lib.hop_errors(maps, common, top, keys.derive(key, "hops"),
                                 split=(train, held))
  start = time.perf_counter()
  stored = np.concatenate(tables[top])
  collapsed = collapse_lib.collapse(maps, top, 0, stored,
                                    keys.derive(key, "collapse"),
                                    hidden=hidden, steps=steps)
  collapse_s = time.perf_counter() - start
  queries = np.asarray(tables[top][0], np.float32)
  collapsed = collapse_lib.measure(collapsed, queries, repeats)
  evaluated = _queries(splits[top])
  ks = (min(RECALL_K, splits[top].num_items),)
  inserted = collapsed[collapse_lib.CHAIN](tables[top][1][n_items:])
  indexes = {kind: faiss_index.with_inserted(
      faiss_index.build_index(tables[0][1], kind), inserted)
             for kind in faiss_index.KINDS}
  recall = lambda index, vectors: retrieval.recall(index, vectors, evaluated,
                                                   ks)[ks[0]]
  top_k = lambda vectors: faiss_index.search(indexes["exact"], vectors,
                                           ks[0])[1]
  chain_top = top_k(collapsed[collapse_lib.CHAIN](queries))
  unseen = collapsed.split[1][collapsed.split[1] < len(queries)]
  overlap = lambda found, rows: float(np.mean(
      [np.intersect1d(a, b).size for a, b in zip(found[rows],
                                                 chain_top[rows])]) / ks[0])
  chain_us = collapsed[collapse_lib.CHAIN].cost_us
  options = {}
  for o in collapsed.options:
    e = o.error or collapse_lib.Error(0.0, 0.0, 1.0, 0)
    mapped = o(queries)
    found = top_k(mapped)
    options[o.name] = {
        "maps": len(o.maps), "kind": o.maps[0].kind, "mse": e.mse,
        "relative": e.relative, "cosine": e.cosine, "rows": e.rows,
        "us": o.cost_us, "us_spread": list(o.cost_spread_us),
        "speedup": chain_us / o.cost_us,
        "overlap": overlap(found, slice(None)),
        "overlap_held_out": overlap(found, unseen),
        "recall": {kind: recall(index, mapped)
                   for kind, index in indexes.items()}}
  chain_recall = options[collapse_lib.CHAIN]["recall"]["exact"]
  for o in options.values():
    o["meets_target"] = bool(o["us"] <= budget_us and o["recall"]["exact"]
                             >= chain_recall - TARGET_RECALL_POINTS / 100)
  choices = {}
  for by, quality in (("error", None), ("recall", {
      name: o["recall"]["exact"] for name, o in options.items()})):
    try:
      choice = collapse_lib.choose_within_budget(collapsed, budget_us, quality)
      choices[by] = {"chosen": choice.option.name, "reason": choice.reason}
    except ValueError as error:
      choices[by] = {"chosen": None, "reason": str(error)}
  ceiling = recall(faiss_index.build_index(tables[top][1], "exact"), queries)
  return {"dims": list(dims), "users": splits[top].num_users,
          "held_out_users": len(unseen),
          "items": splits[top].num_items, "evaluated_users":
          len(evaluated.users), "held_out_nodes": len(held),
          "distil_rows": [len(s) for s in collapsed.split], "steps": steps,
          "hidden": hidden, "k": ks[0], "budget_us": budget_us,
          "hops": [{"to_version": h.to_version, "hops": h.hops,
                    "chain_relative": h.chain.relative,
                    "direct_relative": h.direct.relative,
                    "chain_cosine": h.chain.cosine,
                    "direct_cosine": h.direct.cosine} for h in hops],
          "options": options, "choices": choices,
          "ceiling_recall": ceiling, "fit_chain_s": fit_s,
          "collapse_s": collapse_s, "total_s": time.perf_counter() - begin}
