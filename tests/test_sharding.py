"""Training across 4 simulated CPU devices equals training on one."""

import os
from pathlib import Path
import subprocess
import sys

from float32_bounds import tolerance
import jax
import numpy as np
import pytest

from bcjax.core import sharding

# Compares floats of two computations: `make test-numerics` runs it under
# other XLA CPU kernels.
pytestmark = pytest.mark.numerics

ROOT = Path(__file__).resolve().parents[1]

# Runs in a subprocess: the device count is fixed when JAX starts.
SCRIPT = r"""
import json, sys
import jax, numpy as np
from bcjax.data.synthetic import make_synthetic
from bcjax.paper.experiment import Experiment
from bcjax.runs.configs import test as test_config

assert len(jax.devices()) == 4, jax.devices()
out = {}
for devices in (1, 4):
  config = test_config.get_config()
  config.times, config.dims, config.layers = (0.5, 0.75, 1.0), (8, 12), (1, 2)
  # Evaluated once, after the last epoch: both runs keep the same epoch
  # (with an evaluation per epoch a near-tie of Recall@50 may pick another
  # epoch in one of them, and the comparison would be of different epochs).
  config.epochs, config.eval_every, config.devices = 4, 4, devices
  graph = make_synthetic(2000, num_users=60, num_items=90, seed=0)
  experiment = Experiment(graph, config, sys.argv[1] + f"/d{devices}")
  if devices == 4:
    assert experiment.mesh.devices.size == 4
  experiment.run("joint-lin-mloss")
  experiment.run("posthoc-lin-mloss")
  record = {}
  for name in ("joint-lin-mloss", "posthoc-lin-mloss"):
    for k in (0, 1):
      a = experiment.artifacts.load(name, k)
      record[f"{name}/{k}"] = {
          "losses": [h["loss"] for h in a.metrics["history"]],
          "epoch": a.metrics["best_epoch"],
          "users": a.users.tolist(), "items": a.items.tolist(),
          "transform": None if a.transform is None else a.transform.tolist()}
  out[devices] = record

# One step's loss and gradients, BC-Aligner at version 1, sharded or not.
from bcjax.core import epoch, sharding, training
experiment = Experiment(graph, config, sys.argv[1] + "/d1")
data, model = experiment.versions.data(1), experiment.versions.model(1)
objective = epoch.Objective(transform="linear", multi_step=True)
target = experiment.versions.embeddings(experiment.versions.model(0),
                               experiment.artifacts.load("nobc", 0).variables, 1)
state = epoch.init_state(model, data.inputs, objective, jax.random.key(0),
                            8, epoch.adam(1e-3))
align = epoch.AlignmentInputs(target=target)
batch = jax.tree.map(lambda x: x[0], experiment.versions.batches(1)(jax.random.key(3)))
loss = epoch.EmbeddingLoss(model, experiment.versions.task, objective)
step = jax.jit(jax.value_and_grad(
    lambda p, state, inputs, align, batch: loss(p, state, (inputs, align),
                                                batch),
    has_aux=True))
(loss1, _), grads1 = step(state.params, state, data.inputs, align, batch)
mesh = sharding.make_mesh(4)
placed = sharding.replicate((state, data.inputs), mesh)
align4 = epoch.AlignmentInputs(target=sharding.split_rows(target, mesh))
batch4 = jax.tree.map(lambda x: sharding.split_rows(x, mesh), batch)
(loss4, _), grads4 = step(placed[0].params, *placed, align4, batch4)
assert len(batch4[0].sharding.device_set) == 4
out["step"] = {"loss": [float(loss1), float(loss4)],
               "grads1": [np.asarray(g).tolist() for g in jax.tree.leaves(grads1)],
               "grads4": [np.asarray(g).tolist() for g in jax.tree.leaves(grads4)]}
json.dump(out, open(sys.argv[1] + "/out.json", "w"))
"""


def test_four_devices_match_one(tmp_path):
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      " --xla_force_host_platform_device_count=4").strip()
  result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  import json
  out = json.loads((tmp_path / "out.json").read_text())
  # One step: the same loss and gradients up to float summation order.
  # The loss's sums (the largest: alignment squares of 150 nodes x 8 dims)
  # are split over the devices; positive terms, so the loss is its own scale.
  step = out["step"]
  np.testing.assert_allclose(
      step["loss"][1], step["loss"][0],
      **tolerance(terms=150 * 8, scale=abs(step["loss"][0])))
  for g4, g1 in zip(step["grads4"], step["grads1"], strict=True):
    # Some gradients are 0 in exact arithmetic (biases before BatchNorm):
    # compare at the scale of the whole tensor.
    scale = max(np.abs(g1).max(), 1.0)
    np.testing.assert_allclose(g4, g1, rtol=1e-4, atol=1e-5 * scale)
  # Whole runs: Adam divides by sqrt(v), so a rounding difference in a
  # gradient near 0 moves a weight by up to 2 lr per step: after a few
  # epochs losses agree to ~1e-3 and embeddings to ~1e-2, not to float eps
  # (and version 1 aligns to version 0's slightly different model).
  one, four = out["1"], out["4"]
  assert set(one) == set(four)
  for name in one:
    assert four[name]["epoch"] == one[name]["epoch"], name
    np.testing.assert_allclose(four[name]["losses"], one[name]["losses"],
                               rtol=1e-2, atol=1e-3, err_msg=name)
    for field in ("users", "items", "transform"):
      if one[name][field] is not None:
        np.testing.assert_allclose(four[name][field], one[name][field],
                                   atol=3e-2, err_msg=name)


def test_placement_helpers_on_one_device():
  mesh = sharding.make_mesh(1)
  x = np.arange(12.0).reshape(2, 6)
  assert np.array_equal(sharding.split_batches((x,), mesh)[0], x)
  assert np.array_equal(sharding.split_rows(x, mesh), x)
  with pytest.raises(ValueError, match="asked for 99 devices"):
    sharding.make_mesh(99)
  assert len(jax.devices()) >= 1
