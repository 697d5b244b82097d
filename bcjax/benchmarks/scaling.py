"""The training cost curve over synthetic graph sizes, one process per size.

`python -m bcjax.benchmarks.scaling '<json kwargs>'` runs one point and
prints its row as JSON (`scaling` starts one such process per graph size, so
that peak memory is the size's own).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Callable, Sequence

import jax
import numpy as np

from bcjax.benchmarks.measure import (
  available_gb,
  device_peak_gb,
  peak_rss_gb,
  spread,
)
from bcjax.core.tasks import BPRTask, epoch_batches
from bcjax.core.epoch import AlignmentInputs, EmbeddingLoss, Objective, adam, init_state, train_epoch
from bcjax.data import make_splits
from bcjax.data.neighbours import (
  NeighbourSampler,
  SampledTask,
  sampled_bpr_chunks,
)
from bcjax.data.sampling import TripleSampler
from bcjax.data.synthetic import make_synthetic
from bcjax.models import families
from bcjax.util.progress import to_stderr


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
  start, base_rss = time.perf_counter(), peak_rss_gb()
  graph = make_synthetic(num_interactions, seed=seed)
  (split,) = make_splits(graph, (train_fraction, 1.0))
  budget = families.Budget.covering([split])
  num_users_pad, num_items_pad = budget.num_users_pad, budget.num_items_pad
  inputs = families.make_inputs("pinsage", split, budget,
                                layout=layout or None)
  vocab = tuple(a.num_values for a in graph.attributes.values())
  model = families.build("pinsage", dim, layers, vocab)
  sampler = TripleSampler(split.train_user, split.train_item,
                          split.num_users, split.num_items)
  del graph
  setup_s, setup_rss = time.perf_counter() - start, peak_rss_gb()

  key = jax.random.key(seed)
  start = time.perf_counter()
  batches = epoch_batches(sampler, key, batch_size, num_users_pad)
  sample_s = time.perf_counter() - start
  steps = batches[0].shape[0]
  timed_steps = min(steps, max_steps)
  part = tuple(a[:timed_steps] for a in batches)
  objective, shared = Objective(), (inputs, AlignmentInputs())
  state = init_state(model, inputs, objective, key, None, adam(lr))
  if mode == "sampled":
    trees = NeighbourSampler(split.train_user, split.train_item,
                             num_users_pad, num_items_pad)
    timed_steps = chunk
    rng = np.random.default_rng(seed)

    def run(state):  # One chunk: sample its trees, then train on them.
      batches = next(sampled_bpr_chunks(trees, part, fanout, layers, chunk,
                                        rng))
      return train_epoch(state, shared, batches, loss=EmbeddingLoss(
          model, SampledTask(BPRTask()), objective))
    part = tuple(a[:chunk] for a in batches)
  elif mode == "full":
    run = lambda state: train_epoch(state, shared, part, loss=EmbeddingLoss(  # noqa: E731
        model, BPRTask(), objective))
  else:
    raise ValueError(f"unknown mode {mode!r}; use 'full' or 'sampled'")
  del batches
  start = time.perf_counter()
  state, means = run(state)
  jax.block_until_ready(means)
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    state, means = run(state)
    jax.block_until_ready(means)
    times.append((time.perf_counter() - start) / timed_steps)
  step_s = float(np.median(times))
  device_peak = device_peak_gb()
  rss = peak_rss_gb()
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
  log = log or to_stderr
  if memory_limit_gb is None:
    available = available_gb()
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
    command = [sys.executable, "-m", "bcjax.benchmarks.scaling",
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
  if len(sys.argv) != 2:
    sys.exit("usage: python -m bcjax.benchmarks.scaling '<json kwargs>'")
  print(json.dumps(scaling_point(**json.loads(sys.argv[1]))))
