"""Prints a dataset's sizes and its versions' splits.

  python -m launch.data_stats --dataset=ml100k [--format=json]
  python -m launch.data_stats --dataset=amazon --amazon_dir=DIR --category=NAME
  python -m launch.data_stats --dataset=synthetic --synthetic_interactions=N

Errors (unknown dataset, missing files, bad flags) print one line on stderr
and exit with status 2.
"""

import json

from absl import flags

from bcjax.data import PAPER_TIMES
from bcjax.data.stats import data_stats, stats_table
from launch import common

FLAGS = flags.FLAGS
common.define_dataset_flags()
flags.DEFINE_list("times", [str(t) for t in PAPER_TIMES], "Version times.")
flags.DEFINE_enum("format", "table", ["table", "json"], "Output format.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    common.fail(f"unexpected arguments {argv[1:]}")
  try:
    times = [float(t) for t in FLAGS.times]
    stats = data_stats(common.dataset_from_flags(), times)
  except common.USER_ERRORS as error:
    common.fail(error)
  print(json.dumps(stats) if FLAGS.format == "json" else stats_table(stats))


if __name__ == "__main__":
  common.run(main, resumable=False)
