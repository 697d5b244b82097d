"""Checkpoints of a training in progress, and the selection they carry.

The training loop (`bcjax.util.loop.run`) keeps the best evaluation so far (a
`Selection`) and saves it with the train state, the epoch and the history
every few epochs (`Checkpointing`), so a run killed at any moment resumes
bitwise where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, NamedTuple

import flax.serialization
import jax
import numpy as np

from bcjax.util import io, keys, numbers


def host_copy(tree):
  """A numpy copy (never a view of a buffer that a later step donates)."""
  return jax.tree.map(np.array, tree)


class Selection(NamedTuple):
  """The best evaluation so far (higher score is better): floats and one
  state, or `[M]` arrays and a stacked state (`bcjax.util.loop.keep_best`)."""
  score: Any = -np.inf
  epoch: Any = -1
  state: Any = None
  metrics: dict | None = None


def _json(value: Any) -> Any:
  """A selection's field as JSON (lists for stacked arrays)."""
  if isinstance(value, dict):
    return {name: _json(v) for name, v in value.items()}
  value = np.asarray(value) if value is not None else None
  return None if value is None else (value.tolist() if value.ndim
                                     else value.item())


def _from_json(value: Any, like: Any) -> Any:
  """A saved selection field: floats stay floats, lists become arrays of the
  dtype of `like` (the field before any epoch)."""
  if isinstance(value, dict):
    return {name: _from_json(v, (like or {}).get(name))
            for name, v in value.items()}
  if not isinstance(value, list):
    return value
  return np.asarray(value, None if like is None else np.asarray(like).dtype)


@dataclasses.dataclass(frozen=True)
class Checkpointing:
  """Where and how often the training loop (`bcjax.util.loop.run`) saves its
  progress.

  The file holds the train state (parameters, optimizer and model state),
  the epoch, the selection and the history, written atomically. Epoch e's
  randomness is `keys.derive(key, "epoch", e)`, so the epoch is the whole PRNG
  position: a run resumed from the file is bitwise the run never stopped.

  The file also records what identifies the training (its label, its key's
  fingerprint, the state's shapes): `restore` refuses a file of another.

  Attributes:
    path: the checkpoint file (msgpack); a str is taken as a path.
    every: save after every `every` epochs.

  Raises:
    ValueError: `every` is not an integer >= 1.
  """
  path: Path
  every: int = 1

  def __post_init__(self):
    object.__setattr__(self, "path", Path(self.path))
    numbers.positive_int("Checkpointing.every", self.every)

  def save(self, label: str, epoch: int, state: Any, best: Selection,
           history: list, *, key: jax.Array) -> None:
    """Writes the progress after `epoch` to `path`, atomically.

    Args:
      label: names the training; `restore` checks it.
      epoch: the last finished epoch.
      state: the current train state (copied to host).
      best: the selection so far.
      history: the evaluations so far.
      key: the training's PRNG key; its fingerprint is recorded and
        `restore` checks it.
    """
    # Arrays as msgpack; the rest as JSON (exact floats, key order kept).
    record = {"label": label, "key": keys.fingerprint(key), "epoch": epoch,
              "history": history,
              "best": {"score": _json(best.score), "epoch": _json(best.epoch),
                       "metrics": _json(best.metrics)}}
    payload = {"record": json.dumps(record), "state": host_copy(state),
               "best_state": best.state if best.state is not None else {}}
    io.make_dir(Path(self.path).parent)
    io.save_bytes(self.path, flax.serialization.msgpack_serialize(
        flax.serialization.to_state_dict(payload)))

  def restore(self, label: str, state: Any, *,
              key: jax.Array | None = None, epochs: int | None = None,
              best: Selection = Selection(), snapshot: Any = None
              ) -> tuple[int, Any, Selection, list] | None:
    """(epoch, state, selection, history) from the file, or None if absent.

    A checkpoint resumes only the training that wrote it: the same label
    and key, and a model of the same shapes (a dim-8 checkpoint must not
    seed a dim-10 model).

    Args:
      label: the training's label; must match the saved one.
      state: a fresh train state of this training (the restore template):
        every saved array must have its leaf's shape and dtype.
      key: the training's PRNG key; must match the saved fingerprint (None:
        not checked).
      epochs: the schedule's epochs; the saved epoch must lie in 1..epochs
        (None: any epoch from 1).
      best: the selection before any epoch; a saved selection without a
        state (nothing selected yet) restores as it.
      snapshot: the template of the selection's state (default `state`).

    Returns:
      `(epoch, state, selection, history)` as saved by `save` (arrays on
      host), or None when the file does not exist.

    Raises:
      ValueError: the file is not a checkpoint of this training (another
        label, key or model shape, an epoch out of range, not a checkpoint
        at all); the message names the file and the mismatch.
    """
    if not Path(self.path).exists():
      return None
    try:
      raw = flax.serialization.msgpack_restore(Path(self.path).read_bytes())
      record = json.loads(raw["record"])
      if record["label"] != label:
        raise ValueError(f"it belongs to {record['label']!r}")
      if key is not None and record.get("key") != keys.fingerprint(key):
        raise ValueError("it records no key (an older bcjax wrote it)"
                         if record.get("key") is None else
                         "it was trained with another key (seed) than this "
                         "call's")
      epoch = record["epoch"]
      if (isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1
          or (epochs is not None and epoch > epochs)):
        raise ValueError(f"its epoch {epoch!r} is not one of this schedule's "
                         f"epochs ({'>= 1' if epochs is None else epochs})")
      restored = _restore_like(state, raw["state"])
      best_state = (_restore_like(state if snapshot is None else snapshot,
                                  raw["best_state"])
                    if raw["best_state"] else best.state)
    except (KeyError, TypeError, ValueError) as error:
      raise ValueError(f"{self.path}: not a checkpoint of {label!r} ({error}); "
                       "delete it to restart this version") from None
    saved = record["best"]
    selection = Selection(_from_json(saved["score"], best.score),
                          _from_json(saved["epoch"], best.epoch), best_state,
                          _from_json(saved["metrics"], best.metrics))
    return epoch, restored, selection, record["history"]


def _restore_like(template, saved):
  """The state dict `saved` in `template`'s structure, each array checked
  against the template leaf's shape and dtype (flax restores any shape)."""
  restored = flax.serialization.from_state_dict(template, saved)
  expected = jax.tree_util.tree_flatten_with_path(template)[0]
  for (path, want), got in zip(expected, jax.tree.leaves(restored)):
    got = np.asarray(got)
    shape = np.shape(want)
    dtype = want.dtype if hasattr(want, "dtype") else np.result_type(want)
    if got.shape != shape or got.dtype != dtype:
      raise ValueError(f"state{jax.tree_util.keystr(path)} is {got.dtype}"
                       f"{list(got.shape)} in the file but {dtype}"
                       f"{list(shape)} here: a model of another shape")
  return restored
