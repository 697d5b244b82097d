"""The record of bcjax's speed and memory on this machine: a table and JSON.

  python -m launch.benchmark                       # --suite=quick
  python -m launch.benchmark --suite=full --workdir=runs/bench
  python -m launch.benchmark --format=json --out=bench.json
  python -m launch.benchmark --suite=accelerator   # on a GPU or TPU

Every figure is the median of several runs with its spread [min, max]; the
JAX version, the devices and a dense-matmul peak measured in the same run
head the record. Sections (`--sections`, default the suite's): the dense
matmul peak; the BatchNorm and dropout layers against JAX's own forms
(`layers`); one training epoch and one evaluation pass at paper sizes on
MovieLens-100k (`--versions`); two pinned worker processes against one
process (`workers`, quick preset, version 4); each strategy family's extra work per
version; store reads; a residual-MLP chain of backward maps against its
one-map collapses (`collapse`: latency, held-out error, frozen-index
Recall@50); the aggregation candidates at multiples of
MovieLens-100k; a seed sweep (N seeds vmapped against N sequential runs,
quick preset); consumer scoring (vmapped against a Python loop over
(strategy, version, seed), quick-preset shapes); and the full-graph mode's
cost curve on synthetic graphs (one process per size, epochs of the big
sizes extrapolated from a few timed steps).

The JSON is written to `--out` (default `<workdir>/benchmark.json`) and the
table next to it (`.md`), whatever `--format` prints. `--suite=quick` (the
default) stays under ten minutes on a 2-core CPU: fewer repeats, scaling up
to 10^6 interactions; `--suite=full` adds 10^7 (as memory allows), more
seeds and repeats. `--suite=accelerator` is for a GPU or TPU: the paper-size
epoch and evaluation of every version, each objective's epoch, the seed
sweep and the consumer scoring at paper sizes, and from them the projected
wall time of `launch.reproduce --config=launch/configs/paper.py`
(`bcjax.benchmarks.projection.paper_wall_time`); it runs on any backend (on a CPU it
takes hours; the suite's test runs it at reduced size).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
import sys
import tempfile
import time
from typing import Callable

from absl import flags
import jax

from bcjax.benchmarks import (
  measure,
  projection,
  scaling,
  serving,
  table,
  training as training_bench,
)
from bcjax.benchmarks.collapse import chain_collapse
from bcjax.data import load_dataset
from bcjax.runs.configs import paper, quick
from bcjax.util import io
from launch import common

SECTIONS = ("matmul", "layers", "versions", "overheads", "workers", "store",
            "legacy_index", "collapse",
            "aggregation", "sweep", "consumer_eval", "scaling")
# Computed from the measured sections (versions and overheads), not timed.
PROJECTION = "projection"

FLAGS = flags.FLAGS
flags.DEFINE_enum("suite", "quick", ["quick", "full", "accelerator"],
                  "quick: under ten minutes on 2 CPU cores; full: everything, "
                  "scaling to 10^7 interactions; accelerator: paper sizes "
                  "and the projected wall time of the paper preset.")
flags.DEFINE_enum("format", "table", ["table", "json"], "What is printed.")
flags.DEFINE_string("workdir", ".", "Where the JSON and the table go.")
flags.DEFINE_string("out", None,
                    "The JSON file (default <workdir>/benchmark.json); the "
                    "table is written next to it with suffix .md.")
flags.DEFINE_list("sections", None, "Sections to run (default the suite's).")
flags.DEFINE_list("versions", None, "Versions timed at paper sizes "
                  "(default the suite's: 0,4).")
flags.DEFINE_list("agg_scales", None, "Aggregation candidates at these "
                  "multiples of MovieLens-100k (default the suite's).")
flags.DEFINE_list("scaling_sizes", None, "Interactions of the synthetic "
                  "graphs of the scaling curve (default the suite's).")
flags.DEFINE_integer("repeats", None, "Timed repetitions per figure "
                     "(default the suite's).", lower_bound=1)
flags.DEFINE_integer("sweep_seeds", None, "Seeds of the sweep (default the "
                     "suite's).", lower_bound=1)
flags.DEFINE_string("layout", "", "Force an aggregation layout for training.")
flags.DEFINE_integer("overhead_version", None,
                     "Version whose per-strategy extra work is timed "
                     "(default the suite's: quick 1, full 4).")


@dataclasses.dataclass(frozen=True)
class Suite:
  """What one benchmark run measures, and how often.

  The configs are functions (returning fresh ConfigDicts): `config` gives
  the paper-size training figures, `sweep_config` the sweep's and the
  consumers' quick-preset sizes.
  """
  name: str
  repeats: int
  versions: tuple[int, ...] = (0, 4)
  train_repeats: int = 2
  overhead_version: int = 4
  overhead_repeats: int = 2
  agg_scales: tuple[int, ...] = (1, 10)
  agg_dim: int = 512
  agg_max_bytes: float = 4e9  # layouts needing more are reported skipped
  matmul_sizes: tuple[int, ...] = (1024, 2048, 3072)
  store_dims: tuple[int, ...] = (256, 320, 384, 448, 512)
  store_rows: tuple[int, int] = (943, 1682)
  # The collapse section: per-query budget (us) and each residual MLP's
  # Adam steps (its chain over `store_dims`).
  collapse_budget_us: float = 10.0
  collapse_steps: int = 500
  consumer_tasks: tuple[str, ...] | None = None  # None: all
  consumer_strategies: int | None = None          # None: all
  sweep_seeds: int = 4
  sweep_version: int = 0
  workers_version: int = 4
  scaling_sizes: tuple[int, ...] = (10**5, 10**6, 10**7)   # sampled mode
  full_scaling_sizes: tuple[int, ...] = (10**5, 3 * 10**5, 10**6)
  scaling_fanout: int = 10
  scaling_dim: int = 256
  scaling_layers: int = 2
  scaling_max_steps: int = 3
  scaling_repeats: int = 3
  scaling_timeout_s: float = 600
  config: Callable = paper.get_config
  sweep_config: Callable = quick.get_config
  sections: tuple[str, ...] = SECTIONS


SUITES = {
    # Under ten minutes on 2 busy CPU cores: overheads at version 1
    # (320-d, 2 layers) instead of 4; no dense or segment aggregation at
    # 10x; scaling to 10^6 interactions.
    "quick": Suite("quick", repeats=3, overhead_version=1,
                   agg_max_bytes=1e9, collapse_steps=200),
    "full": Suite("full", repeats=5, train_repeats=3, overhead_repeats=3,
                  agg_scales=(1, 10, 100), sweep_seeds=8,
                  full_scaling_sizes=(10**5, 3 * 10**5, 10**6, 3 * 10**6,
                                      10**7),
                  scaling_max_steps=4, scaling_timeout_s=3600),
    # Paper sizes everywhere (every version, so that the projection has
    # each one's epoch); the objectives' epochs at the last version.
    "accelerator": Suite("accelerator", repeats=3, versions=(0, 1, 2, 3, 4),
                         overhead_version=4, sweep_config=paper.get_config,
                         sections=("matmul", "versions", "overheads", "sweep",
                                   "consumer_eval", PROJECTION)),
}


def _stderr(line: str) -> None:
  print(line, file=sys.stderr, flush=True)


def run_suite(suite: Suite, graph, sections=None, layout: str = "",
              log: Callable[[str], None] = _stderr) -> dict:
  """Runs `sections` (default the suite's) on `graph`; returns the JSON
  record.

  Raises:
    ValueError: the projection without the figures of every version.
  """
  begin = time.perf_counter()
  sections = suite.sections if sections is None else sections
  config, sweep_config = suite.config(), suite.sweep_config()
  config.layout = sweep_config.layout = layout
  result = {"suite": suite.name, "jax_version": jax.__version__,
            "devices": [f"{d.platform}:{d.device_kind}" for d in jax.devices()],
            "device": str(jax.devices()[0].device_kind),
            "num_devices": jax.device_count(), "cpu_count": os.cpu_count(),
            "dataset": graph.name,
            "load_average_start": list(os.getloadavg())}

  def section(name: str, what: str):
    log(f"[benchmark {time.perf_counter() - begin:5.0f}s] {name}: {what} ...")

  if "matmul" in sections:
    section("matmul", f"dense n x n x n peak, n in {suite.matmul_sizes}")
    peak = measure.matmul_peak_detail(suite.matmul_sizes, suite.repeats)
    result["matmul_peak_gflops"] = peak["gflops"]
    result["matmul_peak_spread_gflops"] = peak["gflops_spread"]
    result["matmul_peak_n"] = peak["n"]
  if "layers" in sections:
    section("layers", "BatchNorm (hand VJP vs JAX's) and dropout masks "
            "(16-bit vs bernoulli)")
    result["layers"] = training_bench.layer_kernels(repeats=max(30, suite.repeats))
  with tempfile.TemporaryDirectory() as workdir:
    if "versions" in sections:
      result["versions"] = {}
      for k in suite.versions:
        section("versions", f"paper-size epoch and evaluation of version {k}")
        result["versions"][str(k)] = training_bench.training_epoch(
            graph, config, workdir, k, repeats=suite.train_repeats)
    if "overheads" in sections:
      section("overheads", f"strategy extra work at version "
              f"{suite.overhead_version}")
      result["strategy_overheads"] = training_bench.strategy_overheads(
          graph, config, f"{workdir}/overheads", suite.overhead_version,
          repeats=suite.overhead_repeats)
    if "workers" in sections:
      section("workers", "2 pinned processes vs "
              f"one, {sweep_config.preset} preset version "
              f"{suite.workers_version}")
      result["workers"] = {"preset": sweep_config.preset,
                           **training_bench.worker_throughput(
                               graph, sweep_config, f"{workdir}/workers",
                               suite.workers_version,
                               repeats=suite.repeats)}
    if "sweep" in sections:
      section("sweep", f"{suite.sweep_seeds} seeds vmapped vs sequential, "
              f"version {suite.sweep_version}, {sweep_config.preset} preset")
      result["sweep"] = {"preset": sweep_config.preset, **training_bench.seed_sweep(
          graph, sweep_config, f"{workdir}/sweep", suite.sweep_version,
          num_seeds=suite.sweep_seeds, repeats=suite.repeats)}
  if "consumer_eval" in sections:
    section("consumer_eval", "vmapped scoring vs a loop over (strategy, "
            "version, seed)")
    result["consumer_eval"] = {"preset": sweep_config.preset,
                               **serving.consumer_eval(
                                   graph, sweep_config, repeats=suite.repeats,
                                   num_strategies=suite.consumer_strategies,
                                   tasks=suite.consumer_tasks)}
  if "store" in sections:
    section("store", "reading version 0 from the last version")
    result["store"] = serving.store_read(
        suite.store_dims, *suite.store_rows, repeats=max(5, suite.repeats))
  if "legacy_index" in sections:
    section("legacy_index", "serving through a frozen version-0 HNSW index")
    result["legacy_index"] = serving.legacy_index(
        suite.store_dims, *suite.store_rows, repeats=max(5, suite.repeats))
  if "collapse" in sections:
    section("collapse", f"a {len(suite.store_dims) - 1}-hop residual-MLP chain "
            f"against its collapses, budget {suite.collapse_budget_us:g} us")
    result["collapse"] = chain_collapse(
        graph, suite.store_dims, suite.collapse_budget_us,
        steps=suite.collapse_steps, repeats=max(9, suite.repeats))
  if "aggregation" in sections:
    section("aggregation", f"candidates at {suite.agg_scales}x")
    result["aggregation"] = training_bench.aggregation_candidates(
        graph.user, graph.item, scales=suite.agg_scales, dim=suite.agg_dim,
        repeats=suite.repeats, max_bytes=suite.agg_max_bytes)
  if "scaling" in sections:
    result["scaling"] = []
    for mode, sizes in (("sampled", suite.scaling_sizes),
                        ("full", suite.full_scaling_sizes)):
      section("scaling", f"{mode} epoch on synthetic graphs of "
              f"{', '.join(f'{n:,}' for n in sizes)} interactions")
      result["scaling"] += scaling.scaling(
          sizes, timeout_s=suite.scaling_timeout_s, log=log,
          dim=suite.scaling_dim, layers=suite.scaling_layers,
          max_steps=suite.scaling_max_steps, repeats=suite.scaling_repeats,
          layout=layout, mode=mode, fanout=suite.scaling_fanout)
  if PROJECTION in sections:
    section(PROJECTION, f"wall time of the {config.preset} preset")
    result["projection"] = {"preset": config.preset,
                            **projection.paper_wall_time(
                                config, result["versions"],
                                result["strategy_overheads"])}
  result["load_average_end"] = list(os.getloadavg())
  result["total_s"] = time.perf_counter() - begin
  log(f"[benchmark {result['total_s']:5.0f}s] done")
  return result


def _suite_from_flags() -> Suite:
  suite = SUITES[FLAGS.suite]
  overrides = {}
  if FLAGS.repeats is not None:
    overrides["repeats"] = FLAGS.repeats
  if FLAGS.versions is not None:
    overrides["versions"] = tuple(int(v) for v in FLAGS.versions)
  if FLAGS.agg_scales is not None:
    overrides["agg_scales"] = tuple(int(s) for s in FLAGS.agg_scales)
  if FLAGS.scaling_sizes is not None:
    overrides["scaling_sizes"] = tuple(int(float(s))
                                       for s in FLAGS.scaling_sizes)
  if FLAGS.sweep_seeds is not None:
    overrides["sweep_seeds"] = FLAGS.sweep_seeds
  if FLAGS.overhead_version is not None:
    overrides["overhead_version"] = FLAGS.overhead_version
  return dataclasses.replace(suite, **overrides)


def main(argv):
  del argv
  known = (*SECTIONS, PROJECTION)
  unknown = sorted(set(FLAGS.sections or ()) - set(known))
  if unknown:
    common.fail(f"--sections: unknown {', '.join(unknown)}; known: "
                f"{', '.join(known)}")
  try:
    suite = _suite_from_flags()
  except ValueError as error:
    common.fail(error)
  sections = FLAGS.sections or suite.sections
  if PROJECTION in sections and not {"versions", "overheads"} <= set(
      sections):
    common.fail("--sections: projection needs the sections versions and "
                "overheads")
  out = Path(common.output_path("out", FLAGS.out or
                                Path(FLAGS.workdir) / "benchmark.json"))
  common.output_path("out", out.with_suffix(".md"))
  try:
    result = run_suite(suite, load_dataset("ml100k"), sections=sections,
                       layout=FLAGS.layout)
  except ValueError as error:  # A projection without every version.
    common.fail(error)
  text = table.record_table(result)
  io.make_dir(out.parent)
  io.save_json(out, result)
  io.save_bytes(out.with_suffix(".md"), (text + "\n").encode())
  _stderr(f"wrote {out} and {out.with_suffix('.md')}")
  print(json.dumps(result, indent=1) if FLAGS.format == "json" else text)


if __name__ == "__main__":
  common.run(main, resumable=False)
