"""The run directory: the one module that knows its layout.

  config.json, user_ids.npy, item_ids.npy     the run's settings and raw ids
  <strategy>/v<k>/variables.msgpack           M_k (params and batch statistics)
                  users.npy, items.npy        E_k(M_k), `[U_k, d_k]`, `[I_k, d_k]`
                  transform.npy               W_k `[d_k, d_{k-1}]` (k >= 1), or
                  backward_<param>.npy        a non-linear B_k's parameters
                                              (its kind in metrics.json)
                  bc_users.npy, bc_items.npy  the BC embedding, in version 0's
                                              space
                  metrics.json                written last: marks v<k> complete
                  checkpoint.msgpack          training in progress (removed
                                              when the version completes)
  consumers/<task>.msgpack, <task>.json       the version-0 consumer heads
  consumers/auc.json                          their cross-version ROC-AUC
  compatibility/<strategy>/<task>.json        a compatibility matrix
  retrieval.json                              legacy-index retrieval
                                              (`bcjax.retrieval`)
  report.json, report.csv, *.png              the report
  tensorboard/<strategy>/v<k>/                training curves (`bcjax.curves`)
  seed<s>/...                                 with several training seeds:
                                              one run directory (all of the
                                              above) per seed; report.json
                                              and the plots at the top are
                                              over seeds (`bcjax.multiseed`)

Every module that reads or writes a run (training, export to a store,
consumers, compatibility, report) goes through `RunDir`, so paths, the
completeness rule and the settings check live here once. Every file is
written atomically (`bcjax.io`), and in a run of several processes by
process 0 alone, between barriers of all processes (`bcjax.io.change`): the
others read what it wrote. JSON that cannot be read raises a `ValueError`
naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import re
from typing import Any

import numpy as np

from bcjax import io
from bcjax.adapters import BackwardMap, file_stem

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


def read_json(path: str | os.PathLike) -> Any:
  """A JSON file's content.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: it is not valid UTF-8 JSON (naming the file).
  """
  path = Path(path)
  try:
    return json.loads(path.read_bytes().decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
    raise ValueError(f"{path}: not valid JSON ({error})") from None


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
    """`tensorboard/`: the training curves (`bcjax.curves`)."""
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
    """config.json's content (the run's settings and dataset name)."""
    return read_json(self.config_path)

  def write_config(self, record: dict) -> None:
    """Writes config.json, refusing a directory trained under other settings.

    Raises:
      ValueError: config.json exists and one of `TRAINING_FIELDS` differs
        (naming the field, both values and the directory).
    """
    if self.config_path.exists():
      old = self.config()
      for field in TRAINING_FIELDS:
        before = old.get(field, FIELD_DEFAULTS.get(field))
        now = record.get(field, FIELD_DEFAULTS.get(field))
        if isinstance(now, tuple):
          now = list(now)
        if before != now:
          raise ValueError(f"{self.root} was trained with {field}={before!r}, "
                           f"not {now!r}; use a new workdir")
    io.make_dir(self.root)
    io.save_json(self.config_path, record)

  def ids_path(self, kind: str) -> Path:
    """`user_ids.npy` or `item_ids.npy` (kind "user" or "item")."""
    return self.root / f"{kind}_ids.npy"

  def save_ids(self, user_ids: np.ndarray, item_ids: np.ndarray) -> None:
    io.make_dir(self.root)
    io.save_npy(self.ids_path("user"), user_ids)
    io.save_npy(self.ids_path("item"), item_ids)

  # Versions of a strategy.

  def strategy_dir(self, strategy: str) -> Path:
    return self.root / strategy

  def version_dir(self, strategy: str, k: int) -> Path:
    """`<root>/<strategy>/v<k>`."""
    return self.root / strategy / f"v{k}"

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
    """`<name>.npy` of a version, checked by `io.load_npy` (no pickle)."""
    return io.load_npy(self.path(strategy, k, f"{name}.npy"))

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
    """metrics.json of a complete version."""
    return read_json(self.path(strategy, k, METRICS))

  def save_version(self, strategy: str, k: int, variables: bytes,
                   arrays: dict[str, np.ndarray], record: dict) -> None:
    """Writes a version: variables, `<name>.npy` per array, metrics.json last
    (the commit point); then removes its checkpoint."""
    io.make_dir(self.version_dir(strategy, k))
    io.save_bytes(self.path(strategy, k, VARIABLES), variables)
    for name, array in arrays.items():
      io.save_npy(self.path(strategy, k, f"{name}.npy"), array)
    io.save_json(self.path(strategy, k, METRICS), record)
    io.remove(self.path(strategy, k, CHECKPOINT))

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

  def report_path(self, name: str) -> Path:
    """A report file: `report.json`, `report.csv` or a plot."""
    return self.root / name
