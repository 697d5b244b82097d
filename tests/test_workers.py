"""Worker processes: the stages' order, the pipeline's result, and errors."""

import ast
from pathlib import Path

import numpy as np
import pytest

from bcjax.data.synthetic import make_synthetic
from bcjax.evaluation import consumers
from bcjax.paper import pipeline, stages, workers
from bcjax.paper.experiment import Experiment
from bcjax.runs import configs
from bcjax.runs.configs import test as test_config
from bcjax.runs.rundir import RunDir
from bcjax.runs.strategies import BC_ALIGNER_NAME as BC

NAMES = ["fix-m0", "nobc", "posthoc-lstsq", BC]


def _events(lines):
  """(stage id, "started" | "done") of the workers' log lines, in order."""
  out = []
  for line in lines:
    head = line.split(" (")[0]
    for event in (" started in a worker", " done"):
      if head.endswith(event):
        out.append((head[len("== "):-len(event)], event.split()[0]))
  return out


def test_two_workers_run_every_stage_once_in_order_and_reproducibly(
    tmp_path, monkeypatch):
  """Each stage starts after the stages it reads are done, once; this
  process trains nothing (it scores, measures retrieval and reports); seed
  0 run again with workers (alone, so the stages run in another order) is
  bit for bit the first run's seed 0."""
  config = test_config.get_config()
  config.seeds, config.workers = 2, 2
  graph = make_synthetic(1500, num_users=60, num_items=90, seed=1)
  here = []
  monkeypatch.setattr(Experiment, "run_version",
                      lambda self, name, k: here.append((name, k)))
  monkeypatch.setattr(consumers, "train_heads",
                      lambda *args, **kwargs: here.append(args))
  lines = []
  result = pipeline.reproduce(graph, config, tmp_path / "a", NAMES,
                              log=lines.append)
  assert here == []
  events = _events(lines)
  started = [w for w, e in events if e == "started"]
  done_at = {w: i for i, (w, e) in enumerate(events) if e == "done"}
  start_at = {w: i for i, (w, e) in enumerate(events) if e == "started"}
  # Every training stage once: version 0, the strategies, the consumers and
  # the compatibility matrix of each seed.
  assert len(started) == len(set(started)) == 2 * (len(NAMES) + 3)
  assert len(events) == 2 * len(started) and set(done_at) == set(started)
  for seed in (0, 1):
    at = lambda what, seed=seed: f"seed {seed}: {what}"
    for name in NAMES:
      assert start_at[at(name)] > done_at[at("version 0")]
    assert start_at[at("posthoc-lstsq")] > done_at[at("nobc")]
    assert start_at[at("consumers")] > done_at[at("fix-m0")]
    assert start_at[at("compatibility")] > max(done_at[at("consumers")],
                                               done_at[at(BC)])
    # The stage most stages wait on goes first once version 0 is done.
    assert min((i, w) for w, i in start_at.items()
               if w.startswith(at("")) and w != at("version 0")
               )[1] == at("fix-m0")
  # The stages of this process: once each, after the workers' they read.
  local = [line.rsplit(" (", 1)[0] for line in lines
           if line.startswith(("== legacy retrieval", "== report (",
                               "== cross-version"))]
  assert sorted(local) == sorted(
      [f"== legacy retrieval (seed {s}): frozen version-0 exact and HNSW "
       "indexes" for s in (0, 1)] + [f"== report (seed {s})" for s in (0, 1)]
      + ["== cross-version evaluation: 2 training seeds in one call"])
  assert result.content["seeds"] == [0, 1]
  assert config.seeds == 2 and config.dataset != graph.name  # Not modified.
  config.seeds = 1
  pipeline.reproduce(graph, config, tmp_path / "b", NAMES, log=lambda _: None)
  a, b = RunDir(tmp_path / "a").seed_dir(0), RunDir(tmp_path / "b")
  for name in NAMES:
    for k in range(5):
      np.testing.assert_array_equal(
          np.load(a.version_dir(name, k) / "bc_users.npy"),
          np.load(b.version_dir(name, k) / "bc_users.npy"))
  assert (a.consumer_stem("user-activity").with_suffix(".msgpack").read_bytes()
          == b.consumer_stem("user-activity").with_suffix(".msgpack")
          .read_bytes())


def test_stages_waiting_on_unlisted_stages_are_refused():
  config = test_config.get_config()
  run = stages.SeedRun(config.to_dict(), "/nowhere")
  plan = stages.strategy_stages(run, ["nobc"], 5)[1:]
  graph = make_synthetic(500, num_users=20, num_items=30, seed=0)
  with pytest.raises(ValueError, match="stages wait on stages that are not "
                     "listed: \\['seed 0: version 0'\\]"):
    workers.run_parallel(plan, graph, 2, log=lambda _: None)


def test_the_executors_know_no_strategy_or_consumer():
  """`bcjax.paper.workers` runs any plan: it imports nothing of the main job."""
  tree = ast.parse(Path(workers.__file__).read_text())
  imported = {a.name for node in ast.walk(tree)
              if isinstance(node, (ast.Import, ast.ImportFrom))
              for a in node.names} | {
                  node.module for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and node.module}
  assert not {m for m in imported if m.startswith("bcjax")} - {
      "bcjax.data"}, imported


def test_workers_setting_is_checked():
  config = test_config.get_config()
  config.workers = 0
  with pytest.raises(ValueError, match="config.workers must be a positive"):
    configs.validate(config)
  config.workers, config.devices = 2, 2
  with pytest.raises(ValueError, match="config.workers=2 trains one device"):
    configs.validate(config)
  config.devices = 1
  assert configs.validate(config).workers == 2
