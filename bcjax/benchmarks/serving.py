"""Serving-side figures: reading a version from an embedding store, scoring
frozen consumer heads across versions, and serving through a frozen legacy
index.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from bcjax import store as store_lib
from bcjax.backward import BackwardMap, apply_chain
from bcjax.benchmarks.measure import timed
from bcjax.data import DynamicGraph, make_splits
from bcjax.evaluation import consumers, scoring, unintended
from bcjax.runs.strategies import STRATEGIES
from bcjax.store import faiss_index


def store_read(dims=(256, 320, 384, 448, 512), num_users: int = 943,
               num_items: int = 1682, repeats: int = 5) -> dict:
  """Rows per second of reading version 0 from a version-4 store.

  `composed` multiplies by the one cached matrix M_{4->0}; `chained` applies
  W_4, ..., W_1 one after the other, as a store without composition would.

  Returns:
    `{"composed_rows_per_s", "chained_rows_per_s"}` (medians), their
    `..._spread` `[slowest, fastest]`, and the `rows` read per call.
  """
  import tempfile
  rng = np.random.default_rng(0)
  rows = num_users + num_items
  with tempfile.TemporaryDirectory() as root:
    path = f"{root}/store"
    users = lambda d: rng.normal(size=(num_users, d)).astype(np.float32)
    items = lambda d: rng.normal(size=(num_items, d)).astype(np.float32)
    ids = (np.arange(num_users).astype(str), np.arange(num_items).astype(str))
    store = store_lib.EmbeddingStore.create(path, users(dims[0]),
                                            items(dims[0]), *ids, "bench",
                                            "bench")
    chain = []
    for prev, d in zip(dims, dims[1:]):
      w = rng.normal(size=(d, prev)).astype(np.float32) / np.sqrt(d)
      chain.append(w)
      store.append_version(users(d), items(d), w, *ids)
    store.embeddings(version=0)  # Caches the composed matrix.
    composed = timed(lambda: store.embeddings(version=0), repeats=repeats)
    latest_u, latest_i = store.embeddings(version=len(dims) - 1)

    def chained():
      u, i = np.asarray(latest_u), np.asarray(latest_i)
      for w in reversed(chain):
        u, i = u @ w, i @ w
      return u, i

    stepwise = timed(chained, repeats=repeats)
  rate = lambda t: {"median": rows / t["median_s"],
                    "spread": [rows / t["max_s"], rows / t["min_s"]]}
  out = {"rows": rows, "versions": len(dims)}
  for name, t in (("composed", composed), ("chained", stepwise)):
    out[f"{name}_rows_per_s"] = rate(t)["median"]
    out[f"{name}_rows_per_s_spread"] = rate(t)["spread"]
  return out


def consumer_eval(graph: DynamicGraph, config, repeats: int = 3,
                  num_strategies: int | None = None,
                  tasks: Sequence[str] | None = None, seed: int = 0) -> dict:
  """Scoring frozen consumer heads on every (strategy, version, seed) of
  every task: `bcjax.evaluation.scoring.evaluate` (one jitted vmapped call per task,
  padding included) against `evaluate_reference` (a Python loop, one small
  jitted call per (strategy, version, seed)).

  The work is the run's: the tasks' real example rows of `graph` split at
  `config.times`; the embeddings are random `[rows, config.dims[0]]` tables
  per (strategy, version), the heads random of size
  `config.consumer.hidden[0]` with `config.consumer.seeds` seeds. Every
  task with scored versions (or those of `tasks`), the first
  `num_strategies` strategies (default all).

  Returns:
    `{"tasks", "strategies", "scored_versions", "seeds", "hidden", "dim",
    "evaluations" (task x strategy x version x seed), "vmapped_s",
    "vmapped_spread_s", "loop_s", "loop_spread_s", "speedup",
    "auc_max_abs_diff"}`.
  """
  splits = make_splits(graph, config.times)
  data = {name: d for name, d in unintended.all_task_data(splits).items()
          if d.evaluation and (tasks is None or name in tasks)}
  strategies = list(STRATEGIES)[:num_strategies]
  d, hidden = int(config.dims[0]), int(config.consumer.hidden[0])
  seeds = int(config.consumer.seeds)
  rng = np.random.default_rng(seed)
  table = lambda n: rng.standard_normal((n, d)).astype(np.float32)
  embeddings = {s: {k: (table(split.num_users), table(split.num_items))
                    for k, split in enumerate(splits)} for s in strategies}
  heads = {}
  for i, (name, task_data) in enumerate(data.items()):
    keys = jax.random.split(jax.random.key(seed + i), seeds)
    variables = consumers.init_heads(hidden, d * len(task_data.task.inputs), keys)
    # Non-trivial running statistics, as trained heads have.
    variables = jax.tree.map(
        lambda a: a + 0.1 * jax.random.uniform(jax.random.key(i), a.shape),
        variables)
    heads[name] = consumers.Heads(hidden, 0.0, jax.device_get(variables),
                                  np.zeros(seeds), np.zeros(seeds, int), {})

  def vmapped():
    return {name: scoring.evaluate(
        heads[name], scoring.prepare_evaluation(d_, embeddings, strategies))
            for name, d_ in data.items()}

  def loop():
    return {name: scoring.evaluate_reference(heads[name], d_, embeddings,
                                               strategies)
            for name, d_ in data.items()}

  fast, slow = vmapped(), loop()  # Also the warm-up: compiles both.
  diff = max(float(np.nanmax(np.abs(fast[t][s] - slow[t][s])))
             for t in data for s in strategies)
  t_v = timed(vmapped, repeats=repeats, warmup=False)
  t_l = timed(loop, repeats=repeats, warmup=False)
  versions = sum(len(d_.evaluation) for d_ in data.values())
  return {"tasks": len(data), "strategies": len(strategies),
          "scored_versions": versions, "seeds": seeds, "hidden": hidden,
          "dim": d, "evaluations": versions * len(strategies) * seeds,
          "vmapped_s": t_v["median_s"],
          "vmapped_spread_s": [t_v["min_s"], t_v["max_s"]],
          "loop_s": t_l["median_s"],
          "loop_spread_s": [t_l["min_s"], t_l["max_s"]],
          "speedup": t_l["median_s"] / t_v["median_s"],
          "auc_max_abs_diff": diff}


def legacy_index(dims=(256, 320, 384, 448, 512), num_users: int = 943,
                 num_items: int = 1682, k: int = 10, repeats: int = 5,
                 seed: int = 0) -> dict:
  """Serving through a frozen version-0 HNSW index (`bcjax.evaluation.retrieval`).

  Half the items fill the frozen index at d_0; queries are `num_users`
  version-K vectors (d_K), mapped into version 0 by the linear chain
  composed once (one product, as the store serves it) or by a chain of
  residual-MLP adapters (map by map; both `bcjax.backward.apply_chain`);
  the other half of the items are inserted into a copy of the index.
  Vectors are Gaussian, the maps random: the figures are costs, not recall.

  Returns:
    `{"build_s", "exact_build_s", "qps_raw", "qps_linear", "qps_mlp",
    "map_linear_us", "map_mlp_us", "insert_items_per_s"}` (medians; QPS and
    per-query mapping costs over the batch of queries), each with its
    `..._spread` `[min, max]`, plus the sizes.
  """
  rng = np.random.default_rng(seed)
  normal = lambda *shape: rng.normal(size=shape).astype(np.float32)
  frozen_items, new_items = normal(num_items // 2, dims[0]), normal(
      num_items - num_items // 2, dims[0])
  queries = normal(num_users, dims[-1])
  linear = [BackwardMap.from_matrix(normal(d, prev) / np.sqrt(d))
            for prev, d in zip(dims, dims[1:])]
  mlp = [BackwardMap("residual-mlp", {
      "w": normal(d, prev) / np.sqrt(d), "bias": normal(1, prev),
      "w1": normal(d, 128) / np.sqrt(d), "b1": normal(1, 128),
      "w2": normal(128, prev) / np.sqrt(128)})
         for prev, d in zip(dims, dims[1:])]
  top = len(dims) - 1
  # The linear chain as the store serves it: composed once, one product.
  map_linear = lambda: apply_chain(linear, queries, top, 0)
  build = timed(faiss_index.build_index, frozen_items, "hnsw", repeats=repeats)
  exact_build = timed(faiss_index.build_index, frozen_items, "exact",
                      repeats=repeats)
  index = faiss_index.build_index(frozen_items, "hnsw")
  raw_queries = normal(num_users, dims[0])
  search = lambda q: faiss_index.search(index, q, k)
  times = {
      "raw": timed(search, raw_queries, repeats=repeats),
      "linear": timed(lambda: search(map_linear()), repeats=repeats),
      "mlp": timed(lambda: search(apply_chain(mlp, queries, top, 0)),
                   repeats=repeats),
      "map_linear": timed(map_linear, repeats=repeats),
      "map_mlp": timed(apply_chain, mlp, queries, top, 0,
                       repeats=repeats),
      "insert": timed(faiss_index.with_inserted, index, new_items,
                      repeats=repeats)}
  per = lambda t, n, scale: {"median": n * scale / t["median_s"],
                             "spread": [n * scale / t["max_s"],
                                        n * scale / t["min_s"]]}
  cost = lambda t: {"median": 1e6 * t["median_s"] / num_users,
                    "spread": [1e6 * t["min_s"] / num_users,
                               1e6 * t["max_s"] / num_users]}
  figures = {"qps_raw": per(times["raw"], num_users, 1),
             "qps_linear": per(times["linear"], num_users, 1),
             "qps_mlp": per(times["mlp"], num_users, 1),
             "map_linear_us": cost(times["map_linear"]),
             "map_mlp_us": cost(times["map_mlp"]),
             "insert_items_per_s": per(times["insert"], len(new_items), 1)}
  out = {"dims": list(dims), "frozen_items": len(frozen_items),
         "inserted_items": len(new_items), "queries": num_users, "k": k,
         "build_s": build["median_s"],
         "build_s_spread": [build["min_s"], build["max_s"]],
         "exact_build_s": exact_build["median_s"],
         "exact_build_s_spread": [exact_build["min_s"], exact_build["max_s"]]}
  for name, f in figures.items():
    out[name], out[f"{name}_spread"] = f["median"], f["spread"]
  return out
