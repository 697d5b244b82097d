"""Flags and error handling shared by the launch scripts."""

from __future__ import annotations

import sys

import jax
from absl import flags

from bcjax.data import DataError, load_dataset
from bcjax.models import families

FLAGS = flags.FLAGS
# Errors that end a command with a one-line message (exit status 2): bad
# settings or data, unreadable files, and a training that diverged (the NaN
# guard's message names the epoch and the checkpoint kept).
USER_ERRORS = (DataError, ValueError, OSError, FloatingPointError)


def define_dataset_flags(default: str = "ml100k") -> None:
  flags.DEFINE_string("dataset", default, "ml100k, amazon or synthetic.")
  flags.DEFINE_string("ml100k_path", None, "A GroupLens ml-100k/ folder; "
                      "default: the copy shipped by recbole 1.2.1.")
  flags.DEFINE_string("amazon_dir", None, "Folder of the Amazon 2018 files.")
  flags.DEFINE_string("category", None,
                      "Amazon category, e.g. Musical_Instruments.")
  flags.DEFINE_integer("synthetic_interactions", 100_000,
                       "Synthetic: interactions.", lower_bound=1)
  flags.DEFINE_integer("synthetic_users", None, "Synthetic: latent users.",
                       lower_bound=1)
  flags.DEFINE_integer("synthetic_items", None, "Synthetic: latent items.",
                       lower_bound=1)
  flags.DEFINE_integer("synthetic_seed", 0, "Synthetic: random seed.")


def define_runtime_flags() -> None:
  flags.DEFINE_string("compile_cache", None,
                      "Directory of JAX's persistent compilation cache: a "
                      "second run with the same shapes skips compiling.")


def apply_runtime_flags() -> None:
  """Turns on the persistent compilation cache when `--compile_cache` is set."""
  if FLAGS.compile_cache:
    jax.config.update("jax_compilation_cache_dir", FLAGS.compile_cache)
    # Cache every program, however small or quick to compile.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def define_model_flag() -> None:
  flags.DEFINE_enum("model", None, list(families.FAMILIES),
                    "Embedding model family; default config.model (pinsage).")


def apply_model_flag(config) -> None:
  """`--model`, when given, overrides `config.model`."""
  if FLAGS.model is not None:
    config.model = FLAGS.model


def dataset_from_flags():
  """Loads the dataset the flags name."""
  options = {
      "ml100k": {"path": FLAGS.ml100k_path},
      "amazon": {"amazon_dir": FLAGS.amazon_dir, "category": FLAGS.category},
      "synthetic": {"num_interactions": FLAGS.synthetic_interactions,
                    "num_users": FLAGS.synthetic_users,
                    "num_items": FLAGS.synthetic_items,
                    "seed": FLAGS.synthetic_seed},
  }.get(FLAGS.dataset, {})
  return load_dataset(FLAGS.dataset, **options)


def fail(message) -> None:
  """Exits with code 2 and a one-line message, no traceback."""
  program = sys.argv[0].rsplit("/", 1)[-1].removesuffix(".py")
  print(f"{program}: error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, but a bad flag is a one-line error and exit status 2.

  Pass as `app.run(main, flags_parser=parse_flags)`.
  """
  try:
    return FLAGS(argv)
  except flags.Error as error:
    fail(error)
