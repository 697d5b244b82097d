"""A version's item index as files, for serving outside the store.

`write_index` writes two files, each atomically (temporary name, fsync,
rename: `bcjax.util.io`), the index first::

  PATH        the faiss index (`faiss.serialize_index`)
  PATH.json   its sidecar: format, the index's `Space`, kind, the raw item
              ids (row i of the index is item_ids[i]), PATH's size and
              sha256, and the sha256 of the sidecar's own other fields

The sidecar is the commit point: a crash between the two leaves an index
file that the old sidecar's checksum refuses. `load_index` checks the
sidecar, then the index bytes against it, then deserializes those same
bytes; the `VersionIndex` it returns refuses queries of any other space,
as the store's own does (and, given the store, an index of a space the
store does not have). The checksum detects a changed or swapped file; a
sidecar and an index forged together are trusted as far as faiss's reader.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from bcjax.store import faiss_index, guard, layout
from bcjax.store.layout import StoreError
from bcjax.store.provenance import Space
from bcjax.store.search import VersionIndex
from bcjax.util import io

FORMAT = "bcjax-index"
FORMAT_VERSION = 1
MAX_SIDECAR_BYTES = 1 << 30


def sidecar_path(path: str | os.PathLike[str]) -> Path:
  """The sidecar of the index file `path`: `path` + ".json"."""
  return Path(os.fspath(path) + ".json")


def write_index(index: VersionIndex, path: str | os.PathLike[str]) -> None:
  """Writes `index` to `path` and its sidecar (module docstring).

  Raises:
    StoreError: a path refused by `guard.check_output` (not a regular file,
      or inside a store).
  """
  path, sidecar = guard.check_output(path), guard.check_output(
      sidecar_path(path))
  data = faiss.serialize_index(index.index).tobytes()
  digest = io.save_bytes(path, data)
  record = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "space": index.space.to_json(), "kind": index.kind,
            "item_ids": index.item_ids.tolist(), "size": len(data),
            "sha256": digest}
  record["record_sha256"] = _record_digest(record)
  io.save_bytes(sidecar, (json.dumps(record) + "\n").encode())
  layout.fsync_dir(path.parent)


def _record_digest(record: dict[str, Any]) -> str:
  """The sha256 of a sidecar's fields other than this digest."""
  rest = {key: value for key, value in record.items()
          if key != "record_sha256"}
  return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()
                        ).hexdigest()


def _sidecar(sidecar: Path) -> dict[str, Any]:
  """The parsed and checked sidecar."""
  try:
    with io.open_regular(sidecar) as f:
      raw = f.read(MAX_SIDECAR_BYTES + 1)
  except FileNotFoundError:
    raise StoreError(f"index sidecar {sidecar} is missing") from None
  except (io.FileFormatError, OSError) as e:
    raise StoreError(f"index sidecar {sidecar} cannot be read: {e}") from None
  if len(raw) > MAX_SIDECAR_BYTES:
    raise StoreError(f"index sidecar {sidecar} is larger than "
                     f"{MAX_SIDECAR_BYTES} bytes; refused")
  try:
    record = json.loads(raw)
  except (UnicodeDecodeError, RecursionError, ValueError) as e:
    raise StoreError(f"index sidecar {sidecar} is not valid JSON: {e}"
                     ) from None
  if not isinstance(record, dict) or record.get("format") != FORMAT or (
      record.get("format_version") != FORMAT_VERSION):
    raise StoreError(f"index sidecar {sidecar} is not a {FORMAT} "
                     f"{FORMAT_VERSION} record")
  if record.get("record_sha256") != _record_digest(record):
    raise StoreError(f"index sidecar {sidecar}: checksum mismatch (the "
                     "sidecar changed since it was written)")
  ids = record.get("item_ids")
  if record.get("kind") not in faiss_index.KINDS or not (
      isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids)
  ) or type(record.get("size")) is not int or not layout.is_digest(
      record.get("sha256")):
    raise StoreError(f"index sidecar {sidecar} needs a kind in "
                     f"{faiss_index.KINDS}, a non-empty list of item ids, the "
                     "index file's size and sha256")
  record["space"] = Space.from_json(record.get("space"), f"index sidecar "
                                    f"{sidecar}")
  return record


def load_index(path: str | os.PathLike[str], store: Any = None
               ) -> VersionIndex:
  """The index written by `write_index` at `path`, checked.

  Args:
    path: the index file (its sidecar is `sidecar_path(path)`).
    store: optionally the `EmbeddingStore` it should come from: an index
      of a space the store does not have is refused.

  Raises:
    StoreError: a missing, malformed or over-large sidecar; an index file
      that is missing, of another size or checksum, or whose index does not
      match the sidecar (count, dims, kind). The message names the file.
  """
  path = Path(path)
  record = _sidecar(sidecar_path(path))
  try:
    with io.open_regular(path) as f:
      size = os.fstat(f.fileno()).st_size
      if size != record["size"]:
        raise StoreError(f"index file {path} has {size} bytes, its sidecar "
                         f"says {record['size']}")
      io.check_digest(path, f, record["sha256"])
      f.seek(0)
      data = f.read()
  except FileNotFoundError:
    raise StoreError(f"index file {path} is missing") from None
  except io.FileFormatError as e:
    raise StoreError(f"index file {e}") from None
  except OSError as e:
    raise StoreError(f"index file {path} cannot be read: {e}") from None
  space, kind, ids = record["space"], record["kind"], record["item_ids"]
  try:
    index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
  except RuntimeError as e:
    raise StoreError(f"index file {path} is not a faiss index: {e}") from None
  expected = faiss.IndexHNSWFlat if kind == "hnsw" else faiss.IndexFlatIP
  if not isinstance(index, expected) or index.ntotal != len(ids) or (
      index.d != space.dim) or index.metric_type != faiss.METRIC_INNER_PRODUCT:
    raise StoreError(f"index file {path} holds {index.ntotal} vectors of "
                     f"{index.d} dims ({type(index).__name__}); its sidecar "
                     f"says {len(ids)} {kind} items of {space}")
  if store is not None and (space.version > store.latest_version or (
      store.space(space.version) != space)):
    raise StoreError(f"index file {path} is in {space}, which the store "
                     f"{store.path} does not have")
  ids = np.array(ids, dtype=np.str_)
  layout.check_ids("item", ids, f"index sidecar {sidecar_path(path)}")
  return VersionIndex(space.version, kind, index, ids, space)
