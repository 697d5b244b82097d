"""Neighbour sampling: the trees, the sampled PinSage forward against the
full-graph one, and training in sampled mode."""

import jax
import numpy as np
import pytest

from bcjax.data.neighbours import (
  NeighbourSampler,
  SampledInputs,
  sampled_bpr_chunks,
)
from bcjax.data.synthetic import make_synthetic
from bcjax.paper.experiment import Experiment
from bcjax.runs import configs
from bcjax.runs.configs import test as test_config

# Compares floats of two computations: `make test-numerics` runs it under
# other XLA CPU kernels.
pytestmark = pytest.mark.numerics

U_PAD, I_PAD = 8, 8
USER = np.array([0, 0, 0, 1, 2, 2, 3, 5])
ITEM = np.array([0, 1, 2, 1, 3, 0, 4, 4])


def _neighbours(node):
  if node < U_PAD:
    return sorted((ITEM[USER == node] + U_PAD).tolist())
  return sorted(USER[ITEM == node - U_PAD].tolist())


def test_full_fanout_keeps_every_neighbour_exactly_once():
  sampler = NeighbourSampler(USER, ITEM, U_PAD, I_PAD)
  assert sampler.max_degree == 3
  roots = np.array([0, 1, U_PAD + 0, U_PAD + 4, 7, 0])
  valid = np.array([True] * 5 + [False])
  tree = sampler.sample(roots, valid, fanout=3, num_layers=2,
                        rng=np.random.default_rng(0))
  assert tree.leaves.shape == (6 * 16,) and len(tree.masks) == 2
  first = tree.masks[0]
  level1 = tree.masks[1].reshape(6, 4, 4)
  for r, node in enumerate(roots):
    children = tree.leaves.reshape(6, 4, 4)[r, :, 0]  # level-1 ids (self col)
    if not valid[r]:
      assert not first[r].any() and not level1[r].any()
      continue
    assert children[0] == node and first[r, 0]
    assert sorted(children[1:][first[r, 1:]].tolist()) == _neighbours(node)


def test_small_fanout_draws_real_neighbours_with_replacement():
  sampler = NeighbourSampler(USER, ITEM, U_PAD, I_PAD)
  tree = sampler.sample(np.array([0]), np.array([True]), fanout=2,
                        num_layers=1, rng=np.random.default_rng(1))
  ids = tree.leaves.reshape(1, 3)[0]
  assert ids[0] == 0 and tree.masks[0].all()
  assert set(ids[1:].tolist()) <= set(_neighbours(0))


def test_sampled_pinsage_equals_the_full_graph_at_full_fanout():
  """With every neighbour kept, the trees' roots get the full-graph
  embeddings (evaluation mode: running statistics)."""
  config = test_config.get_config()
  config.times, config.dims, config.layers = (0.6, 1.0), (8,), (2,)
  graph = make_synthetic(600, num_users=30, num_items=40, seed=1)
  experiment = Experiment(graph, config, "/tmp/unused-neighbours")
  data, model = experiment.versions.data(0), experiment.versions.model(0)
  variables = model.init(jax.random.key(0), data.inputs)
  # Non-trivial running statistics.
  variables = jax.tree_util.tree_map_with_path(
      lambda p, x: x + 0.3 if "mean" in jax.tree_util.keystr(p) else x,
      variables)
  full = np.asarray(model.apply(variables, data.inputs, train=False)[0])
  split = experiment.versions.splits[0]
  sampler = NeighbourSampler(split.train_user, split.train_item,
                             experiment.versions.num_users_pad, experiment.versions.num_items_pad)
  roots = np.array([0, 3, experiment.versions.num_users_pad + 2, 5, 0])
  tree = sampler.sample(roots, np.ones(5, bool), sampler.max_degree, 2,
                        np.random.default_rng(0))
  sampled, _ = model.apply(variables, SampledInputs(data.inputs, tree),
                           train=False)
  np.testing.assert_allclose(sampled, full[roots], rtol=1e-4, atol=1e-5)


def test_bpr_chunks_have_fixed_shapes_and_local_triples():
  sampler = NeighbourSampler(USER, ITEM, U_PAD, I_PAD)
  batches = (np.array([[0, 1, 2]]), U_PAD + np.array([[0, 1, 3]]),
             U_PAD + np.array([[4, 4, 4]]), np.array([[True, True, False]]))
  chunks = list(sampled_bpr_chunks(sampler, batches, 2, 1, chunk=2,
                                   rng=np.random.default_rng(0)))
  assert len(chunks) == 1
  chunk = chunks[0]
  assert chunk.nodes.shape == (2, 9) and chunk.subgraph.leaves.shape == (2, 27)
  user, pos, neg, mask = chunk.batch
  np.testing.assert_array_equal(chunk.nodes[0][user[0]], batches[0][0])
  np.testing.assert_array_equal(chunk.nodes[0][pos[0]], batches[1][0])
  np.testing.assert_array_equal(mask, [[True, True, False], [False] * 3])
  assert not chunk.subgraph.masks[0][1].any()   # the padding batch


def test_training_with_neighbour_sampling(tmp_path):
  """Sampled steps train every kind of strategy; embeddings for evaluation
  and export come from the full graph."""
  config = test_config.get_config()
  config.times, config.dims, config.layers = (0.5, 0.75, 1.0), (8, 12), (1, 2)
  config.fanout, config.chunk_batches, config.epochs = 3, 2, 6
  graph = make_synthetic(3000, num_users=80, num_items=120, seed=0)
  experiment = Experiment(graph, config, tmp_path)
  for name in ("joint-lin-mloss", "posthoc-lin-sloss"):
    experiment.run(name)
    artifacts = experiment.artifacts.load(name, 1)
    assert np.isfinite(artifacts.users).all()
    assert artifacts.transform.shape == (12, 8)
  history = experiment.artifacts.load("nobc", 0).metrics["history"]
  assert history[-1]["loss"] < history[0]["loss"]
  config.model = "lightgcn"
  with pytest.raises(ValueError, match="neighbour sampling"):
    configs.validate(config)
