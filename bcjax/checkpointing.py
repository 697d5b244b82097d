"""Checkpoints of a training in progress, and the selection they carry.

`train_version` (`bcjax.training`) keeps the best evaluation so far (a
`Selection`) and saves it with the train state, the epoch and the history
every few epochs (`Checkpointing`), so a run killed at any moment resumes
bitwise where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np

from bcjax import io
from bcjax.epoch import TrainState


def host_copy(tree):
  """A numpy copy (never a view of a buffer that a later step donates)."""
  return jax.tree.map(np.array, tree)


@dataclasses.dataclass
class Selection:
  """The best evaluation so far (higher score is better)."""
  score: float = -np.inf
  epoch: int = -1
  state: Any = None
  metrics: dict | None = None


@dataclasses.dataclass(frozen=True)
class Checkpointing:
  """Where and how often `train_version` saves its progress.

  The file holds the train state (parameters, optimizer and model state),
  the epoch, the selection and the history, written atomically. Epoch e's
  randomness is `keys.derive(key, "epoch", e)`, so the epoch is the whole PRNG
  position: a run resumed from the file is bitwise the run never stopped.

  Attributes:
    path: the checkpoint file (msgpack).
    every: save after every `every` epochs.
  """
  path: Path
  every: int = 1

  def save(self, label: str, epoch: int, state: TrainState, best: Selection,
           history: list) -> None:
    """Writes the progress after `epoch` to `path`, atomically.

    Args:
      label: names the training; `restore` checks it.
      epoch: the last finished epoch.
      state: the current train state (copied to host).
      best: the selection so far.
      history: the evaluations so far.
    """
    # Arrays as msgpack; the rest as JSON (exact floats, key order kept).
    record = {"label": label, "epoch": epoch, "history": history,
              "best": {"score": best.score, "epoch": best.epoch,
                       "metrics": best.metrics}}
    payload = {"record": json.dumps(record), "state": host_copy(state),
               "best_state": best.state if best.state is not None else {}}
    io.make_dir(Path(self.path).parent)
    io.save_bytes(self.path, flax.serialization.msgpack_serialize(
        flax.serialization.to_state_dict(payload)))

  def restore(self, label: str, state: TrainState
              ) -> tuple[int, TrainState, Selection, list] | None:
    """(epoch, state, selection, history) from the file, or None if absent.

    Args:
      label: the training's label; must match the saved one.
      state: a train state of the same structure (the restore template).

    Returns:
      `(epoch, state, selection, history)` as saved by `save` (arrays on
      host), or None when the file does not exist.

    Raises:
      ValueError: the file is not a checkpoint of this training.
    """
    if not Path(self.path).exists():
      return None
    try:
      raw = flax.serialization.msgpack_restore(Path(self.path).read_bytes())
      record = json.loads(raw["record"])
      if record["label"] != label:
        raise ValueError(f"it belongs to {record['label']!r}")
      restored = flax.serialization.from_state_dict(state, raw["state"])
      best_state = (flax.serialization.from_state_dict(state, raw["best_state"])
                    if raw["best_state"] else None)
    except (KeyError, TypeError, ValueError) as error:
      raise ValueError(f"{self.path}: not a checkpoint of {label!r} ({error}); "
                       "delete it to restart this version") from None
    best = record["best"]
    selection = Selection(float(best["score"]), int(best["epoch"]), best_state,
                          best["metrics"])
    return int(record["epoch"]), restored, selection, record["history"]
