"""The main job as a plan of stages, and what each stage reads.

A training seed's work is a list of stages (`workers.Stage`), each
resumable (it skips what the run directory holds complete)::

  version 0          nobc's version 0, which every strategy starts from
  <strategy>         one per strategy: its versions 0..K-1, in turn
  consumers          the unintended tasks' consumers, on fix-m0 (method §7)
  compatibility      the matrices of `config.compat.strategies`
  legacy retrieval   through a frozen version-0 index (`bcjax.evaluation.retrieval`)
  backfill           partial backfill of that index at the last version
                     (`bcjax.evaluation.backfill`; skipped when complete)
  report             the seed's report

and one cross-version evaluation scores the consumers of every seed in one
call. The order the stages need is written here once, as each stage's
`after` (the stages whose artifacts it reads)::

  version 0 of nobc     before every strategy of its seed
  version k             after version k-1 of the same strategy (its stage)
  a post-hoc strategy   after its base strategy (`Strategy.base`)
  the consumers         after fix-m0 (`consumers.REFERENCE`)
  the compatibility     after the consumers and its strategies
  legacy retrieval      after the seed's strategies
  backfill              after fix-m0, its strategies and the consumers
  the evaluation        after every seed's strategies and consumers
  the report            after the evaluation, compatibility, retrieval and
                        backfill

A base strategy that the run does not list is trained all the same.
`workers.run_serial` or `workers.run_parallel` runs a plan; a process builds
each seed's `Experiment` (data, splits, task data) once per plan, in its
`Context.cache`, by run directory.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import ml_collections

from bcjax.evaluation import (
  backfill,
  compatibility,
  consumers,
  retrieval,
  scoring,
  unintended,
)
from bcjax.paper import report
from bcjax.paper.experiment import Experiment
from bcjax.paper.workers import Context, Stage
from bcjax.runs import configs, strategies
from bcjax.runs.rundir import RunDir

EVALUATION = "cross-version evaluation"


@dataclasses.dataclass(frozen=True)
class SeedRun:
  """One training seed's run: its config (as a dict, which travels to
  worker processes) and its run directory."""
  config: dict
  root: str

  @classmethod
  def of(cls, experiment: Experiment) -> SeedRun:
    return cls(experiment.versions.config.to_dict(), str(experiment.workdir))

  @property
  def seed(self) -> int:
    return int(self.config["seed"])

  def id(self, what: str) -> str:
    """The id of this seed's stage `what`."""
    return f"seed {self.seed}: {what}"


def strategy_stages(run: SeedRun, names: Sequence[str], versions: int,
                    prefix: str = "") -> list[Stage]:
  """The stages that train versions 0..versions-1 of `names`: version 0,
  then one stage per strategy, a post-hoc one's base strategy first.

  Args:
    run: the seed.
    names: the strategies, in order.
    versions: how many versions of each (>= 1).
    prefix: starts every label.

  Returns:
    The stages, in an order that runs.

  Raises:
    ValueError: an unknown strategy.
  """
  order: list[str] = []
  for name in names:
    for needed in _with_bases(name):
      if needed not in order:
        order.append(needed)
  version0 = run.id("version 0")
  stages = [Stage(version0, (), _train, (run, strategies.NOBC, 1),
                  f"{prefix}version 0: {strategies.NOBC}")]
  for i, name in enumerate(order, 1):
    base = strategies.get(name).base
    stages.append(Stage(
        run.id(name), (version0,) + ((run.id(base),) if base else ()),
        _train, (run, name, versions),
        f"{prefix}strategy {i}/{len(order)}: {name}"))
  return stages


def seed_stages(run: SeedRun, names: Sequence[str],
                prefix: str = "") -> list[Stage]:
  """One seed's stages (the module docstring): `names` (which list
  `consumers.REFERENCE`) trained for every version, then the consumers,
  compatibility, retrieval, backfill and the report (after `EVALUATION`)."""
  settings = configs.validate(ml_collections.ConfigDict(run.config))
  stages = strategy_stages(run, names, len(run.config["times"]) - 1, prefix)
  trained = tuple(s.id for s in stages[1:])
  consumer = settings.consumer
  stages.append(Stage(
      run.id("consumers"), (run.id(consumers.REFERENCE),), _consumers, (run,),
      f"{prefix}consumers: {len(unintended.TASKS)} tasks, h {consumer.hidden} "
      f"x dropout {consumer.dropout} x {consumer.seeds} seeds, "
      f"{consumer.epochs} epochs"))
  finish = []
  compat, matrices = settings.compat, settings.compat_strategies(names)
  if matrices:
    finish.append(Stage(
        run.id("compatibility"),
        (run.id("consumers"),) + tuple(run.id(s) for s in matrices),
        _compatibility, (run, tuple(matrices)),
        f"compatibility (seed {run.seed}): {', '.join(matrices)}; consumers "
        f"at every version, {compat.epochs} epochs x {compat.seeds} seeds"))
  finish.append(Stage(
      run.id("legacy retrieval"), trained, _retrieval, (run, tuple(names)),
      f"legacy retrieval (seed {run.seed}): frozen version-0 exact and HNSW "
      "indexes", local=True))
  filled = settings.backfill_strategies(names)
  if filled:
    finish.append(Stage(
        run.id("backfill"),
        tuple(run.id(s) for s in dict.fromkeys(
            [retrieval.FROZEN_SOURCE, *filled])) + (run.id("consumers"),),
        _backfill, (run, tuple(filled)),
        f"backfill (seed {run.seed}): {', '.join(filled)} at "
        f"{len(settings.backfill.budgets)} budgets, policies "
        f"{', '.join(settings.backfill.policies)}", local=True))
  finish.append(Stage(
      run.id("report"), (EVALUATION,) + tuple(s.id for s in finish), _report,
      (run, tuple(names)), f"report (seed {run.seed})", local=True))
  return stages + finish


def plan(runs: Sequence[SeedRun], names: Sequence[str]) -> list[Stage]:
  """The main job's stages: every seed's (`seed_stages`), then the
  cross-version evaluation of them all.

  Args:
    runs: the training seeds.
    names: the strategies to train and score; they list
      `consumers.REFERENCE`.

  Returns:
    The stages; the report of seed s has the id `runs[s].id("report")` and
    returns `report.write_report`'s (content, table, plots).
  """
  several = len(runs) > 1
  stages, read = [], []
  for run in runs:
    stages += seed_stages(run, names, f"seed {run.seed}: " if several else "")
    read += [run.id(s) for s in (*names, "consumers")]
  return stages + [Stage(
      EVALUATION, tuple(read), _evaluate, (tuple(runs), tuple(names)),
      EVALUATION + (f": {len(runs)} training seeds in one call"
                    if several else ""), local=True)]


def cache_of(experiments: Sequence[Experiment]) -> dict:
  """A `Context.cache` holding these experiments (the stages of their run
  directories use them instead of building their own)."""
  return {str(e.workdir): _SeedData(e) for e in experiments}


def _with_bases(name: str) -> list[str]:
  """`name` after the strategy whose models it reuses, if any."""
  base = strategies.get(name).base
  return (_with_bases(base) if base else []) + [name]


class _SeedData:
  """One seed in one process: its `Experiment`, and what its stages build
  from it on first use."""

  def __init__(self, experiment: Experiment):
    self.experiment = experiment
    self._heads: dict[str, consumers.Heads] | None = None

  @functools.cached_property
  def settings(self) -> configs.Settings:
    return configs.validate(self.experiment.versions.config)

  @functools.cached_property
  def tasks(self) -> dict[str, unintended.TaskData]:
    return unintended.all_task_data(self.experiment.versions.splits)

  def heads(self) -> dict[str, consumers.Heads]:
    """Every task's consumers: trained, or loaded where saved (once)."""
    if self._heads is None:
      self._heads = consumers.train_consumers(
          self.experiment.run_dir, self.tasks, self.settings.consumer,
          seed=self.experiment.versions.config.seed)
    return self._heads


def _seed(context: Context, run: SeedRun) -> _SeedData:
  """The seed's `_SeedData` in this process, built on first use; a run
  already started (by the main process, before its workers) is joined, not
  rewritten, so a worker never touches files another one is writing."""
  if run.root not in context.cache:
    started = RunDir(run.root).config_path.exists()
    context.cache[run.root] = _SeedData(Experiment(
        context.graph, ml_collections.ConfigDict(run.config), run.root,
        join=started))
  return context.cache[run.root]


def _train(context: Context, run: SeedRun, name: str, versions: int) -> None:
  """Versions 0..versions-1 of `name` that are not complete, in turn."""
  experiment = _seed(context, run).experiment
  for k in range(versions):
    if not experiment.run_dir.complete(name, k):
      experiment.run_version(name, k)


def _consumers(context: Context, run: SeedRun) -> None:
  """Trains (or loads) the seed's consumers, kept for the evaluation."""
  _seed(context, run).heads()


def _compatibility(context: Context, run: SeedRun,
                   names: tuple[str, ...]) -> None:
  seed = _seed(context, run)
  compatibility.run_compatibility(
      seed.experiment.run_dir, seed.experiment.versions.splits, list(names),
      seed.settings.compat, seed.settings.consumer, seed=run.seed)


def _retrieval(context: Context, run: SeedRun, names: tuple[str, ...]) -> None:
  experiment = _seed(context, run).experiment
  retrieval.evaluate_run(experiment.run_dir,
                         [experiment.versions.data(k).recall
                          for k in range(experiment.versions.num_versions)],
                         list(names))


def _backfill(context: Context, run: SeedRun, names: tuple[str, ...]) -> None:
  """The backfill curves at the last version, unless backfill.json holds
  them for these settings."""
  seed = _seed(context, run)
  versions = seed.experiment.versions
  last = versions.num_versions - 1
  config = seed.settings.backfill
  run_dir = seed.experiment.run_dir
  if backfill.complete(run_dir, backfill.settings_record(
      run_dir, config, names, last, run.seed)):
    return
  backfill.evaluate_run(run_dir, versions.splits[last],
                        versions.data(last).recall, names, config,
                        seed=run.seed, heads=seed.heads(), tasks=seed.tasks)


def _evaluate(context: Context, runs: tuple[SeedRun, ...],
              names: tuple[str, ...]) -> None:
  """Every seed's consumers scored on every strategy and version."""
  seeds = [_seed(context, run) for run in runs]
  scoring.evaluate_consumers([s.experiment.run_dir for s in seeds],
                             seeds[0].tasks, [s.heads() for s in seeds],
                             list(names),
                             seeds[0].experiment.versions.num_versions)


def _report(context: Context, run: SeedRun, names: tuple[str, ...]):
  return report.write_report(_seed(context, run).experiment.run_dir,
                             list(names))
