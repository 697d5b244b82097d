"""Where stored vectors come from: the space of each version, and the
version that added each row.

A vector only means something in the space of the model that made it; a
query of one version searched against an index of another, or two versions'
rows in one table, give wrong answers without any error. So every version
of a store has a `Space` (the store's name, the version, its dims and a
fingerprint), every read and index carries one, and vectors of two spaces
meet only through the store's chain of backward maps.

Fingerprints (hex sha256 of the canonical JSON, sorted keys and no spaces,
of the lists below) identify a space, not its rows::

  store id   sha256(["bcjax-store", dataset, strategy, D_0])
  version 0  sha256(["bcjax-space", store id, 0, d_0])
  version k  sha256(["bcjax-space", fingerprint of k-1, k, d_k, B_k, D_k])

where B_k is `[[parameter, sha256], ...]` of the files of version k's
backward map (sorted by parameter; a linear W_k is `[["w", sha256]]`) and
D_k the sha256 of version k's user and item tables as published (version
0: also of its id files). The store never sees a model, so the tables a
version was published with stand for it; rows added later arrive only with
a later version. Each fingerprint folds in the one before it: two stores
built from different tables differ at every version, a version's
fingerprint names its whole chain W_1..W_k, and appending version K+1
leaves those of 0..K as they were. `EmbeddingStore.create` and
`append_version` write them into the manifest.

Rows only grow, new ones last, so the rows each version held when the next
superseded it (`num_users`, `num_items` of its manifest entry; the latest
version's are its tables') give the version that added every row
(`row_versions`).

A store written in format 1 (before fingerprints) still opens: its
fingerprints are derived from what its manifest holds (`legacy`; the store
id from version 1's map files, or from the latest tables at version 0), and
its first append writes them, with the row counts it knows, into the
format-2 manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, NamedTuple

import numpy as np

from bcjax.store import layout
from bcjax.store.layout import StoreError


@dataclasses.dataclass(frozen=True)
class Space:
  """The embedding space of one version of one store.

  Attributes:
    store: the store's name, `dataset/strategy` (for messages).
    version: j.
    dim: d_j.
    fingerprint: the space's identity (the module docstring).
  """
  store: str
  version: int
  dim: int
  fingerprint: str

  def __str__(self) -> str:
    return (f"{self.store} version {self.version} ({self.dim} dims, "
            f"fingerprint {self.fingerprint[:12]})")

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, obj: Any, where: str) -> Space:
    """The space recorded as `to_json` did; `where` names the file.

    Raises:
      StoreError: a record that is not a space.
    """
    if not (isinstance(obj, dict) and set(obj) == {
        "store", "version", "dim", "fingerprint"}
            and isinstance(obj["store"], str) and type(obj["version"]) is int
            and obj["version"] >= 0 and type(obj["dim"]) is int
            and obj["dim"] >= 1 and layout.is_digest(obj["fingerprint"])):
      raise StoreError(f"{where}: 'space' is not a space record "
                       "(store, version, dim, fingerprint)")
    return cls(**obj)


def check_same(query: Space, target: Space, what: str) -> None:
  """Refuses vectors of `query`'s space used against `target`'s.

  Raises:
    StoreError: the spaces differ; the message names both.
  """
  if query != target:
    raise StoreError(
        f"{what}: the vectors are in {query}, the index in {target}; "
        "vectors of two spaces never meet (map later versions of the same "
        "store through its chain: EmbeddingStore.transform, or "
        "search(..., through_chain=True))")


def _digest(parts: list[Any]) -> str:
  raw = json.dumps(parts, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(raw.encode()).hexdigest()


def store_id(dataset: str, strategy: str, tables: list[str]) -> str:
  """The store's identity: its names and version 0's file digests."""
  return _digest(["bcjax-store", dataset, strategy, tables])


def fingerprint(before: str, k: int, dim: int, maps: list[list[str]],
                tables: list[str]) -> str:
  """Version k's fingerprint: `before` is the store id (k = 0) or version
  k-1's fingerprint; `maps` B_k's `[parameter, sha256]` pairs (none at
  version 0), `tables` D_k (nothing at version 0: the store id has it)."""
  if k == 0:
    return _digest(["bcjax-space", before, 0, dim])
  return _digest(["bcjax-space", before, k, dim, maps, tables])


def map_digests(manifest: dict[str, Any], k: int) -> list[list[str]]:
  """B_k's `[parameter, sha256]` pairs, from a validated manifest."""
  files = layout.transform_files(manifest["versions"][k]["transform"])
  return [[p, manifest["files"][files[p]]["sha256"]] for p in sorted(files)]


def table_digests(manifest: dict[str, Any], roles: tuple[str, ...]
                  ) -> list[str]:
  """The sha256 of the latest files of `roles`, from a manifest."""
  return [manifest["files"][manifest["latest"][r]]["sha256"] for r in roles]


def legacy(manifest: dict[str, Any]) -> tuple[str, list[str]]:
  """`(store id, fingerprints)` derived for a validated format-1 manifest;
  its intermediate versions' tables are gone, so only B_k stands for them."""
  versions, last = manifest["versions"], len(manifest["versions"]) - 1
  first = (table_digests(manifest, layout.LATEST_ROLES) if last == 0 else
           [d for _, d in map_digests(manifest, 1)])
  ident = _digest(["bcjax-store-format-1", manifest["dataset"],
                   manifest["strategy"], first])
  prints = [fingerprint(ident, 0, versions[0]["dim"], [], [])]
  for k in range(1, last + 1):
    tables = table_digests(manifest, ("users", "items")) if k == last else []
    prints.append(fingerprint(prints[-1], k, versions[k]["dim"],
                              map_digests(manifest, k), tables))
  return ident, prints


class RowVersions(NamedTuple):
  """The version that added each stored row: `users` `[num_users]` and
  `items` `[num_items]` ints."""
  users: np.ndarray
  items: np.ndarray


def row_versions(counts: list[int | None], num_rows: int, kind: str,
                 where: str) -> np.ndarray:
  """`[num_rows]` version of each row, from the rows each version holds.

  Raises:
    StoreError: a version whose count was not recorded (format 1).
  """
  if None in counts:
    unknown = max(k for k, n in enumerate(counts) if n is None)
    raise StoreError(f"{where}: versions 0..{unknown} were written in format "
                     f"1, which does not record how many {kind} rows each "
                     "added")
  return np.repeat(np.arange(len(counts)), np.diff([0, *counts]))[:num_rows]
