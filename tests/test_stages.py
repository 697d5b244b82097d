"""The main job's plan (what each stage reads) and the two executors."""

import dataclasses
import os

import pytest

from bcjax.data.synthetic import make_synthetic
from bcjax.paper import stages, workers
from bcjax.paper.experiment import Experiment
from bcjax.runs.configs import test as test_config
from bcjax.runs.strategies import BC_ALIGNER_NAME as BC

NAMES = ["fix-m0", "nobc", "posthoc-lstsq", BC]


def _runs(*seeds):
  out = []
  for seed in seeds:
    config = test_config.get_config()
    config.seed = seed
    out.append(stages.SeedRun(config.to_dict(), f"/runs/seed{seed}"))
  return out


def _recorded(plan):
  """The plan with every stage recording its id instead of working."""
  return [dataclasses.replace(s, fn=_record, args=(s.id,)) for s in plan]


def _record(context, stage_id):
  context.cache.setdefault("order", []).append(stage_id)
  return stage_id


def _closure(by_id, stage_id):
  """Every stage that `stage_id` waits on, directly or not."""
  seen, todo = set(), list(by_id[stage_id].after)
  while todo:
    found = todo.pop()
    if found not in seen:
      seen.add(found)
      todo += by_id[found].after
  return seen


def test_the_plan_waits_for_what_each_stage_reads():
  runs = _runs(3, 4)
  plan = stages.plan(runs, NAMES)
  by_id = {s.id: s for s in plan}
  assert len(by_id) == len(plan)  # No stage twice.
  for run in runs:
    at = lambda what, run=run: set(by_id[run.id(what)].after)
    assert at("version 0") == set()
    for name in NAMES:
      assert run.id("version 0") in at(name)
    # Post-hoc: on nobc's models; the others on their own versions only.
    assert at("posthoc-lstsq") == {run.id("version 0"), run.id("nobc")}
    assert at(BC) == {run.id("version 0")}
    assert at("consumers") == {run.id("fix-m0")}
    # The test preset's compatibility matrix is BC-Aligner's.
    assert at("compatibility") == {run.id("consumers"), run.id(BC)}
    assert at("legacy retrieval") == {run.id(n) for n in NAMES}
    # The test preset's backfill curves are BC-Aligner's: against fix-m0's
    # version-0 items, through the consumers.
    assert at("backfill") == {run.id("fix-m0"), run.id(BC),
                              run.id("consumers")}
    assert at("report") == {stages.EVALUATION, run.id("compatibility"),
                            run.id("legacy retrieval"), run.id("backfill")}
    # Version 0 of nobc comes before everything else of its seed.
    for stage in plan:
      if stage.id.startswith(f"seed {run.seed}: ") and stage.after:
        assert run.id("version 0") in _closure(by_id, stage.id), stage.id
  # A run without the preset's backfill strategies has no backfill stage.
  assert runs[0].id("backfill") not in {
      s.id for s in stages.plan(runs[:1], ["fix-m0", "nobc"])}
  assert set(by_id[stages.EVALUATION].after) == {
      run.id(w) for run in runs for w in NAMES + ["consumers"]}
  # Only the stages that read every seed, or measure, stay in this process.
  assert {s.id for s in plan if s.local} == {stages.EVALUATION} | {
      run.id(w) for run in runs
      for w in ("legacy retrieval", "backfill", "report")}
  # Run in order: each stage once, after everything it reads.
  cache = {}
  results = workers.run_serial(_recorded(plan), None, cache=cache)
  order = cache["order"]
  assert sorted(order) == sorted(by_id) and results == {i: i for i in order}
  for i, stage_id in enumerate(order):
    assert set(by_id[stage_id].after) <= set(order[:i]), stage_id


def test_a_post_hoc_strategy_brings_its_base_strategy():
  run, = _runs(0)
  plan = stages.strategy_stages(run, ["posthoc-lstsq"], 3)
  assert [(s.id, s.after) for s in plan] == [
      ("seed 0: version 0", ()),
      ("seed 0: nobc", ("seed 0: version 0",)),
      ("seed 0: posthoc-lstsq", ("seed 0: version 0", "seed 0: nobc"))]
  assert [s.label for s in plan] == [
      "version 0: nobc", "strategy 1/2: nobc", "strategy 2/2: posthoc-lstsq"]
  with pytest.raises(ValueError, match="unknown strategy"):
    stages.strategy_stages(run, ["no-such-strategy"], 3)


def test_the_parallel_order_is_what_waits_then_the_plan():
  """A stage's rank is the number of stages waiting on it (no costs)."""
  noop = lambda *_: None
  plan = [workers.Stage("e", (), noop), workers.Stage("a", (), noop),
          workers.Stage("b", ("a",), noop), workers.Stage("c", ("a",), noop),
          workers.Stage("d", ("b", "c"), noop)]
  assert workers.waiting(plan) == {"a": 3, "b": 1, "c": 1, "d": 0, "e": 0}
  run, = _runs(0)
  plan = stages.plan([run], NAMES)
  assert workers.waiting(plan) == {run.id(w): n for w, n in (
      ("version 0", 10), ("fix-m0", 6), ("nobc", 4), ("posthoc-lstsq", 3),
      (BC, 5), ("consumers", 4), ("compatibility", 1),
      ("legacy retrieval", 1), ("backfill", 1), ("report", 0))} | {
          stages.EVALUATION: 1}


def test_plans_that_cannot_run_are_refused_before_any_stage():
  plan = _recorded(stages.plan(_runs(0), NAMES))
  cache = {}
  with pytest.raises(ValueError, match="not listed: \\['seed 0: version 0'"):
    workers.run_serial(plan[1:], None, cache=cache)
  with pytest.raises(ValueError, match="two stages have the id"):
    workers.run_serial(plan + plan[:1], None, cache=cache)
  loop = [workers.Stage("a", ("b",), _record, ("a",)),
          workers.Stage("b", ("a",), _record, ("b",))]
  with pytest.raises(ValueError, match="wait on each other"):
    workers.run_serial(loop, None, cache=cache)
  with pytest.raises(ValueError, match="wait on each other"):
    workers.run_parallel(loop, None, 2, log=lambda _: None)
  assert cache == {}


def _pid(context, stage_id):
  del context
  return os.getpid(), stage_id


def test_parallel_stages_run_in_workers_and_local_ones_here():
  """Of the stages ready, the one more stages wait on starts first; a
  local stage runs in this process once what it reads is done."""
  graph = make_synthetic(200, num_users=10, num_items=15, seed=0)
  plan = [workers.Stage("x", (), _pid, ("x",)),
          workers.Stage("a", (), _pid, ("a",)),
          workers.Stage("b", ("a",), _pid, ("b",), "b here", local=True),
          workers.Stage("c", ("b",), _pid, ("c",))]
  lines = []
  results = workers.run_parallel(plan, graph, 2, lines.append)
  assert {i: r[1] for i, r in results.items()} == {i: i for i in "xabc"}
  assert results["b"][0] == os.getpid()
  assert os.getpid() not in (results["a"][0], results["c"][0],
                             results["x"][0])
  lines = [line.split(" (")[0] for line in lines]
  assert lines[:2] == ["== a started in a worker", "== x started in a worker"]
  assert [line for line in lines if "x" not in line] == [
      "== a started in a worker", "== a done", "== b here",
      "== c started in a worker", "== c done"]


def test_experiment_run_trains_each_version_once_after_its_inputs(
    tmp_path, monkeypatch):
  """`Experiment.run` runs the plan's stages of a strategy: version 0 and
  the base strategy first, every version once, none when all are saved."""
  config = test_config.get_config()
  config.times, config.dims, config.layers = (0.6, 0.8, 1.0), (8, 8), (1, 1)
  experiment = Experiment(make_synthetic(1500, num_users=60, num_items=90,
                                         seed=1), config, tmp_path)
  calls = []
  train = Experiment.run_version

  def counted(self, strategy, k):
    calls.append((strategy, k))
    return train(self, strategy, k)

  monkeypatch.setattr(Experiment, "run_version", counted)
  experiment.run("posthoc-lstsq", [1])
  assert calls == [("nobc", 0), ("nobc", 1), ("posthoc-lstsq", 0),
                   ("posthoc-lstsq", 1)]
  experiment.run("posthoc-lstsq")
  experiment.run("nobc", [])
  assert len(calls) == 4
  with pytest.raises(ValueError, match="unknown strategy"):
    experiment.run("no-such-strategy", [])
