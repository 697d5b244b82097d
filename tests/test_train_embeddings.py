"""End-to-end tests of `python -m launch.train_embeddings` as a subprocess."""

import json
import math
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BASE = ["--config=launch/configs/test.py", "--dataset=synthetic",
        "--synthetic_interactions=3000"]
RECALLS = {"recall@10", "recall@20", "recall@50", "recall@100"}


def _command(workdir, *flags):
  return [sys.executable, "-m", "launch.train_embeddings", *BASE,
          f"--workdir={workdir}", *flags]


def test_trains_two_versions_and_writes_metrics(tmp_path):
  workdir = tmp_path / "run"
  result = subprocess.run(_command(workdir, "--config.versions=0,1"),
                          cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert not (workdir / "nobc" / "v2").exists()
  for k in (0, 1):
    path = workdir / "nobc" / f"v{k}"
    metrics = json.loads((path / "metrics.json").read_text())
    assert set(metrics["best"]) == RECALLS
    assert all(0.0 <= v <= 1.0 for v in metrics["best"].values())
    history = metrics["history"]
    # The test preset: 4 epochs, evaluated every 2.
    assert [h["epoch"] for h in history] == [2, 4]
    for entry in history:
      assert {"epoch", "loss", "recall@50"} <= set(entry)
      assert math.isfinite(entry["loss"])
    assert metrics["best_epoch"] in (2, 4)
    best = max(history, key=lambda h: h["recall@50"])
    assert metrics["best"]["recall@50"] == pytest.approx(best["recall@50"])
    for name in ("users.npy", "items.npy", "bc_users.npy", "bc_items.npy",
                 "variables.msgpack"):
      assert (path / name).exists(), name
  assert "nobc v1: recall@10" in result.stdout


BAD_FLAGS = {
    "strategy": ["--strategy=bogus"],
    "dataset": ["--dataset=bogus"],
    "dims": ["--config.dims=(8,8)"],
    "versions": ["--config.versions=7"],
    "batch_size": ["--config.batch_size=0"],
    "lam": ["--config.lam=nan"],
    "lr": ["--config.lr=inf"],
    "consumer": ["--config.consumer.dropout=(0.0, 1.0)"],
}
EXPECTED_WORD = {"strategy": "bogus", "dataset": "bogus", "dims": "dims",
                 "versions": "7", "batch_size": "batch_size",
                 "lam": "config.lam must be a finite number >= 0, got nan",
                 "lr": "config.lr must be a finite number > 0, got inf",
                 "consumer": "config.consumer.dropout"}


def test_bad_configurations_exit_2_with_one_line(tmp_path):
  # Started together: each one mostly waits on imports.
  runs = {}
  for name, flags in BAD_FLAGS.items():
    workdir = tmp_path / name
    runs[name] = (workdir, subprocess.Popen(
        _command(workdir, *flags), cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True))
  for name, (workdir, process) in runs.items():
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 2, (name, stderr[-2000:])
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, (name, stderr)
    assert lines[0].startswith("train_embeddings: error: "), (name, stderr)
    assert EXPECTED_WORD[name] in lines[0], (name, stderr)
    assert "Traceback" not in stderr
    assert stdout == ""
    # Before any work: not even the run directory exists.
    assert not workdir.exists(), name


def test_a_diverging_run_ends_with_one_message_naming_its_checkpoint(
    tmp_path):
  workdir = tmp_path / "run"
  result = subprocess.run(
      _command(workdir, "--config.versions=0", "--config.lr=1e9",
               "--config.epochs=6", "--config.checkpoint_every=1"),
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  checkpoint = workdir / "nobc" / "v0" / "checkpoint.msgpack"
  assert last.startswith("train_embeddings: error: nobc v0: "), last
  assert "is not finite at epoch" in last
  # The message names the checkpoint exactly when one was written (a run
  # that diverges in its first epoch has none; tests/test_reliability.py
  # keeps one after a NaN at epoch 3).
  if checkpoint.exists():
    assert f"the last checkpoint is kept in {checkpoint}" in last
  else:
    assert "is not finite at epoch 1; no checkpoint was written" in last
  assert not (workdir / "nobc" / "v0" / "metrics.json").exists()
