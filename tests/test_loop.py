"""Tests of bcjax.util.loop: the one training loop over one model or a stack."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bcjax.evaluation import consumers, unintended
from bcjax.util import loop
from bcjax.util.checkpointing import Checkpointing, Selection


def test_keep_best_selects_per_model_of_a_stack_and_whole_for_one():
  old = {"w": np.zeros((3, 2), np.float32), "step": np.zeros(3, np.int32)}
  new = {"w": np.ones((3, 2), np.float32), "step": np.full(3, 7, np.int32)}
  kept = loop.keep_best(np.array([True, False, True]), new, old)
  np.testing.assert_array_equal(kept["w"], [[1, 1], [0, 0], [1, 1]])
  np.testing.assert_array_equal(kept["step"], [7, 0, 7])
  # One model: the whole tree, not a copy.
  assert loop.keep_best(True, new, old) is new
  assert loop.keep_best(np.bool_(False), new, old) is old
  # Under jit, with a traced mask.
  jitted = jax.jit(loop.keep_best)(jnp.array([False, True, False]), new, old)
  np.testing.assert_array_equal(jitted["step"], [0, 7, 0])


def _stack_run(scores, epochs=4, losses=None, checkpointing=None, key=None):
  """A stack of 3 scripted models: state = {"params": [3], "epoch": int}."""
  losses = losses or {}

  def epoch_fn(state, epoch):
    params = state["params"] + 1.0
    return ({"params": params, "epoch": np.int32(epoch)},
            {"loss": losses.get(epoch, np.zeros(3, np.float32))})

  initial = Selection(np.full(3, -np.inf, np.float32), np.zeros(3, np.int32),
                      {"params": np.zeros(3, np.float32)},
                      {"auc": np.full(3, np.nan, np.float32)})
  return loop.run(
      epoch_fn, {"params": np.zeros(3, np.float32), "epoch": np.int32(0)},
      loop.Schedule(epochs=epochs, select="auc"), label="stack",
      evaluate=lambda state: {"auc": scores[int(state["epoch"])]},
      best=initial, snapshot=lambda state: {"params": state["params"]},
      params=lambda state: state["params"], checkpointing=checkpointing,
      key=key, log=lambda _: None)


SCORES = {1: np.array([0.5, 0.9, 0.1], np.float32),
          2: np.array([0.6, 0.8, 0.1], np.float32),
          3: np.array([0.4, 0.95, 0.1], np.float32),
          4: np.array([0.7, 0.2, 0.1], np.float32)}


def test_a_stack_keeps_each_models_own_best_epoch():
  best, history = _stack_run(SCORES)
  # Model 0 improves at 1, 2, 4; model 1 at 1 and 3; model 2 only at 1
  # (ties never replace).
  np.testing.assert_array_equal(best.epoch, [4, 3, 1])
  np.testing.assert_array_equal(best.state["params"], [4.0, 3.0, 1.0])
  # Kept values, not recomputed ones: exactly the scripted float32 scores.
  np.testing.assert_array_equal(best.score,
                                np.array([0.7, 0.95, 0.1], np.float32))
  assert [h["epoch"] for h in history] == [1, 2, 3, 4]
  np.testing.assert_array_equal(np.float32(history[2]["auc"]), SCORES[3])


def test_a_stack_names_the_model_whose_loss_is_not_finite():
  with pytest.raises(FloatingPointError,
                     match=r"stack: the loss of model 1 .* at epoch 2"):
    _stack_run(SCORES, losses={2: np.array([0.0, np.nan, 0.0])})


def test_a_stack_resumes_from_its_checkpoint_to_the_same_selection(tmp_path):
  key = jax.random.key(3)
  whole, _ = _stack_run(SCORES, key=key)
  path = tmp_path / "stack.msgpack"
  first, _ = _stack_run(SCORES, epochs=4,
                        checkpointing=Checkpointing(path, every=2), key=key)
  # Cut the file back to epoch 2 by training only two epochs, then resume.
  path.unlink()
  _stack_run(SCORES, epochs=2, checkpointing=Checkpointing(path, every=2),
             key=key)
  resumed, _ = _stack_run(SCORES, epochs=4,
                          checkpointing=Checkpointing(path, every=2), key=key)
  for got in (first, resumed):
    np.testing.assert_array_equal(got.epoch, whole.epoch)
    np.testing.assert_array_equal(got.state["params"], whole.state["params"])
    np.testing.assert_array_equal(got.score, whole.score)
    assert np.asarray(got.score).dtype == np.float32


def _planted_heads(tmp_path=None, epochs=6, **kwargs):
  rng = np.random.default_rng(0)
  users = rng.normal(size=(40, 4)).astype(np.float32)
  items = rng.normal(size=(50, 4)).astype(np.float32)
  rows = np.stack([rng.integers(40, size=600), rng.integers(50, size=600)], 1)
  labels = ((users[rows[:, 0], 0] + items[rows[:, 1], 0]) > 0).astype(np.int32)
  train = unintended.Examples(rows[:400], labels[:400])
  val = unintended.Examples(rows[400:], labels[400:])
  config = consumers.ConsumerConfig(hidden=(8,), dropout=(0.0,), seeds=2,
                                    epochs=epochs, batch_size=64, lr=1e-2)
  return consumers.train_heads((users, items), train, (users, items), val,
                               config, jax.random.key(1), log=lambda _: None,
                               **kwargs)


def test_consumer_grid_resumes_bitwise_from_its_checkpoints(tmp_path,
                                                            monkeypatch):
  """The consumer grid runs the same loop: a grid point killed after its
  checkpoint resumes to the heads of an uninterrupted run."""
  monkeypatch.setattr(consumers, "CHECKPOINT_EVERY", 2)
  whole = _planted_heads()
  stem = tmp_path / "task"
  calls = {"n": 0}
  grid_epoch = consumers._grid_epoch

  def dying_epoch(*args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 5:  # After epoch 4's checkpoint.
      raise KeyboardInterrupt
    return grid_epoch(*args, **kwargs)

  monkeypatch.setattr(consumers, "_grid_epoch", dying_epoch)
  with pytest.raises(KeyboardInterrupt, match="holds epoch 4"):
    _planted_heads(checkpoints=stem)
  assert consumers.checkpoint_path(stem, 8, 0.0).exists()
  monkeypatch.setattr(consumers, "_grid_epoch", grid_epoch)
  resumed = _planted_heads(checkpoints=stem)
  np.testing.assert_array_equal(resumed.val_auc, whole.val_auc)
  np.testing.assert_array_equal(resumed.best_epoch, whole.best_epoch)
  for got, want in zip(jax.tree.leaves(resumed.variables),
                       jax.tree.leaves(whole.variables)):
    np.testing.assert_array_equal(got, want)
