"""Named key streams: every key a whole run draws is listed, none twice."""

import jax
import numpy as np

from bcjax.data.synthetic import make_synthetic
from bcjax.evaluation.unintended import TASKS
from bcjax.paper import pipeline
from bcjax.runs.configs import test as test_config
from bcjax.util import keys


def _bits(key):
  return np.asarray(jax.random.key_data(key)).tobytes()


def test_derive_is_a_fold_in_per_name_and_index():
  root = jax.random.key(0)
  init, epoch_1 = keys.derive(root, "init"), keys.derive(root, "epoch", 1)
  # The old convention's keys (fold_in by a bare index) are none of these.
  old = {_bits(jax.random.fold_in(root, i)) for i in range(3)}
  assert not {_bits(init), _bits(epoch_1)} & old
  assert _bits(keys.derive(root, "epoch", 1)) == _bits(epoch_1)  # Pure.
  assert _bits(keys.derive(root, "epoch", 2)) != _bits(epoch_1)
  assert _bits(keys.derive(root, "epoch", 1, 0)) != _bits(epoch_1)


def test_record_lists_paths_and_flags_a_key_of_two_paths():
  with keys.record() as listed:
    run = keys.root(3)
    keys.derive(keys.derive(run, "version", 2), "init")
    keys.derive(run, "version", 2)           # Again, same path: one entry.
  assert sorted(listed.values()) == ["seed3", "seed3/version/2",
                                     "seed3/version/2/init"]
  with keys.record() as listed:
    keys.root(0)
    keys.root(0)
  assert list(listed.values()) == ["seed0"]
  keys.root(1)  # Outside a block: not listed anywhere.
  assert list(listed.values()) == ["seed0"]


def test_a_whole_test_preset_run_never_draws_a_key_twice(tmp_path):
  """Training of every strategy, consumers and the compatibility matrix:
  each key has one path (purpose), and the expected streams are there."""
  config = test_config.get_config()
  graph = make_synthetic(3000, seed=0)
  with keys.record() as listed:
    pipeline.reproduce(graph, config, tmp_path, log=lambda _: None)
  paths = set(listed.values())
  twice = [p for p in paths if " | " in p]
  assert not twice, f"keys drawn for two purposes: {twice}"
  assert len(paths) == len(listed)
  for k in range(len(config.dims)):
    assert f"seed0/version/{k}/init" in paths
    for e in range(1, config.epochs + 1):
      assert f"seed0/version/{k}/epoch/{e}/triples" in paths
  h = config.consumer.hidden[0]
  trained = {p.split("/")[1] for p in paths if "/heads/" in p}
  assert trained and trained <= {f"consumers:{t}" for t in TASKS}
  for task in trained:
    for s in range(config.consumer.seeds):
      assert f"seed0/{task}/heads/{h}/{s}" in paths
  assert any("/compat/" in p for p in paths)
  assert len(paths) > 100
