"""Training-side figures: aggregation layouts, the epoch per version, the
extra cost of each strategy, seeds trained under `vmap`, worker processes
against one process, and the BatchNorm and dropout layers against JAX's own
forms.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bcjax.backward import fits as backward_fits
from bcjax.benchmarks.measure import spread, timed
from bcjax.core import sweep
from bcjax.core.epoch import (
  AlignmentInputs,
  EmbeddingLoss,
  Objective,
  adam,
  embed,
  init_state,
  train_epoch,
)
from bcjax.data import DynamicGraph
from bcjax.models import aggregate as agg
from bcjax.models.batchnorm import masked_batch_norm, masked_batch_norm_autodiff
from bcjax.models.consumer import dropout
from bcjax.paper import workers as workers_lib
from bcjax.paper.experiment import Experiment
from bcjax.util import keys as key_streams


def replicated_graph(user: np.ndarray, item: np.ndarray, copies: int,
                     seed: int = 0):
  """`copies` disjoint copies of a bipartite graph, items shifted per copy."""
  rng = np.random.default_rng(seed)
  num_users, num_items = int(user.max()) + 1, int(item.max()) + 1
  users = np.concatenate([user + c * num_users for c in range(copies)])
  items = np.concatenate([(item + rng.integers(num_items)) % num_items
                          + c * num_items for c in range(copies)])
  return users, items, num_users * copies, num_items * copies


def working_bytes(layout: str, edges: int, num_users: int, num_items: int,
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
      if working_bytes(layout, row["edges"], num_users, num_items,
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
  data, model = experiment.versions.data(version), experiment.versions.model(version)
  objective = Objective()
  state = init_state(model, data.inputs, objective, jax.random.key(0), None,
                     adam(config.lr))
  loss_fn = EmbeddingLoss(model, experiment.versions.task, objective)
  run = lambda state, batches: train_epoch(  # noqa: E731
      state, (data.inputs, AlignmentInputs()), batches, loss=loss_fn)
  one = experiment.versions.batches(version)(jax.random.key(0))
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
  state, means = run(state, one)  # Warm-up (compiles the donated variant).
  jax.block_until_ready(means)
  for r in range(repeats):
    start = time.perf_counter()
    batches = experiment.versions.batches(version)(jax.random.key(r + 1))
    state, means = run(state, batches)
    jax.block_until_ready(means)
    times.append(time.perf_counter() - start)
  epoch_s = float(np.median(times))
  steps = int(np.any(one[3], axis=1).sum())  # Real batches, not padding.

  def evaluate(state):
    z = embed(model, state.model_variables(), data.inputs)
    return experiment.versions.recall(z, version)

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


def strategy_overheads(graph: DynamicGraph, config, workdir: str,
                       version: int, repeats: int = 3) -> dict:
  """Seconds of extra work per version that each family of strategies adds.

  Joint methods: (alignment epoch - plain epoch) x epochs; post-hoc methods:
  their B_k epoch x posthoc epochs; closed-form fits: one solve.
  """
  experiment = Experiment(graph, config, workdir)
  data, model = experiment.versions.data(version), experiment.versions.model(version)
  d, d_prev = config.dims[version], config.dims[version - 1]
  rng = np.random.default_rng(0)
  n = experiment.versions.num_users_pad + experiment.versions.num_items_pad
  target = jnp.asarray(rng.normal(size=(n, d_prev)), jnp.float32)
  earlier = tuple(jnp.asarray(rng.normal(size=(config.dims[j], config.dims[j - 1])),
                              jnp.float32) for j in range(version - 1, 0, -1))
  embeddings = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
  batches = experiment.versions.batches(version)(jax.random.key(0))

  def epoch_time(objective, align):
    variables = model.init(jax.random.key(0), data.inputs)
    state = init_state(model, data.inputs, objective, jax.random.key(1),
                       d_prev, adam(config.lr), model_variables=variables)
    loss_fn = EmbeddingLoss(model, experiment.versions.task, objective)
    def run():
      nonlocal state
      state, value = train_epoch(state, (data.inputs, align), batches,
                                 loss=loss_fn)
      return value
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
  # Every post-hoc fit of B_k (`backward_fits.FITS`): one fit each.
  fits = {name: timed(backward_fits.fit, name, x, y, jax.random.key(0),
                      repeats=repeats) for name in backward_fits.FITS}
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
      **{f"posthoc_{name}_s": t["median_s"] for name, t in fits.items()},
      **{f"posthoc_{name}_spread_s": [t["min_s"], t["max_s"]]
         for name, t in fits.items()},
  }


# Seed sweeps, consumer scoring, the scaling curve (issue 7).


def seed_sweep(graph: DynamicGraph, config, workdir: str, version: int = 0,
               num_seeds: int = 4, repeats: int = 3, seed: int = 0) -> dict:
  """One epoch of N seeds: trained together under vmap, and one by one.

  Both sides do the same work from the same states: sample each seed's
  epoch (host), then train it; the vmapped side stacks the seeds' states
  and batches and runs `bcjax.core.sweep.vmapped_epoch`, the sequential side
  runs `train_epoch` once per seed. Repeats alternate the two sides.

  Returns:
    `{"version", "seeds", "steps", "vmapped_s", "vmapped_spread_s",
    "sequential_s", "sequential_spread_s", "speedup" (sequential / vmapped
    medians: the throughput ratio), "vmapped_compile_s",
    "sequential_compile_s", "loss_max_abs_diff"}`; the last compares the
    two sides' first-epoch losses of every seed (they start equal).
  """
  experiment = Experiment(graph, config, workdir)
  data, model = experiment.versions.data(version), experiment.versions.model(version)
  objective, shared = Objective(), (data.inputs, AlignmentInputs())
  keys = sweep.seed_keys(jax.random.key(seed), num_seeds)
  sample = experiment.versions.batches(version)
  loss_fn = EmbeddingLoss(model, experiment.versions.task, objective)

  def fresh():
    return [init_state(model, data.inputs, objective, key_streams.derive(k, "init"),
                       None, adam(config.lr)) for k in keys]

  def vmapped(states, epoch):
    stacked, axes = sweep.stack_batches(
        [sample(key_streams.derive(k, "epoch", epoch)) for k in keys])
    states, losses = sweep.vmapped_epoch(states, shared, stacked,
                                         loss=loss_fn, batch_axes=axes)
    return states, np.asarray(losses)

  def sequential(states, epoch):
    out, losses = [], []
    for state, k in zip(states, keys):
      state, value = train_epoch(state, shared,
                                 sample(key_streams.derive(k, "epoch", epoch)),
                                 loss=loss_fn)
      out.append(state)
      losses.append(value["loss"])
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


def layer_kernels(node_shape=(2688, 128), batch_shape=(5, 2048, 128),
                  repeats: int = 5) -> dict:
  """The two layers whose CPU cost was rewritten, against JAX's own form.

  BatchNorm: forward + backward of `masked_batch_norm` (hand-written VJP)
  and of `masked_batch_norm_autodiff` on `node_shape` activations (a
  quick-preset version-4 node array). Dropout: the consumers' 16-bit masks
  (`bcjax.models.consumer.dropout`) against `jax.random.bernoulli` masks
  at `batch_shape` (seeds x batch x h), rate 0.5.

  Returns:
    `{"batchnorm_ms", "batchnorm_autodiff_ms", "dropout_ms",
    "bernoulli_ms"}` medians with their `_spread` [min, max] and the two
    ratios.
  """
  x, cotangent = jax.random.normal(jax.random.key(0), (2,) + node_shape)
  w = (jnp.arange(node_shape[0]) < node_shape[0] - 63).astype(jnp.float32)
  scale, bias = jnp.ones(node_shape[1]), jnp.zeros(node_shape[1])

  def norm_step(norm):  # A linear loss: nothing but the layer is timed.
    loss = lambda x, s, b: jnp.sum(norm(x, w, s, b, 1e-5)[0] * cotangent)
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))

  masks = jax.vmap(lambda k: dropout(jnp.ones(batch_shape[1:]), 0.5, k))
  coins = jax.vmap(lambda k: jax.random.bernoulli(k, 0.5, batch_shape[1:]))
  seeds = jax.random.split(jax.random.key(1), batch_shape[0])
  out = {}
  for name, fn, args in (
      ("batchnorm", norm_step(masked_batch_norm), (x, scale, bias)),
      ("batchnorm_autodiff", norm_step(masked_batch_norm_autodiff),
       (x, scale, bias)),
      ("dropout", jax.jit(masks), (seeds,)),
      ("bernoulli", jax.jit(coins), (seeds,))):
    t = timed(fn, *args, repeats=repeats)
    out[f"{name}_ms"] = 1e3 * t["median_s"]
    out[f"{name}_ms_spread"] = [1e3 * t["min_s"], 1e3 * t["max_s"]]
  out["batchnorm_speedup"] = out["batchnorm_autodiff_ms"] / out["batchnorm_ms"]
  out["dropout_speedup"] = out["bernoulli_ms"] / out["dropout_ms"]
  out.update(node_shape=list(node_shape), batch_shape=list(batch_shape))
  return out


def worker_throughput(graph: DynamicGraph, config, workdir: str,
                      version: int, workers: int = 2,
                      repeats: int = 3) -> dict:
  """Training epochs per second: `workers` processes pinned to their own
  CPUs (`bcjax.paper.workers`, what `config.workers` runs), all at once, against
  one process on every CPU (`training_epoch` of `version`, each).

  Returns:
    ``{"one_process_epoch_s", "worker_epoch_s": [per worker],``
    ``"one_process_epochs_per_s", "workers_epochs_per_s", "speedup",
    "workers", "version"}``.
  """
  one = training_epoch(graph, config, f"{workdir}/one", version,
                       repeats=repeats)["epoch_s"]
  with workers_lib.pinned_processes(graph, workers) as pool:
    each = [f.result() for f in [
        pool.submit(_pinned_epoch_s, config.to_dict(), f"{workdir}/w{i}",
                    version, repeats) for i in range(workers)]]
  rate = sum(1.0 / t for t in each)
  return {"one_process_epoch_s": one, "worker_epoch_s": each,
          "one_process_epochs_per_s": 1.0 / one,
          "workers_epochs_per_s": rate, "speedup": rate * one,
          "workers": workers, "version": version}


def _pinned_epoch_s(config: dict, workdir: str, version: int,
                    repeats: int) -> float:
  """`training_epoch`'s median epoch in a `pinned_processes` worker."""
  return training_epoch(workers_lib.worker_graph(),
                        ml_collections.ConfigDict(config), workdir, version,
                        repeats=repeats)["epoch_s"]
