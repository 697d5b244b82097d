"""The run directory: the one module that knows its layout::

  config.json, user_ids.npy, item_ids.npy     the run's settings, the
                                              fingerprint of its graph and
                                              its raw ids
  <strategy>/v<k>/variables.msgpack           M_k (params and batch statistics)
                  users.npy, items.npy        E_k(M_k), `[U_k, d_k]`, `[I_k, d_k]`
                  transform.npy               W_k `[d_k, d_{k-1}]` (k >= 1), or
                  backward_<param>.npy        a non-linear B_k's parameters
                                              (its kind in metrics.json)
                  bc_users.npy, bc_items.npy  the BC embedding, in version 0's
                                              space
                  metrics.json                written last: marks v<k>
                                              complete; lists the sha256 of
                                              every file above
                  checkpoint.msgpack          training in progress (removed
                                              when the version completes)
  consumers/<task>.msgpack, <task>.json       the version-0 consumer heads
  consumers/auc.json                          their cross-version ROC-AUC
  compatibility/<strategy>/<task>.json        a compatibility matrix
  retrieval.json                              legacy-index retrieval
                                              (`bcjax.evaluation.retrieval`)
  backfill.json                               partial backfill curves
                                              (`bcjax.evaluation.backfill`)
  report.json, report.csv, *.png              the report
  tensorboard/<strategy>/v<k>/                training curves (`bcjax.evaluation.curves`)
  seed<s>/...                                 with several training seeds:
                                              one run directory (all of the
                                              above) per seed; report.json
                                              and the plots at the top are
                                              over seeds (`bcjax.paper.multiseed`)

Every module that reads or writes a run (training, export to a store,
consumers, compatibility, report) goes through `RunDir`, so paths, the
completeness rule, the settings check and the checksums live here once.
Every file is written atomically (`bcjax.util.io`), and in a run of several
processes by process 0 alone, between barriers of all processes
(`bcjax.util.io.change`): the others read what it wrote. Every array and the
variables are checked against the sha256 their record (config.json or
metrics.json) lists when read; records written before checksums list none.
JSON that cannot be read, or is not an object, raises a `ValueError` naming
the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import re
from typing import Any

import numpy as np

from bcjax.backward.maps import BackwardMap, file_stem
from bcjax.util import io

METRICS = "metrics.json"
CHECKPOINT = "checkpoint.msgpack"
VARIABLES = "variables.msgpack"

# Fields that change trained artifacts; a run directory keeps them for life.
TRAINING_FIELDS = ("dataset", "model", "times", "dims", "layers", "epochs",
                   "finetune_epochs", "posthoc_epochs", "eval_every",
                   "min_select_epoch", "batch_size", "lr", "weight_decay",
                   "lam", "seed", "layout", "fanout")
# Values of fields added later, for run directories written before them.
FIELD_DEFAULTS = {"model": "pinsage", "fanout": 0}
# config.json's field holding the graph's fingerprint
# (`DynamicGraph.fingerprint`), and the records' field of file checksums.
GRAPH = "graph"
SHA256 = "sha256"


def read_json(path: str | os.PathLike) -> Any:
  """A JSON file's content.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: it is not a regular file or not valid UTF-8 JSON (naming
      the file).
  """
  path = Path(path)
  with io.open_regular(path) as f:
    data = f.read()
  try:
    return json.loads(data.decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
    raise ValueError(f"{path}: not valid JSON ({error})") from None


def read_record(path: str | os.PathLike) -> dict:
  """A JSON file that must hold an object (`read_json`; a `ValueError`
  naming the file otherwise)."""
  record = read_json(path)
  if not isinstance(record, dict):
    raise ValueError(f"{path}: not a JSON object")
  return record


class RunDir:
  """A run directory (see the module docstring for its layout).

  Args:
    root: the directory; nothing is created until something is written.
  """

  def __init__(self, root: str | os.PathLike):
    self.root = Path(root)

  @classmethod
  def of(cls, workdir: RunDir | str | os.PathLike) -> RunDir:
    """`workdir` itself if it is a `RunDir`, else the `RunDir` at that path."""
    return workdir if isinstance(workdir, RunDir) else cls(workdir)

  def __repr__(self) -> str:
    return f"RunDir({str(self.root)!r})"

  @property
  def tensorboard_dir(self) -> Path:
    """`tensorboard/`: the training curves (`bcjax.evaluation.curves`)."""
    return self.root / "tensorboard"

  @staticmethod
  def curves_dir(base: Path, strategy: str, k: int) -> Path:
    """One version's event files under `base` (`tensorboard_dir`, or the
    staging directory it is rebuilt in)."""
    return Path(base) / strategy / f"v{k}"

  def seed_dir(self, seed: int) -> RunDir:
    """The run directory of training seed `seed` in a multi-seed run."""
    return RunDir(self.root / f"seed{int(seed)}")

  # The run's settings and ids.

  @property
  def config_path(self) -> Path:
    return self.root / "config.json"

  def config(self) -> dict:
    """config.json's content (the run's settings, dataset name and graph
    fingerprint; its checksums left out)."""
    return _without_checksums(read_record(self.config_path))

  def write_config(self, record: dict, user_ids: np.ndarray,
                   item_ids: np.ndarray, join: bool = False) -> None:
    """Starts (or resumes) the run: checks an existing config.json before
    any file is touched, then writes the raw ids and config.json with their
    checksums; removes what a killed writer left at the top.

    Args:
      record: the settings, with `GRAPH`, the graph's fingerprint.
      user_ids, item_ids: the graph's raw ids.
      join: only check: another process started the run and may be writing
        at its top (a worker joining the main process's run), so nothing is
        written or removed.

    Raises:
      ValueError: config.json exists and is not a JSON object, one of
        `TRAINING_FIELDS` differs, or it records another graph (naming the
        field, both values and the directory); or, to join, it is missing.
    """
    if self.config_path.exists():
      self._check_resumable(self.config(), record, (user_ids, item_ids))
    elif join:
      raise ValueError(f"{self.root}: no config.json to join; the run was "
                       "never started")
    if join:
      return
    io.make_dir(self.root)
    io.clear_temporaries(self.root)
    digests = {self.ids_path(kind).name: io.save_npy(self.ids_path(kind), ids)
               for kind, ids in (("user", user_ids), ("item", item_ids))}
    io.save_json(self.config_path, {**record, SHA256: digests})

  def _check_resumable(self, old: dict, record: dict, ids) -> None:
    """Refuses to resume a run under other settings or on another graph; a
    config.json written before graph fingerprints is checked by its ids."""
    for field in TRAINING_FIELDS:
      before = old.get(field, FIELD_DEFAULTS.get(field))
      now = record.get(field, FIELD_DEFAULTS.get(field))
      if isinstance(now, tuple):
        now = list(now)
      if before != now:
        raise ValueError(f"{self.root} was trained with {field}={before!r}, "
                         f"not {now!r}; use a new workdir")
    if GRAPH in old:
      same = old[GRAPH] == record.get(GRAPH)
    else:
      same = all(path.is_file() and np.array_equal(io.load_npy(path), new)
                 for path, new in zip(map(self.ids_path, ("user", "item")),
                                      ids))
    if not same:
      raise ValueError(f"{self.root} was trained on another graph named "
                       f"{record.get('dataset')!r} (other interactions, ids "
                       f"or attributes: {GRAPH} {old.get(GRAPH)}, this one "
                       f"{record.get(GRAPH)}); use a new workdir")

  def ids_path(self, kind: str) -> Path:
    """`user_ids.npy` or `item_ids.npy` (kind "user" or "item")."""
    return self.root / f"{kind}_ids.npy"

  def ids(self, kind: str) -> np.ndarray:
    """The run's raw user or item ids (kind "user" or "item"), checked
    against config.json's checksums."""
    path = self.ids_path(kind)
    return io.load_npy(path, digest=listed_digest(self.config_path, path.name))

  # Versions of a strategy.

  def strategy_dir(self, strategy: str) -> Path:
    """`<root>/<strategy>`.

    Raises:
      ValueError: `strategy` is not a plain name (a path such as `../x`
        would lead out of the run).
    """
    if not isinstance(strategy, str) or not re.fullmatch(r"\w[\w.+-]*",
                                                         strategy):
      raise ValueError(f"strategy {strategy!r} is not a plain name (letters, "
                       "digits, '_', '-', '.', '+')")
    return self.root / strategy

  def version_dir(self, strategy: str, k: int) -> Path:
    """`<root>/<strategy>/v<k>`."""
    return self.strategy_dir(strategy) / f"v{k}"

  def path(self, strategy: str, k: int, name: str) -> Path:
    """File `name` of version k of `strategy`."""
    return self.version_dir(strategy, k) / name

  def complete(self, strategy: str, k: int) -> bool:
    """Whether version k of `strategy` is saved (its metrics.json exists)."""
    return self.path(strategy, k, METRICS).is_file()

  def complete_in(self, strategies, num_versions: int) -> list[str]:
    """Those of `strategies` (in their order) with versions 0..n-1 complete."""
    return [s for s in strategies
            if all(self.complete(s, k) for k in range(num_versions))]

  def present_versions(self, strategy: str) -> list[int]:
    """The versions that have a directory, complete or not, sorted."""
    root = self.strategy_dir(strategy)
    if not root.is_dir():
      return []
    return sorted(int(p.name[1:]) for p in root.iterdir()
                  if p.is_dir() and re.fullmatch(r"v\d+", p.name))

  def array(self, strategy: str, k: int, name: str) -> np.ndarray:
    """`<name>.npy` of a version, checked by `io.load_npy` (no pickle)
    against the sha256 its metrics.json lists."""
    return io.load_npy(self.path(strategy, k, f"{name}.npy"),
                       digest=listed_digest(self.path(strategy, k, METRICS),
                                            f"{name}.npy"))

  def variables(self, strategy: str, k: int) -> bytes:
    """variables.msgpack of a version, checked against the sha256 its
    metrics.json lists."""
    return io.read_bytes(self.path(strategy, k, VARIABLES),
                         listed_digest(self.path(strategy, k, METRICS),
                                       VARIABLES))

  def tables(self, strategy: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`(users [U_k, d_k], items [I_k, d_k])`, version k's own embeddings."""
    return self.array(strategy, k, "users"), self.array(strategy, k, "items")

  def bc_tables(self, strategy: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`(users, items)` of version k's BC embedding, in version 0's space."""
    return (self.array(strategy, k, "bc_users"),
            self.array(strategy, k, "bc_items"))

  def transform(self, strategy: str, k: int) -> np.ndarray:
    """W_k `[d_k, d_{k-1}]` of version k >= 1."""
    return self.array(strategy, k, "transform")

  def chain(self, strategy: str, k: int) -> list[np.ndarray]:
    """`[W_1, ..., W_k]` of a strategy's saved versions."""
    return [self.transform(strategy, j) for j in range(1, k + 1)]

  def backward_map(self, strategy: str, k: int) -> BackwardMap:
    """B_k of version k >= 1: W_k where transform.npy exists, else the
    non-linear map that metrics.json's `"backward"` names, with its
    `backward_<param>.npy` arrays."""
    if self.path(strategy, k, "transform.npy").exists():
      return BackwardMap.from_matrix(self.transform(strategy, k))
    record = self.metrics(strategy, k)
    if "backward" not in record:
      raise FileNotFoundError(f"{self.version_dir(strategy, k)}: no "
                              "transform.npy and no non-linear backward map")
    kind = record["backward"]
    return BackwardMap(kind, {name: self.array(strategy, k,
                                               file_stem(kind, name))
                              for name in record["backward_params"]})

  def backward_maps(self, strategy: str, k: int) -> list[BackwardMap]:
    """`[B_1, ..., B_k]` of a strategy's saved versions."""
    return [self.backward_map(strategy, j) for j in range(1, k + 1)]

  @staticmethod
  def backward_files(backward: BackwardMap) -> tuple[dict, dict]:
    """How `save_version` stores a B_k: (arrays, metrics.json fields).
    A linear map is `transform.npy`, as the store and the training chain
    read it."""
    arrays = {file_stem(backward.kind, name): p
              for name, p in backward.params.items()}
    if backward.kind == "linear":
      return arrays, {}
    return arrays, {"backward": backward.kind,
                    "backward_params": sorted(backward.params)}

  def metrics(self, strategy: str, k: int) -> dict:
    """metrics.json of a complete version (its checksums left out)."""
    return _without_checksums(read_record(self.path(strategy, k, METRICS)))

  def save_version(self, strategy: str, k: int, variables: bytes,
                   arrays: dict[str, np.ndarray], record: dict) -> None:
    """Writes a version: variables, `<name>.npy` per array, metrics.json
    last (the commit point, with every file's sha256); then removes its
    checkpoint and what a killed writer left in the version's directory."""
    folder = self.version_dir(strategy, k)
    io.make_dir(folder)
    digests = {VARIABLES: io.save_bytes(folder / VARIABLES, variables)}
    for name, array in arrays.items():
      digests[f"{name}.npy"] = io.save_npy(folder / f"{name}.npy", array)
    io.save_json(folder / METRICS, {**record, SHA256: digests})
    io.remove(folder / CHECKPOINT)
    io.clear_temporaries(folder)

  # Consumers, compatibility and the report.

  @property
  def consumers_dir(self) -> Path:
    return self.root / "consumers"

  def consumer_stem(self, task: str) -> Path:
    """`consumers/<task>`: the heads' `.msgpack` and `.json` share it."""
    return self.consumers_dir / task

  @property
  def auc_path(self) -> Path:
    return self.consumers_dir / "auc.json"

  @property
  def compatibility_dir(self) -> Path:
    return self.root / "compatibility"

  def compatibility_path(self, strategy: str, task: str) -> Path:
    return self.compatibility_dir / strategy / f"{task}.json"

  @property
  def retrieval_path(self) -> Path:
    """`retrieval.json`: Recall@K through the frozen version-0 index."""
    return self.root / "retrieval.json"

  @property
  def backfill_path(self) -> Path:
    """`backfill.json`: the partial backfill curves of the legacy index."""
    return self.root / "backfill.json"

  def report_path(self, name: str) -> Path:
    """A report file: `report.json`, `report.csv` or a plot."""
    return self.root / name


def _without_checksums(record: dict) -> dict:
  return {key: value for key, value in record.items() if key != SHA256}


def listed_digest(record: Path, name: str) -> str | None:
  """The sha256 that `record` (config.json or a metrics.json) lists for its
  file `name`; None when `record` is absent (a version not yet complete) or
  was written before checksums.

  Raises:
    ValueError: `record` lists checksums but none of `name` (naming both).
  """
  if not record.exists():
    return None
  digests = read_record(record).get(SHA256)
  if digests is None:
    return None
  if not isinstance(digests, dict) or not isinstance(digests.get(name), str):
    raise ValueError(f"{record}: lists no sha256 of {name}")
  return digests[name]
