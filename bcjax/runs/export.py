"""Export of one strategy of a training run into an embedding store.

The run is read through `bcjax.runs.rundir.RunDir`; complete versions 0..n-1 are
exported (with their backward transformations) and the store is built in a
temporary sibling directory, then renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
import shutil
from typing import Iterator

import numpy as np

from bcjax.runs.rundir import METRICS, RunDir
from bcjax.store import layout
from bcjax.store.embedding_store import EmbeddingStore
from bcjax.store.guard import check_output
from bcjax.store.layout import MAX_MANIFEST_BYTES, StoreError
from bcjax.util import io
from bcjax.util.progress import to_stderr


def _run_file(read, path: Path):
  """`read()` of a run file, its failures as a `StoreError` naming `path`."""
  try:
    return read()
  except FileNotFoundError:
    raise StoreError(f"run file {path} is missing") from None
  except (OSError, ValueError) as e:
    raise StoreError(f"run file {path} cannot be read: {e}") from None


@contextlib.contextmanager
def _naming(where: Path) -> Iterator[None]:
  """A `StoreError` of the block (bad values or ids) starts with `where`,
  the run's version directory they came from."""
  try:
    yield
  except StoreError as e:
    raise StoreError(f"{where}: {e}") from None


def _run_version(run_dir: RunDir, strategy: str, k: int, user_ids: np.ndarray,
                 item_ids: np.ndarray) -> tuple[np.ndarray, ...]:
  """`(users, items, user_ids, item_ids)` of version k of a run, each
  checked against the checksums the run lists."""
  users, items = (_run_file(lambda: run_dir.array(strategy, k, name),
                            run_dir.path(strategy, k, f"{name}.npy"))
                  for name in ("users", "items"))
  if len(users) > len(user_ids) or len(items) > len(item_ids):
    raise StoreError(f"{run_dir.version_dir(strategy, k)}: {len(users)} users "
                     f"and {len(items)} items, but the run has only "
                     f"{len(user_ids)} user ids and {len(item_ids)} item ids")
  return users, items, user_ids[:len(users)], item_ids[:len(items)]


def _run_dataset(run_dir: RunDir) -> str:
  """The dataset named in the run's config.json, else the run's directory."""
  path = run_dir.config_path
  if not path.exists():
    return run_dir.root.resolve().name
  try:
    with io.open_regular(path) as f:
      dataset = json.loads(f.read(MAX_MANIFEST_BYTES))["dataset"]
  except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
    raise StoreError(f"run file {path} names no dataset: {e!r}") from None
  return str(dataset)


def _complete_versions(run_dir: RunDir, strategy: str) -> list[int]:
  """Versions 0..n-1 of a run: those with metrics.json, without gaps."""
  present = run_dir.present_versions(strategy)
  complete = [k for k in present if run_dir.complete(strategy, k)]
  n = 0
  while n in complete:
    n += 1
  where = run_dir.strategy_dir(strategy)
  if not n:
    raise StoreError(f"{where}: version 0 is not complete (no "
                     "v0/metrics.json)")
  if complete[n:]:
    raise StoreError(f"{where}: version {n} is incomplete but later "
                     f"versions {complete[n:]} are complete")
  if present[-1] >= n:
    to_stderr(f"{where}: skipping incomplete versions "
              f"{[k for k in present if k >= n]}")
  return list(range(n))


def export_run(workdir: str | os.PathLike[str], strategy: str,
               out: str | os.PathLike[str],
               dataset: str | None = None) -> EmbeddingStore:
  """Builds a store from one strategy of a training run directory.

  The run holds `user_ids.npy`, `item_ids.npy` (the full graph's raw ids;
  version k uses the first rows), optionally `config.json` and, per version k,
  `<strategy>/v<k>/{users,items}.npy`, B_k for k >= 1 (`transform.npy`,
  `[d_k, d_{k-1}]`, or a non-linear adapter's `backward_<p>.npy` files,
  stored as they are: `bcjax.store.maps`) and `metrics.json`, written last
  to mark the version complete.
  Complete versions 0..n-1 are exported; later incomplete ones are skipped.
  The store is built in a temporary sibling directory and renamed into place,
  so `out` either gets the whole store or stays as it was; the temporary
  directory of an export to `out` killed before is removed first.

  Args:
    workdir: the run directory.
    strategy: the strategy's subdirectory name.
    out: the store directory to create (absent or empty).
    dataset: recorded in the manifest; by default the `dataset` of the run's
      `config.json`, or the run directory's name without one.

  Returns:
    The open store at `out`.

  Raises:
    StoreError: for a missing run, strategy or file, a file that fails the
      run's checksums, a strategy that is not a plain name, an `out`
      refused by `check_output` or not empty, a gap in the complete
      versions, a version k >= 1 without a backward map (a strategy without
      backward transformations), or anything `create` / `append_version`
      reject (naming the version's directory).
  """
  if not os.fspath(workdir):
    raise StoreError("an empty path names no run directory")
  run_dir, out = RunDir.of(workdir), check_output(out, directory=True)
  try:
    strategy_dir = run_dir.strategy_dir(strategy)
  except ValueError as e:
    raise StoreError(str(e)) from None
  run = run_dir.root
  if not run.is_dir():
    raise StoreError(f"no run directory {run}")
  if not strategy_dir.is_dir():
    raise StoreError(f"run {run} has no strategy {strategy!r} (no directory "
                     f"{strategy_dir})")
  if out.exists() and any(out.iterdir()):
    raise StoreError(f"cannot export to {out}: it exists and is not an empty "
                     "directory")
  versions = _complete_versions(run_dir, strategy)
  for k in versions[1:]:
    path = run_dir.path(strategy, k, "transform.npy")
    record = _run_file(lambda: run_dir.metrics(strategy, k),
                       run_dir.path(strategy, k, METRICS))
    if not path.is_file() and "backward" not in record:
      raise StoreError(f"strategy {strategy!r} has no backward transformation "
                       f"at version {k} (no {path})")
  dataset = dataset or _run_dataset(run_dir)
  user_ids, item_ids = (_run_file(lambda: run_dir.ids(kind),
                                  run_dir.ids_path(kind))
                        for kind in ("user", "item"))
  out.parent.mkdir(parents=True, exist_ok=True)
  io.clear_temporaries(out.parent, out.name)  # Of an export killed before.
  tmp = io.temporary_name(out)
  try:
    arrays = _run_version(run_dir, strategy, 0, user_ids, item_ids)
    with _naming(run_dir.version_dir(strategy, 0)):
      store = EmbeddingStore.create(tmp, *arrays, dataset=dataset,
                                    strategy=strategy)
    for k in versions[1:]:
      users, items, k_user_ids, k_item_ids = _run_version(
          run_dir, strategy, k, user_ids, item_ids)
      transform = _run_file(lambda: run_dir.backward_map(strategy, k),
                            run_dir.version_dir(strategy, k))
      with _naming(run_dir.version_dir(strategy, k)):
        store.append_version(users, items, transform, k_user_ids, k_item_ids)
    os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  layout.fsync_dir(out.parent)
  return EmbeddingStore.open(out)
