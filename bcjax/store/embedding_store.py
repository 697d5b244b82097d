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
Each version is written with its space's fingerprint and its row counts
(`bcjax.store.provenance`); reads, indexes and search carry the space
(`bcjax.store.reader`).

A store received from someone else is safe to open: nothing is unpickled,
manifest paths must stay inside the directory (symlinks resolved), only
regular files are read, and sizes, shapes and dtypes are checked against the
manifest and the `.npy` headers before any data is read or allocated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bcjax.store import guard, layout, maps, provenance, reader
from bcjax.store.layout import FORMAT, FORMAT_VERSION, MANIFEST, StoreError
from bcjax.util import io

_OPEN_ATTEMPTS = 20


class EmbeddingStore(reader.StoreReader):
  """A versioned embedding store directory; see the module docstring.

  Make one with `create` or `open`. Reads are lazy: each file is verified
  when first read and kept (embeddings memory-mapped, read-only); the read
  side, spaces and search are `reader.StoreReader`'s.
  """

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
      files = {latest[r]: layout.write_npy(root, latest[r], arrays[r])
               for r in arrays}
      ident = provenance.store_id(dataset, strategy, [
          files[latest[r]]["sha256"] for r in layout.LATEST_ROLES])
      raw = layout.commit(root, {
          "format": FORMAT, "format_version": FORMAT_VERSION,
          "dataset": dataset, "strategy": strategy, "store_id": ident,
          "latest_version": 0,
          "versions": [{"version": 0, "dim": users.shape[1],
                        "transform": None, "fingerprint": provenance.fingerprint(
                            ident, 0, users.shape[1], [], [])}],
          "latest": latest, "files": files})
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
    versions = self._provenance_so_far()
    manifest = dict(self._manifest, format_version=FORMAT_VERSION,
                    store_id=self.store_id, latest_version=k, latest=latest,
                    files=files, versions=versions + [
                        {"version": k, "dim": users.shape[1],
                         "transform": entry}])
    manifest["versions"][k]["fingerprint"] = provenance.fingerprint(
        versions[k - 1]["fingerprint"], k, users.shape[1],
        provenance.map_digests(manifest, k),
        provenance.table_digests(manifest, ("users", "items")))
    self._use_manifest(layout.commit(self._root, manifest), manifest)
    self._indexes.clear()  # Built over the rows before this version's.
    for name in old_latest.values():
      self._arrays.pop(name, None)
      pinned = self._pinned.pop(name, None)
      if pinned:
        pinned.close()
      io.remove(self._root / name)
    return k

  def _provenance_so_far(self) -> list[dict[str, Any]]:
    """The versions' manifest entries with their fingerprints and row
    counts, the latest's now recorded from its tables: as written (format
    2), or derived from a format-1 manifest (earlier counts unknown)."""
    versions = [dict(v) for v in self._manifest["versions"]]
    for k, (v, fingerprint) in enumerate(zip(versions, self._fingerprints)):
      v.update(fingerprint=fingerprint, num_users=self._counts["user"][k],
               num_items=self._counts["item"][k])
    return versions
