"""Trains one strategy's embedding models, version by version.

  python -m launch.train_embeddings --dataset=ml100k --strategy=nobc \
      --workdir=/tmp/run --config=launch/configs/quick.py --config.epochs=14 \
      [--model=lightgcn]

Over several processes (each with its own devices), run the same command in
every process with `--coordinator_address=HOST:PORT --num_processes=N
--process_id=I --config.devices=0`: one mesh spans every process's devices,
process 0 writes the run directory (which every process must see).
"""

from absl import flags
from ml_collections import config_flags

from bcjax.paper.experiment import Experiment
from bcjax.runs import configs, strategies
from launch import common

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "launch/configs/quick.py",
                                "Preset: launch/configs/{paper,quick,test}.py")
flags.DEFINE_string("strategy", "nobc", "One of: " + ", ".join(strategies.STRATEGIES))
flags.DEFINE_string("workdir", None, "Run directory.", required=True)
common.define_dataset_flags()
common.define_model_flag()
common.define_runtime_flags()
common.define_process_flags()


def main(argv):
  del argv
  common.start_processes()
  config = FLAGS.config
  common.apply_model_flag(config)
  common.apply_runtime_flags()
  workdir = common.output_path("workdir", FLAGS.workdir, directory=True)
  try:
    strategies.get(FLAGS.strategy)
    versions = configs.validate(config).versions
    graph = common.dataset_from_flags()
    experiment = Experiment(graph, config, workdir)
    experiment.run(FLAGS.strategy, versions)
    # Read back (checked) from the run directory, as a resumed run's are.
    summary = [(k, experiment.artifacts.load(FLAGS.strategy, k).metrics["best"])
               for k in versions]
  except common.run_errors() as e:
    common.fail(common.describe(e))
  for k, best in summary:
    print(f"{FLAGS.strategy} v{k}: " + " ".join(
        f"{name} {value:.4f}" for name, value in best.items()))


if __name__ == "__main__":
  common.run(main)
