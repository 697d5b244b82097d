"""The versioned embedding store that consumer teams read from (method §1).

Only the latest version's embeddings are stored, with the chain of backward
transformations W_1..W_K; a consumer of version j reads `z_K @ M_{K->j}`. A
store is a directory:

  manifest.json           format, dataset, strategy, versions and their dims,
                          every file with its sha256, size, shape and dtype
  v<k>_transform.npy      W_k, `[d_k, d_{k-1}]` float32, one per k >= 1,
                          written once and never rewritten
  v<K>_users.npy          `[num_users, d_K]` float32, memory-mapped on read
  v<K>_items.npy          `[num_items, d_K]` float32, memory-mapped on read
  v<K>_user_ids.npy       `[num_users]` raw user ids (numpy unicode)
  v<K>_item_ids.npy       `[num_items]` raw item ids (numpy unicode)

Every file is written under a temporary name, fsynced and renamed; the
manifest is renamed last, so it is the commit point of `append_version` and a
crash at any moment leaves the previous state readable. Files are verified
against the manifest (size, `.npy` header, then sha256) when first read.
The store has a single writer; readers may open it at any time. `open` holds
the latest files open (retrying if an append replaces them meanwhile), so a
reader sees one complete version even though an append removes the
superseded latest files; a reader wanting newer versions reopens the store.

A store received from someone else is safe to open: nothing is unpickled,
manifest paths must stay inside the directory (symlinks resolved), only
regular files are read, and sizes, shapes and dtypes are checked against the
manifest and the `.npy` headers before any data is read or allocated.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Sequence

from absl import logging
import numpy as np

from bcjax import io
from bcjax import transforms
from bcjax.rundir import RunDir

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20
_OPEN_ATTEMPTS = 20
FORMAT = "bcjax-embedding-store"
FORMAT_VERSION = 1
_LATEST_ROLES = ("users", "items", "user_ids", "item_ids")
_FLOAT = np.dtype(np.float32).str


class StoreError(ValueError):
  """A bad request to an embedding store, or a store that fails verification."""


def _fsync_dir(path: Path) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _sha256(path: Path) -> str:
  with open(path, "rb") as f:
    return _sha256_of(f)


def _sha256_of(f: BinaryIO) -> str:
  """The sha256 of an open file's whole content, read in chunks."""
  f.seek(0)
  digest = hashlib.sha256()
  for chunk in iter(lambda: f.read(1 << 20), b""):
    digest.update(chunk)
  return digest.hexdigest()


def _open_file(root: Path, name: str) -> BinaryIO:
  """Opens store file `name` (inside `root`, a regular file) for reading."""
  try:
    return io.open_regular(_inside(root, name))
  except FileNotFoundError:
    raise StoreError(f"store file {name} is missing from {root}") from None
  except io.FileFormatError:
    raise StoreError(f"store file {name} in {root} is not a regular file"
                     ) from None
  except OSError as e:
    raise StoreError(f"store file {name} in {root} cannot be opened: "
                     f"{e.strerror}") from None


def _read_manifest(root: Path) -> bytes:
  """The raw manifest of the store at `root`, refused if over-large."""
  try:
    with io.open_regular(root / MANIFEST) as f:
      if os.fstat(f.fileno()).st_size > MAX_MANIFEST_BYTES:
        raise StoreError(f"{root / MANIFEST} is larger than "
                         f"{MAX_MANIFEST_BYTES} bytes; refused")
      return f.read(MAX_MANIFEST_BYTES + 1)
  except FileNotFoundError:
    raise StoreError(f"no embedding store at {root} (no {MANIFEST})") from None
  except (io.FileFormatError, NotADirectoryError):
    raise StoreError(f"{root / MANIFEST} is not a regular file") from None
  except OSError as e:
    raise StoreError(f"{root / MANIFEST} cannot be read: {e.strerror}"
                     ) from None


def _pin_latest(root: Path, manifest: dict[str, Any]) -> dict[str, BinaryIO]:
  """Opens the latest files that exist, so an append cannot remove them
  from under this reader."""
  pinned = {}
  try:
    for name in manifest["latest"].values():
      try:
        pinned[name] = _open_file(root, name)
      except StoreError:
        pass  # Missing or bad: reported when read, unless the store changed.
  except BaseException:
    _close(pinned)
    raise
  return pinned


def _close(files: dict[str, BinaryIO]) -> None:
  for f in files.values():
    f.close()
  files.clear()


def _write_npy(root: Path, name: str, array: np.ndarray) -> dict[str, Any]:
  """Writes one array atomically; returns its manifest entry."""
  path = root / name
  io.atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))
  return {"sha256": _sha256(path), "size": path.stat().st_size,
          "shape": list(array.shape), "dtype": array.dtype.str}


def _as_float32(name: str, x: Any) -> np.ndarray:
  x = np.ascontiguousarray(x, dtype=np.float32)
  if x.ndim != 2:
    raise StoreError(f"{name} has shape {x.shape}, expected a 2-D array")
  if not np.isfinite(x).all():
    raise StoreError(f"{name} has non-finite values")
  return x


def _as_ids(kind: str, ids: Any, num_rows: int) -> np.ndarray:
  ids = np.asarray(ids, dtype=np.str_)
  if ids.shape != (num_rows,):
    raise StoreError(f"{kind} ids have shape {ids.shape}, expected "
                     f"({num_rows},), one per {kind} row")
  unique, counts = np.unique(ids, return_counts=True)
  if (counts > 1).any():
    raise StoreError(f"duplicate {kind} id {str(unique[counts > 1][0])!r}")
  return ids


def _check_latest(users: Any, items: Any, user_ids: Any,
                  item_ids: Any) -> tuple[np.ndarray, ...]:
  """Validates and converts latest embeddings and their ids."""
  users = _as_float32("users", users)
  items = _as_float32("items", items)
  if users.shape[1] != items.shape[1]:
    raise StoreError(f"users have shape {users.shape} and items {items.shape}; "
                     "they need the same number of columns")
  if 0 in users.shape or 0 in items.shape:
    raise StoreError(f"users {users.shape} and items {items.shape}: a store "
                     "needs at least one user, one item and one dimension")
  return (users, items, _as_ids("user", user_ids, len(users)),
          _as_ids("item", item_ids, len(items)))


def _check_prefix(kind: str, old: np.ndarray, new: np.ndarray) -> None:
  if len(new) < len(old):
    raise StoreError(f"{len(new)} {kind} ids given but the store has "
                     f"{len(old)}; the stored ids must be a prefix of the new")
  differ = np.flatnonzero(new[:len(old)] != old)
  if differ.size:
    i = differ[0]
    raise StoreError(f"{kind} ids are not an extension of the stored ones: "
                     f"row {i} is {str(new[i])!r}, stored {str(old[i])!r}")


def _inside(root: Path, name: Any) -> Path:
  """The path of manifest entry `name`, which must lie inside `root`."""
  if not isinstance(name, str) or not name or "\0" in name:
    raise StoreError(f"{MANIFEST}: bad file name {name!r}")
  path = (root / name).resolve()
  if Path(name).is_absolute() or root.resolve() not in path.parents:
    raise StoreError(f"{MANIFEST}: file path {name!r} escapes the store "
                     f"directory {root}")
  return path


def _validate(manifest: Any, root: Path) -> None:
  """Checks a parsed manifest's structure, shapes and paths."""

  def fail(message: str):
    raise StoreError(f"{root / MANIFEST}: {message}")

  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    fail(f"not a {FORMAT} manifest")
  if manifest.get("format_version") != FORMAT_VERSION:
    fail(f"format version {manifest.get('format_version')!r}, this reader "
         f"knows {FORMAT_VERSION}")
  for key in ("dataset", "strategy"):
    if not isinstance(manifest.get(key), str):
      fail(f"{key!r} must be a string")
  versions, files = manifest.get("versions"), manifest.get("files")
  latest = manifest.get("latest")
  if not isinstance(versions, list) or not versions or not isinstance(
      files, dict) or not isinstance(latest, dict):
    fail("needs 'versions' (non-empty list), 'files' and 'latest' objects")
  if manifest.get("latest_version") != len(versions) - 1:
    fail(f"latest_version {manifest.get('latest_version')!r} disagrees with "
         f"the {len(versions)} versions listed")
  if set(latest) != set(_LATEST_ROLES) or not all(
      isinstance(name, str) for name in latest.values()):
    fail(f"'latest' must name one file for each of {_LATEST_ROLES}")
  expected = {}  # file name -> (shape, dtype kind)
  for k, entry in enumerate(versions):
    if not isinstance(entry, dict) or entry.get("version") != k or type(
        entry.get("dim")) is not int or entry["dim"] < 1:
      fail(f"versions[{k}] = {entry!r}; expected version {k} with a "
           "positive int dim")
    transform = entry.get("transform")
    if (transform is None) != (k == 0) or (k and not isinstance(transform,
                                                                 str)):
      fail(f"version {k} must {'not ' if k == 0 else ''}name a transform file")
    if k:
      expected[transform] = ([entry["dim"], versions[k - 1]["dim"]], "f")
  rows = {}
  for role in ("users", "items"):
    info = files.get(latest[role])
    shape = info.get("shape") if isinstance(info, dict) else None
    if not isinstance(shape, list) or not shape or type(
        shape[0]) is not int or shape[0] < 1:
      fail(f"latest {role} file {latest[role]!r} is not listed in files "
           "with a shape of at least one row")
    rows[role] = shape[0]
  dim = versions[-1]["dim"]
  expected.update({
      latest["users"]: ([rows["users"], dim], "f"),
      latest["items"]: ([rows["items"], dim], "f"),
      latest["user_ids"]: ([rows["users"]], "U"),
      latest["item_ids"]: ([rows["items"]], "U"),
  })
  if len(expected) != len(versions) + 3:
    fail("every version's transform and every latest role needs its own file")
  for name, (shape, kind) in expected.items():
    _inside(root, name)
    info = files.get(name)
    if not isinstance(info, dict):
      fail(f"file {name!r} is not listed in files")
    if info.get("shape") != shape:
      fail(f"file {name!r} has shape {info.get('shape')}, expected {shape}")
    dtype = info.get("dtype")
    if not (dtype == _FLOAT if kind == "f" else isinstance(dtype, str) and
            re.fullmatch(r"<U\d+", dtype)):
      fail(f"file {name!r} has dtype {dtype!r}")
    if not (isinstance(info.get("sha256"), str) and re.fullmatch(
        r"[0-9a-f]{64}", info["sha256"]) and type(info.get("size")) is int):
      fail(f"file {name!r} needs a sha256 hex digest and an int size")
  if set(files) != set(expected):
    fail(f"files lists unused entries {sorted(set(files) - set(expected))}")


class EmbeddingStore:
  """A versioned embedding store directory; see the module docstring.

  Make one with `create` or `open`. Reads are lazy: each file is verified
  when first read and kept (embeddings memory-mapped, read-only).
  """

  def __init__(self, root: Path, raw_manifest: bytes,
               pinned: dict[str, BinaryIO] | None = None):
    """Use `create` or `open`; `raw_manifest` must already be validated;
    `pinned` maps file names to open files, read in place of the paths."""
    self._root = root
    self._raw_manifest = raw_manifest
    self._manifest = json.loads(raw_manifest)
    self._arrays: dict[str, np.ndarray] = {}
    self._chains: dict[tuple[int, int], np.ndarray] = {}
    self._pinned = dict(pinned or {})

  def close(self) -> None:
    """Closes the files held open since `open` (arrays read stay valid)."""
    _close(self._pinned)

  def __enter__(self) -> EmbeddingStore:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def __del__(self):
    _close(getattr(self, "_pinned", {}))

  @classmethod
  def create(cls, path: str | os.PathLike[str], users: Any, items: Any,
             user_ids: Any, item_ids: Any, dataset: str,
             strategy: str) -> EmbeddingStore:
    """Creates a store holding version 0.

    Args:
      path: a directory that does not exist or is empty.
      users: `[num_users, d_0]` version-0 user embeddings.
      items: `[num_items, d_0]` version-0 item embeddings.
      user_ids: `[num_users]` raw user ids (strings, unique).
      item_ids: `[num_items]` raw item ids (strings, unique).
      dataset: the dataset's name, recorded in the manifest.
      strategy: the strategy's name, recorded in the manifest.

    Returns:
      The open store, at version 0.

    Raises:
      StoreError: if `path` is a file or a non-empty directory, or for bad
        shapes, non-finite values, duplicate ids or non-string names. A
        crash midway leaves a directory without manifest, which `open`
        rejects and `create` refuses to reuse until it is emptied.
    """
    root = Path(path)
    if not isinstance(dataset, str) or not isinstance(strategy, str):
      raise StoreError(f"dataset {dataset!r} and strategy {strategy!r} must "
                       "be strings")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
      raise StoreError(f"cannot create a store at {root}: it exists and is "
                       "not an empty directory")
    users, items, user_ids, item_ids = _check_latest(users, items, user_ids,
                                                     item_ids)
    root.mkdir(parents=True, exist_ok=True)
    arrays = dict(zip(_LATEST_ROLES, (users, items, user_ids, item_ids)))
    latest = {role: f"v0_{role}.npy" for role in _LATEST_ROLES}
    files = {latest[r]: _write_npy(root, latest[r], arrays[r]) for r in arrays}
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "dataset": dataset, "strategy": strategy, "latest_version": 0,
        "versions": [{"version": 0, "dim": users.shape[1], "transform": None}],
        "latest": latest, "files": files,
    }
    return cls(root, cls._commit(root, manifest))

  @classmethod
  def open(cls, path: str | os.PathLike[str]) -> EmbeddingStore:
    """Opens a store and checks its manifest (files are checked on read).

    The latest files are held open, so the store reads as this version even
    if a writer appends meanwhile; if an append removes them before they are
    opened, the new manifest is read instead.

    Args:
      path: the store directory.

    Returns:
      The open store at its latest version; close it (or use it as a
      context manager) to release the held files.

    Raises:
      StoreError: for a missing or malformed manifest, one whose paths
        escape the store directory, or a store that keeps changing.
    """
    root = Path(path)
    for _ in range(_OPEN_ATTEMPTS):
      raw = _read_manifest(root)
      try:
        manifest = json.loads(raw)
      except (UnicodeDecodeError, RecursionError, ValueError) as e:
        raise StoreError(f"{root / MANIFEST} is not valid JSON: "
                         f"{type(e).__name__}: {e}") from None
      _validate(manifest, root)
      pinned = _pin_latest(root, manifest)
      if len(pinned) == len(_LATEST_ROLES) or _read_manifest(root) == raw:
        return cls(root, raw, pinned)
      _close(pinned)  # An append replaced the latest files: read it anew.
    raise StoreError(f"store {root} changed {_OPEN_ATTEMPTS} times while "
                     "being opened")

  @staticmethod
  def _commit(root: Path, manifest: dict[str, Any]) -> bytes:
    """Makes the written files durable, then switches to `manifest`."""
    _fsync_dir(root)
    raw = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    io.atomic_write(root / MANIFEST, lambda f: f.write(raw))
    _fsync_dir(root)
    return raw

  @property
  def path(self) -> Path:
    """The store directory."""
    return self._root

  @property
  def dataset(self) -> str:
    """The dataset's name recorded in the manifest."""
    return self._manifest["dataset"]

  @property
  def strategy(self) -> str:
    """The strategy's name recorded in the manifest."""
    return self._manifest["strategy"]

  @property
  def versions(self) -> list[int]:
    """The stored versions, `[0, ..., K]`."""
    return list(range(len(self._manifest["versions"])))

  @property
  def latest_version(self) -> int:
    """K, the version whose embeddings are stored."""
    return self._manifest["latest_version"]

  @property
  def dims(self) -> list[int]:
    """`dims[k]` is d_k, the embedding size of version k."""
    return [entry["dim"] for entry in self._manifest["versions"]]

  @property
  def user_ids(self) -> np.ndarray:
    """`[num_users]` raw ids of the stored user rows."""
    return self._read(self._manifest["latest"]["user_ids"])

  @property
  def item_ids(self) -> np.ndarray:
    """`[num_items]` raw ids of the stored item rows."""
    return self._read(self._manifest["latest"]["item_ids"])

  def _read(self, name: str) -> np.ndarray:
    """Loads file `name`, verified against the manifest on first read."""
    if name in self._arrays:
      return self._arrays[name]
    info = self._manifest["files"][name]
    f = self._pinned.pop(name, None) or _open_file(self._root, name)
    with f:
      size = os.fstat(f.fileno()).st_size
      if size != info["size"]:
        raise StoreError(f"store file {name} has {size} bytes, the manifest "
                         f"says {info['size']}")
      try:
        shape, fortran_order, dtype, data_start = io.read_npy_header(f)
      except ValueError as e:
        raise StoreError(f"store file {name} is not a valid .npy file: {e}"
                         ) from None
      if list(shape) != info["shape"] or dtype.str != info["dtype"]:
        raise StoreError(f"store file {name} holds {dtype.str} {shape}, the "
                         f"manifest says {info['dtype']} "
                         f"{tuple(info['shape'])}")
      if (fortran_order or
          data_start + math.prod(shape) * dtype.itemsize != size):
        raise StoreError(f"store file {name}: its header does not describe "
                         f"its {size} bytes in C order")
      if _sha256_of(f) != info["sha256"]:
        raise StoreError(f"checksum mismatch for store file {name}")
      # Mapped or read from this open file: the bytes just verified.
      if dtype.str == _FLOAT:
        array = np.memmap(f, dtype=dtype, mode="r", offset=data_start,
                          shape=tuple(shape))
      else:
        f.seek(0)
        array = np.load(f, allow_pickle=False)
    array.flags.writeable = False
    self._arrays[name] = array
    return array

  def _check_version(self, version: Any) -> int:
    if isinstance(version, bool) or not isinstance(
        version, (int, np.integer)) or version < 0:
      raise StoreError(f"unknown version {version!r}; the store has versions "
                       f"0..{self.latest_version}")
    if version > self.latest_version:
      raise StoreError(f"version {version} is newer than the latest stored "
                       f"version {self.latest_version}")
    return int(version)

  def _chain(self, from_version: int, to_version: int) -> np.ndarray:
    """M_{from->to} for from > to as float32 `[d_from, d_to]`, composed once
    (in float64) and cached."""
    key = (from_version, to_version)
    if key not in self._chains:
      versions = self._manifest["versions"]
      chain = [self._read(versions[v]["transform"]).astype(np.float64)
               for v in range(from_version, to_version, -1)]
      self._chains[key] = transforms.compose(chain).astype(np.float32)
    return self._chains[key]

  def transform(self, z: Any, from_version: int, to_version: int) -> np.ndarray:
    """Maps embeddings of version `from_version` into version `to_version`.

    Args:
      z: `[n, d_from]` (or `[d_from]`) embeddings of version `from_version`.
      from_version: k.
      to_version: j <= k.

    Returns:
      `[n, d_to]`, `z @ M_{k->j}` (z itself when j == k).

    Raises:
      StoreError: for an unknown version, j > k, or a z of the wrong width.
    """
    k = self._check_version(from_version)
    j = self._check_version(to_version)
    if j > k:
      raise StoreError(f"cannot transform version {k} embeddings forward to "
                       f"the newer version {j}")
    z = np.asarray(z)
    if z.ndim not in (1, 2) or z.shape[-1] != self.dims[k]:
      raise StoreError(f"embeddings have shape {z.shape}, expected "
                       f"[n, {self.dims[k]}] for version {k}")
    return z if j == k else transforms.blocked_product(z, self._chain(k, j))

  def embeddings(self, version: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Every stored user and item in the space of `version` (default latest).

    Args:
      version: j, in `0..K`; None for the latest K.

    Returns:
      `(users [num_users, d_j], items [num_items, d_j])`; for the latest
      version these are the read-only memory maps themselves.

    Raises:
      StoreError: for an unknown version or a file that fails verification.
    """
    latest = self._manifest["latest"]
    users, items = self._read(latest["users"]), self._read(latest["items"])
    j = self.latest_version if version is None else version
    return (self.transform(users, self.latest_version, j),
            self.transform(items, self.latest_version, j))

  def lookup(self, user_ids: Sequence[str] = (), item_ids: Sequence[str] = (),
             version: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The rows of the given raw ids in the space of `version` (default latest).

    Args:
      user_ids: raw user ids (strings), in the order wanted.
      item_ids: raw item ids (strings), in the order wanted.
      version: j, in `0..K`; None for the latest K.

    Returns:
      `(users [len(user_ids), d_j], items [len(item_ids), d_j])`.

    Raises:
      StoreError: for an unknown id or version.
    """
    j = self._check_version(self.latest_version if version is None
                            else version)
    latest = self._manifest["latest"]
    picked = []
    for kind, ids, known in (("user", user_ids, self.user_ids),
                             ("item", item_ids, self.item_ids)):
      ids = np.asarray(ids, dtype=np.str_).reshape(-1)
      order = np.argsort(known)
      pos = np.searchsorted(known, ids, sorter=order).clip(max=len(known) - 1)
      missing = ids[known[order[pos]] != ids]
      if missing.size:
        raise StoreError(f"unknown {kind} id {str(missing[0])!r}")
      table, rows = self._read(latest[f"{kind}s"]), order[pos]
      # The rows exactly as `embeddings(j)` computes them (one product path).
      picked.append(table[rows] if j == self.latest_version else
                    transforms.blocked_product(
                        table, self._chain(self.latest_version, j), rows))
    return picked[0], picked[1]

  def save_npz(self, out: str | os.PathLike[str],
               version: int | None = None) -> None:
    """Writes `users` and `items` of `version` (see `embeddings`) atomically.

    Args:
      out: the `.npz` file to write; its directory must exist.
      version: j, in `0..K`; None for the latest K.

    Raises:
      StoreError: for an unknown version or a file that fails verification.
    """
    users, items = self.embeddings(version)
    out = Path(out)
    io.atomic_write(out, lambda f: np.savez(f, users=users, items=items))
    _fsync_dir(out.parent)

  def append_version(self, users: Any, items: Any, transform: Any,
                     user_ids: Any, item_ids: Any) -> int:
    """Adds version K+1: new latest embeddings and W_{K+1}.

    Older versions' files are never rewritten; the manifest switch is the
    commit point, after which the superseded latest files are removed.

    Args:
      users: `[num_users', d_{K+1}]`; the rows may grow (new users last).
      items: `[num_items', d_{K+1}]`; likewise.
      transform: `[d_{K+1}, d_K]`, W_{K+1}, applied as `z @ W`.
      user_ids: `[num_users']` raw ids; the stored ids must be a prefix.
      item_ids: `[num_items']` raw ids; likewise.

    Returns:
      The new version number K+1.

    Raises:
      StoreError: for a transform or embeddings whose shape does not fit,
        ids that do not extend the stored ones, or a store changed on disk
        since it was opened.
    """
    if (self._root / MANIFEST).read_bytes() != self._raw_manifest:
      raise StoreError(f"store {self._root} changed since it was opened; "
                       "reopen it")
    k, d_prev = self.latest_version + 1, self.dims[-1]
    transform = _as_float32("transform", transform)
    if transform.shape[1] != d_prev:
      raise StoreError(f"transform has shape {transform.shape}, expected "
                       f"[d_{k}, {d_prev}]: version {k - 1} has {d_prev} dims")
    users, items, user_ids, item_ids = _check_latest(users, items, user_ids,
                                                     item_ids)
    if users.shape[1] != transform.shape[0]:
      raise StoreError(f"transform has shape {transform.shape} but users have "
                       f"shape {users.shape}: W_{k} needs one row per column")
    _check_prefix("user", self.user_ids, user_ids)
    _check_prefix("item", self.item_ids, item_ids)

    old_latest = self._manifest["latest"]
    latest = {role: f"v{k}_{role}.npy" for role in _LATEST_ROLES}
    arrays = {f"v{k}_transform.npy": transform, latest["users"]: users,
              latest["items"]: items, latest["user_ids"]: user_ids,
              latest["item_ids"]: item_ids}
    files = {name: info for name, info in self._manifest["files"].items()
             if name not in old_latest.values()}
    files.update({name: _write_npy(self._root, name, array)
                  for name, array in arrays.items()})
    manifest = dict(self._manifest, latest_version=k, latest=latest,
                    files=files, versions=self._manifest["versions"] + [
                        {"version": k, "dim": users.shape[1],
                         "transform": f"v{k}_transform.npy"}])
    self._raw_manifest = self._commit(self._root, manifest)
    self._manifest = manifest
    for name in old_latest.values():
      self._arrays.pop(name, None)
      pinned = self._pinned.pop(name, None)
      if pinned:
        pinned.close()
      (self._root / name).unlink(missing_ok=True)
    return k


def _run_file(read, path: Path):
  """`read()` of a run file, its failures as a `StoreError` naming `path`."""
  try:
    return read()
  except FileNotFoundError:
    raise StoreError(f"run file {path} is missing") from None
  except (OSError, ValueError) as e:
    raise StoreError(f"run file {path} cannot be read: {e}") from None


def _run_version(run_dir: RunDir, strategy: str, k: int, user_ids: np.ndarray,
                 item_ids: np.ndarray) -> tuple[np.ndarray, ...]:
  """`(users, items, user_ids, item_ids)` of version k of a run."""
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
    logging.warning("%s: skipping incomplete versions %s", where,
                    [k for k in present if k >= n])
  return list(range(n))


def export_run(workdir: str | os.PathLike[str], strategy: str,
               out: str | os.PathLike[str],
               dataset: str | None = None) -> EmbeddingStore:
  """Builds a store from one strategy of a training run directory.

  The run holds `user_ids.npy`, `item_ids.npy` (the full graph's raw ids;
  version k uses the first rows), optionally `config.json` and, per version k,
  `<strategy>/v<k>/{users,items}.npy`, `transform.npy` (`[d_k, d_{k-1}]`, for
  k >= 1) and `metrics.json`, written last to mark the version complete.
  Complete versions 0..n-1 are exported; later incomplete ones are skipped.
  The store is built in a temporary sibling directory and renamed into place,
  so `out` either gets the whole store or stays as it was.

  Args:
    workdir: the run directory.
    strategy: the strategy's subdirectory name.
    out: the store directory to create (absent or empty).
    dataset: recorded in the manifest; by default the `dataset` of the run's
      `config.json`, or the run directory's name without one.

  Returns:
    The open store at `out`.

  Raises:
    StoreError: for a missing run, strategy or file, a gap in the complete
      versions, a version k >= 1 without `transform.npy` (a strategy without
      backward transformations), or anything `create` / `append_version`
      reject.
  """
  run_dir, out = RunDir.of(workdir), Path(out)
  run, strategy_dir = run_dir.root, run_dir.strategy_dir(strategy)
  if not run.is_dir():
    raise StoreError(f"no run directory {run}")
  if not strategy_dir.is_dir():
    raise StoreError(f"run {run} has no strategy {strategy!r} (no directory "
                     f"{strategy_dir})")
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise StoreError(f"cannot export to {out}: it exists and is not an empty "
                     "directory")
  versions = _complete_versions(run_dir, strategy)
  for k in versions[1:]:
    path = run_dir.path(strategy, k, "transform.npy")
    if not path.is_file():
      raise StoreError(f"strategy {strategy!r} has no backward transformation "
                       f"at version {k} (no {path})")
  user_ids, item_ids = (_run_file(lambda: io.load_npy(run_dir.ids_path(kind)),
                                  run_dir.ids_path(kind))
                        for kind in ("user", "item"))
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
  try:
    store = EmbeddingStore.create(
        tmp, *_run_version(run_dir, strategy, 0, user_ids, item_ids),
        dataset=dataset or _run_dataset(run_dir), strategy=strategy)
    for k in versions[1:]:
      users, items, k_user_ids, k_item_ids = _run_version(
          run_dir, strategy, k, user_ids, item_ids)
      transform = _run_file(lambda: run_dir.transform(strategy, k),
                            run_dir.path(strategy, k, "transform.npy"))
      store.append_version(users, items, transform, k_user_ids, k_item_ids)
    os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  _fsync_dir(out.parent)
  return EmbeddingStore.open(out)
