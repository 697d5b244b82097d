"""Speed measurements behind `launch.benchmark`: medians of repeated runs.

Every timing blocks on its result and excludes compilation (timed apart).
"""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from bcjax.data import DynamicGraph
from bcjax.experiment import Experiment
from bcjax.models import aggregate as agg
from bcjax.training import (AlignmentInputs, Objective, embed, init_state,
                            train_epoch)


def timed(fn: Callable, *args, repeats: int = 5,
          slow_s: float | None = None) -> dict:
  """Median and spread (min, max) of `fn(*args)` in seconds, after a warm-up.

  With `slow_s`, a function whose second call takes longer than that is
  timed once (its spread is then zero).
  """
  jax.block_until_ready(fn(*args))
  times = []
  if slow_s is not None:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
    if times[0] > slow_s:
      repeats = 0
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return {"median_s": float(np.median(times)), "min_s": float(np.min(times)),
          "max_s": float(np.max(times))}


def matmul_peak(sizes=(1024, 2048, 3072), repeats: int = 5) -> float:
  """The machine's dense peak: the best GFLOP/s of n x n x n float32 matmuls."""
  best = 0.0
  for n in sizes:
    x = jax.random.normal(jax.random.key(0), (n, n))
    t = timed(jax.jit(lambda a: a @ a), x, repeats=repeats)["median_s"]
    best = max(best, 2 * n ** 3 / t / 1e9)
  return best


def replicated_graph(user: np.ndarray, item: np.ndarray, copies: int,
                     seed: int = 0):
  """`copies` disjoint copies of a bipartite graph, items shifted per copy."""
  rng = np.random.default_rng(seed)
  num_users, num_items = int(user.max()) + 1, int(item.max()) + 1
  users = np.concatenate([user + c * num_users for c in range(copies)])
  items = np.concatenate([(item + rng.integers(num_items)) % num_items
                          + c * num_items for c in range(copies)])
  return users, items, num_users * copies, num_items * copies


def _working_bytes(layout: str, edges: int, num_users: int, num_items: int,
                   dim: int) -> int:
  """Largest intermediate of a layout: messages, or the dense matrices."""
  if layout == "segment":
    return 4 * edges * dim
  if layout == "dense":
    return 8 * num_users * num_items
  return 4 * edges * 3


def aggregation_candidates(user, item, scales=(1, 10, 100), dim: int = 512,
                           repeats: int = 5,
                           max_bytes: float = 4e9) -> list[dict]:
  """Forward and forward+backward time of every layout at several sizes.

  A layout whose largest intermediate exceeds `max_bytes` is reported as
  skipped (the segment layout's messages at 100x would need 40 GB).
  """
  rows = []
  for scale in scales:
    users, items, num_users, num_items = replicated_graph(user, item, scale)
    h = jax.random.normal(jax.random.key(0), (num_users + num_items, dim))
    for layout in agg.LAYOUTS:
      row = {"scale": scale, "layout": layout, "edges": 2 * len(users),
             "nodes": num_users + num_items, "dim": dim}
      if _working_bytes(layout, row["edges"], num_users, num_items,
                        dim) > max_bytes:
        rows.append({**row, "fwd_ms": None, "fwd_bwd_ms": None})
        continue
      adjacency = agg.make_adjacency(users, items, num_users, num_items,
                                     layout=layout)
      forward = jax.jit(agg.aggregate)
      backward = jax.jit(jax.grad(
          lambda a, h: jnp.vdot(agg.aggregate(a, h), h), argnums=1))
      row["fwd_ms"] = 1e3 * timed(forward, adjacency, h, repeats=repeats,
                                  slow_s=2.0)["median_s"]
      row["fwd_bwd_ms"] = 1e3 * timed(backward, adjacency, h, repeats=repeats,
                                      slow_s=2.0)["median_s"]
      rows.append(row)
      del adjacency
  return rows


def training_epoch(graph: DynamicGraph, config, workdir: str, version: int,
                   repeats: int = 3) -> dict:
  """One intended-task epoch (sampling + all steps) and one evaluation pass.

  Returns:
    `{"step_ms", "epoch_s", "epoch_spread_s", "eval_s", "compile_s",
    "steps", "gflop_per_step", "achieved_gflops", "layout"}`; flops from
    XLA's cost analysis of one step (custom calls such as the CSR product
    count zero there, so achieved GFLOP/s is a lower bound).
  """
  experiment = Experiment(graph, config, workdir)
  data, model = experiment.data(version), experiment.model(version)
  objective = Objective()
  state = init_state(model, data.inputs, objective, jax.random.key(0), None,
                     config.lr)
  align = AlignmentInputs()
  run = lambda state, batches: train_epoch(state, data.inputs, align, batches,
                                           model=model, task=experiment.task,
                                           objective=objective, lr=config.lr)
  one = experiment.batches(version)(jax.random.key(0))
  one_step = tuple(a[:1] for a in one)
  start = time.perf_counter()
  compiled = jax.jit(run).lower(state, one).compile()
  compile_s = time.perf_counter() - start
  cost = jax.jit(run).lower(state, one_step).compile().cost_analysis()
  if isinstance(cost, list):
    cost = cost[0]
  flops = float(cost.get("flops", 0.0)) if cost else 0.0
  del compiled

  times = []
  state, loss = run(state, one)  # Warm-up (compiles the donated variant).
  loss.block_until_ready()
  for r in range(repeats):
    start = time.perf_counter()
    batches = experiment.batches(version)(jax.random.key(r + 1))
    state, loss = run(state, batches)
    loss.block_until_ready()
    times.append(time.perf_counter() - start)
  epoch_s = float(np.median(times))
  steps = int(np.any(one[3], axis=1).sum())  # Real batches, not padding.

  def evaluate(state):
    z = embed(model, state.model_variables(), data.inputs)
    return experiment.recall(z, version)

  eval_s = timed(evaluate, state, repeats=repeats)["median_s"]
  step_s = epoch_s / steps
  return {"layout": data.inputs.adjacency.layout, "steps": steps,
          "step_ms": 1e3 * step_s, "epoch_s": epoch_s,
          "epoch_spread_s": [float(min(times)), float(max(times))],
          "eval_s": eval_s, "compile_s": compile_s,
          "gflop_per_step": flops / 1e9,
          "achieved_gflops": flops / 1e9 / step_s}


def store_read(dims=(256, 320, 384, 448, 512), num_users: int = 943,
               num_items: int = 1682, repeats: int = 5) -> dict:
  """Rows per second of reading version 0 from a version-4 store.

  `composed` multiplies by the one cached matrix M_{4->0}; `chained` applies
  W_4, ..., W_1 one after the other, as a store without composition would.
  """
  import tempfile
  from bcjax import store as store_lib
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
    composed = timed(lambda: store.embeddings(version=0),
                     repeats=repeats)["median_s"]
    latest_u, latest_i = store.embeddings(version=len(dims) - 1)

    def chained():
      u, i = np.asarray(latest_u), np.asarray(latest_i)
      for w in reversed(chain):
        u, i = u @ w, i @ w
      return u, i

    stepwise = timed(chained, repeats=repeats)["median_s"]
  return {"composed_rows_per_s": rows / composed,
          "chained_rows_per_s": rows / stepwise}


def strategy_overheads(graph: DynamicGraph, config, workdir: str,
                       version: int, repeats: int = 3) -> dict:
  """Seconds of extra work per version that each family of strategies adds.

  Joint methods: (alignment epoch - plain epoch) x epochs; post-hoc methods:
  their B_k epoch x posthoc epochs; closed-form fits: one solve.
  """
  from bcjax import transforms
  experiment = Experiment(graph, config, workdir)
  data, model = experiment.data(version), experiment.model(version)
  d, d_prev = config.dims[version], config.dims[version - 1]
  rng = np.random.default_rng(0)
  n = experiment.num_users_pad + experiment.num_items_pad
  target = jnp.asarray(rng.normal(size=(n, d_prev)), jnp.float32)
  earlier = tuple(jnp.asarray(rng.normal(size=(config.dims[j], config.dims[j - 1])),
                              jnp.float32) for j in range(version - 1, 0, -1))
  embeddings = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
  batches = experiment.batches(version)(jax.random.key(0))

  def epoch_time(objective, align):
    variables = model.init(jax.random.key(0), data.inputs)
    state = init_state(model, data.inputs, objective, jax.random.key(1),
                       d_prev, config.lr, model_variables=variables)
    def run():
      nonlocal state
      state, loss = train_epoch(state, data.inputs, align, batches,
                                model=model, task=experiment.task,
                                objective=objective, lr=config.lr)
      return loss
    return timed(run, repeats=repeats)["median_s"]

  plain = epoch_time(Objective(), AlignmentInputs())
  single = epoch_time(Objective(transform="linear"),
                      AlignmentInputs(target=target))
  multi = epoch_time(Objective(transform="linear", multi_step=True),
                     AlignmentInputs(target=target, earlier=earlier))
  posthoc = epoch_time(Objective(train_model=False, transform="linear"),
                       AlignmentInputs(target=target, embeddings=embeddings))
  x, y = np.asarray(embeddings), np.asarray(target)
  return {
      "version": version,
      "epoch_s": plain,
      "joint_sloss_extra_s": (single - plain) * config.epochs,
      "joint_mloss_extra_s": (multi - plain) * config.epochs,
      "posthoc_sgd_s": posthoc * config.posthoc_epochs,
      "posthoc_lstsq_s": timed(transforms.fit_lstsq, x, y,
                               repeats=repeats)["median_s"],
      "posthoc_procrustes_s": timed(transforms.fit_procrustes, x, y,
                                    repeats=repeats)["median_s"],
  }
