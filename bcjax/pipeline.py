"""The main job as a library call: strategies, consumers, evaluation, report.

`reproduce(graph, config, workdir)` trains every requested strategy for every
version, the consumers of the unintended tasks on fix-m0's version-0
embeddings, scores them on every strategy and version, computes the
compatibility matrices of `config.compat.strategies`, measures retrieval
through a frozen version-0 index (`bcjax.retrieval`), and writes the report.
With `config.seeds` = S > 1 it does so for the training seeds config.seed ..
config.seed + S - 1, each in its own run directory `seed<s>/` (the
cross-version evaluation scores every training seed in one call), and
writes the report over seeds (`bcjax.multiseed`: intervals and paired
differences) at the top. With `config.workers` = W > 1 the training stages
of every seed run first on W worker processes (`bcjax.workers`), and the
stages below find them complete.
It is resumable: complete versions, saved consumers and saved compatibility
matrices are reused; the cross-version evaluation, the legacy retrieval and
the report (seconds) are always redone. `launch/reproduce.py` is its command
line; the notebooks call it directly.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import jax
import ml_collections

from bcjax import (compatibility, configs, consumers, multiseed, report,
                   retrieval, scoring, strategies, workers)
from bcjax.data import DynamicGraph
from bcjax.experiment import Experiment
from bcjax.rundir import RunDir


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
    config: a run config (`bcjax.configs`); `config.versions` must be "all"
      (the report needs every version). Its `dataset` is set to the graph's.
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
  log = log or (lambda line: print(line, flush=True))
  if strategy_names is not None and not list(strategy_names):
    raise ValueError("no strategy given (None means all of them)")
  names = [strategies.get(s).name for s in (
      strategies.STRATEGIES if strategy_names is None else strategy_names)]
  settings = configs.validate(config)
  if len(settings.versions) != len(config.times) - 1:
    raise ValueError(f"config.versions={config.versions!r}: the report needs "
                     "every version; use 'all'")
  if consumers.REFERENCE not in names:
    names.insert(0, consumers.REFERENCE)
  config.dataset = graph.name  # What config.json and the report name.
  run_dir = RunDir(workdir or default_workdir(graph, config))
  seeds, start = settings.seeds, time.perf_counter()
  stage = lambda message: log(
      f"== {message} ({time.perf_counter() - start:.1f}s elapsed)")
  seed_configs = []
  for seed in seeds:
    seed_config = config.copy_and_resolve_references()
    seed_config.seed, seed_config.seeds = seed, 1
    seed_configs.append(seed_config)
  seed_dirs = [run_dir if len(seeds) == 1 else run_dir.seed_dir(seed)
               for seed in seeds]
  if settings.workers > 1:
    if jax.process_count() > 1:
      raise ValueError(f"config.workers={settings.workers} starts its own "
                       "processes; with several JAX processes use "
                       "config.workers=1")
    stage(f"training in {settings.workers} worker processes: "
          f"{len(seeds)} seed(s) x {len(names)} strategies, consumers, "
          "compatibility")
    workers.train_parallel(
        graph, [job for c, d in zip(seed_configs, seed_dirs)
                for job in workers.seed_jobs(c, d.root, names)],
        settings.workers, log)
  runs = []
  for i, (seed, seed_config, seed_dir) in enumerate(
      zip(seeds, seed_configs, seed_dirs), 1):
    if len(seeds) > 1:
      log(f"== seed {seed} ({i}/{len(seeds)})")
    runs.append(_train_seed(graph, seed_config, seed_dir, names, settings,
                            log, stage))
  stage("cross-version evaluation" + (
      f": {len(seeds)} training seeds in one call" if len(seeds) > 1 else ""))
  tasks = consumers.all_task_data(runs[0].experiment.splits)
  scoring.evaluate_consumers([r.experiment.run_dir for r in runs], tasks,
                             [r.heads for r in runs], names,
                             runs[0].experiment.num_versions)
  reports = [_finish_seed(r, names, settings, stage) for r in runs]
  if len(seeds) == 1:
    return reports[0]
  log(f"== report over seeds {', '.join(map(str, seeds))}")
  content, table, plots = multiseed.write_seeds_report(
      run_dir, [r.experiment.run_dir for r in runs])
  return Report(run_dir.root, content, table, plots)


class _SeedRun(NamedTuple):
  """One training seed's trained strategies and consumers."""
  experiment: Experiment
  heads: dict


def _train_seed(graph: DynamicGraph, config, run_dir: RunDir,
                names: list[str], settings: configs.Settings,
                log: Callable[[str], None],
                stage: Callable[[str], None]) -> _SeedRun:
  """Trains one seed's (`config.seed`) strategies and consumers in
  `run_dir`."""
  experiment = Experiment(graph, config, run_dir.root)
  tasks = consumers.all_task_data(experiment.splits)
  log(f"== run {run_dir.root}: {graph.name}, model {config.model}, preset "
      f"{config.preset}, seed {config.seed}, {len(settings.versions)} "
      f"versions, strategies {', '.join(names)}")
  for i, name in enumerate(names, 1):
    stage(f"strategy {i}/{len(names)}: {name}")
    experiment.run(name)
  consumer = settings.consumer
  stage(f"consumers: {len(tasks)} tasks, h {consumer.hidden} x dropout "
        f"{consumer.dropout} x {consumer.seeds} seeds, {consumer.epochs} "
        "epochs")
  heads = consumers.train_consumers(experiment.run_dir, tasks, consumer,
                                    seed=config.seed)
  return _SeedRun(experiment, heads)


def _finish_seed(run: _SeedRun, names: list[str], settings: configs.Settings,
                 stage: Callable[[str], None]) -> Report:
  """One seed's compatibility matrices and report, once it is scored."""
  experiment, config = run.experiment, run.experiment.config
  compat = settings.compat
  compat_names = settings.compat_strategies(names)
  if compat_names:
    stage(f"compatibility (seed {config.seed}): {', '.join(compat_names)}; "
          f"consumers at every version, {compat.epochs} epochs x "
          f"{compat.seeds} seeds")
    compatibility.run_compatibility(experiment.run_dir, experiment.splits,
                                    compat_names, compat, settings.consumer,
                                    seed=config.seed)
  stage(f"legacy retrieval (seed {config.seed}): frozen version-0 exact "
        "and HNSW indexes")
  retrieval.evaluate_run(experiment.run_dir,
                         [experiment.data(k).recall
                          for k in range(experiment.num_versions)], names)
  stage(f"report (seed {config.seed})")
  content, table, plots = report.write_report(experiment.run_dir, names)
  return Report(experiment.run_dir.root, content, table, plots)


def print_report(result: Report, stream=None) -> None:
  """The report's tables and the paths of its files, as `reproduce` prints."""
  stream = stream or sys.stdout
  print(result.table, file=stream)
  print(f"report: {result.workdir}/report.json, {result.workdir}/report.csv",
        file=stream)
  for path in result.plots:
    print(f"plot: {path}", file=stream)
