"""The main job: every strategy, the consumers, the evaluation, the report.

  python -m launch.reproduce [--config=launch/configs/quick.py] \
      [--workdir=runs/ml100k-quick] [--dataset=ml100k ...]

The command line of `bcjax.paper.pipeline.reproduce` (resumable: complete versions,
saved consumers and saved compatibility matrices are skipped). Prints the
method §8 table, the compatibility table and the paths of the plots. A bad
setting, or a training that diverges, ends with a one-line message and exit
status 2.

Beyond the paper, the stage "compatibility" trains consumers at every version
of each strategy of `config.compat.strategies` that was run and scores them
at every later version (`bcjax.evaluation.compatibility`).

The quick preset trains 3 seeds (`--config.seeds`) on 2 worker processes
(`--config.workers`, `bcjax.paper.workers`); `--config.workers=1` trains in this
process, seed after seed. The two settings round differently (threads), so
each gives its own bitwise-reproducible numbers.
"""

import time

from absl import flags
from ml_collections import config_flags

from bcjax.paper import pipeline
from bcjax.runs import strategies
from launch import common

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "launch/configs/quick.py",
                                "Preset: launch/configs/{paper,quick,test}.py")
flags.DEFINE_string("workdir", None,
                    "Run directory; default runs/<dataset>[-<model>]-<preset>.")
flags.DEFINE_list("strategies", list(strategies.STRATEGIES),
                  "Strategies to run (default: all).")
common.define_dataset_flags()
common.define_model_flag()
common.define_runtime_flags()
common.define_process_flags()


def main(argv):
  del argv
  common.start_processes()
  start = time.perf_counter()
  common.apply_model_flag(FLAGS.config)
  common.apply_runtime_flags()
  if FLAGS.workdir is not None:
    common.output_path("workdir", FLAGS.workdir, directory=True)
  try:
    graph = common.dataset_from_flags()
    result = pipeline.reproduce(graph, FLAGS.config, FLAGS.workdir,
                                FLAGS.strategies)
  except common.run_errors() as e:
    common.fail(common.describe(e))
  pipeline.print_report(result)
  print(f"== done ({time.perf_counter() - start:.1f}s elapsed)", flush=True)


if __name__ == "__main__":
  common.run(main)
