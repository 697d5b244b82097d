"""Speed and memory measurements behind `launch.benchmark`.

Every figure is the median of several runs, with its spread `[min, max]`
next to it (keys ending in `_spread...`); every timing blocks on its result
and excludes compilation (timed apart). `python -m bcjax.benchmarks
scaling_point '<json kwargs>'` runs one point of `scaling` and prints its
row as JSON (`scaling` starts one such process per graph size, so that peak
memory is the size's own).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bcjax.data import DynamicGraph
from bcjax.data.neighbours import NeighbourSampler, sampled_bpr_chunks
from bcjax.experiment import Experiment
from bcjax.models import aggregate as agg
from bcjax.training import (AlignmentInputs, Objective, embed, init_state,
                            train_epoch)


def spread(times: Sequence[float]) -> list[float]:
  """`[min, max]` of a list of measurements."""
  return [float(np.min(times)), float(np.max(times))]


def timed(fn: Callable, *args, repeats: int = 5,
          slow_s: float | None = None, warmup: bool = True) -> dict:
  """Median and spread (min, max) of `fn(*args)` in seconds, after a warm-up.

  With `slow_s`, a function whose second call takes longer than that is
  timed once (its spread is then zero). `warmup=False` when the caller has
  already run `fn` (compiled it).
  """
  if warmup:
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


def matmul_peak_detail(sizes=(1024, 2048, 3072), repeats: int = 5) -> dict:
  """The machine's dense peak: the best median GFLOP/s of n x n x n float32
  matmuls, with that size's spread.

  Returns:
    `{"gflops", "gflops_spread", "n"}`.
  """
  best = {"gflops": 0.0, "gflops_spread": [0.0, 0.0], "n": 0}
  for n in sizes:
    x = jax.random.normal(jax.random.key(0), (n, n))
    t = timed(jax.jit(lambda a: a @ a), x, repeats=repeats)
    rate = lambda seconds: 2 * n ** 3 / seconds / 1e9
    if rate(t["median_s"]) > best["gflops"]:
      best = {"gflops": rate(t["median_s"]),
              "gflops_spread": [rate(t["max_s"]), rate(t["min_s"])], "n": n}
  return best


def matmul_peak(sizes=(1024, 2048, 3072), repeats: int = 5) -> float:
  """The machine's dense peak in GFLOP/s (see `matmul_peak_detail`)."""
  return matmul_peak_detail(sizes, repeats)["gflops"]


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
  skipped (the segment layout's messages at 100x would need 40 GB); a
  layout whose second call takes over 2 s is timed once (spread zero).
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
        rows.append({**row, "fwd_ms": None, "fwd_bwd_ms": None,
                     "fwd_ms_spread": None, "fwd_bwd_ms_spread": None})
        continue
      adjacency = agg.make_adjacency(users, items, num_users, num_items,
                                     layout=layout)
      forward = jax.jit(agg.aggregate)
      backward = jax.jit(jax.grad(
          lambda a, h: jnp.vdot(agg.aggregate(a, h), h), argnums=1))
      for name, fn in (("fwd_ms", forward), ("fwd_bwd_ms", backward)):
        t = timed(fn, adjacency, h, repeats=repeats, slow_s=2.0)
        row[name] = 1e3 * t["median_s"]
        row[name + "_spread"] = [1e3 * t["min_s"], 1e3 * t["max_s"]]
      rows.append(row)
      del adjacency
  return rows


def training_epoch(graph: DynamicGraph, config, workdir: str, version: int,
                   repeats: int = 3) -> dict:
  """One intended-task epoch (sampling + all steps) and one evaluation pass.

  Returns:
    `{"step_ms", "step_spread_ms", "epoch_s", "epoch_spread_s", "eval_s",
    "eval_spread_s", "compile_s", "steps", "gflop_per_step",
    "achieved_gflops", "layout"}`; flops from
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

  evaluation = timed(evaluate, state, repeats=repeats)
  step_s = epoch_s / steps
  return {"layout": data.inputs.adjacency.layout, "steps": steps,
          "step_ms": 1e3 * step_s,
          "step_spread_ms": [1e3 * t / steps for t in spread(times)],
          "epoch_s": epoch_s, "epoch_spread_s": spread(times),
          "eval_s": evaluation["median_s"],
          "eval_spread_s": [evaluation["min_s"], evaluation["max_s"]],
          "compile_s": compile_s,
          "gflop_per_step": flops / 1e9,
          "achieved_gflops": flops / 1e9 / step_s}


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
    t = timed(run, repeats=repeats)
    spreads[objective] = [t["min_s"], t["max_s"]]
    return t["median_s"]

  spreads = {}
  plain = epoch_time(Objective(), AlignmentInputs())
  single = epoch_time(Objective(transform="linear"),
                      AlignmentInputs(target=target))
  multi = epoch_time(Objective(transform="linear", multi_step=True),
                     AlignmentInputs(target=target, earlier=earlier))
  posthoc = epoch_time(Objective(train_model=False, transform="linear"),
                       AlignmentInputs(target=target, embeddings=embeddings))
  x, y = np.asarray(embeddings), np.asarray(target)
  lstsq = timed(transforms.fit_lstsq, x, y, repeats=repeats)
  procrustes = timed(transforms.fit_procrustes, x, y, repeats=repeats)
  epochs = {"plain": plain, "sloss": single, "mloss": multi,
            "posthoc": posthoc}
  return {
      "version": version,
      "epoch_s": plain,
      "epoch_spread_s": spreads[Objective()],
      # The epochs the figures below come from, each a median with spread.
      "epochs_s": {name: {"median": t, "spread": spread_of}
                   for (name, t), spread_of in zip(epochs.items(),
                                                   spreads.values())},
      "joint_sloss_extra_s": (single - plain) * config.epochs,
      "joint_mloss_extra_s": (multi - plain) * config.epochs,
      "posthoc_sgd_s": posthoc * config.posthoc_epochs,
      "posthoc_lstsq_s": lstsq["median_s"],
      "posthoc_lstsq_spread_s": [lstsq["min_s"], lstsq["max_s"]],
      "posthoc_procrustes_s": procrustes["median_s"],
      "posthoc_procrustes_spread_s": [procrustes["min_s"],
                                      procrustes["max_s"]],
  }


# Seed sweeps, consumer scoring, the scaling curve (issue 7).


def seed_sweep(graph: DynamicGraph, config, workdir: str, version: int = 0,
               num_seeds: int = 4, repeats: int = 3, seed: int = 0) -> dict:
  """One epoch of N seeds: trained together under vmap, and one by one.

  Both sides do the same work from the same states: sample each seed's
  epoch (host), then train it; the vmapped side stacks the seeds' states
  and batches and runs `bcjax.sweep.vmapped_epoch`, the sequential side
  runs `train_epoch` once per seed. Repeats alternate the two sides.

  Returns:
    `{"version", "seeds", "steps", "vmapped_s", "vmapped_spread_s",
    "sequential_s", "sequential_spread_s", "speedup" (sequential / vmapped
    medians: the throughput ratio), "vmapped_compile_s",
    "sequential_compile_s", "loss_max_abs_diff"}`; the last compares the
    two sides' first-epoch losses of every seed (they start equal).
  """
  from bcjax import sweep
  experiment = Experiment(graph, config, workdir)
  data, model = experiment.data(version), experiment.model(version)
  objective, align = Objective(), AlignmentInputs()
  keys = sweep.seed_keys(jax.random.key(seed), num_seeds)
  sample = experiment.batches(version)
  static = dict(model=model, task=experiment.task, objective=objective,
                lr=config.lr)

  def fresh():
    return [init_state(model, data.inputs, objective, jax.random.fold_in(k, 0),
                       None, config.lr) for k in keys]

  def vmapped(states, epoch):
    stacked, axes = sweep.stack_batches(
        [sample(jax.random.fold_in(k, epoch)) for k in keys])
    states, loss = sweep.vmapped_epoch(states, data.inputs, align, stacked,
                                       batch_axes=axes, **static)
    return states, np.asarray(loss)

  def sequential(states, epoch):
    out, losses = [], []
    for state, k in zip(states, keys):
      state, loss = train_epoch(state, data.inputs, align,
                                sample(jax.random.fold_in(k, epoch)), **static)
      out.append(state)
      losses.append(loss)
    return out, np.asarray(jax.device_get(losses))

  stacked_states, states = sweep.stack(fresh()), fresh()
  start = time.perf_counter()
  stacked_states, loss_v = vmapped(stacked_states, 1)
  compile_v = time.perf_counter() - start
  start = time.perf_counter()
  states, loss_s = sequential(states, 1)
  compile_s = time.perf_counter() - start
  times_v, times_s = [], []
  for r in range(repeats):
    for side in ((0, 1) if r % 2 == 0 else (1, 0)):
      start = time.perf_counter()
      if side == 0:
        stacked_states, _ = vmapped(stacked_states, r + 2)
        times_v.append(time.perf_counter() - start)
      else:
        states, _ = sequential(states, r + 2)
        times_s.append(time.perf_counter() - start)
  steps = int(np.any(sample(keys[0])[3], axis=1).sum())
  vm, sq = float(np.median(times_v)), float(np.median(times_s))
  return {"version": version, "seeds": num_seeds, "steps": steps,
          "vmapped_s": vm, "vmapped_spread_s": spread(times_v),
          "sequential_s": sq, "sequential_spread_s": spread(times_s),
          "speedup": sq / vm, "vmapped_compile_s": compile_v,
          "sequential_compile_s": compile_s,
          "loss_max_abs_diff": float(np.max(np.abs(loss_v - loss_s)))}


def consumer_eval(graph: DynamicGraph, config, repeats: int = 3,
                  num_strategies: int | None = None,
                  tasks: Sequence[str] | None = None, seed: int = 0) -> dict:
  """Scoring frozen consumer heads on every (strategy, version, seed) of
  every task: `bcjax.consumers.evaluate` (one jitted vmapped call per task,
  padding included) against `evaluate_reference` (a Python loop, one small
  jitted call per (strategy, version, seed)).

  The work is the run's: the tasks' real example rows of `graph` split at
  `config.times`; the embeddings are random `[rows, config.dims[0]]` tables
  per (strategy, version), the heads random of size
  `config.consumer_hidden[0]` with `config.consumer_seeds` seeds. Every
  task with scored versions (or those of `tasks`), the first
  `num_strategies` strategies (default all).

  Returns:
    `{"tasks", "strategies", "scored_versions", "seeds", "hidden", "dim",
    "evaluations" (task x strategy x version x seed), "vmapped_s",
    "vmapped_spread_s", "loop_s", "loop_spread_s", "speedup",
    "auc_max_abs_diff"}`.
  """
  from bcjax import consumers
  from bcjax.data import make_splits
  from bcjax.strategies import STRATEGIES
  splits = make_splits(graph, config.times)
  data = {name: d for name, d in consumers.all_task_data(splits).items()
          if d.evaluation and (tasks is None or name in tasks)}
  strategies = list(STRATEGIES)[:num_strategies]
  d, hidden = int(config.dims[0]), int(config.consumer_hidden[0])
  seeds = int(config.consumer_seeds)
  rng = np.random.default_rng(seed)
  table = lambda n: rng.standard_normal((n, d)).astype(np.float32)
  embeddings = {s: {k: (table(split.num_users), table(split.num_items))
                    for k, split in enumerate(splits)} for s in strategies}
  heads = {}
  for i, (name, task_data) in enumerate(data.items()):
    keys = jax.random.split(jax.random.key(seed + i), seeds)
    variables = consumers._init(hidden, d * len(task_data.task.inputs), keys)
    # Non-trivial running statistics, as trained heads have.
    variables = jax.tree.map(
        lambda a: a + 0.1 * jax.random.uniform(jax.random.key(i), a.shape),
        variables)
    heads[name] = consumers.Heads(hidden, 0.0, jax.device_get(variables),
                                  np.zeros(seeds), np.zeros(seeds, int), {})

  def vmapped():
    return {name: consumers.evaluate(
        heads[name], consumers.prepare_evaluation(d_, embeddings, strategies))
            for name, d_ in data.items()}

  def loop():
    return {name: consumers.evaluate_reference(heads[name], d_, embeddings,
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


def _peak_rss_gb() -> float:
  """This process's peak resident memory.

  Linux's VmHWM, the high-water mark of this program's memory: `ru_maxrss`
  is not used where VmHWM exists because Linux carries it across exec, so a
  child started by a big parent would report the parent's peak.
  """
  peak = _proc_gb("/proc/self/status", "VmHWM")
  if peak is not None:
    return peak
  # ru_maxrss: KiB on Linux, bytes on macOS.
  scale = 1 if sys.platform == "darwin" else 1024
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


def _device_peak_gb() -> float | None:
  """Peak bytes in use on the first device, where the backend reports it."""
  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:  # Backends without memory statistics.
    return None
  if not stats or "peak_bytes_in_use" not in stats:
    return None
  return stats["peak_bytes_in_use"] / 1e9


def scaling_point(num_interactions: int, dim: int = 256, layers: int = 2,
                  batch_size: int = 2048, max_steps: int = 4,
                  repeats: int = 3, layout: str = "", lr: float = 1e-3,
                  train_fraction: float = 0.9, seed: int = 0,
                  mode: str = "full", fanout: int = 10,
                  chunk: int = 4) -> dict:
  """The training epoch on a synthetic graph of one size, full or sampled.

  The graph is `make_synthetic(num_interactions)`, one version trained on
  its first `train_fraction` of interactions (PinSAGE, version-0 paper dims
  by default). Mode "full": every step computes every node's embedding;
  `min(max_steps, steps)` steps are timed (`repeats` runs after a warm-up
  that compiles). Mode "sampled": steps on neighbour samples
  (`bcjax.data.neighbours`, `fanout` per node and layer), `chunk` batches
  per jitted call, each timed chunk including its host tree sampling.
  The epoch is extrapolated from the median step: `epoch_s = step_s x
  steps + sample_s`, `sample_s` the host triple sampling of one whole epoch.
  Peak memory is this process's, so run one size per process (`scaling`
  does).

  Returns:
    `{"interactions", "mode", "epoch_s", "epoch_spread_s",
    "extrapolated", "steps", "steps_timed", "step_s", "step_spread_s",
    "sample_s", "compile_s", "setup_s", "peak_mem_gb", "peak_rss_gb",
    "setup_rss_gb", "base_rss_gb", "device_peak_gb", "train_interactions",
    "users",
    "items", "nodes_pad", "dim", "layers", "batch_size", "layout"}`.
  """
  from bcjax.data import make_splits
  from bcjax.data.sampling import TripleSampler
  from bcjax.data.synthetic import make_synthetic
  from bcjax.experiment import _round_up
  from bcjax.models import families
  from bcjax.tasks import BPRTask, epoch_batches
  start, base_rss = time.perf_counter(), _peak_rss_gb()
  graph = make_synthetic(num_interactions, seed=seed)
  (split,) = make_splits(graph, (train_fraction, 1.0))
  num_users_pad, num_items_pad = (_round_up(split.num_users),
                                  _round_up(split.num_items))
  inputs = families.make_inputs(
      "pinsage", split, num_users_pad=num_users_pad,
      num_items_pad=num_items_pad,
      num_edges_pad=_round_up(2 * split.num_train, 1024),
      attribute_nnz_pad={name: _round_up(int(kind.offsets[split.num_items]))
                         for name, kind in split.attributes.items()},
      layout=layout or None)
  vocab = tuple(a.num_values for a in graph.attributes.values())
  model = families.build("pinsage", dim, layers, vocab)
  sampler = TripleSampler(split.train_user, split.train_item,
                          split.num_users, split.num_items)
  del graph
  setup_s, setup_rss = time.perf_counter() - start, _peak_rss_gb()

  key = jax.random.key(seed)
  start = time.perf_counter()
  batches = epoch_batches(sampler, key, batch_size, num_users_pad)
  sample_s = time.perf_counter() - start
  steps = batches[0].shape[0]
  timed_steps = min(steps, max_steps)
  part = tuple(a[:timed_steps] for a in batches)
  objective, align, task = Objective(), AlignmentInputs(), BPRTask()
  state = init_state(model, inputs, objective, key, None, lr)
  if mode == "sampled":
    trees = NeighbourSampler(split.train_user, split.train_item,
                             num_users_pad, num_items_pad)
    timed_steps = chunk
    rng = np.random.default_rng(seed)

    def run(state):  # One chunk: sample its trees, then train on them.
      batches = next(sampled_bpr_chunks(trees, part, fanout, layers, chunk,
                                        rng))
      return train_epoch(state, inputs, align, batches, model=model,
                         task=task, objective=objective, lr=lr)
    part = tuple(a[:chunk] for a in batches)
  elif mode == "full":
    run = lambda state: train_epoch(state, inputs, align, part, model=model,
                                    task=task, objective=objective, lr=lr)
  else:
    raise ValueError(f"unknown mode {mode!r}; use 'full' or 'sampled'")
  del batches
  start = time.perf_counter()
  state, loss = run(state)
  loss.block_until_ready()
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    state, loss = run(state)
    loss.block_until_ready()
    times.append((time.perf_counter() - start) / timed_steps)
  step_s = float(np.median(times))
  device_peak = _device_peak_gb()
  rss = _peak_rss_gb()
  on_cpu = jax.devices()[0].platform == "cpu"
  return {"interactions": num_interactions, "mode": mode,
          "fanout": fanout if mode == "sampled" else None,
          "epoch_s": step_s * steps + sample_s,
          "epoch_spread_s": [t * steps + sample_s for t in spread(times)],
          "extrapolated": timed_steps < steps or mode == "sampled",
          "steps": steps,
          "steps_timed": timed_steps, "step_s": step_s,
          "step_spread_s": spread(times), "sample_s": sample_s,
          "compile_s": compile_s, "setup_s": setup_s,
          "peak_mem_gb": rss if on_cpu or device_peak is None else device_peak,
          "peak_rss_gb": rss, "setup_rss_gb": setup_rss,
          "base_rss_gb": base_rss,
          "device_peak_gb": device_peak,
          "train_interactions": int(split.num_train),
          "users": int(split.num_users), "items": int(split.num_items),
          "nodes_pad": num_users_pad + num_items_pad, "dim": dim,
          "layers": layers, "batch_size": batch_size,
          "layout": inputs.adjacency.layout}


def _proc_gb(path: str, field: str) -> float | None:
  """A `field: N kB` line of a Linux /proc file in GB, or None without it."""
  try:
    with open(path) as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) * 1024 / 1e9
  except OSError:
    pass
  return None


def _available_gb() -> float | None:
  """MemAvailable of /proc/meminfo, or None where there is none."""
  return _proc_gb("/proc/meminfo", "MemAvailable")


def scaling(sizes: Sequence[int], *, timeout_s: float = 3600,
            memory_limit_gb: float | None = None,
            log: Callable[[str], None] | None = None, **kwargs) -> list[dict]:
  """A training mode's cost curve: `scaling_point` of every size, each in a
  fresh Python process (its peak memory is its own).

  A size whose memory, projected linearly in interactions from the last
  measured size, exceeds `memory_limit_gb` (default 90% of the memory
  available now) is not run; a process that fails or runs past `timeout_s`
  gives a row with its reason. Such rows have `epoch_s` and `peak_mem_gb`
  None and a `skipped` reason.

  Args:
    sizes: interactions of each synthetic graph, ascending.
    timeout_s: wall-clock limit of one size.
    memory_limit_gb: see above.
    log: where one line per size goes (default stderr).
    **kwargs: passed to `scaling_point` (dim, layers, max_steps, ...).
  """
  log = log or (lambda line: print(line, file=sys.stderr, flush=True))
  if memory_limit_gb is None:
    available = _available_gb()
    memory_limit_gb = 0.9 * available if available else float("inf")
  rows, last = [], None
  for n in sizes:
    skipped = lambda why: {"interactions": n,
                           "mode": kwargs.get("mode", "full"), "epoch_s": None,
                           "peak_mem_gb": None, "skipped": why}
    if last is not None and last.get("peak_mem_gb"):
      # In sampled mode only the setup (graph, samplers) grows with the
      # data; the rest (a chunk of fixed-shape trees) does not.
      grows = (last["setup_rss_gb"] - last["base_rss_gb"]
               if last["mode"] == "sampled" else last["peak_mem_gb"])
      projected = last["peak_mem_gb"] + grows * (n / last["interactions"] - 1)
      if projected > memory_limit_gb:
        rows.append(skipped(f"projected {projected:.1f} GB > "
                            f"{memory_limit_gb:.1f} GB available"))
        log(f"[scaling] {n:,} interactions: skipped ({rows[-1]['skipped']})")
        continue
    command = [sys.executable, "-m", "bcjax.benchmarks", "scaling_point",
               json.dumps({"num_interactions": int(n), **kwargs})]
    start = time.perf_counter()
    try:
      done = subprocess.run(command, capture_output=True, text=True,
                            timeout=timeout_s, env=os.environ.copy())
    except subprocess.TimeoutExpired:
      rows.append(skipped(f"ran past {timeout_s:.0f} s"))
      log(f"[scaling] {n:,} interactions: {rows[-1]['skipped']}")
      continue
    if done.returncode != 0:
      tail = (done.stderr or "").strip().splitlines()[-1:] or ["no output"]
      rows.append(skipped(f"exit {done.returncode}: {tail[0][:200]}"))
      log(f"[scaling] {n:,} interactions: failed ({rows[-1]['skipped']})")
      continue
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["wall_s"] = time.perf_counter() - start
    rows.append(row)
    last = row
    log(f"[scaling] {row['mode']}, {n:,} interactions: epoch "
        f"{row['epoch_s']:.2f} s"
        f"{' (extrapolated)' if row['extrapolated'] else ''}, peak "
        f"{row['peak_mem_gb']:.2f} GB ({row['wall_s']:.0f} s)")
  return rows


if __name__ == "__main__":
  if len(sys.argv) != 3 or sys.argv[1] != "scaling_point":
    sys.exit("usage: python -m bcjax.benchmarks scaling_point '<json kwargs>'")
  print(json.dumps(scaling_point(**json.loads(sys.argv[2]))))
