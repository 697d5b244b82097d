"""`EmbeddingStore`: create, open, read and append to an embedding store.

Only the latest version's embeddings are stored, with the chain of backward
transformations W_1..W_K; a consumer of version j reads `z_K @ M_{K->j}`
(the on-disk layout is `bcjax.store.layout`'s).

Every file is written under a temporary name, fsynced and renamed; the
manifest is renamed last, so it is the commit point of `append_version` and a
crash at any moment leaves the previous state readable. Files are verified
against the manifest (size, `.npy` header, then sha256) when first read, and
their content checked as the writer checks it (finite values, unique
printable ids). One writer at a time holds the store's lock (`guard`);
readers may open it at any time. `open` holds
the latest files open (retrying if an append replaces them meanwhile), so a
reader sees one complete version even though an append removes the
superseded latest files; a reader wanting newer versions reopens the store.

A store received from someone else is safe to open: nothing is unpickled,
manifest paths must stay inside the directory (symlinks resolved), only
regular files are read, and sizes, shapes and dtypes are checked against the
manifest and the `.npy` headers before any data is read or allocated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable, Sequence

import numpy as np

from bcjax.backward import chains
from bcjax.store import guard, layout, maps
from bcjax.store.layout import FORMAT, FORMAT_VERSION, MANIFEST, StoreError
from bcjax.util import io

_OPEN_ATTEMPTS = 20


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
    self._chains: dict[tuple[int, int], Callable] = {}
    self._pinned = dict(pinned or {})

  def close(self) -> None:
    """Closes the files held open since `open` (arrays read stay valid)."""
    layout.close_all(self._pinned)

  def __enter__(self) -> EmbeddingStore:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def __del__(self, close_all=layout.close_all):  # no globals at exit
    close_all(getattr(self, "_pinned", {}))

  @classmethod
  def create(cls, path: str | os.PathLike[str], users: Any, items: Any,
             user_ids: Any, item_ids: Any, dataset: str,
             strategy: str, replace: bool = False) -> EmbeddingStore:
    """Creates a store holding version 0.

    Args:
      path: a directory that does not exist or is empty (or, with
        `replace`, holds a store).
      users: `[num_users, d_0]` version-0 user embeddings.
      items: `[num_items, d_0]` version-0 item embeddings.
      user_ids: `[num_users]` raw user ids (strings, unique).
      item_ids: `[num_items]` raw item ids (strings, unique).
      dataset: the dataset's name, recorded in the manifest.
      strategy: the strategy's name, recorded in the manifest.
      replace: replace the store at `path`, built beside it and swapped in
        once complete (a crash midway keeps the old one).

    Returns:
      The open store, at version 0.

    Raises:
      StoreError: `path` holds a store (without `replace`: publish the next
        version with `append_version`), is a file or a non-empty directory;
        another writer at work; bad shapes, non-finite values, ids that are
        not unique printable strings, or non-string names. A crash midway
        leaves a directory without manifest, which `open` rejects and
        `create` will not reuse.
    """
    root = Path(path)
    if not isinstance(dataset, str) or not isinstance(strategy, str):
      raise StoreError(f"dataset {dataset!r} and strategy {strategy!r} must "
                       "be strings")
    users, items, user_ids, item_ids = layout.check_latest(
        users, items, user_ids, item_ids)
    replacing = replace and (root / MANIFEST).is_file()
    if (root / MANIFEST).is_file() and not replace:
      raise StoreError(f"a store exists at {root} (version 0 is published); "
                       "publish the next version with EmbeddingStore.open("
                       "path).append_version(...)")
    empty = not root.exists() or root.is_dir() and all(
        p.name == guard.LOCK for p in root.iterdir())
    if not (replacing or empty):
      raise StoreError(f"cannot create a store at {root}: it exists and is "
                       "not an empty directory" + (" holding a store"
                                                   if replace else ""))
    io.make_dir(root)
    with guard.writer_lock(root):
      if not replacing and (root / MANIFEST).exists():
        raise StoreError(f"another writer created a store at {root} meanwhile")
      final, root = root, io.staging_dir(root) if replacing else root
      io.make_dir(root)
      arrays = dict(zip(layout.LATEST_ROLES, (users, items, user_ids,
                                              item_ids)))
      latest = {role: f"v0_{role}.npy" for role in layout.LATEST_ROLES}
      raw = layout.commit(root, {
          "format": FORMAT, "format_version": FORMAT_VERSION,
          "dataset": dataset, "strategy": strategy, "latest_version": 0,
          "versions": [{"version": 0, "dim": users.shape[1],
                        "transform": None}],
          "latest": latest, "files": {
              latest[r]: layout.write_npy(root, latest[r], arrays[r])
              for r in arrays}})
      if replacing:
        io.replace_dir(root, final)
    return cls.open(final) if replacing else cls(root, raw)

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
      raw = layout.read_manifest(root)
      try:
        manifest = json.loads(raw)
      except (UnicodeDecodeError, RecursionError, ValueError) as e:
        raise StoreError(f"{root / MANIFEST} is not valid JSON: "
                         f"{type(e).__name__}: {e}") from None
      layout.validate(manifest, root)
      pinned = layout.pin_latest(root, manifest)
      if (len(pinned) == len(layout.LATEST_ROLES)
          or layout.read_manifest(root) == raw):
        return cls(root, raw, pinned)
      # An append replaced the latest files: read it anew.
      layout.close_all(pinned)
    raise StoreError(f"store {root} changed {_OPEN_ATTEMPTS} times while "
                     "being opened")

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

  def append_version(self, users: Any, items: Any, transform: Any,
                     user_ids: Any, item_ids: Any) -> int:
    """Adds version K+1: new latest embeddings and B_{K+1} (W_{K+1}, or any
    `BackwardMap`, such as a post-hoc adapter).

    Older versions' files are never rewritten; the manifest switch is the
    commit point, after which the superseded latest files are removed.

    Args:
      users: `[num_users', d_{K+1}]`; the rows may grow (new users last).
      items: `[num_items', d_{K+1}]`; likewise.
      transform: `[d_{K+1}, d_K]`, W_{K+1}, applied as `z @ W`; or a
        `bcjax.backward.BackwardMap` from d_{K+1} to d_K dims (`maps`).
      user_ids: `[num_users']` raw ids; the stored ids must be a prefix.
      item_ids: `[num_items']` raw ids; likewise.

    Returns:
      The new version number K+1.

    Raises:
      StoreError: for a transform or embeddings whose shape does not fit,
        ids that do not extend the stored ones, a store changed on disk
        since it was opened, or another writer at work (`guard.writer_lock`:
        refused at once, the store unchanged).
    """
    with guard.writer_lock(self._root):
      if layout.read_manifest(self._root) != self._raw_manifest:
        raise StoreError(f"store {self._root} changed since it was opened; "
                         "reopen it")
      return self._append(users, items, transform, user_ids, item_ids)

  def _append(self, users: Any, items: Any, transform: Any, user_ids: Any,
              item_ids: Any) -> int:
    """`append_version`'s work, under the writer lock."""
    k, d_prev = self.latest_version + 1, self.dims[-1]
    backward = maps.checked(transform, k, d_prev)
    users, items, user_ids, item_ids = layout.check_latest(
        users, items, user_ids, item_ids)
    if users.shape[1] != backward.d_in:
      raise StoreError(f"transform has shape {(backward.d_in, d_prev)} but "
                       f"users have shape {users.shape}: W_{k} needs one row "
                       "per column")
    layout.check_prefix("user", self.user_ids, user_ids)
    layout.check_prefix("item", self.item_ids, item_ids)

    old_latest = self._manifest["latest"]
    latest = {role: f"v{k}_{role}.npy" for role in layout.LATEST_ROLES}
    entry, arrays = maps.to_files(k, backward)
    arrays.update({latest["users"]: users, latest["items"]: items,
                   latest["user_ids"]: user_ids,
                   latest["item_ids"]: item_ids})
    files = {name: info for name, info in self._manifest["files"].items()
             if name not in old_latest.values()}
    files.update({name: layout.write_npy(self._root, name, array)
                  for name, array in arrays.items()})
    manifest = dict(self._manifest, latest_version=k, latest=latest,
                    files=files, versions=self._manifest["versions"] + [
                        {"version": k, "dim": users.shape[1],
                         "transform": entry}])
    self._raw_manifest = layout.commit(self._root, manifest)
    self._manifest = manifest
    for name in old_latest.values():
      self._arrays.pop(name, None)
      pinned = self._pinned.pop(name, None)
      if pinned:
        pinned.close()
      io.remove(self._root / name)
    return k
