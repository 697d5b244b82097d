"""Tests of bcjax.core.sweep: N seeds under vmap equal N sequential runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bcjax.core import epoch, sweep, training
from bcjax.data.synthetic import make_synthetic
from bcjax.models import aggregate as agg
from bcjax.paper.experiment import Experiment
from bcjax.runs.configs import test as test_config

# Compares floats of two computations: `make test-numerics` runs it under
# other XLA CPU kernels.
pytestmark = pytest.mark.numerics


def _config(model="pinsage"):
  config = test_config.get_config()
  config.times = (0.5, 0.7, 0.85, 1.0)
  config.dims = (8, 8, 8)
  config.layers = (1, 2, 1)
  config.model = model
  return config


@pytest.fixture(scope="module")
def graph():
  return make_synthetic(4000, num_users=150, num_items=500, seed=0)


def _experiment(graph, tmp_path_factory, model):
  return Experiment(graph, _config(model), tmp_path_factory.mktemp(model))


@pytest.fixture(scope="module")
def pinsage(graph, tmp_path_factory):
  return _experiment(graph, tmp_path_factory, "pinsage")


def _train_mode_z(model, variables, inputs):
  return np.asarray(model.apply(variables, inputs, train=True)[0])


def test_vmapped_seeds_equal_sequential_fits(pinsage):
  """Seed i of the sweep is `training.fit` of key i, and seeds differ."""
  k = 1  # Two layers; padding batches (version 2 has the most triples).
  data, model, task = pinsage.versions.data(k), pinsage.versions.model(k), pinsage.versions.task
  batches = pinsage.versions.batches(k)
  assert not np.all(batches(jax.random.key(0))[3])  # Some padding.
  keys = sweep.seed_keys(jax.random.key(5), 3)
  tx = epoch.adam(1e-2)
  result = sweep.train_seeds(model, task, data.inputs, batches, keys,
                             epochs=2, objective=epoch.Objective(), tx=tx)
  assert result.num_seeds == 3 and result.losses.shape == (2, 3)
  zs = []
  for i, key in enumerate(keys):
    fitted = training.fit(model, task, data.inputs, batches, key,
                          objective=epoch.Objective(),
                          schedule=training.Schedule(epochs=2), tx=tx)
    # Training trajectories, vmapped against one seed alone: the kernels
    # round differently at every step and Adam carries it on (2e-7 relative
    # measured after 2 epochs); seeds differ by 0.2.
    np.testing.assert_allclose(result.losses[:, i],
                               [h["loss"] for h in fitted.history], rtol=1e-4,
                               atol=1e-6)
    # Train-mode embeddings: BatchNorm makes the pre-norm biases' gradient
    # zero up to rounding, which Adam amplifies to +-lr per step; the
    # normalised output does not see them.
    z = _train_mode_z(model, result.variables(i), data.inputs)
    np.testing.assert_allclose(
        z, _train_mode_z(model, fitted.variables, data.inputs), atol=1e-4)
    zs.append(z)
  assert not np.allclose(result.losses[:, 0], result.losses[:, 1])
  assert not np.allclose(zs[0], zs[1], atol=1e-2)
  assert not np.allclose(zs[1], zs[2], atol=1e-2)


def test_vmapped_seeds_equal_sequential_lightgcn(graph, tmp_path_factory):
  """A model without BatchNorm: every parameter matches."""
  experiment = _experiment(graph, tmp_path_factory, "lightgcn")
  data, model = experiment.versions.data(0), experiment.versions.model(0)
  keys = sweep.seed_keys(jax.random.key(0), 2)
  result = sweep.train_seeds(model, experiment.versions.task, data.inputs,
                             experiment.versions.batches(0), keys, epochs=2)
  sequential = sweep.train_sequential(model, experiment.versions.task, data.inputs,
                                      experiment.versions.batches(0), keys, epochs=2)
  for i, (state, losses) in enumerate(sequential):
    # Trajectories, vmapped against sequential (see above).
    np.testing.assert_allclose(result.losses[:, i], losses, rtol=1e-4,
                               atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
                 result.variables(i), jax.device_get(state.model_variables()))
  first, second = (jax.tree.leaves(result.variables(i)["params"])
                   for i in (0, 1))
  assert not all(np.allclose(a, b) for a, b in zip(first, second))


def test_aligned_sweep_equals_sequential(pinsage):
  """An objective with a transformation and a shared alignment target."""
  k = 1
  data, model = pinsage.versions.data(k), pinsage.versions.model(k)
  rng = np.random.default_rng(0)
  n = pinsage.versions.num_users_pad + pinsage.versions.num_items_pad
  target = jnp.asarray(rng.normal(size=(n, 8)), jnp.float32)
  objective = epoch.Objective(transform="linear")
  align = epoch.AlignmentInputs(target=target)
  keys = sweep.seed_keys(jax.random.key(1), 2)
  kwargs = dict(epochs=1, objective=objective, align=align, d_prev=8)
  result = sweep.train_seeds(model, pinsage.versions.task, data.inputs,
                             pinsage.versions.batches(k), keys, **kwargs)
  sequential = sweep.train_sequential(model, pinsage.versions.task, data.inputs,
                                      pinsage.versions.batches(k), keys, **kwargs)
  for i, (state, losses) in enumerate(sequential):
    # Trajectories, vmapped against sequential (see above).
    np.testing.assert_allclose(result.losses[:, i], losses, rtol=1e-4,
                               atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
                 sweep.unstack(result.states.params["transform"], i),
                 jax.device_get(state.params["transform"]))


def test_stack_batches_shares_equal_leaves(pinsage):
  keys = sweep.seed_keys(jax.random.key(0), 3)
  per_seed = [pinsage.versions.batches(0)(k) for k in keys]
  stacked, axes = sweep.stack_batches(per_seed)
  assert axes == (0, 0, 0, None)  # user, pos, neg differ; the mask is shared.
  assert stacked[0].shape == (3,) + per_seed[0][0].shape
  np.testing.assert_array_equal(stacked[3], per_seed[0][3])
  np.testing.assert_array_equal(stacked[1][2], per_seed[2][1])


def test_vmapped_csr_product_folds_seeds_into_columns():
  """Under vmap the CSR aggregation is one CSR kernel call, exact."""
  rng = np.random.default_rng(0)
  user, item = rng.integers(0, 30, 200), rng.integers(0, 40, 200)
  adjacency = agg.make_adjacency(user, item, 32, 48, layout="sparse")
  h = jnp.asarray(rng.normal(size=(3, 80, 5)), jnp.float32)

  def loss(adj, x):
    return jnp.sum(agg.aggregate(adj, x) ** 2)

  grad = jax.vmap(jax.grad(loss, argnums=1), in_axes=(None, 0))
  fast = jax.jit(jax.vmap(agg.aggregate, in_axes=(None, 0)))(adjacency, h)
  for s in range(3):
    np.testing.assert_allclose(fast[s], agg.aggregate(adjacency, h[s]),
                               rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(
      grad(adjacency, h),
      np.stack([jax.grad(loss, argnums=1)(adjacency, h[s]) for s in range(3)]),
      rtol=1e-5, atol=1e-5)
  assert "bcsr_dot_general" in str(jax.make_jaxpr(grad)(adjacency, h))
  assert "scatter" not in jax.jit(grad).lower(adjacency, h).as_text()
  # JAX's own batching rule of the CSR product goes through COO scatters.
  plain = jax.vmap(lambda x: adjacency.matrix @ x)
  assert "scatter" in jax.jit(plain).lower(h).as_text()


def test_no_seeds_is_an_error(pinsage):
  with pytest.raises(ValueError, match="no seeds"):
    sweep.train_seeds(pinsage.versions.model(0), pinsage.versions.task, pinsage.versions.data(0).inputs,
                      pinsage.versions.batches(0), [])
