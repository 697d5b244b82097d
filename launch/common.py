"""Flags, the start of several processes and error handling shared by the
launch scripts."""

from __future__ import annotations

import os
import sys

import jax
from absl import app, flags

from bcjax import store
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


def define_process_flags() -> None:
  """The settings of a run over several processes (JAX's multi-controller
  runtime); absent, the script runs as one process."""
  flags.DEFINE_string("coordinator_address", None,
                      "HOST:PORT of process 0's coordination service, the same "
                      "in every process of a multi-process run.")
  flags.DEFINE_integer("num_processes", None,
                       "Processes of the run (each runs this same command).",
                       lower_bound=1)
  flags.DEFINE_integer("process_id", None, "This process's index, 0 to "
                       "num_processes - 1; process 0 writes every file.",
                       lower_bound=0)
  flags.DEFINE_integer("heartbeat_timeout", 100,
                       "Seconds without a heartbeat after which the other "
                       "processes of a run treat one as dead and stop.",
                       lower_bound=1)


def start_processes() -> None:
  """Joins the multi-process run that the process flags describe.

  Call first in `main`, before anything touches a device:
  `jax.distributed.initialize` must precede JAX's backends, so that
  `jax.devices()` (and a mesh of `config.devices=0`) spans every process's
  devices. CPU collectives go over gloo. Without the three flags nothing is
  done: one process (no cluster detection, so a script started inside a
  cluster's job never waits for processes that were not started).
  """
  given = [FLAGS[name].present for name in
           ("coordinator_address", "num_processes", "process_id")]
  if not any(given):
    return
  if not all(given):
    fail("--coordinator_address, --num_processes and --process_id go together")
  if FLAGS.process_id >= FLAGS.num_processes:
    fail(f"--process_id={FLAGS.process_id} must be below "
         f"--num_processes={FLAGS.num_processes}")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                             FLAGS.process_id,
                             heartbeat_timeout_seconds=FLAGS.heartbeat_timeout)


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
  """Exits with code 2 and a one-line message, no traceback.

  In a multi-process run the process exits at once: JAX's shutdown would
  wait for the other processes, which may be waiting for this one.
  """
  program = sys.argv[0].rsplit("/", 1)[-1].removesuffix(".py")
  if jax.distributed.is_initialized():
    program += f" (process {jax.process_index()} of {jax.process_count()})"
  print(f"{program}: error: {' '.join(str(message).split())}", file=sys.stderr)
  if jax.distributed.is_initialized():
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(2)
  sys.exit(2)


def run_errors() -> tuple[type[BaseException], ...]:
  """The errors a command turns into a one-line message (`fail`): the user
  errors, and in a multi-process run also a failed collective (the runtime's
  sign that another process died; see `describe`)."""
  if jax.distributed.is_initialized():
    return (*USER_ERRORS, jax.errors.JaxRuntimeError)
  return USER_ERRORS


def describe(error: BaseException) -> str:
  """The message `fail` prints for one of `run_errors()`."""
  if isinstance(error, jax.errors.JaxRuntimeError):
    return ("stopping on a runtime error; in a multi-process run most often "
            "a collective that failed because another process died "
            f"({str(error).splitlines()[0]})")
  return str(error)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, but a bad flag is a one-line error and exit status 2.

  Also a `--config` file that cannot be loaded (`OSError`, or an error of
  its code) and an override of a field the config lacks (`--config.x=1`:
  ml_collections raises `AttributeError` or `KeyError`).

  Pass as `app.run(main, flags_parser=parse_flags)`.
  """
  try:
    return FLAGS(argv)
  except flags.Error as error:
    fail(error)
  except (AttributeError, KeyError) as error:
    fail(f"a --config override names a field the config lacks: {error}")
  except (OSError, ValueError, TypeError, SyntaxError, ImportError) as error:
    fail(f"{type(error).__name__}: {error}")


def run(main, resumable: bool = True) -> None:
  """absl's `app.run` with `parse_flags`, and Ctrl-C as one line on stderr
  and exit status 130 (the shell's code for SIGINT) instead of a traceback;
  a `resumable` command's line says that the same command resumes (the
  run directory keeps every finished step and the last checkpoint)."""
  try:
    app.run(main, flags_parser=parse_flags)
  except KeyboardInterrupt as interrupt:
    program = sys.argv[0].rsplit("/", 1)[-1].removesuffix(".py")
    said = " ".join(str(interrupt).split())
    hint = ("; the same command resumes from the finished steps and the last "
            "checkpoint" if resumable else "")
    print(f"{program}: interrupted{': ' + said if said else ''}{hint}",
          file=sys.stderr)
    sys.exit(130)


def output_path(flag: str, path, directory: bool = False):
  """`path`, which a command writes (a file, or a directory with
  `directory`) as the flag `--flag` asks, checked before any work by the
  one check of every command's output (`bcjax.store.check_output`: not
  empty, not a FIFO, device or other non-regular file, not inside an
  embedding store); a refused path ends the command (`fail`)."""
  try:
    store.check_output(path, directory)
  except store.StoreError as error:
    fail(f"--{flag}: {error}")
  return path
