"""The main job as a library call: strategies, consumers, evaluation, report.

`reproduce(graph, config, workdir)` trains every requested strategy for every
version, the consumers of the unintended tasks on fix-m0's version-0
embeddings, scores them on every strategy and version, computes the
compatibility matrices of `config.compat.strategies`, measures retrieval
through a frozen version-0 index (`bcjax.evaluation.retrieval`) and its
partial backfill (`bcjax.evaluation.backfill`), and writes the report:
the plan of `bcjax.paper.stages`, run in this process or, with `config.workers` =
W > 1, on W worker processes (`bcjax.paper.workers`). With `config.seeds` = S > 1
it does so for the training seeds config.seed .. config.seed + S - 1, each
in its own run directory `seed<s>/` (the cross-version evaluation scores
every training seed in one call), and writes the report over seeds
(`bcjax.paper.multiseed`: intervals and paired differences) at the top.
It is resumable: complete versions, saved consumers, saved compatibility
matrices and backfill curves are reused; the cross-version evaluation, the
legacy retrieval and the report (seconds) are always redone. `launch/reproduce.py` is its command
line; the notebooks call it directly.
"""

from __future__ import annotations

import os
from pathlib import Path
import sys
from typing import Callable, NamedTuple, Sequence

import jax
import ml_collections

from bcjax.data import DynamicGraph
from bcjax.evaluation import consumers
from bcjax.paper import multiseed, stages, workers
from bcjax.paper.experiment import Experiment
from bcjax.runs import configs, strategies
from bcjax.runs.rundir import RunDir
from bcjax.util.progress import to_stdout


class Report(NamedTuple):
  """What `reproduce` wrote: report.json's content, the markdown tables and
  the PNG plots, in the run directory `workdir`."""
  workdir: Path
  content: dict
  table: str
  plots: list[Path]


def default_workdir(graph: DynamicGraph, config) -> Path:
  """`runs/<dataset>[-<model>]-<preset>`: pinsage runs omit the model."""
  family = "" if config.model == "pinsage" else f"-{config.model}"
  return Path("runs") / f"{graph.name}{family}-{config.preset}"


def reproduce(graph: DynamicGraph, config: ml_collections.ConfigDict,
              workdir: str | os.PathLike | None = None,
              strategy_names: Sequence[str] | None = None,
              log: Callable[[str], None] | None = None) -> Report:
  """Runs the whole pipeline (see the module docstring) into `workdir`.

  Args:
    graph: the dataset's canonical graph.
    config: a run config (`bcjax.runs.configs`); `config.versions` must be "all"
      (the report needs every version). It is not modified (the run
      directories record the graph's name as `dataset`).
    workdir: the run directory; default `default_workdir(graph, config)`.
    strategy_names: the strategies (None: all of `strategies.STRATEGIES`;
      an empty list is refused); fix-m0, the consumers' reference, is
      always added.
    log: one line per stage with the elapsed time (default stdout); the
      training progress lines go to stderr.

  Returns:
    The `Report`.

  Raises:
    ValueError: a bad config, strategy name or empty strategy list (before
      any work), or a run directory trained under other settings.
    DataError: a version without validation interactions.
    FloatingPointError: a training that diverges (its checkpoint is kept).
  """
  log = log or to_stdout
  if strategy_names is not None and not list(strategy_names):
    raise ValueError("no strategy given (None means all of them)")
  names = [strategies.get(s).name for s in (
      strategies.STRATEGIES if strategy_names is None else strategy_names)]
  settings = configs.validate(config)
  if len(settings.versions) != len(config.times) - 1:
    raise ValueError(f"config.versions={config.versions!r}: the report needs "
                     "every version; use 'all'")
  if settings.workers > 1 and jax.process_count() > 1:
    raise ValueError(f"config.workers={settings.workers} starts its own "
                     "processes; with several JAX processes use "
                     "config.workers=1")
  if consumers.REFERENCE not in names:
    names.insert(0, consumers.REFERENCE)
  config = config.copy_and_resolve_references()
  config.dataset = graph.name  # What config.json and the report name.
  run_dir = RunDir(workdir or default_workdir(graph, config))
  experiments = []
  for seed in settings.seeds:
    seed_config = config.copy_and_resolve_references()
    seed_config.seed, seed_config.seeds = seed, 1
    seed_dir = run_dir if len(settings.seeds) == 1 else run_dir.seed_dir(seed)
    experiments.append(Experiment(graph, seed_config, seed_dir.root))
    log(f"== run {seed_dir.root}: {graph.name}, model {config.model}, preset "
        f"{config.preset}, seed {seed}, {len(settings.versions)} versions, "
        f"strategies {', '.join(names)}")
  runs = [stages.SeedRun.of(e) for e in experiments]
  plan, cache = stages.plan(runs, names), stages.cache_of(experiments)
  if settings.workers > 1:
    log(f"== {len(plan)} stages of {len(runs)} seed(s) on "
        f"{settings.workers} worker processes (the evaluation, retrieval "
        "and reports in this one)")
    results = workers.run_parallel(plan, graph, settings.workers, log, cache)
  else:
    results = workers.run_serial(plan, graph, log, cache)
  if len(runs) == 1:
    return Report(Path(runs[0].root), *results[runs[0].id("report")])
  log(f"== report over seeds {', '.join(str(run.seed) for run in runs)}")
  content, table, plots = multiseed.write_seeds_report(
      run_dir, [e.run_dir for e in experiments])
  return Report(run_dir.root, content, table, plots)


def print_report(result: Report, stream=None) -> None:
  """The report's tables and the paths of its files, as `reproduce` prints."""
  stream = stream or sys.stdout
  print(result.table, file=stream)
  print(f"report: {result.workdir}/report.json, {result.workdir}/report.csv",
        file=stream)
  for path in result.plots:
    print(f"plot: {path}", file=stream)
