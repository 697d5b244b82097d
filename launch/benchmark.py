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
version; store reads; the aggregation candidates at multiples of
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
(`bcjax.benchmarks.paper_wall_time`); it runs on any backend (on a CPU it
takes hours; the suite's test runs it at reduced size).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import jax
from absl import app, flags

from bcjax import adapters, benchmarks, io
from bcjax.data import load_dataset
from launch import common
from bcjax.configs import paper, quick

SECTIONS = ("matmul", "layers", "versions", "overheads", "workers", "store",
            "legacy_index",
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
                   agg_max_bytes=1e9),
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
    peak = benchmarks.matmul_peak_detail(suite.matmul_sizes, suite.repeats)
    result["matmul_peak_gflops"] = peak["gflops"]
    result["matmul_peak_spread_gflops"] = peak["gflops_spread"]
    result["matmul_peak_n"] = peak["n"]
  if "layers" in sections:
    section("layers", "BatchNorm (hand VJP vs JAX's) and dropout masks "
            "(16-bit vs bernoulli)")
    result["layers"] = benchmarks.layer_kernels(repeats=max(30, suite.repeats))
  with tempfile.TemporaryDirectory() as workdir:
    if "versions" in sections:
      result["versions"] = {}
      for k in suite.versions:
        section("versions", f"paper-size epoch and evaluation of version {k}")
        result["versions"][str(k)] = benchmarks.training_epoch(
            graph, config, workdir, k, repeats=suite.train_repeats)
    if "overheads" in sections:
      section("overheads", f"strategy extra work at version "
              f"{suite.overhead_version}")
      result["strategy_overheads"] = benchmarks.strategy_overheads(
          graph, config, f"{workdir}/overheads", suite.overhead_version,
          repeats=suite.overhead_repeats)
    if "workers" in sections:
      section("workers", "2 pinned processes vs "
              f"one, {sweep_config.preset} preset version "
              f"{suite.workers_version}")
      result["workers"] = {"preset": sweep_config.preset,
                           **benchmarks.worker_throughput(
                               graph, sweep_config, f"{workdir}/workers",
                               suite.workers_version,
                               repeats=suite.repeats)}
    if "sweep" in sections:
      section("sweep", f"{suite.sweep_seeds} seeds vmapped vs sequential, "
              f"version {suite.sweep_version}, {sweep_config.preset} preset")
      result["sweep"] = {"preset": sweep_config.preset, **benchmarks.seed_sweep(
          graph, sweep_config, f"{workdir}/sweep", suite.sweep_version,
          num_seeds=suite.sweep_seeds, repeats=suite.repeats)}
  if "consumer_eval" in sections:
    section("consumer_eval", "vmapped scoring vs a loop over (strategy, "
            "version, seed)")
    result["consumer_eval"] = {"preset": sweep_config.preset,
                               **benchmarks.consumer_eval(
                                   graph, sweep_config, repeats=suite.repeats,
                                   num_strategies=suite.consumer_strategies,
                                   tasks=suite.consumer_tasks)}
  if "store" in sections:
    section("store", "reading version 0 from the last version")
    result["store"] = benchmarks.store_read(
        suite.store_dims, *suite.store_rows, repeats=max(5, suite.repeats))
  if "legacy_index" in sections:
    section("legacy_index", "serving through a frozen version-0 HNSW index")
    result["legacy_index"] = benchmarks.legacy_index(
        suite.store_dims, *suite.store_rows, repeats=max(5, suite.repeats))
  if "aggregation" in sections:
    section("aggregation", f"candidates at {suite.agg_scales}x")
    result["aggregation"] = benchmarks.aggregation_candidates(
        graph.user, graph.item, scales=suite.agg_scales, dim=suite.agg_dim,
        repeats=suite.repeats, max_bytes=suite.agg_max_bytes)
  if "scaling" in sections:
    result["scaling"] = []
    for mode, sizes in (("sampled", suite.scaling_sizes),
                        ("full", suite.full_scaling_sizes)):
      section("scaling", f"{mode} epoch on synthetic graphs of "
              f"{', '.join(f'{n:,}' for n in sizes)} interactions")
      result["scaling"] += benchmarks.scaling(
          sizes, timeout_s=suite.scaling_timeout_s, log=log,
          dim=suite.scaling_dim, layers=suite.scaling_layers,
          max_steps=suite.scaling_max_steps, repeats=suite.scaling_repeats,
          layout=layout, mode=mode, fanout=suite.scaling_fanout)
  if PROJECTION in sections:
    section(PROJECTION, f"wall time of the {config.preset} preset")
    result["projection"] = {"preset": config.preset,
                            **benchmarks.paper_wall_time(
                                config, result["versions"],
                                result["strategy_overheads"])}
  result["load_average_end"] = list(os.getloadavg())
  result["total_s"] = time.perf_counter() - begin
  log(f"[benchmark {result['total_s']:5.0f}s] done")
  return result


def _s(x, digits=2) -> str:
  return "-" if x is None else f"{x:.{digits}f}"


def _range(pair, digits=2, scale=1.0) -> str:
  if not pair:
    return "-"
  return f"{pair[0] * scale:.{digits}f}-{pair[1] * scale:.{digits}f}"


def table(result: dict) -> str:
  """The record as Markdown: every figure a median with its [min-max]."""
  lines = [f"bcjax benchmark, suite {result['suite']}: jax "
           f"{result['jax_version']} on {', '.join(result['devices'])} "
           f"({result['cpu_count']} CPUs; load average "
           f"{result['load_average_start'][0]:.1f} at start, "
           f"{result['load_average_end'][0]:.1f} at the end); "
           f"{result['total_s']:.0f} s in all. Figures: median [min-max]."]
  if "matmul_peak_gflops" in result:
    lines += ["", f"dense matmul peak: {result['matmul_peak_gflops']:.0f} "
              f"GFLOP/s [{_range(result['matmul_peak_spread_gflops'], 0)}] "
              f"(n = {result['matmul_peak_n']})"]
  if "layers" in result:
    la = result["layers"]
    ms = lambda name: f"{la[name]:.2f} [{_range(la[name + '_spread'], 2)}]"
    lines += ["", f"BatchNorm forward + backward at {la['node_shape']}: hand "
              f"VJP {ms('batchnorm_ms')} ms, JAX's {ms('batchnorm_autodiff_ms')}"
              f" ms ({la['batchnorm_speedup']:.2f}x); dropout masks at "
              f"{la['batch_shape']}: 16-bit {ms('dropout_ms')} ms, bernoulli "
              f"{ms('bernoulli_ms')} ms ({la['dropout_speedup']:.2f}x)"]
  if "versions" in result:
    lines += ["", f"paper sizes on {result['dataset']}:",
              "| version | layout | step ms | epoch s | eval s | compile s | "
              "GFLOP/step | GFLOP/s |", "|---|---|---|---|---|---|---|---|"]
    for k, v in result["versions"].items():
      lines.append(
          f"| {k} | {v['layout']} | {v['step_ms']:.1f} "
          f"[{_range(v['step_spread_ms'], 1)}] | {v['epoch_s']:.2f} "
          f"[{_range(v['epoch_spread_s'])}] | {v['eval_s']:.3f} "
          f"[{_range(v['eval_spread_s'], 3)}] | {v['compile_s']:.1f} | "
          f"{v['gflop_per_step']:.1f} | {v['achieved_gflops']:.0f} |")
  if "strategy_overheads" in result:
    o = result["strategy_overheads"]
    epochs = ", ".join(f"{name} {e['median']:.2f} [{_range(e['spread'])}]"
                       for name, e in o["epochs_s"].items())
    lines += ["", f"extra work per version at version {o['version']} "
              f"(epochs s: {epochs}; joint: (epoch - plain epoch) x epochs, "
              "a difference of medians, noise when small or negative):",
              "| joint sloss s | joint mloss s | post-hoc SGD s | "
              + " | ".join(f"{fit} s" for fit in adapters.FITS) + " |",
              "|---" * (3 + len(adapters.FITS)) + "|",
              f"| {o['joint_sloss_extra_s']:.1f} | "
              f"{o['joint_mloss_extra_s']:.1f} | {o['posthoc_sgd_s']:.1f} | "
              + " | ".join(f"{o[f'posthoc_{fit}_s']:.3f} "
                           f"[{_range(o[f'posthoc_{fit}_spread_s'], 3)}]"
                           for fit in adapters.FITS) + " |"]
  if "workers" in result:
    wk = result["workers"]
    lines += ["", f"worker processes, {wk['preset']} preset version "
              f"{wk['version']}: one process on every CPU "
              f"{wk['one_process_epoch_s']:.3f} s an epoch; {wk['workers']} "
              "pinned processes at once " + ", ".join(
                  f"{t:.3f}" for t in wk["worker_epoch_s"]) + " s: "
              f"{wk['workers_epochs_per_s']:.2f} epochs/s against "
              f"{wk['one_process_epochs_per_s']:.2f} ({wk['speedup']:.2f}x)"]
  if "sweep" in result:
    w = result["sweep"]
    lines += ["", f"seed sweep, {w['seeds']} seeds x one epoch of version "
              f"{w['version']} ({w['preset']} preset, {w['steps']} steps, "
              "host sampling included): vmapped "
              f"{w['vmapped_s']:.2f} s [{_range(w['vmapped_spread_s'])}], "
              f"sequential {w['sequential_s']:.2f} s "
              f"[{_range(w['sequential_spread_s'])}]: "
              f"{w['speedup']:.2f}x the throughput (target 1.5x); "
              f"first-epoch losses agree to {w['loss_max_abs_diff']:.1e}"]
  if "consumer_eval" in result:
    c = result["consumer_eval"]
    lines += ["", f"consumer scoring, {c['evaluations']} (task, strategy, "
              f"version, seed) AUCs ({c['tasks']} tasks, {c['strategies']} "
              f"strategies, {c['seeds']} seeds, h={c['hidden']}, "
              f"d={c['dim']}): vmapped {c['vmapped_s']:.3f} s "
              f"[{_range(c['vmapped_spread_s'], 3)}], loop {c['loop_s']:.3f} s "
              f"[{_range(c['loop_spread_s'], 3)}]: {c['speedup']:.2f}x "
              f"(target 20x); AUCs agree to {c['auc_max_abs_diff']:.1e}"]
  if "store" in result:
    st = result["store"]
    lines += ["", f"store, version 0 read from version {st['versions'] - 1} "
              f"({st['rows']} rows): composed "
              f"{st['composed_rows_per_s']:,.0f} rows/s "
              f"[{_range(st['composed_rows_per_s_spread'], 0)}], chained "
              f"{st['chained_rows_per_s']:,.0f} rows/s "
              f"[{_range(st['chained_rows_per_s_spread'], 0)}]"]
  if "legacy_index" in result:
    li = result["legacy_index"]
    rate = lambda name, digits=0: (f"{li[name]:,.{digits}f} "
                                   f"[{_range(li[name + '_spread'], digits)}]")
    lines += ["", f"frozen version-0 HNSW index ({li['frozen_items']} items, "
              f"d {li['dims'][0]}; {li['queries']} version-{len(li['dims']) - 1}"
              f" queries, top {li['k']}): build {rate('build_s', 3)} s "
              f"(exact {rate('exact_build_s', 5)} s); queries/s: version-0 "
              f"vectors {rate('qps_raw')}, mapped by the linear chain "
              f"{rate('qps_linear')}, by the residual-MLP chain "
              f"{rate('qps_mlp')}; mapping per query: linear "
              f"{rate('map_linear_us', 1)} us, MLP {rate('map_mlp_us', 1)} us;"
              f" insertion {rate('insert_items_per_s')} items/s"]
  if "aggregation" in result:
    lines += ["", "| aggregation | scale | edges | fwd ms | fwd+bwd ms |",
              "|---|---|---|---|---|"]
    fmt = lambda x, r: ("skipped" if x is None else
                        f"{x:.1f} [{_range(r, 1)}]")
    for row in result["aggregation"]:
      lines.append(f"| {row['layout']} | {row['scale']}x | {row['edges']} | "
                   f"{fmt(row['fwd_ms'], row['fwd_ms_spread'])} | "
                   f"{fmt(row['fwd_bwd_ms'], row['fwd_bwd_ms_spread'])} |")
  if "scaling" in result:
    lines += ["", "training epoch on synthetic graphs (PinSAGE; one process "
              "per size; sampled = neighbour sampling; * = epoch "
              "extrapolated from the timed steps):",
              "| interactions | mode | train | nodes | d, L | steps (timed) | "
              "step s | epoch s | peak GB |", "|---|---|---|---|---|---|---|---|---|"]
    for row in result["scaling"]:
      if row.get("epoch_s") is None:
        lines.append(f"| {row['interactions']:,} | {row['mode']} | "
                     f"skipped: {row.get('skipped', '?')} ||||||| ")
        continue
      mark = "*" if row["extrapolated"] else ""
      lines.append(
          f"| {row['interactions']:,} | {row['mode']} | "
          f"{row['train_interactions']:,} | {row['nodes_pad']:,} | "
          f"{row['dim']}, {row['layers']} | {row['steps']} "
          f"({row['steps_timed']}) | {row['step_s']:.3f} "
          f"[{_range(row['step_spread_s'], 3)}] | {row['epoch_s']:.1f}{mark} "
          f"[{_range(row['epoch_spread_s'], 1)}] | {row['peak_mem_gb']:.2f} |")
  if "projection" in result:
    p = result["projection"]
    lines += ["", f"projected wall time of the {p['preset']} preset "
              f"({p['trainings']} trainings): {p['total_s']:.0f} s = "
              f"{p['total_h']:.2f} h (version 0 {p['version0_s']:.0f} s; "
              + ", ".join(f"{name} {t:.0f} s"
                          for name, t in p["by_strategy"].items())
              + f"); not included: {p['excluded']}"]
  return "\n".join(lines)


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
  out = Path(FLAGS.out or Path(FLAGS.workdir) / "benchmark.json")
  try:
    result = run_suite(suite, load_dataset("ml100k"), sections=sections,
                       layout=FLAGS.layout)
  except ValueError as error:  # A projection without every version.
    common.fail(error)
  text = table(result)
  io.make_dir(out.parent)
  io.save_json(out, result)
  io.save_bytes(out.with_suffix(".md"), (text + "\n").encode())
  _stderr(f"wrote {out} and {out.with_suffix('.md')}")
  print(json.dumps(result, indent=1) if FLAGS.format == "json" else text)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
