"""The model-agnostic trainer (`bcjax.core.training.fit`) on a toy model whose
optimum is known: a planted linear relation between two versions."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import bcjax
from bcjax.core import training
from bcjax.models.interface import FlaxModel, FunctionalModel

# Compares floats of two computations: `make test-numerics` runs it under
# other XLA CPU kernels.
pytestmark = pytest.mark.numerics

NUM_NODES, D_PREV, D_NEW = 40, 4, 6


@dataclasses.dataclass(frozen=True)
class RegressionTask:
  """Pulls the rows of a batch towards given targets: loss = mean ||z - y||^2.

  A batch is (ids [B], targets [B, d], mask [B]); its optimum is z = y."""

  def nodes(self, batch):
    ids, _, mask = batch
    return (ids,), mask

  def loss(self, z, batch):
    ids, targets, mask = batch
    error = jnp.sum((z[ids] - targets) ** 2, axis=-1)
    return jnp.sum(jnp.where(mask, error, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def _table_init(key, inputs, dim):
  return {"table": 0.1 * jax.random.normal(key, (inputs.shape[0], dim))}


def _table_apply(params, inputs):
  del inputs
  return params["table"]


TABLE = FunctionalModel(_table_init, _table_apply, D_NEW)


@pytest.fixture(scope="module")
def planted():
  """New-version optimum Z (task), W* with Z W* = the previous embeddings."""
  rng = np.random.default_rng(0)
  z_star = rng.normal(size=(NUM_NODES, D_NEW)).astype(np.float32)
  w_star = rng.normal(size=(D_NEW, D_PREV)).astype(np.float32) / 2
  return z_star, w_star, z_star @ w_star


def _batches(z_star, batch_size=10):
  def epoch(key):
    order = np.asarray(jax.random.permutation(key, NUM_NODES))
    ids = order.reshape(-1, batch_size).astype(np.int32)
    return ids, z_star[ids], np.ones(ids.shape, bool)
  return epoch


def test_bc_aligner_recovers_the_planted_map(planted):
  """Task optimum and alignment optimum agree: fit finds both (loss -> 0)."""
  z_star, w_star, previous = planted
  inputs = jnp.zeros((NUM_NODES,))
  # The joint problem is not convex: at lambda = 16 the alignment term
  # dominates and some initialisations settle in a poor minimum (4 of 6 keys
  # tried); at lambda = 1 with a decaying step every key tried reaches both
  # optima to 1e-4.
  objective = dataclasses.replace(bcjax.BC_ALIGNER, lam=1.0)
  tx = optax.adam(optax.cosine_decay_schedule(0.03, 400 * NUM_NODES // 10))
  result = training.fit(TABLE, RegressionTask(), inputs, _batches(z_star),
                        jax.random.key(0), previous=previous, chain=(),
                        objective=objective,
                        schedule=training.Schedule(epochs=400), tx=tx)
  assert result.transform.shape == (D_NEW, D_PREV)
  np.testing.assert_allclose(result.variables["params"]["table"], z_star,
                             atol=2e-2)
  np.testing.assert_allclose(result.transform, w_star, atol=2e-2)
  # The default (no evaluate) keeps the last epoch and records the loss
  # with its two terms: loss = task loss + lambda * alignment, per epoch.
  assert result.epoch == 400
  assert result.history[-1]["loss"] < 1e-3 * result.history[0]["loss"]
  for entry in result.history[:3] + result.history[-3:]:
    np.testing.assert_allclose(
        entry["loss"], entry["task_loss"] + objective.lam * entry["alignment"],
        rtol=1e-5, atol=1e-9)
    assert entry["task_loss"] > 0 and entry["alignment"] > 0


def test_posthoc_fit_learns_only_the_transform(planted):
  """train_model=False: the model stays as given, B_k is the least-squares map."""
  z_star, w_star, previous = planted
  inputs = jnp.zeros((NUM_NODES,))
  fixed = {"params": {"table": jnp.asarray(z_star)}}
  objective = bcjax.Objective(train_model=False, transform="linear")
  result = training.fit(
      TABLE, RegressionTask(), inputs, _batches(z_star), jax.random.key(1),
      objective=objective, previous=previous, init_variables=fixed,
      schedule=training.Schedule(epochs=300, select="error",
                                 lower_is_better=True),
      tx=optax.adam(0.03),
      evaluate=lambda v, w: {"error": float(np.abs(w - w_star).max())})
  np.testing.assert_array_equal(result.variables["params"]["table"], z_star)
  np.testing.assert_allclose(result.transform, w_star, atol=2e-2)
  assert result.metrics["error"] == min(h["error"] for h in result.history)


def test_multi_step_alignment_through_a_frozen_chain(planted):
  """With W_1 given, the multi-step loss of the planted map is zero: post-hoc
  training (convex in W) still finds it, and the recorded loss goes to 0."""
  z_star, w_star, previous = planted
  w_1 = np.random.default_rng(3).normal(size=(D_PREV, 3)).astype(np.float32)
  objective = bcjax.Objective(train_model=False, transform="linear",
                                 multi_step=True)
  result = training.fit(
      TABLE, RegressionTask(), jnp.zeros((NUM_NODES,)), _batches(z_star),
      jax.random.key(2), objective=objective, previous=previous,
      chain=(w_1,), init_variables={"params": {"table": jnp.asarray(z_star)}},
      schedule=training.Schedule(epochs=300), tx=optax.adam(0.03))
  np.testing.assert_allclose(result.transform, w_star, atol=2e-2)
  assert result.history[-1]["loss"] < 1e-3 * result.history[0]["loss"]


def test_no_alignment_objective_returns_no_transform(planted):
  z_star, _, _ = planted
  result = training.fit(TABLE, RegressionTask(), jnp.zeros((NUM_NODES,)),
                        _batches(z_star), jax.random.key(0),
                        objective=bcjax.Objective(),
                        schedule=training.Schedule(epochs=3))
  assert result.transform is None and len(result.history) == 3


def test_any_optax_optimizer_trains(planted):
  """`tx` is any optax transformation: post-hoc B_k (a convex least-squares
  problem) reaches the planted map with SGD + momentum too."""
  z_star, w_star, previous = planted
  result = training.fit(
      TABLE, RegressionTask(), jnp.zeros((NUM_NODES,)), _batches(z_star),
      jax.random.key(1),
      objective=bcjax.Objective(train_model=False, transform="linear"),
      previous=previous, init_variables={"params": {"table": jnp.asarray(z_star)}},
      schedule=training.Schedule(epochs=200), tx=optax.sgd(0.005, momentum=0.9))
  np.testing.assert_allclose(result.transform, w_star, atol=2e-2)


def test_schedule_rejects_empty_training():
  with pytest.raises(ValueError, match="epochs=0"):
    training.Schedule(epochs=0)
  with pytest.raises(ValueError, match="eval_every=0"):
    training.Schedule(eval_every=0)


def test_fit_names_bad_arguments(planted):
  z_star, _, previous = planted
  inputs = jnp.zeros((NUM_NODES,))
  task, batches, key = RegressionTask(), _batches(z_star), jax.random.key(0)
  with pytest.raises(ValueError, match="`previous`.*required"):
    training.fit(TABLE, task, inputs, batches, key, label="mine v2")
  with pytest.raises(ValueError, match="W_1 maps 5 dims"):
    training.fit(TABLE, task, inputs, batches, key, previous=previous,
                 chain=(np.zeros((5, 3), np.float32),))
  with pytest.raises(ValueError, match="W_2 has shape"):
    training.fit(TABLE, task, inputs, batches, key, previous=previous,
                 chain=(np.zeros((7, 3), np.float32),
                        np.zeros((2, D_PREV), np.float32)))
  with pytest.raises(ValueError, match="post-hoc.*init_variables"):
    training.fit(TABLE, task, inputs, batches, key, previous=previous,
                 objective=bcjax.Objective(train_model=False,
                                              transform="linear"))
  # A forgotten chain would make the multi-step loss single-step.
  with pytest.raises(ValueError, match="multi-step objective needs `chain`"):
    training.fit(TABLE, task, inputs, batches, key, previous=previous)
  # The likeliest first mistake: the previous version's own embeddings
  # (fewer nodes) instead of its model applied to this version's inputs.
  with pytest.raises(ValueError, match=r"`previous` is \[30, 4\] but the "
                     r"model embeds 40 nodes"):
    training.fit(TABLE, task, inputs, batches, key, previous=previous[:30],
                 chain=())


def test_fit_checks_the_model_and_the_batches_before_training(planted):
  z_star, _, _ = planted
  inputs, task = jnp.zeros((NUM_NODES,)), RegressionTask()
  liar = FunctionalModel(lambda key, inputs, dim: _table_init(key, inputs, D_NEW),
                         _table_apply, D_NEW + 1)
  with pytest.raises(ValueError, match=r"declares dim=7 but embeds \[40, 6\]"):
    training.fit(liar, task, inputs, _batches(z_star), jax.random.key(0),
                 objective=bcjax.Objective())

  def beyond(key):  # Node ids up to 2 * NUM_NODES - 1: clamped if unchecked.
    ids, targets, mask = _batches(z_star)(key)
    return ids * 2 + 1, targets, mask
  with pytest.raises(ValueError, match=r"include 79, but the model embeds 40 "
                     r"nodes \(ids 0..39\)"):
    training.fit(TABLE, task, inputs, beyond, jax.random.key(0),
                 objective=bcjax.Objective())


def test_fit_checks_the_known_mask_and_refuses_zero_target_rows(planted):
  z_star, _, previous = planted
  inputs, task, key = jnp.zeros((NUM_NODES,)), RegressionTask(), jax.random.key(0)
  with pytest.raises(ValueError, match=r"`known` is int64 \[40\]; expected "
                     r"bool \[40\]"):
    training.fit(TABLE, task, inputs, _batches(z_star), key, previous=previous,
                 chain=(), known=np.ones(NUM_NODES, np.int64))
  padded = previous.copy()
  padded[30:] = 0.0   # ten new nodes, padded with zeros
  with pytest.raises(ValueError, match=r"`previous` is all zeros at 10 of the "
                     r"40 nodes the batches use \(e.g. node 30\)"):
    training.fit(TABLE, task, inputs, _batches(z_star), key, previous=padded,
                 chain=())
  # Said explicitly, either reading trains: the new nodes left out ...
  schedule = training.Schedule(epochs=2)
  left_out = training.fit(TABLE, task, inputs, _batches(z_star), key,
                          previous=padded, chain=(), schedule=schedule,
                          known=np.arange(NUM_NODES) < 30)
  # ... or aligned to zero on purpose: a larger alignment term.
  zeroed = training.fit(TABLE, task, inputs, _batches(z_star), key,
                        previous=padded, chain=(), schedule=schedule,
                        known=np.ones(NUM_NODES, bool))
  assert (left_out.history[0]["alignment"]
          != zeroed.history[0]["alignment"])
  # known=True says "every node, zero rows included" without a mask: the
  # same computation as a mask of all True.
  unmasked = training.fit(TABLE, task, inputs, _batches(z_star), key,
                          previous=padded, chain=(), schedule=schedule,
                          known=True)
  # Not the same program: one shared mask divided after the sums against
  # per-group weights. Each evaluation rounds differently (up to
  # 2 gamma(160) = 2e-5 relative: 40 nodes x 4 dims), and the epoch's 4 Adam
  # steps carry that into the mean; leaving the zero rows out moves it 29 %.
  np.testing.assert_allclose(unmasked.history[0]["alignment"],
                             zeroed.history[0]["alignment"], rtol=1e-4,
                             atol=1e-6)


def test_functional_model_init_is_given_the_dimension():
  seen = []

  def init(key, inputs, dim):
    seen.append(dim)
    return {"table": jnp.zeros((inputs.shape[0], dim))}
  model = FunctionalModel(init, _table_apply, 5)
  variables = model.init(jax.random.key(0), jnp.zeros((3,)))
  assert seen == [5] and variables["params"]["table"].shape == (3, 5)


def test_progress_lines_can_be_silenced(planted, capsys):
  z_star, _, _ = planted
  lines = []
  training.fit(TABLE, RegressionTask(), jnp.zeros((NUM_NODES,)),
               _batches(z_star), jax.random.key(0),
               objective=bcjax.Objective(),
               evaluate=lambda v, w: {"score": 1.0},
               schedule=training.Schedule(epochs=2, select="score"),
               log=lines.append)
  assert lines and all(line.startswith("[train] epoch") for line in lines)
  assert capsys.readouterr().err == ""


def test_a_nan_stops_training_naming_the_quantity(planted):
  """An injected NaN in the targets stops `fit` with label, epoch, quantity."""
  z_star, _, previous = planted
  poisoned = previous.copy()
  poisoned[3, 1] = np.nan
  with pytest.raises(FloatingPointError,
                     match=r"mine v2: the loss \(nan\) is not finite at epoch 1"):
    training.fit(TABLE, RegressionTask(), jnp.zeros((NUM_NODES,)),
                 _batches(z_star), jax.random.key(0), previous=poisoned,
                 chain=(), schedule=training.Schedule(epochs=3),
                 label="mine v2")


def test_flax_models_fit_the_same_protocol():
  """A Flax module with a mutable collection goes through FlaxModel."""
  import flax.linen as nn

  class Counter(nn.Module):
    dim: int = D_NEW

    @nn.compact
    def __call__(self, inputs, train):
      table = self.param("table", nn.initializers.normal(0.1),
                         (inputs.shape[0], self.dim))
      calls = self.variable("counts", "calls", lambda: jnp.zeros((), jnp.int32))
      if train and not self.is_initializing():
        calls.value += 1
      return table

  model = FlaxModel(Counter())
  inputs = jnp.zeros((NUM_NODES,))
  variables = model.init(jax.random.key(0), inputs)
  assert set(variables) == {"params", "counts"}
  z, state = model.apply(variables, inputs, train=True)
  assert z.shape == (NUM_NODES, D_NEW) and int(state["counts"]["calls"]) == 1
  _, state = model.apply(variables, inputs, train=False)
  assert int(state["counts"]["calls"]) == 0
  z_star = np.zeros((NUM_NODES, D_NEW), np.float32)
  result = training.fit(model, RegressionTask(), inputs, _batches(z_star),
                        jax.random.key(0), objective=bcjax.Objective(),
                        schedule=training.Schedule(epochs=2))
  assert int(result.variables["counts"]["calls"]) == 2 * NUM_NODES // 10


def test_recall_at_k_plugs_into_evaluate_and_selects_the_epoch():
  """`Schedule`'s docstring example: `bcjax.metrics.recall_metrics` as
  `evaluate`, selecting on recall@10 (a planted preference, four training
  and two held-out items per user)."""
  rng = np.random.default_rng(0)
  num_users, num_items = 40, 60
  scores = rng.normal(size=(num_users, 4)) @ rng.normal(size=(4, num_items))
  top = np.argsort(-scores, axis=1)
  user = np.repeat(np.arange(num_users), 4)
  val_user = np.repeat(np.arange(num_users), 2)
  train_item, val_item = top[:, :4].ravel(), top[:, 4:6].ravel()
  recall_inputs = bcjax.metrics.prepare_recall_inputs(
      user, train_item, val_user, val_item, num_items)
  sampler = bcjax.TripleSampler(user, train_item, num_users, num_items)
  inputs = np.zeros(num_users + num_items)

  def evaluate(variables, transform):
    z = bcjax.embed(TABLE, variables, inputs)
    users, items = bcjax.split_nodes(z, (num_users, num_items))
    return bcjax.metrics.recall_metrics(users, items, recall_inputs)

  result = bcjax.fit(
      TABLE, bcjax.BPRTask(), inputs,
      lambda key: bcjax.epoch_batches(sampler, key, 32), bcjax.keys.root(0),
      objective=bcjax.Objective(), evaluate=evaluate, tx=optax.adam(0.05),
      schedule=bcjax.Schedule(epochs=30, select="recall@10"),
      log=lambda _: None)
  recalls = [h["recall@10"] for h in result.history]
  assert set(result.metrics) >= {"recall@10", "recall@50"}
  # The first best epoch (here 29 of 30: not simply the last one).
  assert result.epoch == 1 + int(np.argmax(recalls)) < 30
  z = np.asarray(bcjax.embed(TABLE, result.variables, inputs))
  direct = bcjax.metrics.recall_at_k(z[:num_users], z[num_users:],
                                     recall_inputs, ks=(10,))
  assert result.metrics["recall@10"] == direct[10] == max(recalls)


def test_reproduce_is_importable_from_the_package_without_loading_it_early():
  """`bcjax.reproduce` is the main job; `import bcjax` alone does not load
  the experiment behind it (a fresh interpreter tells)."""
  import subprocess
  import sys
  code = ("import sys, bcjax; loaded = 'bcjax.paper.pipeline' in sys.modules; "
          "from bcjax.paper import pipeline; "
          "print(loaded, bcjax.reproduce is pipeline.reproduce, "
          "bcjax.print_report is pipeline.print_report)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, check=True).stdout.split()
  assert out == ["False", "True", "True"]
  with pytest.raises(AttributeError, match="no attribute 'reproduse'"):
    getattr(bcjax, "reproduse")
