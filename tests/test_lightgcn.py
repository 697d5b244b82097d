"""LightGCN against a numpy reference, and its handling of nodes that are new
in a later version."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bcjax.data.synthetic import make_synthetic
from bcjax.models.interface import FlaxModel
from bcjax.models.lightgcn import LightGCN, make_lightgcn_inputs
from bcjax.paper.experiment import Experiment
from bcjax.runs.configs import test as test_config

# Compares floats of two computations: `make test-numerics` runs it under
# other XLA CPU kernels.
pytestmark = pytest.mark.numerics

U_PAD, I_PAD = 6, 7


def _numpy_lightgcn(table, user, item, num_layers, known):
  """z = mean over l of (D^-1/2 A D^-1/2)^l (table * known), built densely."""
  n = U_PAD + I_PAD
  a = np.zeros((n, n))
  for u, i in zip(user, item):
    a[u, U_PAD + i] += 1
    a[U_PAD + i, u] += 1
  degree = a.sum(1)
  inv = np.where(degree > 0, 1 / np.sqrt(np.maximum(degree, 1)), 0)
  norm = inv[:, None] * a * inv[None, :]
  h = table * known[:, None]
  total = h.copy()
  for _ in range(num_layers):
    h = norm @ h
    total += h
  return total / (num_layers + 1)


# Version "old": users 0-3, items 0-4; version "new" adds user 4, item 5 and
# edges touching them (user 4 - item 1, user 2 - item 5).
OLD = (np.array([0, 0, 1, 2, 3, 3, 1]), np.array([0, 1, 1, 2, 3, 4, 0]), 4, 5)
NEW = (np.concatenate([OLD[0], [4, 2, 4]]), np.concatenate([OLD[1], [1, 5, 5]]),
       5, 6)


def _inputs(graph, layout="sparse"):
  user, item, num_users, num_items = graph
  return make_lightgcn_inputs(user, item, num_users, num_items, U_PAD, I_PAD,
                              num_edges_pad=64, layout=layout)


@pytest.mark.parametrize("layout", ["sparse", "dense", "segment"])
@pytest.mark.parametrize("num_layers", [0, 1, 3])
def test_lightgcn_matches_numpy(layout, num_layers):
  model = FlaxModel(LightGCN(4, num_layers))
  inputs = _inputs(NEW, layout)
  variables = model.init(jax.random.key(0), inputs)
  table = np.asarray(variables["params"]["embedding"])
  known = np.asarray(inputs.node_mask, float)
  z, _ = model.apply(variables, inputs, train=False)
  np.testing.assert_allclose(
      z, _numpy_lightgcn(table, NEW[0], NEW[1], num_layers, known), atol=1e-5)


def test_new_nodes_start_from_zero_and_take_their_neighbours():
  """The old model on the new graph: a new node's own row is not used (it
  was never trained); it is embedded by propagation from its neighbours."""
  model = FlaxModel(LightGCN(4, 2))
  old_variables = model.init(jax.random.key(1), _inputs(OLD))
  seen = np.asarray(old_variables["nodes"]["seen"])
  assert seen.tolist() == [1, 1, 1, 1, 0, 0] + [1] * 5 + [0, 0]
  table = np.asarray(old_variables["params"]["embedding"])
  z, _ = model.apply(old_variables, _inputs(NEW), train=False)
  expected = _numpy_lightgcn(table, NEW[0], NEW[1], 2, seen.astype(float))
  np.testing.assert_allclose(z, expected, atol=1e-5)
  new_user, new_item = 4, U_PAD + 5
  assert np.abs(z[new_user]).sum() > 0 and np.abs(z[new_item]).sum() > 0
  # Changing the new nodes' (untrained) rows changes nothing.
  poked = jax.tree.map(np.array, old_variables)
  poked["params"]["embedding"][[new_user, new_item]] = 100.0
  z_poked, _ = model.apply(poked, _inputs(NEW), train=False)
  np.testing.assert_allclose(z_poked, z, atol=1e-5)


def test_training_on_a_new_graph_learns_rows_for_its_new_nodes():
  """Finetuning: in training every node of the current graph is used, and
  the model records them as seen."""
  model = FlaxModel(LightGCN(4, 1))
  old_variables = model.init(jax.random.key(2), _inputs(OLD))
  new_inputs = _inputs(NEW)
  z, state = model.apply(old_variables, new_inputs, train=True)
  np.testing.assert_array_equal(state["nodes"]["seen"], new_inputs.node_mask)
  table = np.asarray(old_variables["params"]["embedding"])
  np.testing.assert_allclose(z, _numpy_lightgcn(
      table, NEW[0], NEW[1], 1, np.asarray(new_inputs.node_mask, float)),
      atol=1e-5)

  def loss(params):
    z, _ = model.apply({**old_variables, "params": params}, new_inputs, True)
    return jnp.sum(z[4] ** 2)  # The new user's embedding.

  grad = jax.grad(loss)(old_variables["params"])["embedding"]
  assert np.abs(grad[4]).sum() > 0   # its own row is trained now


def test_lightgcn_runs_every_kind_of_strategy(tmp_path):
  """The LightGCN family through the experiment: joint, post-hoc, Fix-M0."""
  config = test_config.get_config()
  config.model = "lightgcn"
  config.times = (0.5, 0.75, 1.0)
  config.dims, config.layers = (8, 12), (1, 2)
  graph = make_synthetic(3000, num_users=80, num_items=120, seed=0)
  experiment = Experiment(graph, config, tmp_path)
  for name in ("joint-lin-mloss", "posthoc-lstsq", "fix-m0", "finetune-m0"):
    experiment.run(name)
    artifacts = experiment.artifacts.load(name, 1)
    assert np.all(np.isfinite(artifacts.users))
    assert artifacts.transform.shape in ((12, 8), (8, 8))
    assert set(artifacts.variables) == {"params", "nodes"}
  # Fix-M0's v1 rows of users new in v1 come from propagation alone.
  split0, split1 = experiment.versions.splits
  fixed = experiment.artifacts.load("fix-m0", 1).users
  assert split1.num_users > split0.num_users
  assert np.abs(fixed[split0.num_users:]).sum() > 0
