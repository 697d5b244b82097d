"""What keeps other writers off a store's files: one writer at a time
(`writer_lock`), and no command output inside a store or in place of
something that is not a regular file (`check_output`)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
import stat
from typing import Iterator

from bcjax.store import layout
from bcjax.store.layout import FORMAT, StoreError
from bcjax.util import io

LOCK = ".lock"


@contextlib.contextmanager
def writer_lock(root: Path) -> Iterator[None]:
  """Holds the writer lock of the store directory `root` (`flock` on its
  `.lock` file, created if absent) for the block. A second writer is
  refused at once; the kernel releases a killed writer's lock, so a crash
  never leaves the store locked. In a run of several processes only the
  writing one locks (`io.writes_here`).

  Raises:
    StoreError: another writer holds the lock.
  """
  if not io.writes_here():
    yield
    return
  path = Path(root) / LOCK
  fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
               0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise StoreError(f"store {root} is being written by another writer "
                       f"(it holds {path}); retry once that one is done"
                       ) from None
    yield
  finally:
    os.close(fd)  # Releases the lock.


def _holds_store(directory: Path) -> bool:
  """Whether `directory` holds an embedding store's manifest."""
  try:
    return json.loads(layout.read_manifest(directory)).get("format") == FORMAT
  except (StoreError, ValueError, AttributeError, RecursionError):
    return False


def check_output(path: str | os.PathLike, directory: bool = False) -> Path:
  """Checks a path a command is about to write (its `--out` or `--workdir`)
  before anything is written.

  Args:
    path: the output path.
    directory: the output is a directory (else a file).

  Returns:
    `path` as a `Path`.

  Raises:
    StoreError: an empty path (it would mean the current folder); something
      there that is not a regular file (not a directory, with `directory`):
      a FIFO, a device, a folder; or a path in an embedding store, whose
      files only the store writes (links resolved). The message names it.
  """
  if not os.fspath(path):
    raise StoreError("an empty path names no output")
  path = Path(path)
  if path.exists():
    mode = path.stat().st_mode
    if not (stat.S_ISDIR(mode) if directory else stat.S_ISREG(mode)):
      raise StoreError(f"{path} exists and is not a "
                       f"{'directory' if directory else 'regular file'}; "
                       "refused as an output")
  resolved = path.resolve()
  for folder in (resolved, *resolved.parents):
    if _holds_store(folder):
      raise StoreError(f"{path} is in the embedding store {folder}, whose "
                       "files only the store writes; refused as an output")
  return path
