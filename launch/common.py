"""Flags and error handling shared by the launch scripts."""

from __future__ import annotations

import sys

from absl import flags

from bcjax.data import DataError, load_dataset

FLAGS = flags.FLAGS


def define_dataset_flags(default: str = "ml100k") -> None:
  flags.DEFINE_string("dataset", default, "ml100k, amazon or synthetic.")
  flags.DEFINE_string("ml100k_path", None, "A GroupLens ml-100k/ folder; "
                      "default: the copy shipped by recbole 1.2.1.")
  flags.DEFINE_string("amazon_dir", None, "Folder of the Amazon 2018 files.")
  flags.DEFINE_string("category", None, "Amazon category, e.g. Musical_Instruments.")
  flags.DEFINE_integer("synthetic_interactions", 100_000,
                       "Interactions of the synthetic graph.")
  flags.DEFINE_integer("synthetic_seed", 0, "Seed of the synthetic graph.")


def dataset_from_flags():
  """Loads the dataset the flags name."""
  options = {
      "ml100k": {"path": FLAGS.ml100k_path},
      "amazon": {"amazon_dir": FLAGS.amazon_dir, "category": FLAGS.category},
      "synthetic": {"num_interactions": FLAGS.synthetic_interactions,
                    "seed": FLAGS.synthetic_seed},
  }.get(FLAGS.dataset, {})
  return load_dataset(FLAGS.dataset, **options)


def fail(message: str) -> None:
  """Exits with code 2 and a one-line message, no traceback."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


USER_ERRORS = (DataError, ValueError, OSError)
