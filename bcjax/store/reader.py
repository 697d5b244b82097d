"""The read side of an embedding store: versions, spaces, rows and search.

`StoreReader` is what `EmbeddingStore` (which adds create, open and append)
offers a consumer team: every stored row in the space of any version
(`embeddings`, or `read` with its `Space`), rows by raw id (`lookup`), the
version that added each row (`row_versions`, `new_since`), the chain between
versions (`transform`), a version's nearest-neighbour index and search over
it (`search`, `export_index`; `bcjax.store.search`).

Files are verified against the manifest (size, `.npy` header, then sha256)
when first read and kept (embeddings memory-mapped, read-only), and their
content checked as the writer checks it (finite values, unique printable
ids).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable, NamedTuple, Sequence

import numpy as np

from bcjax.backward import chains
from bcjax.store import guard, index_file, layout, maps
from bcjax.store import provenance, search as search_lib
from bcjax.store.layout import StoreError
from bcjax.store.provenance import RowVersions, Space
from bcjax.util import io


class VersionRead(NamedTuple):
  """Every stored row in one version's space, with that space: `users`
  `[num_users, d_j]`, `items` `[num_items, d_j]` and `space`, the `Space`
  of version j."""
  users: np.ndarray
  items: np.ndarray
  space: Space


class StoreReader:
  """Reads an embedding store; see the module docstring. Made by
  `EmbeddingStore.create` or `open`."""

  def __init__(self, root: Path, raw_manifest: bytes,
               pinned: dict[str, BinaryIO] | None = None):
    """`raw_manifest` must already be validated; `pinned` maps file names
    to open files, read in place of the paths."""
    self._root = root
    self._arrays: dict[str, np.ndarray] = {}
    self._chains: dict[tuple[int, int], Callable] = {}
    self._indexes: dict[tuple[int, str], search_lib.VersionIndex] = {}
    self._pinned = dict(pinned or {})
    self._use_manifest(raw_manifest, json.loads(raw_manifest))

  def _use_manifest(self, raw: bytes, manifest: dict[str, Any]) -> None:
    """Reads as `manifest` from now on, with its provenance."""
    self._raw_manifest, self._manifest = raw, manifest
    latest = manifest["latest"]
    # Rows per version: the latest's are its tables'; format 1 knows no
    # others.
    self._counts = {kind: [v.get(f"num_{kind}s") for v in manifest[
        "versions"]][:-1] + [manifest["files"][latest[f"{kind}s"]]["shape"][0]]
                    for kind in ("user", "item")}
    if manifest["format_version"] >= 2:
      self._store_id = manifest["store_id"]
      self._fingerprints = [v["fingerprint"] for v in manifest["versions"]]
    else:
      self._store_id, self._fingerprints = provenance.legacy(manifest)

  def close(self) -> None:
    """Closes the files held open since `open` (arrays read stay valid)."""
    layout.close_all(self._pinned)

  def __enter__(self):
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def __del__(self, close_all=layout.close_all):  # no globals at exit
    close_all(getattr(self, "_pinned", {}))

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
  def store_id(self) -> str:
    """The store's identity, the root of its fingerprints (`provenance`)."""
    return self._store_id

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
    f = self._pinned.pop(name, None) or layout.open_file(self._root, name)
    with f:
      array = layout.read_verified(f, name, self._manifest["files"][name])
    # What the writer refuses, whatever the checksums say.
    if array.dtype.str == layout.FLOAT:
      layout.check_finite(f"store file {name}", array)
    else:
      kind = "user" if name == self._manifest["latest"]["user_ids"] else "item"
      layout.check_ids(kind, array, f"store file {name}")
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

  def _chain(self, from_version: int, to_version: int) -> Callable:
    """Rows of `from_version` -> rows of `to_version` < it (`maps`), cached."""
    key = (from_version, to_version)
    if key not in self._chains:
      versions, links = self._manifest["versions"], [None] * from_version
      for v in range(to_version + 1, from_version + 1):
        links[v - 1] = maps.from_files(versions[v]["transform"], self._read)
      self._chains[key] = chains.chain(links, from_version, to_version)
    return self._chains[key]

  def space(self, version: int | None = None) -> Space:
    """The `Space` of `version` (default latest).

    Raises:
      StoreError: for an unknown version.
    """
    j = self._check_version(self.latest_version if version is None
                            else version)
    name = (f"{self.dataset}/{self.strategy}" if self.dataset or self.strategy
            else "unnamed store")
    return Space(name, j, self.dims[j], self._fingerprints[j])

  def transform(self, z: Any, from_version: int, to_version: int) -> np.ndarray:
    """Maps embeddings of version `from_version` into version `to_version`.

    Args:
      z: `[n, d_from]` (or `[d_from]`) embeddings of version `from_version`.
      from_version: k.
      to_version: j <= k.

    Returns:
      `[n, d_to]`, `z @ M_{k->j}` (z itself when j == k); a chain with a
      non-linear map applies B_k, ..., B_{j+1} in turn (`maps`).

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
    return z if j == k else chains.blocked_map(z, self._chain(k, j))

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

  def read(self, version: int | None = None) -> VersionRead:
    """`embeddings(version)` with the `Space` the rows are in."""
    users, items = self.embeddings(version)
    return VersionRead(users, items, self.space(version))

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
                    chains.blocked_map(
                        table, self._chain(self.latest_version, j), rows))
    return picked[0], picked[1]

  def row_versions(self) -> RowVersions:
    """The version that added each stored user and item row (rows only
    grow, new ones last: version k added the rows between version k-1's
    counts and its own).

    Raises:
      StoreError: versions written in format 1 (their counts unknown).
    """
    return RowVersions(*(provenance.row_versions(
        self._counts[kind], len(ids), kind, f"store {self._root}")
                           for kind, ids in (
            ("user", self.user_ids), ("item", self.item_ids))))

  def new_since(self, version: int) -> tuple[np.ndarray, np.ndarray]:
    """`(user ids, item ids)` added by the versions after `version`.

    Raises:
      StoreError: an unknown version, or one written in format 1.
    """
    j = self._check_version(version)
    found = []
    for kind, ids in (("user", self.user_ids), ("item", self.item_ids)):
      count = self._counts[kind][j]
      if count is None:
        raise StoreError(f"store {self._root}: version {j} was written in "
                         f"format 1, which does not record its {kind} rows")
      found.append(ids[count:])
    return found[0], found[1]

  def index(self, version: int | None = None, kind: str = "hnsw"
            ) -> search_lib.VersionIndex:
    """Version j's index over every stored item (`search.version_index`),
    built once per store object."""
    j = self.latest_version if version is None else version
    if (j, kind) not in self._indexes:
      self._indexes[(j, kind)] = search_lib.version_index(self, j, kind)
    return self._indexes[(j, kind)]

  def search(self, user_ids: Sequence[str] | None = None, *,
             queries: Any = None, space: Space | None = None,
             version: int | None = None, k: int = 10,
             exclude: Sequence[Sequence[str]] | None = None,
             kind: str = "hnsw", through_chain: bool = False
             ) -> list[list[tuple[str, float]]]:
    """The top-k items of each query through version j's index.

    Give stored users by raw id (read from the latest version and mapped
    into version j) or query vectors with their `Space`: one that is not
    the index's is refused, unless `through_chain` and it is a later
    version of this store, whose chain maps it first (`transform`).

    Args:
      user_ids: raw user ids.
      queries: `[n, d]` (or `[d]`) query vectors, instead of `user_ids`.
      space: the `Space` of `queries` (e.g. `read(k).space`).
      version: j, the index's version; None for the latest.
      k: items per query, 1..number of items.
      exclude: per query, raw item ids never returned (a user's history).
      kind: "hnsw" or "exact" (`faiss_index.KINDS`).
      through_chain: map `queries` of a later version of this store into
        version j.

    Returns:
      Per query, up to k (raw item id, inner product) pairs, best first
      (ties to the earlier stored item).

    Raises:
      StoreError: queries of another space (both named), vectors without
        a space, an unknown id, version or kind, or k out of range.
    """
    index = self.index(version, kind)
    if (user_ids is None) == (queries is None):
      raise StoreError("search: give user_ids or query vectors (with their "
                       "space), one of the two")
    if user_ids is not None:
      if isinstance(user_ids, str):
        raise StoreError(f"search: user_ids {user_ids!r} is one string; give "
                         "a list of ids")
      queries, _ = self.lookup(user_ids, (), index.space.version)
      space = index.space
    elif not isinstance(space, Space):
      raise StoreError("search: query vectors need their Space (read(j)."
                       "space or space(j)); vectors of unknown space are "
                       "never searched")
    elif through_chain and space != index.space:
      if space.version > self.latest_version or space != self.space(
          space.version):
        raise StoreError(f"search: the vectors are in {space}, which is not "
                         f"a version of this store (its version "
                         f"{index.space.version} is {index.space}); no "
                         "chain leads from one store to another")
      if space.version < index.space.version:
        raise StoreError(f"search: the vectors are in {space}, older than "
                         f"the index's {index.space}; a chain maps only "
                         "to older versions")
      queries = self.transform(queries, space.version, index.space.version)
      space = index.space
    return index.search(queries, space, k, exclude)

  def export_index(self, path: str | os.PathLike[str],
                   version: int | None = None, kind: str = "hnsw") -> None:
    """Writes version j's index for serving (`index_file.write_index`):
    the faiss file at `path` and its sidecar `path + ".json"` (the space,
    the item ids, the file's sha256), each written atomically.

    Raises:
      StoreError: an unknown version or kind, or a path refused by
        `guard.check_output` (not a regular file, or inside a store).
    """
    index_file.write_index(self.index(version, kind), path)

  def save_npz(self, out: str | os.PathLike[str],
               version: int | None = None) -> None:
    """Writes `users` and `items` of `version` (see `embeddings`) atomically.

    Args:
      out: the `.npz` file to write; its directory must exist.
      version: j, in `0..K`; None for the latest K.

    Raises:
      StoreError: for an unknown version, a file that fails verification,
        or an `out` refused by `guard.check_output` (not a regular file, or
        inside a store).
    """
    out = guard.check_output(out)
    users, items = self.embeddings(version)
    io.atomic_write(out, lambda f: np.savez(f, users=users, items=items))
    layout.fsync_dir(out.parent)
