"""Speed of bcjax on this machine: a table, and JSON with --format=json.

  python -m launch.benchmark                  # paper sizes on MovieLens-100k
  python -m launch.benchmark --format=json --out=bench.json
"""

import json
import sys
import tempfile

import jax
from absl import app, flags

from bcjax import benchmarks, io
from bcjax.data import load_dataset
from launch.configs import paper
from launch import common

FLAGS = flags.FLAGS
flags.DEFINE_enum("format", "table", ["table", "json"], "Output format.")
flags.DEFINE_string("out", None, "Also write the JSON here.")
flags.DEFINE_list("versions", ["0", "4"], "Versions timed at paper sizes.")
flags.DEFINE_list("agg_scales", ["1", "10", "100"],
                  "Aggregation candidates at these multiples of MovieLens-100k.")
flags.DEFINE_integer("repeats", 5, "Timed repetitions per figure.")
flags.DEFINE_string("layout", "", "Force an aggregation layout for training.")
flags.DEFINE_integer("overhead_version", 4,
                     "Version whose per-strategy extra work is timed.")


def _table(result) -> str:
  lines = [f"jax {result['jax_version']} on {result['device']}; dense matmul "
           f"peak {result['matmul_peak_gflops']:.0f} GFLOP/s", "",
           "| version | layout | step ms | epoch s | eval s | compile s | "
           "GFLOP/step | GFLOP/s |", "|---|---|---|---|---|---|---|---|"]
  for k, v in result["versions"].items():
    lines.append(f"| {k} | {v['layout']} | {v['step_ms']:.1f} | "
                 f"{v['epoch_s']:.2f} | {v['eval_s']:.3f} | "
                 f"{v['compile_s']:.1f} | {v['gflop_per_step']:.1f} | "
                 f"{v['achieved_gflops']:.0f} |")
  lines += ["", "| aggregation | scale | edges | fwd ms | fwd+bwd ms |",
            "|---|---|---|---|---|"]
  fmt = lambda x: "skipped" if x is None else f"{x:.1f}"
  for row in result["aggregation"]:
    lines.append(f"| {row['layout']} | {row['scale']}x | {row['edges']} | "
                 f"{fmt(row['fwd_ms'])} | {fmt(row['fwd_bwd_ms'])} |")
  o = result["strategy_overheads"]
  lines += ["", f"extra work per version at version {o['version']} "
            f"(plain epoch {o['epoch_s']:.2f} s):",
            "| joint sloss s | joint mloss s | post-hoc SGD s | lstsq s | "
            "procrustes s |", "|---|---|---|---|---|",
            f"| {o['joint_sloss_extra_s']:.1f} | {o['joint_mloss_extra_s']:.1f} "
            f"| {o['posthoc_sgd_s']:.1f} | {o['posthoc_lstsq_s']:.3f} | "
            f"{o['posthoc_procrustes_s']:.3f} |"]
  st = result["store"]
  lines += ["", f"store, version 0 read from version 4: composed "
            f"{st['composed_rows_per_s']:,.0f} rows/s, chained "
            f"{st['chained_rows_per_s']:,.0f} rows/s"]
  return "\n".join(lines)


def main(argv):
  del argv
  graph = load_dataset("ml100k")
  config = paper.get_config()
  config.layout = FLAGS.layout
  result = {"jax_version": jax.__version__,
            "device": str(jax.devices()[0].device_kind),
            "num_devices": jax.device_count(),
            "matmul_peak_gflops": benchmarks.matmul_peak(repeats=FLAGS.repeats),
            "versions": {}}
  with tempfile.TemporaryDirectory() as workdir:
    for k in FLAGS.versions:
      print(f"timing version {k} ...", file=sys.stderr, flush=True)
      result["versions"][k] = benchmarks.training_epoch(
          graph, config, workdir, int(k), repeats=max(2, FLAGS.repeats // 2))
    print("timing strategy overheads ...", file=sys.stderr, flush=True)
    result["strategy_overheads"] = benchmarks.strategy_overheads(
        graph, config, workdir, FLAGS.overhead_version, repeats=2)
  result["store"] = benchmarks.store_read(repeats=FLAGS.repeats)
  print("timing aggregation candidates ...", file=sys.stderr, flush=True)
  result["aggregation"] = benchmarks.aggregation_candidates(
      graph.user, graph.item, scales=[int(s) for s in FLAGS.agg_scales],
      repeats=FLAGS.repeats)
  if FLAGS.out:
    io.save_json(FLAGS.out, result)
  print(json.dumps(result, indent=1) if FLAGS.format == "json"
        else _table(result))


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
