"""Exports one strategy of a training run as an embedding store.

  python -m launch.export_store --workdir=RUN --strategy=NAME --out=STORE

Version 0 creates the store and every later complete version (one with
`metrics.json`) is appended with its backward transformation. A bad request
(no such run or strategy, a strategy without backward transformations,
incomplete versions, a run file that fails its checksum, an `--out` that
`bcjax.store.check_output` refuses) exits with code 2 and a one-line
message.
"""

from absl import app, flags

from bcjax import store as store_lib
from bcjax.runs import export
from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Training run directory.",
                               required=True)
_STRATEGY = flags.DEFINE_string("strategy", None, "Strategy to export.",
                                required=True)
_OUT = flags.DEFINE_string("out", None, "Store directory to create.",
                           required=True)
_DATASET = flags.DEFINE_string(
    "dataset", None, "Dataset name for the manifest; by default the one in "
    "the run's config.json.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  try:
    store = export.export_run(_WORKDIR.value, _STRATEGY.value, _OUT.value,
                                 _DATASET.value)
  except (store_lib.StoreError, OSError) as e:
    common.fail(e)
  print(f"exported {_STRATEGY.value} versions 0..{store.latest_version} "
        f"(dims {store.dims}) to {store.path}")


if __name__ == "__main__":
  common.run(main)
