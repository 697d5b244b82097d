"""Tests of bcjax.core.training: compilation, batching, learning, model selection."""

from float32_bounds import tolerance
import jax
import numpy as np
import pytest

from bcjax.core import epoch as epoch_lib, tasks
from bcjax.data.sampling import TripleSampler
from bcjax.data.synthetic import make_synthetic
from bcjax.paper.experiment import Experiment
from bcjax.runs.configs import test as test_config
from bcjax.util import loop

# Compares floats of two computations: `make test-numerics` runs it under
# other XLA CPU kernels.
pytestmark = pytest.mark.numerics


def _config(**overrides):
  config = test_config.get_config()
  config.times = (0.5, 0.7, 0.85, 1.0)
  config.dims = (8, 8, 8)
  config.layers = (1, 1, 1)
  for name, value in overrides.items():
    config[name] = value
  return config


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
  # More items than users so that random Recall@50 is far below 1.
  graph = make_synthetic(4000, num_users=150, num_items=500, seed=0)
  return Experiment(graph, _config(), tmp_path_factory.mktemp("training"))


@pytest.fixture
def trace_counter(monkeypatch):
  """Counts traces of train_epoch's step (the loss is traced once per trace)."""
  count = [0]
  original = epoch_lib.EmbeddingLoss.__call__

  def counting(*args, **kwargs):
    count[0] += 1
    return original(*args, **kwargs)

  monkeypatch.setattr(epoch_lib.EmbeddingLoss, "__call__", counting)
  return count


def _epochs(experiment, versions, batch_size, epochs_per_version=3,
            num_batches=None):
  """Runs a few real epochs of nobc training on each version."""
  model = experiment.versions.model(0)
  objective = epoch_lib.Objective()
  loss_fn = epoch_lib.EmbeddingLoss(model, experiment.versions.task, objective)
  losses = []
  for k in versions:
    data = experiment.versions.data(k)
    state = epoch_lib.init_state(model, data.inputs, objective,
                                jax.random.key(k), None, epoch_lib.adam(1e-3))
    for epoch in range(epochs_per_version):
      batches = tasks.epoch_batches(
          data.sampler, jax.random.key(100 * k + epoch), batch_size,
          experiment.versions.num_users_pad, num_batches)
      state, loss = epoch_lib.train_epoch(
          state, (data.inputs, epoch_lib.AlignmentInputs()), batches,
          loss=loss_fn)
      losses.append(float(loss["loss"]))
      yield batches
  assert np.all(np.isfinite(losses))


def test_train_epoch_compiles_once_across_epochs_and_versions(experiment,
                                                              trace_counter):
  # Versions 1 and 2 share the (d, L) = (8, 1) and the padded node/edge
  # budgets; a batch size above their training sizes gives both one batch,
  # so the whole epoch has one shape.
  batch_size = 4096
  assert max(s.num_train for s in experiment.versions.splits) <= batch_size
  shapes = set()
  for i, batches in enumerate(_epochs(experiment, (1, 2), batch_size)):
    shapes.add(batches[0].shape)
    if i == 0:
      first = trace_counter[0]
      cache = epoch_lib.train_epoch._cache_size()
      assert first <= 1
  assert shapes == {(1, batch_size)}
  assert trace_counter[0] == first, "train_epoch was traced again"
  assert epoch_lib.train_epoch._cache_size() == cache


def test_train_epoch_compiles_once_when_batch_counts_differ(experiment,
                                                            trace_counter):
  """Epochs padded to a run-wide batch count share one program."""
  batch_size = 512
  counts = {-(-experiment.versions.splits[k].num_train // batch_size) for k in (1, 2)}
  assert len(counts) == 2
  for i, _ in enumerate(_epochs(experiment, (1, 2), batch_size, 2,
                                num_batches=max(counts))):
    if i == 0:
      first = trace_counter[0]
  assert trace_counter[0] == first


def test_padding_batches_change_nothing(experiment):
  """Empty (all-masked) batches leave the state and the mean loss as is."""
  data, model = experiment.versions.data(1), experiment.versions.model(1)
  objective = epoch_lib.Objective()
  loss_fn = epoch_lib.EmbeddingLoss(model, experiment.versions.task, objective)
  results = []
  for extra in (0, 2):
    state = epoch_lib.init_state(model, data.inputs, objective,
                                jax.random.key(0), None, epoch_lib.adam(1e-3))
    needed = -(-data.split.num_train // 256)
    batches = tasks.epoch_batches(data.sampler, jax.random.key(1), 256,
                                  experiment.versions.num_users_pad, needed + extra)
    results.append(epoch_lib.train_epoch(
        state, (data.inputs, epoch_lib.AlignmentInputs()), batches,
        loss=loss_fn))
  (a, means_a), (b, means_b) = results
  assert set(means_a) == set(means_b) == {"loss", "task_loss"}
  # The same steps; the mean sums `needed` batch losses, or those and 2
  # zeros, which XLA may add in another order: positive terms, so the value
  # is its own scale.
  np.testing.assert_allclose(
      means_a["loss"], means_b["loss"],
      **tolerance(terms=needed + 2, scale=float(means_b["loss"])))
  # Without an alignment term the loss is the task loss.
  np.testing.assert_array_equal(means_a["loss"], means_a["task_loss"])
  assert int(a.step) == int(b.step) == needed
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6,
                                                       atol=1e-6), a, b)


@pytest.mark.parametrize("num_train,batch_size", [(10, 4), (12, 4), (3, 8)])
def test_epoch_batches_shapes_and_mask(num_train, batch_size):
  rng = np.random.default_rng(num_train)
  user = rng.integers(5, size=num_train)
  item = rng.integers(20, size=num_train)
  sampler = TripleSampler(user, item, 5, 20)
  user_b, pos_b, neg_b, mask = tasks.epoch_batches(
      sampler, jax.random.key(0), batch_size, item_offset=5)
  num_batches = -(-num_train // batch_size)
  for array in (user_b, pos_b, neg_b, mask):
    assert array.shape == (num_batches, batch_size)
  assert mask.dtype == bool
  assert mask.sum() == num_train
  # Only the last batch is partial; its real rows come first.
  assert mask[:-1].all()
  last = num_train - (num_batches - 1) * batch_size
  np.testing.assert_array_equal(mask[-1], np.arange(batch_size) < last)
  # Real rows are genuine triples: positives are training interactions of
  # the user, negatives are not.
  real = mask.ravel()
  u, p, n = user_b.ravel()[real], pos_b.ravel()[real], neg_b.ravel()[real]
  p, n = p - 5, n - 5  # Item node ids come after the 5 users.
  pairs = set(zip(user.tolist(), item.tolist()))
  assert all((a, b) in pairs for a, b in zip(u.tolist(), p.tolist()))
  assert not any((a, b) in pairs for a, b in zip(u.tolist(), n.tolist()))
  # The same key draws the same epoch.
  again = tasks.epoch_batches(sampler, jax.random.key(0), batch_size)
  np.testing.assert_array_equal(again[0], user_b)


def test_nobc_beats_random_recall(tmp_path):
  # Low-rank latent preferences (synthetic dim 2) and more items than users:
  # a learnable signal, and random Recall@50 (about 50 / I1) far below 1.
  # With the generator's default 16 latent dims a model this small and this
  # briefly trained is barely above random on a graph this size.
  graph = make_synthetic(4000, num_users=150, num_items=500, dim=2, seed=0)
  config = _config(times=(0.5, 0.7), dims=(16,), layers=(1,), epochs=20,
                   eval_every=5, batch_size=128)
  experiment = Experiment(graph, config, tmp_path)
  experiment.run("nobc", [0])
  best = experiment.artifacts.load("nobc", 0).metrics["best"]["recall@50"]
  n = experiment.versions.num_users_pad + experiment.versions.num_items_pad
  random = [experiment.versions.recall(jax.random.normal(jax.random.key(s), (n, 16)),
                              0)["recall@50"] for s in range(10)]
  expected = 50 / experiment.versions.splits[0].num_items
  assert abs(np.mean(random) - expected) < 0.05   # sanity of the baseline
  assert best > 1.5 * np.mean(random) and best > max(random), (best, random)


# The training loop's selection logic (`bcjax.util.loop.run`), with scripted
# epochs.


def _fake_state(epoch, param=0.0):
  return epoch_lib.TrainState(step=np.array(epoch), params={"w": np.float32(param)},
                             frozen={}, model_state={}, opt_state=(), tx=None)


def _scripted_train_version(scores, losses=None, params=None, **kwargs):
  """Runs the loop with fake epochs; state.step = epochs run."""
  losses, params = losses or {}, params or {}

  def fake_epoch(state, epoch):
    assert epoch == int(state.step) + 1
    return (_fake_state(epoch, params.get(epoch, 0.0)),
            {"loss": np.float32(losses.get(epoch, 1.0))})

  evaluated = []

  def evaluate(state):
    evaluated.append(int(state.step))
    return {"score": scores[int(state.step)], "other": 0.5}

  options = dict(epochs=10, eval_every=2, min_select_epoch=4, select="score")
  options.update(kwargs)
  best, history = loop.run(fake_epoch, _fake_state(0), loop.Schedule(**options),
                           label="fake v3", evaluate=evaluate)
  return best, history, evaluated


def test_loop_selects_strict_improvement_after_min_epoch():
  # Epoch 2 is the highest but comes before min_select_epoch, epoch 4 the
  # next but it is min_select_epoch itself (strictly after only); epoch 8
  # ties epoch 6 and must not replace it.
  scores = {2: 0.9, 4: 0.8, 6: 0.5, 8: 0.5, 10: 0.4}
  best, history, evaluated = _scripted_train_version(scores)
  assert evaluated == [2, 4, 6, 8, 10]
  assert best.epoch == 6
  assert best.score == 0.5
  assert int(best.state.step) == 6   # the state of that epoch, not later
  assert best.metrics == {"score": 0.5, "other": 0.5}
  assert [h["epoch"] for h in history] == [2, 4, 6, 8, 10]
  assert history[0] == {"epoch": 2, "loss": 1.0, "score": 0.9, "other": 0.5}


def test_loop_lower_is_better_and_last_epoch():
  # 11 epochs with eval every 3: evaluated at 3, 6, 9 and the last, 11.
  scores = {3: 0.1, 6: 0.4, 9: 0.2, 11: 0.2}
  best, _, evaluated = _scripted_train_version(
      scores, epochs=11, eval_every=3, min_select_epoch=5,
      lower_is_better=True)
  assert evaluated == [3, 6, 9, 11]
  assert best.epoch == 9
  assert int(best.state.step) == 9


def test_loop_without_selectable_epoch_keeps_last():
  scores = {2: 0.9, 4: 0.1}
  best, _, _ = _scripted_train_version(scores, epochs=4,
                                       min_select_epoch=50)
  assert best.epoch == 4
  assert int(best.state.step) == 4


def test_loop_nan_loss_raises_with_label():
  scores = {2: 0.1, 4: 0.2, 6: 0.3}
  with pytest.raises(FloatingPointError, match="fake v3"):
    _scripted_train_version(scores, losses={4: np.nan},
                            epochs=6)
