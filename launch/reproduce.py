"""The main job: every strategy, the consumers, the evaluation, the report.

  python -m launch.reproduce [--config=launch/configs/quick.py] \
      [--workdir=runs/ml100k-quick] [--dataset=ml100k ...]

Resumable: complete versions, saved consumers and saved compatibility
matrices are skipped; the cross-version evaluation and the report (seconds)
are always redone. Prints the method §8 table, the compatibility table and the
paths of the plots.

Beyond the paper, the stage "compatibility" trains consumers at every version
of each strategy of `config.compat_strategies` that was run and scores them at
every later version (`bcjax.compatibility`).
"""

import time

from absl import app, flags
from ml_collections import config_flags

from bcjax import compatibility, consumers, report, strategies
from bcjax.experiment import Experiment, check_config
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


def _stage(message: str, start: float) -> None:
  print(f"== {message} ({time.perf_counter() - start:.1f}s elapsed)",
        flush=True)


def main(argv):
  del argv
  config, start = FLAGS.config, time.perf_counter()
  common.apply_model_flag(config)
  common.apply_runtime_flags()
  try:
    names = [strategies.get(s).name for s in FLAGS.strategies]
    versions = check_config(config)
    if len(versions) != len(config.times) - 1:
      raise ValueError(f"config.versions={config.versions!r}: the report "
                       "needs every version; use 'all'")
    consumer_config = consumers.ConsumerConfig.from_config(config)
    compat_config = compatibility.CompatConfig.from_config(config)
    graph = common.dataset_from_flags()
    config.dataset = graph.name  # What config.json and the report name.
    family = "" if config.model == "pinsage" else f"-{config.model}"
    workdir = FLAGS.workdir or f"runs/{graph.name}{family}-{config.preset}"
    experiment = Experiment(graph, config, workdir)
    tasks = consumers.all_task_data(experiment.splits)
  except common.USER_ERRORS as e:
    common.fail(str(e))
  if consumers.REFERENCE not in names:
    names.insert(0, consumers.REFERENCE)  # The consumers train on it.
  print(f"== run {workdir}: {graph.name}, model {config.model}, preset "
        f"{config.preset}, {len(versions)} versions, strategies "
        f"{', '.join(names)}", flush=True)

  for i, name in enumerate(names, 1):
    _stage(f"strategy {i}/{len(names)}: {name}", start)
    experiment.run(name)
  _stage(f"consumers: {len(tasks)} tasks, h {consumer_config.hidden} x "
         f"dropout {consumer_config.dropout} x {consumer_config.seeds} seeds, "
         f"{consumer_config.epochs} epochs", start)
  heads = consumers.train_consumers(workdir, tasks, consumer_config,
                                    seed=config.seed)
  _stage("cross-version evaluation", start)
  consumers.evaluate_consumers(workdir, tasks, heads, names,
                               experiment.num_versions)
  compat_names = [s for s in compat_config.strategies if s in names]
  if compat_names:
    _stage(f"compatibility: {', '.join(compat_names)}; consumers at every "
           f"version, {compat_config.epochs} epochs x {compat_config.seeds} "
           "seeds", start)
    compatibility.run_compatibility(workdir, experiment.splits, compat_names,
                                    compat_config, consumer_config,
                                    seed=config.seed)
  _stage("report", start)
  _, table, plots = report.write_report(workdir, names)
  print(table)
  print(f"report: {workdir}/report.json, {workdir}/report.csv")
  for path in plots:
    print(f"plot: {path}")
  _stage("done", start)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
