"""Named PRNG key streams: every random draw of a run derives from its seed
through `derive`, one name per purpose.

A run's keys form a tree (method §9)::

  root(seed)                                  the run
  ├─ version/k                                shared by every strategy
  │  ├─ init                                  M_k's and B_k's initialisation
  │  └─ epoch/e                               epoch e's batches
  │     ├─ triples                            the BPR triples
  │     └─ neighbours                         the sampled trees (fanout > 0)
  ├─ consumers:<task>                         a task's consumers (any strategy)
  │  ├─ heads/h/s                             seed s of hidden size h
  │  │  └─ epoch/e/order, epoch/e/dropout     the order on the host, the
  │  │        └─ batch/i                      dropout masks under jit
  │  └─ compat/j                              compatibility row j's consumers
  └─ backfill:random                          the random backfill order

A name is folded in as its CRC32, an index as itself, so two different
paths give two different keys (checked in `tests/test_keys.py` on every
key a run draws) and no key serves two purposes: the bug this replaces
was `fold_in(key, 1)` naming both "initialise the model" and "epoch 1".

Concrete keys derived while `record()` is active are listed with their
paths (keys derived under a jit trace are not concrete and are not listed;
they are indices folded into a listed stream).
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Iterator
import zlib

import jax
import numpy as np

_recording: list[dict[bytes, str]] = []


def _data(key: jax.Array) -> bytes | None:
  """The key's bytes, or None when it is traced."""
  if isinstance(key, jax.core.Tracer):
    return None
  return np.asarray(jax.random.key_data(key)).tobytes()


def _note(key: jax.Array, path: str) -> None:
  data = _data(key)
  if data is not None:
    listed = _recording[-1]
    listed.setdefault(data, path)
    if listed[data] != path and path not in listed[data].split(" | "):
      listed[data] += " | " + path


def _path_of(key: jax.Array) -> str:
  return _recording[-1].get(_data(key), "?")


def root(seed: int) -> jax.Array:
  """The run key of `seed` (a typed threefry key)."""
  key = jax.random.key(int(seed))
  if _recording:
    _note(key, f"seed{int(seed)}")
  return key


def derive(key: jax.Array, name: str, *indices: int) -> jax.Array:
  """The key of stream `name` (then `indices`) under `key`.

  Args:
    key: the parent key.
    name: the stream's purpose ("init", "epoch", ...); its CRC32 is folded in.
    *indices: non-negative integers folded in after the name (a version, an
      epoch, a seed).

  Returns:
    `fold_in(...fold_in(fold_in(key, crc32(name)), indices[0])..., indices[-1])`.
  """
  parent = key
  key = jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)
  for index in indices:
    key = jax.random.fold_in(key, index)
  if _recording and _data(key) is not None:  # Traced keys are not listed.
    _note(key, "/".join([_path_of(parent), name, *map(str, indices)]))
  return key


def fingerprint(key: jax.Array) -> str:
  """A short digest of a concrete key's data: what a checkpoint records of
  the key it was trained with, so that a run of another seed never resumes
  from it (`bcjax.util.checkpointing`)."""
  return hashlib.sha256(_data(key)).hexdigest()[:16]


@contextlib.contextmanager
def record() -> Iterator[dict[bytes, str]]:
  """Lists the concrete keys derived inside the block: key bytes -> path
  (paths joined by " | " when two paths gave the same key)."""
  listed: dict[bytes, str] = {}
  _recording.append(listed)
  try:
    yield listed
  finally:
    _recording.pop()
