"""Reliability: killed runs resume bitwise, seeds are deterministic, and a
NaN stops training with a message that names it, keeping the checkpoint."""

import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from bcjax.core import epoch, training
from bcjax.data.synthetic import make_synthetic
from bcjax.paper.experiment import Experiment
from bcjax.runs.configs import test as test_config
from bcjax.runs.rundir import CHECKPOINT

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--config=launch/configs/test.py", "--dataset=synthetic",
         "--synthetic_interactions=3000", "--config.epochs=10",
         "--config.eval_every=2", "--config.checkpoint_every=1",
         "--config.versions=0,1", "--strategy=joint-lin-mloss"]


def _env():
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      " --xla_backend_optimization_level=0").strip()
  return env


def _artifacts(workdir: Path) -> dict[str, bytes]:
  """Every trained file of a run directory (config aside), by relative path."""
  return {str(p.relative_to(workdir)): p.read_bytes()
          for p in sorted(workdir.rglob("*"))
          if p.is_file() and p.suffix in (".npy", ".msgpack", ".json")
          and p.name != "config.json"}


def _kill_during_training(command, workdir: Path, rng, kills: int) -> int:
  """Runs `command`, SIGKILLing it `kills` times at random moments after a
  checkpoint shows up; returns how many kills landed before it finished."""
  landed = 0
  for _ in range(kills):
    process = subprocess.Popen(command, cwd=ROOT, env=_env(),
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    before = {p: p.stat().st_mtime_ns for p in workdir.rglob(CHECKPOINT)}
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
      now = {p: p.stat().st_mtime_ns for p in workdir.rglob(CHECKPOINT)
             if p.exists()}
      if any(before.get(p) != t for p, t in now.items()):
        break  # A checkpoint was written by this process.
      time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.4))
    if process.poll() is None:
      process.send_signal(signal.SIGKILL)
      landed += 1
    process.wait()
  return landed


def test_sigkilled_training_resumes_to_the_same_bits(tmp_path):
  """Killed at random moments (mid-epoch, mid-write), restarted with the same
  command, the run ends with the files of a run never interrupted."""
  reference, killed = tmp_path / "reference", tmp_path / "killed"
  command = [sys.executable, "-m", "launch.train_embeddings", *TRAIN]
  done = subprocess.run([*command, f"--workdir={reference}"], cwd=ROOT,
                        env=_env(), capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  landed = _kill_during_training([*command, f"--workdir={killed}"], killed,
                                 np.random.default_rng(0), kills=4)
  assert landed >= 2, "the kills came too late to test anything"
  # A write cut short leaves a temporary file; it must not matter.
  version_dir = next(killed.glob("*/v*"))
  (version_dir / f".{CHECKPOINT}.deadbeef.tmp").write_bytes(b"\x93partial")
  done = subprocess.run([*command, f"--workdir={killed}"], cwd=ROOT,
                        env=_env(), capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  expected, actual = _artifacts(reference), _artifacts(killed)
  assert sorted(actual) == sorted(expected)
  for name in expected:
    assert actual[name] == expected[name], f"{name} differs after resuming"
  assert not list(killed.rglob(CHECKPOINT))  # Removed once versions complete.


def _small_run(workdir, seed, **overrides):
  config = test_config.get_config()
  config.times = (0.5, 0.75, 1.0)
  config.dims, config.layers = (8, 12), (1, 1)
  config.seed = seed
  for name, value in overrides.items():
    config[name] = value
  graph = make_synthetic(2000, num_users=60, num_items=90, seed=0)
  experiment = Experiment(graph, config, workdir)
  experiment.run("joint-lin-mloss")
  return experiment


def test_same_seed_same_bits_other_seed_other_bits(tmp_path):
  runs = {name: _small_run(tmp_path / name, seed)
          for name, seed in (("a", 0), ("b", 0), ("c", 1))}
  files = {name: _artifacts(tmp_path / name) for name in runs}
  assert files["a"] == files["b"]
  arrays = [k for k in files["a"] if k.endswith(".npy") and "ids" not in k]
  assert arrays and all(files["a"][k] != files["c"][k] for k in arrays)


def test_ctrl_c_ends_a_command_with_one_line_and_status_130(tmp_path):
  """SIGINT after the first checkpoint: no traceback, one line naming the
  checkpoint and saying the same command resumes, exit status 130."""
  workdir = tmp_path / "run"
  process = subprocess.Popen(
      [sys.executable, "-m", "launch.train_embeddings", *TRAIN,
       f"--workdir={workdir}"], cwd=ROOT, env=_env(),
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 120
  while (process.poll() is None and time.monotonic() < deadline
         and not any(workdir.rglob(CHECKPOINT))):
    time.sleep(0.02)
  process.send_signal(signal.SIGINT)
  stderr = process.communicate()[1]
  assert process.returncode == 130, stderr[-2000:]
  line = stderr.strip().splitlines()[-1]
  assert "Traceback" not in stderr
  assert line.startswith("train_embeddings: interrupted") and "resume" in line


def test_two_processes_under_the_deterministic_ops_flag_write_the_same_bits(
    tmp_path):
  """The CPU half of the accelerator promise (README, "Accelerators"): with
  XLA's deterministic-ops flag, which a GPU run needs for bitwise repeats,
  two separate processes of one command write byte-identical files."""
  env = _env()
  env["XLA_FLAGS"] += " --xla_gpu_deterministic_ops=true"
  command = [sys.executable, "-m", "launch.train_embeddings", *TRAIN,
             "--config.epochs=4"]
  for name in ("a", "b"):
    subprocess.run([*command, f"--workdir={tmp_path / name}"], cwd=ROOT,
                   env=env, check=True, capture_output=True)
  first = _artifacts(tmp_path / "a")
  assert any(k.endswith(".npy") for k in first)
  assert first == _artifacts(tmp_path / "b")


def test_injected_nan_stops_with_a_named_error_and_keeps_the_checkpoint(
    tmp_path, monkeypatch):
  """Parameters poisoned after epoch 3: the error names the strategy,
  version, epoch and parameter; epoch 2's checkpoint stays for a restart."""
  original = epoch.train_epoch

  def poisoned(state, *args, **kwargs):
    state, loss = original(state, *args, **kwargs)
    if int(state.step) >= 3 * steps_per_epoch:
      params = jax.tree.map(lambda x: x, state.params)
      kernel = params["model"]["conv_0"]["kernel_l"]
      params["model"]["conv_0"]["kernel_l"] = kernel.at[0, 0].set(np.nan)
      state = state.replace(params=params)
    return state, loss

  config = test_config.get_config()
  steps_per_epoch = None
  config.times, config.dims, config.layers = (0.5, 1.0), (8,), (1,)
  config.epochs, config.eval_every, config.checkpoint_every = 6, 1, 1
  graph = make_synthetic(2000, num_users=60, num_items=90, seed=0)
  experiment = Experiment(graph, config, tmp_path)
  steps_per_epoch = experiment.versions.num_batches
  monkeypatch.setattr(training, "train_epoch", poisoned)
  with pytest.raises(FloatingPointError) as error:
    experiment.run("nobc")
  message = str(error.value)
  assert message.startswith("nobc v0: parameter ")
  assert "conv_0" in message and "kernel_l" in message
  assert "at epoch 3" in message and CHECKPOINT in message
  checkpoint = tmp_path / "nobc" / "v0" / CHECKPOINT
  restored = training.Checkpointing(checkpoint).restore(
      "nobc v0", experiment_state(experiment))
  assert restored[0] == 2
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(restored[1].params))
  assert not (tmp_path / "nobc" / "v0" / "metrics.json").exists()
  # Restarted without the fault, the run completes from that checkpoint.
  monkeypatch.setattr(training, "train_epoch", original)
  experiment.run("nobc")
  history = json.loads((tmp_path / "nobc" / "v0" / "metrics.json").read_text()
                       )["history"]
  assert [h["epoch"] for h in history] == list(range(1, 7))


def experiment_state(experiment):
  """A fresh train state of version 0 (the checkpoint's template)."""
  model, data = experiment.versions.model(0), experiment.versions.data(0)
  return epoch.init_state(model, data.inputs, epoch.Objective(),
                             jax.random.key(0), None, epoch.adam(1e-3))


def test_reproduce_killed_in_the_consumer_stage_ends_with_the_same_report(
    tmp_path):
  """The whole job, killed while consumers train and restarted: the same
  embeddings, consumers and report, bit for bit, as a run never stopped."""
  flags = ["--config=launch/configs/test.py", "--dataset=synthetic",
           "--synthetic_interactions=3000",
           "--strategies=fix-m0,nobc,joint-lin-mloss"]
  command = [sys.executable, "-m", "launch.reproduce", *flags]
  reference, killed = tmp_path / "reference", tmp_path / "killed"
  done = subprocess.run([*command, f"--workdir={reference}"], cwd=ROOT,
                        env=_env(), capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  process = subprocess.Popen([*command, f"--workdir={killed}"], cwd=ROOT,
                             env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
  for line in process.stdout:
    if line.startswith("== consumers"):
      time.sleep(1.0)
      process.send_signal(signal.SIGKILL)
      break
  process.wait()
  assert process.returncode == -signal.SIGKILL
  assert not (killed / "report.json").exists()
  done = subprocess.run([*command, f"--workdir={killed}"], cwd=ROOT,
                        env=_env(), capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  expected, actual = _artifacts(reference), _artifacts(killed)
  assert "report.json" in expected and any("consumers" in k for k in expected)
  assert sorted(actual) == sorted(expected)
  for name in expected:
    assert actual[name] == expected[name], f"{name} differs after resuming"


def test_a_received_run_directory_is_checked_when_loaded(tmp_path):
  """Variables that do not fit the model, or not msgpack at all, and broken
  metrics are refused with the file named (and never unpickled)."""
  import flax.serialization
  experiment = _small_run(tmp_path, 0)
  path = tmp_path / "joint-lin-mloss" / "v1"
  # Without its checksums (a record written before them, or recomputed ones:
  # test_faults.py has the checksums) the content itself is checked.
  record = json.loads((path / "metrics.json").read_text())
  del record["sha256"]
  (path / "metrics.json").write_text(json.dumps(record))
  good = (path / "variables.msgpack").read_bytes()
  variables = flax.serialization.msgpack_restore(good)
  variables["params"]["conv_0"]["kernel_l"] = np.zeros((3, 3), np.float32)
  (path / "variables.msgpack").write_bytes(
      flax.serialization.msgpack_serialize(variables))
  with pytest.raises(ValueError, match=r"variables.msgpack: .*kernel_l.*float32\[3, 3\]"):
    experiment.artifacts.load("joint-lin-mloss", 1)
  (path / "variables.msgpack").write_bytes(b"\x80\x04garbage")  # a pickle
  with pytest.raises(ValueError, match="variables.msgpack: not the variables"):
    experiment.artifacts.load("joint-lin-mloss", 1)
  (path / "variables.msgpack").write_bytes(good)
  (path / "metrics.json").write_text("{broken")
  with pytest.raises(ValueError, match="metrics.json: not valid JSON"):
    experiment.artifacts.load("joint-lin-mloss", 1)
