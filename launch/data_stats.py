"""Prints a dataset's sizes and its versions' splits.

  python -m launch.data_stats --dataset=ml100k [--format=json]
  python -m launch.data_stats --dataset=amazon --amazon_dir=DIR --category=NAME
  python -m launch.data_stats --dataset=synthetic --synthetic_interactions=N

Errors (unknown dataset, missing files, bad flags) print one line on stderr
and exit with status 2.
"""

import json
import sys

from absl import app
from absl import flags

from bcjax.data import PAPER_TIMES, DataError, load_dataset
from bcjax.data.stats import data_stats, stats_table

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "ml100k", "ml100k, amazon or synthetic.")
flags.DEFINE_string("ml100k_path", None,
                    "GroupLens ml-100k folder; default: recbole's copy.")
flags.DEFINE_string("amazon_dir", None, "Folder of the Amazon 2018 files.")
flags.DEFINE_string("category", None, "Amazon category, e.g. Video_Games.")
flags.DEFINE_integer("synthetic_interactions", 100_000,
                     "Synthetic: interactions.", lower_bound=1)
flags.DEFINE_integer("synthetic_users", None, "Synthetic: latent users.",
                     lower_bound=1)
flags.DEFINE_integer("synthetic_items", None, "Synthetic: latent items.",
                     lower_bound=1)
flags.DEFINE_integer("synthetic_seed", 0, "Synthetic: random seed.")
flags.DEFINE_list("times", [str(t) for t in PAPER_TIMES], "Version times.")
flags.DEFINE_enum("format", "table", ["table", "json"], "Output format.")

USAGE_ERROR = 2


def _fail(message) -> int:
  print(f"data_stats: error: {' '.join(str(message).split())}", file=sys.stderr)
  return USAGE_ERROR


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, but a bad flag is a one-line error and exit status 2."""
  try:
    return FLAGS(argv)
  except flags.Error as error:
    sys.exit(_fail(error))


def _options() -> dict:
  return {
      "ml100k": {"path": FLAGS.ml100k_path},
      "amazon": {"amazon_dir": FLAGS.amazon_dir, "category": FLAGS.category},
      "synthetic": {"num_interactions": FLAGS.synthetic_interactions,
                    "num_users": FLAGS.synthetic_users,
                    "num_items": FLAGS.synthetic_items,
                    "seed": FLAGS.synthetic_seed},
  }.get(FLAGS.dataset, {})


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    return _fail(f"unexpected arguments {argv[1:]}")
  try:
    times = [float(t) for t in FLAGS.times]
    stats = data_stats(load_dataset(FLAGS.dataset, **_options()), times)
  except (DataError, ValueError, OSError) as error:
    return _fail(error)
  print(json.dumps(stats) if FLAGS.format == "json" else stats_table(stats))
  return 0


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
