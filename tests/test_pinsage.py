"""Tests of bcjax.models.pinsage against a numpy reimplementation of method §4.

The reference works on the real nodes only (no padding), in float64:
- every user's input is the one shared vector; an item's input is the sum over
  attribute kinds of the mean of its value embeddings (zero for no values);
- each layer h' = W_l mean_{j in N(i)} h_j + b_l + W_r h_i over the undirected
  graph (duplicates are separate messages, no neighbours -> zero mean);
- BatchNorm over all real nodes: biased variance to normalise, eps 1e-5,
  running = 0.9 running + 0.1 batch with the unbiased batch variance;
- ReLU between layers, none after the last.
All parameters are randomised (including BatchNorm scale/bias and the running
statistics) so that no term can hide behind an initial value of 0 or 1.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bcjax.data.graph import AttributeKind
from bcjax.models.pinsage import PinSage, make_graph_inputs

# Compares floats of two computations: `make test-numerics` runs it under
# other XLA CPU kernels.
pytestmark = pytest.mark.numerics

D = 8
EPS = 1e-5
NUM_USERS, NUM_ITEMS = 7, 9


def _attribute_kind(name, per_item, num_values):
  counts = [len(v) for v in per_item]
  offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
  values = np.array([x for v in per_item for x in v], np.int32)
  return AttributeKind(name, offsets, values,
                       tuple(f"{name}{j}" for j in range(num_values)))


def _graph(seed=0):
  """A small graph: duplicates, an isolated user (5) and item (4).

  The attribute kinds cover two more items than the graph has, which
  make_graph_inputs must ignore.
  """
  rng = np.random.default_rng(seed)
  user = rng.choice([0, 1, 2, 3, 4, 6], size=25)
  item = rng.choice([0, 1, 2, 3, 5, 6, 7, 8], size=25)
  user = np.concatenate([user, user[:4]])   # duplicate interactions
  item = np.concatenate([item, item[:4]])
  categories = [[0, 2], [1], [], [3, 0, 1], [2], [], [4], [0], [1, 4], [2],
                [3]]
  brands = [[1], [], [0], [2], [], [1], [0], [], [2], [1], [0]]
  attributes = {"category": _attribute_kind("category", categories, 5),
                "brand": _attribute_kind("brand", brands, 3)}
  return user, item, attributes


def _inputs(layout, factorise, user_pad=0, item_pad=0, seed=0):
  user, item, attributes = _graph(seed)
  num_users_pad, num_items_pad = NUM_USERS + user_pad, NUM_ITEMS + item_pad
  edges = 2 * len(user) + (100 if user_pad or item_pad else 0)
  nnz = ({name: int(kind.offsets[NUM_ITEMS]) + 6
          for name, kind in attributes.items()} if item_pad else None)
  return make_graph_inputs(user, item, NUM_USERS, NUM_ITEMS, attributes,
                           num_users_pad, num_items_pad, num_edges_pad=edges,
                           attribute_nnz_pad=nnz, layout=layout,
                           factorise=factorise)


def _random_variables(model, inputs, seed):
  """The module's variables with every leaf replaced by random values."""
  variables = model.init(jax.random.key(0), inputs, train=False)
  rng = np.random.default_rng(seed)
  flat, tree = jax.tree_util.tree_flatten_with_path(variables)
  leaves = []
  for path, leaf in flat:
    name = jax.tree_util.keystr(path)
    if name.endswith("['var']"):
      value = rng.uniform(0.5, 2.0, leaf.shape)
    elif "kernel" in name:
      value = rng.normal(0, 1 / np.sqrt(D), leaf.shape)
    else:
      value = rng.normal(0, 1, leaf.shape)
    leaves.append(jnp.asarray(value, jnp.float32))
  return jax.tree_util.tree_unflatten(tree, leaves)


def _reference_operator(user, item, num_users, num_items):
  n = num_users + num_items
  counts = np.zeros((n, n))
  for u, i in zip(user, item):
    counts[u, num_users + i] += 1.0
    counts[num_users + i, u] += 1.0
  degree = counts.sum(1, keepdims=True)
  return np.divide(counts, degree, out=np.zeros_like(counts),
                   where=degree > 0)


def _reference(variables, num_layers, train, seed=0):
  """(embeddings of the real nodes [U + I, D], new running stats or None)."""
  user, item, attributes = _graph(seed)
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), variables["params"])
  stats = jax.tree.map(lambda x: np.asarray(x, np.float64),
                       variables["batch_stats"])
  users = np.tile(p["user_embedding"], (NUM_USERS, 1))
  items = np.zeros((NUM_ITEMS, D))
  for k, kind in enumerate(attributes.values()):
    table = p[f"attribute_{k}"]
    for i in range(NUM_ITEMS):
      values = kind.values[kind.offsets[i]:kind.offsets[i + 1]]
      if len(values):
        items[i] += table[values].mean(0)
  h = np.concatenate([users, items])
  a = _reference_operator(user, item, NUM_USERS, NUM_ITEMS)
  new_stats = {}
  for layer in range(num_layers):
    conv, norm = p[f"conv_{layer}"], p[f"norm_{layer}"]
    h = (a @ h) @ conv["kernel_l"] + conv["bias_l"] + h @ conv["kernel_r"]
    running = stats[f"norm_{layer}"]
    if train:
      mean, var = h.mean(0), h.var(0)
      new_stats[f"norm_{layer}"] = {
          "mean": 0.9 * running["mean"] + 0.1 * mean,
          "var": 0.9 * running["var"] + 0.1 * h.var(0, ddof=1)}
    else:
      mean, var = running["mean"], running["var"]
    h = (h - mean) / np.sqrt(var + EPS) * norm["scale"] + norm["bias"]
    if layer < num_layers - 1:
      h = np.maximum(h, 0.0)
  return h, (new_stats if train else None)


def _real_rows(z, inputs):
  z = np.asarray(z)
  return np.concatenate([z[:NUM_USERS],
                         z[inputs.num_users:inputs.num_users + NUM_ITEMS]])


def _assert_stats_close(got, expected):
  for name, stats in expected.items():
    for key in ("mean", "var"):
      np.testing.assert_allclose(np.asarray(got[name][key]), stats[key],
                                 rtol=2e-4, atol=2e-5, err_msg=f"{name}/{key}")


@pytest.mark.parametrize("layout", ["sparse", "dense"])
@pytest.mark.parametrize("factorise", [True, False])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_matches_numpy_reference(layout, factorise, num_layers):
  inputs = _inputs(layout, factorise, user_pad=5, item_pad=6)
  assert (inputs.first_layer is not None) == factorise
  model = PinSage(D, num_layers, (5, 3))
  variables = _random_variables(model, inputs, seed=num_layers)

  z_train, updates = model.apply(variables, inputs, train=True,
                                 mutable=["batch_stats"])
  expected, expected_stats = _reference(variables, num_layers, train=True)
  np.testing.assert_allclose(_real_rows(z_train, inputs), expected,
                             rtol=2e-4, atol=2e-4)
  _assert_stats_close(updates["batch_stats"], expected_stats)

  z_eval = model.apply(variables, inputs, train=False)
  expected, _ = _reference(variables, num_layers, train=False)
  np.testing.assert_allclose(_real_rows(z_eval, inputs), expected,
                             rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("layout", ["sparse", "dense"])
def test_padding_changes_nothing_on_real_rows(layout):
  model = PinSage(D, 2, (5, 3))
  tight = _inputs(layout, factorise=False)
  variables = _random_variables(model, tight, seed=11)
  results = []
  for factorise in (False, True):
    for pads in ((0, 0), (3, 1), (9, 17)):
      inputs = _inputs(layout, factorise, *pads)
      z, updates = model.apply(variables, inputs, train=True,
                               mutable=["batch_stats"])
      results.append((_real_rows(z, inputs), updates["batch_stats"],
                      _real_rows(model.apply(variables, inputs, train=False),
                                 inputs)))
  z0, stats0, eval0 = results[0]
  for z, stats, z_eval in results[1:]:
    np.testing.assert_allclose(z, z0, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(z_eval, eval0, rtol=1e-4, atol=1e-4)
    _assert_stats_close(stats, jax.tree.map(np.asarray, stats0))


def test_padding_rows_are_outside_batch_statistics():
  # A user-only padding budget: padded users carry the shared user vector as
  # input, which would shift the first layer's statistics if counted.
  model = PinSage(D, 1, (5, 3))
  inputs = _inputs("sparse", False, user_pad=40, item_pad=0)
  variables = _random_variables(model, inputs, seed=5)
  z, updates = model.apply(variables, inputs, train=True,
                           mutable=["batch_stats"])
  real = _real_rows(z, inputs)
  scale = np.asarray(variables["params"]["norm_0"]["scale"])
  bias = np.asarray(variables["params"]["norm_0"]["bias"])
  normalised = (real - bias) / scale   # BatchNorm output before the affine
  np.testing.assert_allclose(normalised.mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(normalised.var(0), 1.0, rtol=1e-3)
  _, expected_stats = _reference(variables, 1, train=True)
  _assert_stats_close(updates["batch_stats"], expected_stats)


def test_parameter_layout():
  model = PinSage(D, 2, (5, 3))
  variables = model.init(jax.random.key(1), _inputs("sparse", True),
                         train=False)
  params = variables["params"]
  assert params["user_embedding"].shape == (D,)
  assert params["attribute_0"].shape == (5, D)
  assert params["attribute_1"].shape == (3, D)
  for layer in range(2):
    assert params[f"conv_{layer}"]["kernel_l"].shape == (D, D)
    assert params[f"conv_{layer}"]["kernel_r"].shape == (D, D)
    assert params[f"conv_{layer}"]["bias_l"].shape == (D,)
    assert "bias_r" not in params[f"conv_{layer}"]
    stats = variables["batch_stats"][f"norm_{layer}"]
    np.testing.assert_array_equal(stats["mean"], 0.0)
    np.testing.assert_array_equal(stats["var"], 1.0)
