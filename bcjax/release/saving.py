"""A lineage on disk: what `Lineage.save` writes and `Lineage.load` reads.

A saved lineage is a directory, built beside its place and swapped in once
complete (`bcjax.util.io.staging_dir`, `replace_dir`), each file written
atomically::

  lineage.json         format, the versions' dims, every file's sha256, the
                       store the lineage publishes to (absolute path or null)
  variables.msgpack    the newest model's variables (flax msgpack)
  w<k>.npy             W_k, k = 1..K
  last_inputs.msgpack  the newest version's inputs, when they are an array
                       or nested dicts of arrays (else not saved)

Models are code, not data: the loader is given the newest model object and
checks its `dim`. Variables and inputs must survive msgpack as they are
(nested dicts of arrays); every file is checked against its sha256 before
use.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import flax
from flax import serialization
import jax
import jax.numpy as jnp
import numpy as np

from bcjax.store import check_output
from bcjax.util import io

FORMAT = "bcjax-lineage"
FORMAT_VERSION = 1
RECORD = "lineage.json"
VARIABLES = "variables.msgpack"
INPUTS = "last_inputs.msgpack"


class Saved(NamedTuple):
  """What a saved lineage holds: the newest model's `variables`,
  `backward` `[W_1, ..., W_K]`, the newest version's `last_inputs` (None
  when not saved) and the `store`'s path (or None)."""
  variables: Any
  backward: list[np.ndarray]
  last_inputs: Any
  store: str | None


def _packed(tree: Any) -> bytes | None:
  """`tree` as flax msgpack, or None when it would not read back as the
  same structure of arrays (tuples, objects, non-string keys)."""
  tree = flax.core.unfreeze(tree) if isinstance(
      tree, flax.core.FrozenDict) else tree
  leaves = jax.tree.leaves(tree)
  if not leaves or not all(isinstance(x, (np.ndarray, np.generic, jax.Array))
                           for x in leaves):
    return None
  try:
    data = serialization.msgpack_serialize(jax.tree.map(np.asarray, tree))
    same = (jax.tree.structure(serialization.msgpack_restore(data))
            == jax.tree.structure(tree))
  except (TypeError, ValueError):
    return None
  return data if same else None


def write(path: str | os.PathLike[str], variables: Any,
          backward: list[np.ndarray], dims: list[int], last_inputs: Any,
          store: str | None) -> None:
  """Saves a lineage's state to the directory `path` (module docstring).

  Raises:
    ValueError: variables that msgpack cannot hold as they are.
    StoreError: a `path` inside an embedding store or not a directory.
  """
  path = check_output(path, directory=True)
  packed = _packed(variables)
  if packed is None:
    raise ValueError("Lineage.save: the newest variables must be nested "
                     "dicts of arrays (what Flax and FunctionalModel with "
                     "dict params give)")
  staging = io.staging_dir(path)
  io.make_dir(staging)
  files = {VARIABLES: io.save_bytes(staging / VARIABLES, packed)}
  for k, w in enumerate(backward, 1):
    files[f"w{k}.npy"] = io.save_npy(staging / f"w{k}.npy", w)
  inputs = None if last_inputs is None else _packed(last_inputs)
  if inputs is not None:
    files[INPUTS] = io.save_bytes(staging / INPUTS, inputs)
  io.save_json(staging / RECORD, {
      "format": FORMAT, "format_version": FORMAT_VERSION, "dims": dims,
      "files": files, "store": store})
  io.replace_dir(staging, path)


def _record(path: Path) -> dict[str, Any]:
  """The checked `lineage.json` of the saved lineage at `path`."""
  where = path / RECORD
  try:
    record = json.loads(io.read_bytes(where))
  except FileNotFoundError:
    raise ValueError(f"no saved lineage at {path} (no {RECORD})") from None
  except (OSError, UnicodeDecodeError, RecursionError, ValueError) as e:
    raise ValueError(f"{where} cannot be read: {e}") from None
  dims = record.get("dims") if isinstance(record, dict) else None
  if not (isinstance(record, dict) and record.get("format") == FORMAT
          and record.get("format_version") == FORMAT_VERSION
          and isinstance(dims, list) and dims
          and all(type(d) is int and d >= 1 for d in dims)
          and isinstance(record.get("files"), dict)
          and (record.get("store") is None
               or isinstance(record.get("store"), str))):
    raise ValueError(f"{where}: not a {FORMAT} {FORMAT_VERSION} record "
                     "(dims, files, store)")
  names = {VARIABLES, *(f"w{k}.npy" for k in range(1, len(dims)))}
  if not names <= set(record["files"]) <= names | {INPUTS}:
    raise ValueError(f"{where}: lists files {sorted(record['files'])}, "
                     f"expected {sorted(names)} (and maybe {INPUTS})")
  return record


def read(path: str | os.PathLike[str], dim: int) -> Saved:
  """The saved lineage at `path`, its newest model `dim` wide.

  Raises:
    ValueError: a missing or malformed record, a file that is missing or
      fails its sha256 (named), or a newest version of another width.
  """
  path = Path(path)
  record = _record(path)
  files, dims = record["files"], record["dims"]
  if dim != dims[-1]:
    raise ValueError(f"{path}: the saved newest version (version "
                     f"{len(dims) - 1}) has {dims[-1]} dims, the model given "
                     f"{dim}")

  def unpacked(name: str) -> Any:
    try:
      return serialization.msgpack_restore(io.read_bytes(path / name,
                                                         files[name]))
    except FileNotFoundError:
      raise ValueError(f"{path / name} is missing") from None
    except io.FileFormatError:
      raise
    except Exception as e:  # msgpack's own errors, for a malformed file.
      raise ValueError(f"{path / name} is not flax msgpack: {e}") from None

  backward = []
  for k in range(1, len(dims)):
    try:
      w = io.load_npy(path / f"w{k}.npy", digest=files[f"w{k}.npy"])
    except FileNotFoundError:
      raise ValueError(f"{path / f'w{k}.npy'} is missing") from None
    if w.shape != (dims[k], dims[k - 1]):
      raise ValueError(f"{path / f'w{k}.npy'} has shape {w.shape}, expected "
                       f"{(dims[k], dims[k - 1])}")
    backward.append(w)
  return Saved(jax.tree.map(jnp.asarray, unpacked(VARIABLES)), backward,
               unpacked(INPUTS) if INPUTS in files else None, record["store"])
