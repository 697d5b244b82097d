"""Tests of the unintended tasks, consumer training and cross-version scoring."""

import json

from float32_bounds import tolerance
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bcjax.data.graph import build_graph
from bcjax.data.splits import make_splits
from bcjax.evaluation import consumers, scoring, unintended
from bcjax.models.consumer import ConsumerMLP
from bcjax.runs.configs import paper, quick, test as test_config
from bcjax.util import io

# Compares floats of two computations: `make test-numerics` runs it under
# other XLA CPU kernels.
pytestmark = pytest.mark.numerics

SMALL = consumers.ConsumerConfig(epochs=12, hidden=(16,), dropout=(0.0, 0.25),
                                 seeds=2, batch_size=256)


def _hand_graph():
  """41 interactions, version times (0.5, 0.75, 1.0): two versions.

  Row e has time e/40. Users A B C D E = 0..4, items p q r = 0..2.
    rows 0-9    A,B alternating rate p: 5 4 5 4 ...        (version-0 history)
    rows 10-19  A,B alternating rate q: 1 5 1 5 ...
    row 20      A rates r 2
    W_0: 21 C p 3 (train), 22 A q 4 (val), 23 C q 5 (C's last: val),
         24 D r 1 (D's only: train), 25-30 B r 2 (val)
    W_1: 31 E p 5 (train), 32 A r 5 (val), 33 E r 1 (E's last: val),
         34-40 D r 5 (val)
  """
  rows = ([("A" if e % 2 == 0 else "B", "p", 5 - e % 2) for e in range(10)] +
          [("A" if e % 2 == 0 else "B", "q", 1 + 4 * (e % 2)) for e in range(10)] +
          [("A", "r", 2), ("C", "p", 3), ("A", "q", 4), ("C", "q", 5),
           ("D", "r", 1)] + [("B", "r", 2)] * 6 +
          [("E", "p", 5), ("A", "r", 5), ("E", "r", 1)] + [("D", "r", 5)] * 7)
  users, items, ratings = zip(*rows)
  return build_graph("hand", list(users), list(items), list(ratings),
                     list(range(len(rows))), {})


def test_hand_split_is_as_documented():
  s0, s1 = make_splits(_hand_graph(), (0.5, 0.75, 1.0))
  assert s0.val_index.tolist() == [22, 23, 25, 26, 27, 28, 29, 30]
  assert s0.train_index.tolist() == list(range(22)) + [24]
  assert (s0.num_users, s0.num_items) == (4, 3)
  assert s1.val_index.tolist() == [32, 33] + list(range(34, 41))
  assert (s1.num_existing_users, s1.num_users) == (4, 5)


def test_task_data_by_hand():
  data = unintended.all_task_data(make_splits(_hand_graph(), (0.5, 0.75, 1.0)))
  assert list(data) == list(unintended.TASKS)

  edge = data["binary-edge-rating"]
  assert edge.train.rows.shape == (23, 2)
  assert edge.train.labels.tolist() == ([True] * 10 + [False, True] * 5 +
                                        [False, False, False])
  # Early stopping: version 0's validation rows 22, 23, 25-30.
  assert edge.val.rows.tolist() == [[0, 1], [2, 1]] + [[1, 2]] * 6
  assert edge.val.labels.tolist() == [True, True] + [False] * 6
  # Scored on version 1 only: rows 32 (A r 5), 33 (E r 1), 34-40 (D r 5).
  assert list(edge.evaluation) == [1]
  assert edge.evaluation[1].rows.tolist() == [[0, 2], [4, 2]] + [[3, 2]] * 7
  assert edge.evaluation[1].labels.tolist() == [True, False] + [True] * 7

  active, positive = data["user-activity"], data["user-positive-activity"]
  assert active.train.rows[:, 0].tolist() == [0, 1, 2, 3]
  assert active.train.labels.tolist() == [True, True, True, False]
  assert positive.train.labels.tolist() == [True, False, True, False]
  # Early stopping on version 1's labels (users < 5); scored from version 2.
  assert active.val.rows[:, 0].tolist() == [0, 1, 2, 3, 4]
  assert active.val.labels.tolist() == [True, False, False, True, True]
  assert positive.val.labels.tolist() == [True, False, False, True, False]
  assert active.evaluation == {} and positive.evaluation == {}

  # Version-0 training means: p (5 4 ... 3) 48/11, q 3; r has 2 ratings.
  # Threshold: their median 3.68. Stds: p 0.67, q 2.11.
  avg, std = data["binary-item-rating-avg"], data["binary-item-rating-std"]
  assert avg.train.rows[:, 0].tolist() == [0, 1]
  assert avg.train.labels.tolist() == [True, False]
  assert std.train.labels.tolist() == [False, True]
  # Version 0 train + val: q gains 4 and 5 (mean 39/12 = 3.25 < 3.68).
  assert avg.val.rows[:, 0].tolist() == [0, 1]
  assert avg.val.labels.tolist() == [True, False]
  assert std.val.labels.tolist() == [False, True]
  # Version 1, every row: r has 17 ratings, mean 56/17 = 3.29, std > 1.
  assert avg.evaluation[1].rows[:, 0].tolist() == [0, 1, 2]
  assert avg.evaluation[1].labels.tolist() == [True, False, False]
  assert std.evaluation[1].labels.tolist() == [False, True, True]


def test_task_needs_enough_versions():
  (split,) = make_splits(_hand_graph(), (0.5, 1.0))
  with pytest.raises(ValueError, match="needs 2 versions"):
    unintended.task_data("user-activity", [split])
  with pytest.raises(ValueError, match="unknown task"):
    unintended.task_data("rating", [split])
  assert unintended.task_data("binary-edge-rating", [split]).evaluation == {}


def test_masked_batch_equals_unpadded_batch():
  """Padding rows of a partial batch change neither outputs nor statistics."""
  model = ConsumerMLP(8)
  x = jax.random.normal(jax.random.key(0), (5, 6))
  variables = model.init(jax.random.key(1), x)
  padded = jnp.concatenate([x, 100.0 * jnp.ones((3, 6))])
  mask = jnp.arange(8) < 5
  run = lambda inputs, m: model.apply(variables, inputs, train=True, mask=m,
                                      rngs={"dropout": jax.random.key(2)},
                                      mutable=["batch_stats"])
  out, stats = run(x, None)
  out_padded, stats_padded = run(padded, mask)
  # 8 rows and 5 are different programs, free to sum in another order. The
  # logits: 7 chained reductions of up to 8 terms (3 dense layers, a mean
  # and a variance per BatchNorm), of absolute size about 2, and each
  # BatchNorm over 5 rows divides by a std down to a quarter of its
  # inputs' absolute size: scale 16.
  np.testing.assert_allclose(out_padded[:5], out,
                             **tolerance(terms=8, scale=16.0, depth=7))
  # The running statistics, 0.1 mean (which can be near 0) and
  # 0.9 + 0.1 var: at most 6 chained reductions, of size below 1. A padding
  # row (100s) counted would move them by 1 and more.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, **tolerance(terms=8, scale=1.0, depth=6)), stats, stats_padded)


def _planted(seed=0, n=1500, num_users=150, num_items=80, d=8):
  """Edge examples whose label is a linear function of [z_u, z_i]."""
  rng = np.random.default_rng(seed)
  users = rng.standard_normal((num_users, d)).astype(np.float32)
  items = rng.standard_normal((num_items, d)).astype(np.float32)
  rows = np.stack([rng.integers(0, num_users, n),
                   rng.integers(0, num_items, n)], 1).astype(np.int32)
  w = rng.standard_normal(2 * d)
  labels = np.concatenate([users[rows[:, 0]], items[rows[:, 1]]], 1) @ w > 0
  return users, items, rows, labels


def test_consumer_learns_planted_task():
  users, items, rows, labels = _planted()
  train = unintended.Examples(rows[:1000], labels[:1000])
  val = unintended.Examples(rows[1000:], labels[1000:])
  lines = []
  heads = consumers.train_heads((users, items), train, (users, items), val,
                                SMALL, jax.random.key(0), log=lines.append)
  assert heads.val_auc.shape == (2,) and heads.best_epoch.shape == (2,)
  assert heads.val_auc.min() > 0.9, heads.grid
  assert set(heads.grid) == {"h=16,dropout=0.0", "h=16,dropout=0.25"}
  assert heads.dropout in (0.0, 0.25)
  chosen = heads.grid[f"h=16,dropout={heads.dropout}"]
  assert np.mean(chosen) == max(np.mean(v) for v in heads.grid.values())
  np.testing.assert_allclose(chosen, heads.val_auc)
  assert all(l.shape[0] == 2 for l in jax.tree.leaves(heads.variables))
  assert lines and "val AUC" in lines[-1]

  # The frozen heads reproduce their recorded validation AUC.
  data = unintended.TaskData(unintended.TASKS["binary-edge-rating"], train, val,
                            {0: val})
  auc = scoring.evaluate_reference(heads, data, {"s": {0: (users, items)}},
                                     ["s"])
  # Unpadded, per seed, against the batched, padded validation of training:
  # rounding may flip a near-tied score pair, 1/(250 x 250) = 1.6e-5 of AUC.
  np.testing.assert_allclose(auc["s"][0], heads.val_auc, atol=1e-4)


def test_vmapped_grid_points_are_independent():
  """A grid point trained alongside others equals it trained alone."""
  users, items, rows, labels = _planted(seed=1, n=700)
  train = unintended.Examples(rows[:500], labels[:500])
  val = unintended.Examples(rows[500:], labels[500:])
  config = consumers.ConsumerConfig(epochs=3, hidden=(8,), dropout=(0.5, 0.0),
                                    seeds=2, batch_size=128)
  alone = consumers.ConsumerConfig(epochs=3, hidden=(8,), dropout=(0.0,),
                                   seeds=2, batch_size=128)
  run = lambda c: consumers.train_heads((users, items), train, (users, items),
                                        val, c, jax.random.key(3),
                                        log=lambda _: None)
  # Batched float rounding may flip a score pair or so (1e-4 of AUC here).
  np.testing.assert_allclose(run(config).grid["h=8,dropout=0.0"],
                             run(alone).grid["h=8,dropout=0.0"], atol=1e-3)


def _random_heads(hidden=8, d_in=6, seeds=3, key=7):
  keys = jax.random.split(jax.random.key(key), seeds)
  variables = consumers.init_heads(hidden, d_in, keys)
  # Non-trivial running statistics.
  variables = jax.tree.map(
      lambda a: a + 0.1 * jax.random.uniform(jax.random.key(8), a.shape),
      variables)
  return consumers.Heads(hidden, 0.0, jax.device_get(variables),
                         np.zeros(seeds), np.zeros(seeds, int), {})


@pytest.mark.parametrize("task", ["binary-edge-rating", "binary-item-rating-avg"])
def test_vmapped_evaluation_equals_plain_loop(task):
  rng = np.random.default_rng(0)
  inputs = unintended.TASKS[task].inputs
  heads = _random_heads(d_in=3 * len(inputs))
  sizes = {1: (20, 9), 2: (25, 12), 3: (31, 12)}  # rows grow per version
  embeddings = {s: {k: tuple(rng.standard_normal((n, 3)).astype(np.float32)
                             for n in sizes[k]) for k in sizes}
                for s in ("a", "b")}
  evaluation = {}
  for k, (num_users, num_items) in sizes.items():
    # Distinct rows: identical inputs may round differently at different
    # positions of a padded batch, which would break their AUC tie.
    n = 5 + 2 * k if len(inputs) == 1 else 15 + 10 * k
    pairs = rng.choice(num_users * num_items, n, replace=False)
    rows = np.stack([pairs % num_users, pairs // num_users], 1)
    rows = rows if len(inputs) == 2 else rng.choice(num_items, (n, 1), replace=False)
    evaluation[k] = unintended.Examples(rows.astype(np.int32),
                                       rng.random(n) < 0.4)
  data = unintended.TaskData(unintended.TASKS[task], evaluation[1],
                            evaluation[1], evaluation)
  prepared = scoring.prepare_evaluation(data, embeddings, ["a", "b"])
  assert prepared.rows.shape[:2] == (3, len(evaluation[3]))
  assert prepared.versions == (1, 2, 3)
  fast = scoring.evaluate(heads, prepared)
  slow = scoring.evaluate_reference(heads, data, embeddings, ["a", "b"])
  for s in ("a", "b"):
    assert fast[s].shape == (3, 3)
    np.testing.assert_allclose(fast[s], slow[s], atol=1e-6)
  assert not np.allclose(fast["a"], fast["b"])
  # Training seeds in the same call: a second seed's own heads and
  # embeddings, scored beside the first, give what it gives alone.
  other_heads = _random_heads(d_in=3 * len(inputs), key=9)
  other = {s: {k: tuple(2.0 * t[::-1] for t in e[k]) for k in e}
           for s, e in embeddings.items()}
  other_prepared = scoring.prepare_evaluation(data, other, ["a", "b"])
  both = scoring.evaluate_seeds([heads, other_heads],
                                [prepared, other_prepared])
  alone = scoring.evaluate(other_heads, other_prepared)
  for s in ("a", "b"):
    np.testing.assert_allclose(both[0][s], fast[s], atol=1e-6)
    np.testing.assert_allclose(both[1][s], alone[s], atol=1e-6)
    assert not np.allclose(both[1][s], fast[s])


def test_predict_is_each_seeds_head_on_the_concatenated_rows():
  rng = np.random.default_rng(1)
  heads = _random_heads(d_in=5, seeds=3)
  users = rng.standard_normal((7, 2)).astype(np.float32)
  items = rng.standard_normal((4, 3)).astype(np.float32)
  rows = np.asarray([[0, 3], [6, 0], [2, 2], [6, 1]], np.int32)
  logits = scoring.predict(heads, (users, items), rows)
  assert logits.shape == (3, 4) and logits.dtype == np.float32
  x = np.concatenate([users[rows[:, 0]], items[rows[:, 1]]], 1)
  for seed in range(3):
    variables = jax.tree.map(lambda a: a[seed], heads.variables)
    # One seed's head alone against the vmapped one: 3 dense layers of up
    # to 8 terms (eval-mode BatchNorm, running var ~1), of absolute size
    # below 5 (the net evaluated on |x|, |weights|: 2.8 to 4.7).
    np.testing.assert_allclose(logits[seed],
                               ConsumerMLP(8).apply(variables, x),
                               **tolerance(terms=8, scale=5.0, depth=3))
  with pytest.raises(ValueError, match="read 5 input dims, the tables give 6"):
    scoring.predict(heads, (users, np.zeros((4, 4), np.float32)), rows)


def test_config_fields():
  for module in (paper, quick, test_config):
    consumers.ConsumerConfig(**module.get_config().consumer)
  c = consumers.ConsumerConfig(**paper.get_config().consumer)
  assert c == consumers.ConsumerConfig()  # method §7's values.
  bad = {"dropout": (0.0, 1.0), "seeds": 0, "lr": float("nan"),
         "hidden": (16, 2.5), "epochs": float("inf")}
  for field, value in bad.items():
    settings = {**test_config.get_config().consumer, field: value}
    with pytest.raises(ValueError, match=f"config.consumer.{field}"):
      consumers.ConsumerConfig(**settings)


def _fake_run(tmp_path, splits, d=4):
  """A run directory holding only the BC embeddings of two strategies."""
  rng = np.random.default_rng(0)
  for strategy in ("fix-m0", "nobc"):
    for k, s in enumerate(splits):
      path = tmp_path / strategy / f"v{k}"
      path.mkdir(parents=True)
      io.save_npy(path / "bc_users.npy", rng.standard_normal((s.num_users, d)))
      io.save_npy(path / "bc_items.npy", rng.standard_normal((s.num_items, d)))


def test_train_and_evaluate_run_directory(tmp_path):
  from bcjax.data import load_dataset
  graph = load_dataset("synthetic", num_interactions=3000, seed=0)
  splits = make_splits(graph, (0.5, 0.6, 0.7, 0.8))
  _fake_run(tmp_path, splits)
  data = unintended.all_task_data(splits)
  data = {t: data[t] for t in ("user-activity", "binary-item-rating-std")}
  config = consumers.ConsumerConfig(epochs=2, hidden=(4,), dropout=(0.0,),
                                    seeds=2, batch_size=64)
  heads = consumers.train_consumers(tmp_path, data, config, log=lambda _: None)
  meta = json.loads((tmp_path / "consumers" / "user-activity.json").read_text())
  assert meta["hidden"] == 4 and meta["seeds"] == 2 and meta["d_in"] == 4
  assert meta["trained_on"] == "fix-m0 v0" and meta["val_version"] == 1
  # Resumable: the saved heads are loaded, not retrained.
  again = consumers.train_consumers(tmp_path, data, config,
                                    log=lambda _: pytest.fail("retrained"))
  for t in data:
    jax.tree.map(np.testing.assert_array_equal, heads[t].variables,
                 again[t].variables)
  (auc,) = scoring.evaluate_consumers([tmp_path], data, [again],
                                      ["fix-m0", "nobc"], len(splits))
  assert auc == json.loads((tmp_path / "consumers" / "auc.json").read_text())
  activity = auc["user-activity"]["nobc"]
  assert activity[:2] == [None, None] and len(activity[2]) == 2
  assert [a is None for a in auc["binary-item-rating-std"]["fix-m0"]] == [
      True, False, False]


def test_dropout_keeps_the_expected_share_and_scales_it():
  """16-bit masks: the kept share matches 1 - rate within sampling error,
  kept entries are scaled by 1 / (1 - rate), and rate 0 draws nothing."""
  from bcjax.models.consumer import dropout
  x = jnp.ones((512, 257))  # An odd width: one 16-bit draw left over.
  for rate in (0.25, 0.5, 0.1):
    out = np.asarray(dropout(x, rate, jax.random.key(3)))
    kept = out != 0
    # Binomial standard error at 131,584 draws is under 0.0014.
    assert abs(kept.mean() - (1 - rate)) < 0.006, rate
    # One float32 division of 1 (within 2^-24 relative); the values are >= 1.
    np.testing.assert_allclose(out[kept], 1 / (1 - rate), rtol=1e-6)
    # Both 16-bit halves of a word are used: neither half of the row is
    # constant or copies the other.
    assert 0.5 < kept[:, :128].mean() / kept[:, 128:256].mean() < 2.0
    assert (kept[:, :128] != kept[:, 128:256]).any()
  assert dropout(x, 0.0, None) is x
  with pytest.raises(ValueError, match="dropout rate 1.0"):
    dropout(x, 1.0, jax.random.key(0))
