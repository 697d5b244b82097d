"""Atomic file writes: a crash leaves either the old file or the new one."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
  """Writes `path` via a fsynced temporary file in its directory and a rename."""
  path = Path(path)
  tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
  try:
    with open(tmp, "xb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


def save_npy(path: str | os.PathLike, array: Any) -> None:
  """Saves one array as `.npy` atomically, never with pickle."""
  atomic_write(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False))


def load_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
  """Loads a `.npy` written by `save_npy` (no pickle)."""
  return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)


def save_json(path: str | os.PathLike, obj: Any) -> None:
  """Saves `obj` as indented JSON atomically."""
  data = (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode()
  atomic_write(path, lambda f: f.write(data))


def save_bytes(path: str | os.PathLike, data: bytes) -> None:
  atomic_write(path, lambda f: f.write(data))
