"""The consumers registered with a store: what a release must keep working.

A consumer team registers what it built on version j of a store: a
`Classifier` (a head over version-j embeddings, its examples and labels) or
a `FrozenIndex` (a vector index over version j's items, its query users,
their relevant and excluded items, and K). Each records, at registration,
its baseline on version j: the head's metric, or the index's Recall@K of
the version-j users, and the `Space` of version j (`bcjax.store.provenance`):
a registry copied beside another store's versions is refused. The release
gate (`bcjax.release.gate`) scores every consumer through the chain from a
candidate version to j and compares. The
kinds and their scoring are `bcjax.store.consumer_kinds`'.

On disk, inside the store directory::

  consumers/registry.json          every consumer: kind, version, settings,
                                   baseline, and its files with their sha256
  consumers/<name>.<role>.<t>.npy  a consumer's arrays (`<t>`: a token of its
  consumers/<name>.head.<t>.msgpack  registration), or its MLP head

Every file is written atomically and registry.json last (its rename is the
commit point); a file is verified (size, `.npy` header, sha256) when read,
and a consumer whose files or recorded baseline disagree is refused by
name. Registration holds the store's writer lock (`guard`). Rows refer to
the store's rows, which every later version keeps (ids are a prefix).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
import re
from typing import Any, Sequence
import uuid

import numpy as np

from bcjax.store import faiss_index, guard, layout
from bcjax.store.consumer_kinds import (
  INPUTS,
  METRICS,
  Classifier,
  FrozenIndex,
  LinearHead,
  MLPHead,
  metric_value,
)
from bcjax.store.embedding_store import EmbeddingStore
from bcjax.store.layout import StoreError
from bcjax.store.provenance import Space
from bcjax.util import io

FOLDER = "consumers"
REGISTRY = "registry.json"
FORMAT = "bcjax-consumer-registry"


def _folder(store: EmbeddingStore) -> Path:
  return Path(store.path) / FOLDER


def _read_registry(store: EmbeddingStore) -> dict[str, Any]:
  """registry.json's consumers by name ({} without one), structure checked."""
  path = _folder(store) / REGISTRY
  if not path.exists():
    return {}
  try:
    with io.open_regular(path) as f:
      record = json.loads(f.read(layout.MAX_MANIFEST_BYTES + 1))
  except (OSError, io.FileFormatError, ValueError, RecursionError) as e:
    raise StoreError(f"consumer registry {path} cannot be read: {e}"
                     ) from None
  if not (isinstance(record, dict) and record.get("format") == FORMAT
          and isinstance(record.get("consumers"), dict)):
    raise StoreError(f"consumer registry {path} is not a {FORMAT} file")
  for name, entry in record["consumers"].items():
    _check_entry(store, name, entry)
  return record["consumers"]


def _check_entry(store: EmbeddingStore, name: str, entry: Any) -> None:
  """Refuses a registry entry of the wrong shape, naming the consumer."""
  def fail(message):
    raise StoreError(f"consumer {name!r} in {_folder(store) / REGISTRY}: "
                     f"{message}")
  if not isinstance(entry, dict) or entry.get("kind") not in (
      "classifier", "index"):
    fail("not a classifier or index entry")
  version = entry.get("version")
  if type(version) is not int or not 0 <= version <= store.latest_version:
    fail(f"version {version!r} is not one of the store's 0.."
         f"{store.latest_version}")
  if type(entry.get("baseline")) is not float:
    fail("no baseline")
  files = entry.get("files")
  roles = (("rows", "labels", "baseline_scores") if entry["kind"] ==
           "classifier" else ("items", "queries", "relevant", "excluded",
                              "baseline_recall"))
  if not isinstance(files, dict) or not set(roles) <= set(files):
    fail(f"needs the files {', '.join(roles)}")
  for role, info in files.items():
    if not (isinstance(info, dict) and isinstance(info.get("name"), str)
            and isinstance(info.get("sha256"), str)
            and type(info.get("size")) is int):
      fail(f"file entry {role!r} needs a name, a sha256 and a size")
    try:
      layout.inside(_folder(store), info["name"])
    except StoreError:
      fail(f"file {info['name']!r} escapes {_folder(store)}")


def _read(store: EmbeddingStore, name: str, info: dict) -> Any:
  """One consumer file, verified against its registry entry."""
  folder, file = _folder(store), info["name"]
  try:
    if file.endswith(".msgpack"):
      return io.read_bytes(layout.inside(folder, file), info["sha256"])
    with layout.open_file(folder, file) as f:
      return np.array(layout.read_verified(f, file, info))
  except (StoreError, OSError, io.FileFormatError, KeyError) as e:
    raise StoreError(f"consumer {name!r}: {e}") from None


def _load(store: EmbeddingStore, name: str, entry: dict
          ) -> Classifier | FrozenIndex:
  """A consumer from its verified files; its baseline is recomputed, and
  the space it was built on must be its version's in this store."""
  built_on = Space.from_json(entry.get("space"), f"consumer {name!r}")
  if built_on != store.space(entry["version"]):
    raise StoreError(f"consumer {name!r} was built on {built_on}, not on "
                     f"this store's {store.space(entry['version'])}")
  arrays = {role: _read(store, name, info)
            for role, info in entry["files"].items()}
  try:
    if entry["kind"] == "index":
      consumer = FrozenIndex(name, entry["version"], arrays["items"],
                             arrays["queries"], arrays["relevant"],
                             arrays["excluded"], int(entry["k"]),
                             entry["index_kind"], arrays["baseline_recall"],
                             entry["baseline"])
      again = float(np.mean(consumer.baseline_recall))
    else:
      if entry["head"] == "linear":
        head = LinearHead(arrays["weights"], float(arrays["bias"]))
      else:
        head = MLPHead.from_bytes(entry["hidden"], entry["d_in"],
                                  arrays["head"])
      consumer = Classifier(name, entry["version"], head,
                            tuple(entry["inputs"]), arrays["rows"],
                            arrays["labels"], entry["metric"],
                            arrays["baseline_scores"], entry["baseline"])
      again = metric_value(consumer.metric, consumer.baseline_scores,
                           consumer.labels)
  except (KeyError, TypeError, ValueError, IndexError) as e:
    raise StoreError(f"consumer {name!r}: its files do not make a consumer "
                     f"({type(e).__name__}: {e})") from None
  if again != consumer.baseline:
    raise StoreError(f"consumer {name!r}: recorded baseline "
                     f"{consumer.baseline!r}, its files give {again!r}")
  return consumer


def consumers(store: EmbeddingStore) -> list[Classifier | FrozenIndex]:
  """Every registered consumer, in registration order, verified.

  Raises:
    StoreError: an unreadable or malformed registry, or a consumer whose
      file is missing, fails its checksum, or disagrees with its recorded
      baseline (naming the consumer).
  """
  return [_load(store, name, entry)
          for name, entry in _read_registry(store).items()]


def _rows(store: EmbeddingStore, name: str, kind: str, ids: Any,
          num_rows: int) -> np.ndarray:
  """The store rows of raw ids, each below `num_rows` (version j's)."""
  known = store.user_ids if kind == "user" else store.item_ids
  ids = np.asarray(ids, dtype=np.str_).reshape(-1)
  order = np.argsort(known)
  at = order[np.searchsorted(known, ids, sorter=order).clip(
      max=len(known) - 1)]
  bad = np.flatnonzero((known[at] != ids) | (at >= num_rows))
  if bad.size:
    raise StoreError(f"consumer {name!r}: {kind} id {str(ids[bad[0]])!r} is "
                     f"not one of the {num_rows} {kind}s of its version")
  return at.astype(np.int64)


def _version(store: EmbeddingStore, name: str, version: Any) -> int:
  if isinstance(version, bool) or not isinstance(version, (int, np.integer)
                                                 ) or not (
      0 <= version <= store.latest_version):
    raise StoreError(f"consumer {name!r}: version {version!r} is not one of "
                     f"the store's 0..{store.latest_version}")
  return int(version)


def _tables(store, name, version, embeddings) -> tuple[np.ndarray, ...]:
  """Version j's (users, items): given, else read from the store."""
  if embeddings is None:
    return store.embeddings(version)
  tables = tuple(layout.as_float32(f"consumer {name!r} {kind}s", t)
                 for kind, t in zip(INPUTS, embeddings))
  if any(t.shape[1] != store.dims[version] for t in tables):
    raise StoreError(f"consumer {name!r}: embeddings of shapes "
                     f"{[t.shape for t in tables]}, version {version} has "
                     f"{store.dims[version]} dims")
  return tables


def _commit(store: EmbeddingStore, name: str, entry: dict | None,
            arrays: dict[str, Any], replace: bool) -> None:
  """Writes a consumer's files, then the registry naming them (or, with
  `entry` None, the registry without `name`); removes replaced files."""
  if not re.fullmatch(r"\w[\w.+-]{0,99}", name or ""):
    raise StoreError(f"consumer name {name!r} is not a plain name (letters, "
                     "digits, '_', '-', '.', '+')")
  folder = _folder(store)
  with guard.writer_lock(Path(store.path)):
    registry = _read_registry(store)
    if entry is not None and name in registry and not replace:
      raise StoreError(f"consumer {name!r} is registered; pass replace=True")
    if entry is None and name not in registry:
      raise StoreError(f"no consumer {name!r} is registered")
    io.make_dir(folder)
    token = uuid.uuid4().hex[:8]  # New names: a crash keeps the old files.
    for role, value in arrays.items():
      file = f"{name}.{role}.{token}"
      if isinstance(value, bytes):
        file += ".msgpack"
        info = {"sha256": io.save_bytes(folder / file, value),
                "size": len(value)}
      else:
        file += ".npy"
        info = layout.write_npy(folder, file, np.asarray(value))
      entry["files"][role] = {"name": file, **info}
    old = registry.pop(name, None)
    if entry is not None:
      registry[name] = entry
    layout.fsync_dir(folder)
    io.save_json(folder / REGISTRY, {"format": FORMAT, "consumers": registry})
    layout.fsync_dir(folder)
    for info in (old or {}).get("files", {}).values():
      io.remove(folder / info["name"])


def register_classifier(store: EmbeddingStore, name: str, version: int,
                        head: LinearHead | MLPHead, inputs: Sequence[str],
                        ids: Any, labels: Any, metric: str = "roc_auc",
                        embeddings: tuple[Any, Any] | None = None,
                        replace: bool = False) -> Classifier:
  """Registers a classifier built on version j and records its baseline.

  Args:
    store: the open store, holding version j.
    name: a plain name, unique in the store.
    version: j.
    head: a `LinearHead` or an `MLPHead` over version-j inputs.
    inputs: the tables the head reads, e.g. ("item",) or ("user", "item").
    ids: `[N, len(inputs)]` (or `[N]` for one input) raw ids of the rows.
    labels: `[N]` bool, both classes present.
    metric: a key of `METRICS`.
    embeddings: version j's (users, items) as the consumer saw them;
      default: the store's version j.
    replace: replace a consumer of the same name.

  Returns:
    The registered `Classifier`.

  Raises:
    StoreError: an unknown version, input, metric or id, a head of another
      width, labels of another length or a single class, or another writer.
  """
  version = _version(store, name, version)
  inputs = tuple(inputs)
  if not inputs or set(inputs) - set(INPUTS) or metric not in METRICS:
    raise StoreError(f"consumer {name!r}: inputs {inputs} (of {INPUTS}) and "
                     f"metric {metric!r} (of {', '.join(METRICS)})")
  tables = dict(zip(INPUTS, _tables(store, name, version, embeddings)))
  ids = np.asarray(ids, dtype=np.str_).reshape(-1, len(inputs))
  rows = np.stack([_rows(store, name, kind, ids[:, c], len(tables[kind]))
                   for c, kind in enumerate(inputs)], axis=1)
  labels = np.asarray(labels).reshape(-1)
  if labels.shape != (len(rows),) or labels.dtype.kind not in "bui" or len(
      np.unique(labels)) != 2 or not np.isin(labels, (0, 1)).all():
    raise StoreError(f"consumer {name!r}: labels need one 0/1 value per row "
                     f"({len(rows)}) and both classes")
  if head.d_in != store.dims[version] * len(inputs):
    raise StoreError(f"consumer {name!r}: the head reads {head.d_in} inputs, "
                     f"{inputs} at version {version} give "
                     f"{store.dims[version] * len(inputs)}")
  consumer = Classifier(name, version, head, inputs, rows,
                        labels.astype(bool), metric, None, 0.0)
  scores = consumer.scores(tables["user"], tables["item"])
  if not np.isfinite(scores).all():
    raise StoreError(f"consumer {name!r}: the head gives non-finite scores")
  consumer = dataclasses.replace(consumer, baseline_scores=scores,
                                 baseline=metric_value(metric, scores, labels))
  arrays = {"rows": rows, "labels": consumer.labels,
            "baseline_scores": scores}
  entry = {"kind": "classifier", "version": version, "inputs": list(inputs),
           "metric": metric, "baseline": consumer.baseline, "files": {},
           "space": store.space(version).to_json()}
  if isinstance(head, LinearHead):
    entry["head"] = "linear"
    arrays.update(weights=np.asarray(head.weights, np.float64),
                  bias=np.float64(head.bias))
  else:
    entry.update(head="mlp", hidden=int(head.hidden), d_in=head.d_in)
    arrays["head"] = head.to_bytes()
  _commit(store, name, entry, arrays, replace)
  return consumer


def register_index(store: EmbeddingStore, name: str, version: int,
                   user_ids: Sequence[str], relevant: Sequence[Sequence[str]],
                   excluded: Sequence[Sequence[str]] | None = None,
                   k: int = 50, embeddings: tuple[Any, Any] | None = None,
                   index_kind: str = "exact",
                   replace: bool = False) -> FrozenIndex:
  """Registers a frozen item index built on version j and records its
  baseline Recall@K (the version-j users through it).

  Args:
    store: the open store, holding version j.
    name: a plain name, unique in the store.
    version: j.
    user_ids: `[Q]` raw ids of the query users.
    relevant: per query, the raw item ids to retrieve (one at least).
    excluded: per query, raw item ids never retrieved (its training items);
      None for none.
    k: the K of Recall@K.
    embeddings: version j's (users, items) as the consumer saw them (the
      items are what its index holds); default: the store's version j.
    index_kind: "exact" or "hnsw".
    replace: replace a consumer of the same name.

  Returns:
    The registered `FrozenIndex`.

  Raises:
    StoreError: an unknown version, id or index kind, a query without
      relevant items, K out of range, or another writer.
  """
  version = _version(store, name, version)
  users, items = _tables(store, name, version, embeddings)
  queries = _rows(store, name, "user", user_ids, len(users))
  excluded = [[]] * len(queries) if excluded is None else excluded
  if len(relevant) != len(queries) or len(excluded) != len(queries):
    raise StoreError(f"consumer {name!r}: {len(queries)} queries, "
                     f"{len(relevant)} relevant and {len(excluded)} excluded "
                     "lists")
  if index_kind not in faiss_index.KINDS or not 1 <= k <= len(items):
    raise StoreError(f"consumer {name!r}: index kind {index_kind!r} (of "
                     f"{faiss_index.KINDS}) and k={k} (1..{len(items)})")
  if not all(len(r) for r in relevant):
    raise StoreError(f"consumer {name!r}: every query needs a relevant item")

  def pairs(lists):
    position = np.repeat(np.arange(len(lists)), [len(x) for x in lists])
    flat = [i for x in lists for i in x]
    return np.unique(np.stack([position, _rows(store, name, "item", flat,
                                               len(items))], 1), axis=0)

  consumer = FrozenIndex(name, version, items, queries, pairs(relevant),
                         pairs(excluded), int(k), index_kind, None, 0.0)
  recall = consumer.recall(faiss_index.build_index(items, index_kind), users)
  consumer = dataclasses.replace(consumer, baseline_recall=recall,
                                 baseline=float(np.mean(recall)))
  _commit(store, name, {
      "kind": "index", "version": version, "k": int(k),
      "index_kind": index_kind, "baseline": consumer.baseline, "files": {},
      "space": store.space(version).to_json()},
      {"items": items, "queries": queries, "relevant": consumer.relevant,
       "excluded": consumer.excluded, "baseline_recall": recall}, replace)
  return consumer


def unregister(store: EmbeddingStore, name: str) -> None:
  """Removes a consumer and its files.

  Raises:
    StoreError: no such consumer, or another writer.
  """
  _commit(store, name, None, {}, replace=True)
