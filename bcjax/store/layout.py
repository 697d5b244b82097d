"""The embedding store's on-disk format: manifest, files and their checks.

A store is a directory::

  manifest.json           format, dataset, strategy, the store id, versions
                          with their dims, fingerprints and row counts
                          (`bcjax.store.provenance`), every file with its
                          sha256, size, shape and dtype
  v<k>_transform.npy      W_k, `[d_k, d_{k-1}]` float32, one per k >= 1,
                          written once and never rewritten; or, for a
                          non-linear B_k (a post-hoc adapter), one
  v<k>_backward_<p>.npy   float32 file per parameter p (`bcjax.store.maps`)
  v<K>_users.npy          `[num_users, d_K]` float32, memory-mapped on read
  v<K>_items.npy          `[num_items, d_K]` float32, memory-mapped on read
  v<K>_user_ids.npy       `[num_users]` raw user ids (numpy unicode)
  v<K>_item_ids.npy       `[num_items]` raw item ids (numpy unicode)
  .lock                   the writer lock (`bcjax.store.guard`)

This module validates a manifest before anything it names is opened (paths
inside the directory, shapes and dtypes consistent across versions), opens
and verifies files (regular files only, the `.npy` header against the
manifest, then sha256) and checks the arrays a writer is given.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import re
from typing import Any, BinaryIO, Callable

import numpy as np

from bcjax.backward.maps import STORED_KINDS, BackwardMap
from bcjax.util import io

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20
FORMAT = "bcjax-embedding-store"
FORMAT_VERSION = 2
# Format 1 lacks the store id, fingerprints and row counts; it still opens.
READABLE_VERSIONS = (1, 2)
LATEST_ROLES = ("users", "items", "user_ids", "item_ids")
FLOAT = np.dtype(np.float32).str


class StoreError(ValueError):
  """A bad request to an embedding store, or a store that fails verification."""


def is_digest(value: Any) -> bool:
  """Whether `value` is a hex sha256."""
  return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value
                                                 ) is not None


def fsync_dir(path: Path) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def commit(root: Path, manifest: dict[str, Any]) -> bytes:
  """Makes the files written in `root` durable, then switches to
  `manifest` (renamed last: the commit point); returns its bytes."""
  fsync_dir(root)
  raw = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
  io.atomic_write(root / MANIFEST, lambda f: f.write(raw))
  fsync_dir(root)
  return raw


def open_file(root: Path, name: str) -> BinaryIO:
  """Opens store file `name` (inside `root`, a regular file) for reading."""
  try:
    return io.open_regular(inside(root, name))
  except FileNotFoundError:
    raise StoreError(f"store file {name} is missing from {root}") from None
  except io.FileFormatError:
    raise StoreError(f"store file {name} in {root} is not a regular file"
                     ) from None
  except OSError as e:
    raise StoreError(f"store file {name} in {root} cannot be opened: "
                     f"{e.strerror}") from None


def read_verified(f: BinaryIO, name: str, info: dict[str, Any]
                  ) -> np.ndarray:
  """The array of the open store file `name`, verified against its
  manifest entry `info` before any data is read: size, `.npy` header
  (shape, dtype, C order), then sha256. Float arrays are memory-mapped
  (read-only) from `f`, so the bytes used are the bytes verified."""
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
                     f"manifest says {info['dtype']} {tuple(info['shape'])}")
  if fortran_order or io.npy_size(shape, dtype, data_start) != size:
    raise StoreError(f"store file {name}: its header does not describe its "
                     f"{size} bytes in C order")
  if io.sha256_of(f) != info["sha256"]:
    raise StoreError(f"checksum mismatch for store file {name}")
  return io.read_npy_data(f, shape, fortran_order, dtype, data_start,
                          mmap=dtype.str == FLOAT)


def read_manifest(root: Path) -> bytes:
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


def pin_latest(root: Path, manifest: dict[str, Any]) -> dict[str, BinaryIO]:
  """Opens the latest files that exist, so an append cannot remove them
  from under this reader."""
  pinned = {}
  try:
    for name in manifest["latest"].values():
      try:
        pinned[name] = open_file(root, name)
      except StoreError:
        pass  # Missing or bad: reported when read, unless the store changed.
  except BaseException:
    close_all(pinned)
    raise
  return pinned


def close_all(files: dict[str, BinaryIO]) -> None:
  for f in files.values():
    f.close()
  files.clear()


def write_npy(root: Path, name: str, array: np.ndarray) -> dict[str, Any]:
  """Writes one array atomically; returns its manifest entry."""
  path = root / name
  digest = io.save_npy(path, array)
  return {"sha256": digest, "size": path.stat().st_size,
          "shape": list(array.shape), "dtype": array.dtype.str}


def transform_files(entry: Any) -> dict[str, str] | None:
  """A version's "transform" entry as `{param: file name}`: a linear map's
  one file (its `"w"`), or a non-linear map's `{"kind", "params"}`; None
  for anything else."""
  if isinstance(entry, str):
    return {"w": entry}
  if (isinstance(entry, dict) and set(entry) == {"kind", "params"}
      and entry["kind"] in STORED_KINDS and entry["kind"] != "linear"
      and isinstance(entry["params"], dict) and entry["params"]
      and all(isinstance(p, str) and isinstance(f, str)
              for p, f in entry["params"].items())):
    return dict(entry["params"])
  return None


def _map_files(k: int, entry: dict, files: dict, dims: tuple[int, int],
               fail: Callable[[str], None]) -> dict[str, tuple[list, str]]:
  """The expected (shape, dtype kind) of a non-linear map's files, as
  listed; the map they make must read d_k dims and give d_{k-1}."""
  shapes = {}
  for param, name in entry["params"].items():
    info = files.get(name)
    shape = info.get("shape") if isinstance(info, dict) else None
    if not (isinstance(shape, list) and 1 <= len(shape) <= 2 and all(
        type(n) is int and n >= 1 for n in shape)):
      fail(f"version {k}'s map parameter {param!r} ({name!r}) is not listed "
           "with a 1-D or 2-D shape")
    shapes[param] = shape
  try:
    backward = BackwardMap(entry["kind"], {p: np.zeros(s, np.float32)
                                           for p, s in shapes.items()})
  except ValueError as e:
    fail(f"version {k}'s map: {e}")
  if (backward.d_in, backward.d_out) != dims:
    fail(f"version {k}'s {entry['kind']} map goes from {backward.d_in} to "
         f"{backward.d_out} dims, expected {dims[0]} to {dims[1]}")
  return {entry["params"][p]: (s, "f") for p, s in shapes.items()}


def as_float32(name: str, x: Any) -> np.ndarray:
  x = np.ascontiguousarray(x, dtype=np.float32)
  if x.ndim != 2:
    raise StoreError(f"{name} has shape {x.shape}, expected a 2-D array")
  check_finite(name, x)
  return x


def check_finite(name: str, x: np.ndarray, block: int = 1 << 22) -> None:
  """Refuses NaN and infinities, a block of `block` values at a time (a
  memory-mapped table is never copied whole); `name` names the array in
  the message. The writer checks what it is given, the reader what it
  reads."""
  flat = x.reshape(-1)
  for start in range(0, flat.size, block):
    if not np.isfinite(flat[start:start + block]).all():
      raise StoreError(f"{name} has non-finite values")


def as_ids(kind: str, ids: Any, num_rows: int) -> np.ndarray:
  """`ids` as numpy unicode, checked (`check_ids`): strings only, never
  converted from other types (an int, None or an object would be stored
  as its text)."""
  array = ids if isinstance(ids, np.ndarray) else np.asarray(ids, object)
  if array.dtype.kind != "U" and not (array.dtype == object and all(
      isinstance(x, str) for x in array.reshape(-1).tolist())):
    found = next((x for x in array.reshape(-1).tolist()
                  if not isinstance(x, str)), array.dtype)
    raise StoreError(f"{kind} ids must be strings, got {found!r} of type "
                     f"{type(found).__name__}")
  array = array.astype(np.str_)
  if array.shape != (num_rows,):
    raise StoreError(f"{kind} ids have shape {array.shape}, expected "
                     f"({num_rows},), one per {kind} row")
  check_ids(kind, array)
  return array


def check_ids(kind: str, ids: np.ndarray, where: str = "") -> None:
  """Refuses an empty id, one with a control or other non-printable
  character (a tab or a newline would forge lines of printed output), and
  a duplicate; messages start with `where` (the file read). The writer
  checks what it is given, the reader what it reads."""
  prefix = f"{where}: " if where else ""
  for row, value in enumerate(ids.tolist()):
    if not value or not value.isprintable():
      raise StoreError(f"{prefix}{kind} id {value!r} at row {row} is empty or "
                       "has a control character; ids must be printable text")
  unique, counts = np.unique(ids, return_counts=True)
  if (counts > 1).any():
    raise StoreError(f"{prefix}duplicate {kind} id "
                     f"{str(unique[counts > 1][0])!r}")


def check_latest(users: Any, items: Any, user_ids: Any,
                  item_ids: Any) -> tuple[np.ndarray, ...]:
  """Validates and converts latest embeddings and their ids."""
  users = as_float32("users", users)
  items = as_float32("items", items)
  if users.shape[1] != items.shape[1]:
    raise StoreError(f"users have shape {users.shape} and items {items.shape}; "
                     "they need the same number of columns")
  if 0 in users.shape or 0 in items.shape:
    raise StoreError(f"users {users.shape} and items {items.shape}: a store "
                     "needs at least one user, one item and one dimension")
  return (users, items, as_ids("user", user_ids, len(users)),
          as_ids("item", item_ids, len(items)))


def check_prefix(kind: str, old: np.ndarray, new: np.ndarray) -> None:
  if len(new) < len(old):
    raise StoreError(f"{len(new)} {kind} ids given but the store has "
                     f"{len(old)}; the stored ids must be a prefix of the new")
  differ = np.flatnonzero(new[:len(old)] != old)
  if differ.size:
    i = differ[0]
    raise StoreError(f"{kind} ids are not an extension of the stored ones: "
                     f"row {i} is {str(new[i])!r}, stored {str(old[i])!r}")


def inside(root: Path, name: Any) -> Path:
  """The path of manifest entry `name`, which must lie inside `root`."""
  if not isinstance(name, str) or not name or "\0" in name:
    raise StoreError(f"{MANIFEST}: bad file name {name!r}")
  path = (root / name).resolve()
  if Path(name).is_absolute() or root.resolve() not in path.parents:
    raise StoreError(f"{MANIFEST}: file path {name!r} escapes the store "
                     f"directory {root}")
  return path


def validate(manifest: Any, root: Path) -> None:
  """Checks a parsed manifest's structure, shapes and paths."""

  def fail(message: str):
    raise StoreError(f"{root / MANIFEST}: {message}")

  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    fail(f"not a {FORMAT} manifest")
  if manifest.get("format_version") not in READABLE_VERSIONS or type(
      manifest.get("format_version")) is not int:
    fail(f"format version {manifest.get('format_version')!r}, this reader "
         f"knows {', '.join(map(str, READABLE_VERSIONS))}")
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
  if set(latest) != set(LATEST_ROLES) or not all(
      isinstance(name, str) for name in latest.values()):
    fail(f"'latest' must name one file for each of {LATEST_ROLES}")
  expected = {}  # file name -> (shape, dtype kind)
  for k, entry in enumerate(versions):
    if not isinstance(entry, dict) or entry.get("version") != k or type(
        entry.get("dim")) is not int or entry["dim"] < 1:
      fail(f"versions[{k}] = {entry!r}; expected version {k} with a "
           "positive int dim")
    transform = entry.get("transform")
    named = transform_files(transform)
    if (transform is None) != (k == 0) or (k and named is None):
      fail(f"version {k} must {'not ' if k == 0 else ''}name a transform file"
           " (or a map's kind and parameter files)")
    if isinstance(transform, str):
      expected[transform] = ([entry["dim"], versions[k - 1]["dim"]], "f")
    elif k:
      expected.update(_map_files(k, transform, files,
                                 (entry["dim"], versions[k - 1]["dim"]), fail))
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
  num_named = sum(len(transform_files(v.get("transform")) or ())
                  for v in versions)
  if len(expected) != num_named + 4:
    fail("every version's transform and every latest role needs its own file")
  for name, (shape, kind) in expected.items():
    inside(root, name)
    info = files.get(name)
    if not isinstance(info, dict):
      fail(f"file {name!r} is not listed in files")
    if info.get("shape") != shape:
      fail(f"file {name!r} has shape {info.get('shape')}, expected {shape}")
    dtype = info.get("dtype")
    if not (dtype == FLOAT if kind == "f" else isinstance(dtype, str) and
            re.fullmatch(r"<U\d+", dtype)):
      fail(f"file {name!r} has dtype {dtype!r}")
    if not (isinstance(info.get("sha256"), str) and re.fullmatch(
        r"[0-9a-f]{64}", info["sha256"]) and type(info.get("size")) is int):
      fail(f"file {name!r} needs a sha256 hex digest and an int size")
  if set(files) != set(expected):
    fail(f"files lists unused entries {sorted(set(files) - set(expected))}")
  if manifest["format_version"] >= 2:
    _validate_provenance(manifest, rows, fail)


def _validate_provenance(manifest: dict, rows: dict[str, int],
                         fail: Callable[[str], None]) -> None:
  """Format 2's store id, fingerprints and row counts. Each version before
  the latest records the rows it held when superseded (the latest's are its
  tables'): they never shrink, nor exceed the rows stored, and may be null
  (not recorded) only for versions a format-1 writer published."""
  if not is_digest(manifest.get("store_id")):
    fail("'store_id' must be a hex sha256")
  versions = manifest["versions"]
  for k, entry in enumerate(versions):
    if not is_digest(entry.get("fingerprint")):
      fail(f"version {k}'s 'fingerprint' must be a hex sha256")
  for role in ("users", "items"):
    counts = [entry.get(f"num_{role}") for entry in versions[:-1]]
    known = [n for n in counts if n is not None]
    if not all(type(n) is int and n >= 1 for n in known) or None in counts[
        len(counts) - len(known):] or known != sorted(known) or (
            known and known[-1] > rows[role]) or versions[-1].get(
                f"num_{role}") is not None:
      fail(f"the versions' num_{role} {counts} must be positive ints (null "
           f"only for the first ones), never shrinking, at most the "
           f"{rows[role]} {role} stored; the latest version has none")
