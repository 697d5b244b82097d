"""Atomic file writes (a crash leaves either the old file or the new one), and
reads that never unpickle and check a file before allocating for it.

Every change the library makes to files goes through this module, which also
decides who makes it: in a run of several JAX processes (each running the
same program, `jax.distributed`) only process 0 writes (`writes_here`), and
every change is fenced by a barrier of all processes before and after it
(`barrier`). So files change only between two barriers, every process reads
the same files at the same point of the program and takes the same branches,
and no process reads a file before process 0 has written it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from pathlib import Path
import re
import shutil
import stat
from typing import Any, BinaryIO, Callable, Iterator
import uuid

import jax
from jax.experimental import multihost_utils
import numpy as np

MAX_NPY_HEADER = 10000  # bytes; numpy's own limit for untrusted files
# A temporary name (`temporary_name`), left behind when a writer is killed.
_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{32}\.tmp")
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}


class FileFormatError(ValueError):
  """A file that is not what its reader expects; the message names it."""


def several_processes() -> bool:
  """Whether this is one of several processes of a `jax.distributed` run
  (checked without starting a JAX backend when it is not)."""
  return jax.distributed.is_initialized() and jax.process_count() > 1


def writes_here() -> bool:
  """Whether this process writes files: process 0 of a multi-process run,
  the only process otherwise."""
  return not several_processes() or jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process of the run reaches `barrier(name)` (nothing
  with one process).

  Raises:
    AssertionError: another process reached a barrier of another name: the
      processes no longer run the same program.
  """
  if several_processes():
    multihost_utils.sync_global_devices(name)


@contextlib.contextmanager
def change(name: str) -> Iterator[bool]:
  """Fences one change to files: `with change(name) as here:`, make the
  change only if `here` (this process writes); every process waits at a
  barrier on entry and on exit (see the module docstring)."""
  barrier(f"before {name}")
  yield writes_here()
  barrier(f"after {name}")


def make_dir(path: str | os.PathLike) -> None:
  """Creates the directory `path` and its parents, if absent."""
  with change(f"mkdir {path}") as here:
    if here:
      Path(path).mkdir(parents=True, exist_ok=True)


def remove(path: str | os.PathLike) -> None:
  """Removes the file `path`, if present."""
  with change(f"remove {path}") as here:
    if here:
      Path(path).unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
  """Writes `path` via a fsynced temporary file in its directory and a rename.

  Args:
    path: the file to (over)write; its directory must exist.
    write: writes the content to the binary file object it is given.

  Raises:
    OSError: the file system fails; an error of `write` is re-raised too.
      Either way the temporary file is removed and `path` is left as it was.
  """
  with change(f"write {path}") as here:
    if here:
      _write_and_rename(Path(path), write)


def _write_and_rename(path: Path, write: Callable[[BinaryIO], None]) -> None:
  """`atomic_write`'s work, on the writing process; an `OSError` (a full
  disk, a missing folder) names `path`."""
  tmp = temporary_name(path)
  try:
    with open(tmp, "xb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as error:
    tmp.unlink(missing_ok=True)
    if error.filename is not None or error.errno is None:
      raise
    raise type(error)(error.errno, error.strerror, str(path)) from None
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


def temporary_name(path: str | os.PathLike) -> Path:
  """A fresh temporary name beside `path`, `.<name>.<uuid>.tmp`, which
  `clear_temporaries` recognises."""
  path = Path(path)
  return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def clear_temporaries(directory: str | os.PathLike,
                      name: str | None = None) -> None:
  """Removes what a killed writer left in `directory`: the temporaries of
  `temporary_name` (only those of the file `name`, when given). Called by
  the writer that resumes the work, never while another one writes there."""
  directory = Path(directory)
  with change(f"clear temporaries {directory}") as here:
    if here and directory.is_dir():
      for path in directory.iterdir():
        if _TEMPORARY.fullmatch(path.name) and (
            name is None or path.name.startswith(f".{name}.")):
          if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
          else:
            path.unlink(missing_ok=True)


def save_npy(path: str | os.PathLike, array: Any) -> str:
  """Saves one array as `.npy` atomically, never with pickle.

  Args:
    path: the file to write.
    array: anything `np.asarray` takes, of a non-object dtype.

  Returns:
    The file's sha256 (`sha256`), for its reader to check (`load_npy`).
  """
  atomic_write(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False))
  return sha256(path)


def sha256_of(f: BinaryIO) -> str:
  """The sha256 of an open file's whole content, read in chunks: the one
  checksum every writer records and every reader checks."""
  f.seek(0)
  digest = hashlib.sha256()
  for chunk in iter(lambda: f.read(1 << 20), b""):
    digest.update(chunk)
  return digest.hexdigest()


def sha256(path: str | os.PathLike) -> str:
  """`sha256_of` the regular file `path`."""
  with open_regular(path) as f:
    return sha256_of(f)


def open_regular(path: str | os.PathLike) -> BinaryIO:
  """Opens a regular file for reading, refusing FIFOs, devices and folders.

  Opened non-blocking, so that a FIFO cannot hang the reader.

  Args:
    path: the file to open.

  Returns:
    The file object, opened "rb" (blocking again).

  Raises:
    FileNotFoundError: nothing at `path`.
    FileFormatError: `path` is not a regular file.
  """
  fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
  try:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
      raise FileFormatError(f"{path}: not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")
  except BaseException:
    os.close(fd)
    raise


def read_npy_header(f: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype, int]:
  """Parses the `.npy` header at the start of `f`, reading no data.

  Args:
    f: a seekable binary file; read from offset 0.

  Returns:
    `(shape, fortran_order, dtype, data offset)`.

  Raises:
    ValueError: not a `.npy` file of format 1.0 or 2.0, a header longer than
      `MAX_NPY_HEADER` bytes, or a negative dimension.
  """
  f.seek(0)
  try:
    version = np.lib.format.read_magic(f)
    read_header = _HEADER_READERS.get(version)
    if read_header is None:
      raise ValueError(f"unsupported .npy format version {version}")
    start = f.tell()
    length = int.from_bytes(f.read(2 if version == (1, 0) else 4), "little")
    if length > MAX_NPY_HEADER:
      raise ValueError(f"header of {length} bytes (at most {MAX_NPY_HEADER})")
    f.seek(start)
    shape, fortran_order, dtype = read_header(f)
  except (ValueError, OSError):
    raise
  except Exception as error:  # numpy's parser of untrusted text: any error.
    raise ValueError(f"bad header ({type(error).__name__}: {error})") from None
  if any(n < 0 for n in shape):
    raise ValueError(f"negative dimension in shape {shape}")
  return shape, fortran_order, dtype, f.tell()


def load_npy(path: str | os.PathLike, mmap: bool = False,
             digest: str | None = None) -> np.ndarray:
  """Loads a `.npy` written by `save_npy`, never with pickle.

  The header is checked against the file before any data is read or
  allocated: a regular file, no object (pickled) dtype, and exactly the bytes
  its shape needs; then, given `digest`, the file's sha256.

  Args:
    path: the `.npy` file.
    mmap: map the data read-only instead of reading it (an empty array is
      read).
    digest: the sha256 that `save_npy` returned, or None (not checked).

  Returns:
    The array (a read-only `np.memmap` with `mmap`).

  Raises:
    FileNotFoundError: no file at `path`.
    FileFormatError: anything else wrong with the file; the message names it.
  """
  with open_regular(path) as f:
    size = os.fstat(f.fileno()).st_size
    try:
      shape, fortran_order, dtype, start = read_npy_header(f)
    except ValueError as error:
      raise FileFormatError(f"{path}: not a valid .npy file: {error}"
                            ) from None
    if dtype.hasobject:
      raise FileFormatError(f"{path}: holds Python objects (dtype "
                            f"{dtype.str}), which only pickle could load; "
                            "refused")
    needed = npy_size(shape, dtype, start)
    if needed != size:
      raise FileFormatError(f"{path}: its header says {dtype.str} {shape}, "
                            f"{needed} bytes, but the file has {size}")
    check_digest(path, f, digest)
    return read_npy_data(f, shape, fortran_order, dtype, start, mmap)


def check_digest(path: str | os.PathLike, f: BinaryIO,
                 digest: str | None) -> None:
  """Checks the open file `f` (at `path`) against the sha256 its writer
  recorded (nothing when `digest` is None).

  Raises:
    FileFormatError: the content differs, naming the file.
  """
  if digest is not None and sha256_of(f) != digest:
    raise FileFormatError(f"{path}: checksum mismatch (the file changed "
                          "since it was written)")


def npy_size(shape: tuple[int, ...], dtype: np.dtype, start: int) -> int:
  """The bytes a `.npy` of this header needs: header plus data."""
  return start + math.prod(shape) * dtype.itemsize


def read_npy_data(f: BinaryIO, shape: tuple[int, ...], fortran_order: bool,
                  dtype: np.dtype, start: int, mmap: bool) -> np.ndarray:
  """The data of an open `.npy` whose header (`read_npy_header`) and size
  were checked: read (never unpickled), or mapped read-only with `mmap`
  (an empty array is read)."""
  if mmap and math.prod(shape):
    return np.memmap(f, dtype=dtype, mode="r", offset=start, shape=shape,
                     order="F" if fortran_order else "C")
  f.seek(0)
  return np.load(f, allow_pickle=False)


def as_json(obj: Any) -> Any:
  """`obj` as it reads back from JSON (tuples become lists, ...), so that a
  record about to be saved compares equal to one loaded from a file."""
  return json.loads(json.dumps(obj))


def save_json(path: str | os.PathLike, obj: Any) -> None:
  """Saves `obj` as indented JSON atomically.

  Args:
    path: the file to write.
    obj: a JSON-serialisable object (key order kept).
  """
  data = (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode()
  atomic_write(path, lambda f: f.write(data))


def save_bytes(path: str | os.PathLike, data: bytes) -> str:
  """Saves `data` to `path` atomically (see `atomic_write`).

  Args:
    path: the file to write.
    data: its whole content.

  Returns:
    Its sha256 (`sha256_of`), for its reader to check (`read_bytes`).
  """
  atomic_write(path, lambda f: f.write(data))
  return hashlib.sha256(data).hexdigest()


def read_bytes(path: str | os.PathLike, digest: str | None = None) -> bytes:
  """The content of the regular file `path`, checked against `digest` (the
  sha256 `save_bytes` returned; None: not checked).

  Raises:
    FileNotFoundError: no file at `path`.
    FileFormatError: not a regular file, or a checksum mismatch.
  """
  with open_regular(path) as f:
    check_digest(path, f, digest)
    f.seek(0)
    return f.read()


def staging_dir(root: str | os.PathLike) -> Path:
  """Where a replacement of the directory `root` is built: beside it,
  absent (anything left there by a crash is removed)."""
  root = Path(root)
  path = root.with_name(f".{root.name}.partial")
  with change(f"clear {path}") as here:
    if here:
      shutil.rmtree(path, ignore_errors=True)
  return path


def replace_dir(built: str | os.PathLike, root: str | os.PathLike) -> None:
  """Puts the complete directory `built` at `root`. An existing `root` is
  moved aside first and removed only once the new one is in place, so a
  crash leaves the old directory or the new one, never a mix."""
  root = Path(root)
  old = root.with_name(f".{root.name}.old")
  with change(f"replace {root}") as here:
    if here:
      shutil.rmtree(old, ignore_errors=True)
      if root.exists():
        os.replace(root, old)
      os.replace(built, root)
      shutil.rmtree(old, ignore_errors=True)


def build_dir(root: str | os.PathLike,
              build: Callable[[Path], None]) -> None:
  """Replaces the directory `root` with one that `build(staging)` makes in
  a staging directory (`staging_dir`, then `replace_dir`): a crash never
  leaves a partial `root`. Only the writing process builds."""
  staging = staging_dir(root)
  with change(f"build {root}") as here:
    if here:
      build(staging)
      staging.mkdir(parents=True, exist_ok=True)
  replace_dir(staging, root)
