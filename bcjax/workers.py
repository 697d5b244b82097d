"""The training stages of several seeds, run by worker processes, one CPU set
each.

On a small CPU one training process leaves part of the machine idle: the
CSR aggregation product runs on one thread, and the many small operations
of a step pay a cross-thread handoff. Two processes pinned to one core each
trained 1.33x the epochs per second of one process on both cores (quick
preset, version 4, 2-core Xeon; `launch.benchmark --sections=workers`). So
`train_parallel` runs the jobs of a multi-seed run (every strategy of every
seed, each seed's consumers and compatibility matrices) on `workers`
processes, each pinned to its own share of the CPUs, in an order that
respects what each job reads:

  version 0 of nobc      before every other job of its seed
  a post-hoc strategy    after its base strategy (nobc)
  the consumers          after fix-m0
  the compatibility      after the consumers and its strategies

A job is the library's own resumable call (`Experiment.run`,
`consumers.train_consumers`, `compatibility.run_compatibility`), which
writes its artifacts atomically; the pipeline then runs as in one process
and finds them complete. Processes are started with "spawn" (JAX is not
fork-safe) and get the graph once, at start.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
import os
import sys
import time
import types
from pathlib import Path
from typing import Callable, Iterator, Sequence

import ml_collections

from bcjax import compatibility, configs, consumers, strategies
from bcjax.data import DynamicGraph
from bcjax.experiment import NOBC, Experiment

# Seconds per seed of the quick preset on the 2-core Xeon, rounded: they
# order the jobs that are ready (`_critical_paths`); only the order matters.
_COST = {"scratch": 120, "finetune": 20, "posthoc": 20, "consumers": 70,
         "compatibility": 40, "fixed": 1, "closed": 1, "version0": 10}


@dataclasses.dataclass(frozen=True)
class Job:
  """One unit of work: `kind` ("version0", "strategy", "consumers" or
  "compatibility") of `name` (a strategy, or "") for the seed whose config
  and run directory are `config` and `root`, once the jobs whose ids are
  `after` are done."""
  seed: int
  kind: str
  name: str
  config: dict
  root: str
  after: tuple[tuple[int, str, str], ...] = ()

  @property
  def id(self) -> tuple[int, str, str]:
    return (self.seed, self.kind, self.name)

  @property
  def cost(self) -> float:
    if self.kind == "strategy":
      return _COST[strategies.get(self.name).model]
    return _COST[self.kind]


def seed_jobs(config: ml_collections.ConfigDict, root: str | os.PathLike,
              names: Sequence[str]) -> list[Job]:
  """The jobs of one seed (`config.seed`) in run directory `root`."""
  seed, record, root = int(config.seed), config.to_dict(), str(root)
  settings = configs.validate(config)
  job = lambda kind, name="", after=(): Job(seed, kind, name, record, root,
                                            tuple(after))
  v0 = (seed, "version0", "")
  jobs = [job("version0")]
  for name in names:
    base = strategies.get(name).base
    jobs.append(job("strategy", name,
                    [v0] + ([(seed, "strategy", base)] if base else [])))
  if consumers.REFERENCE in names:
    jobs.append(job("consumers", after=[(seed, "strategy",
                                         consumers.REFERENCE)]))
    compat = settings.compat_strategies(names)
    if compat:
      jobs.append(job("compatibility", after=[(seed, "consumers", "")] + [
          (seed, "strategy", s) for s in compat]))
  return jobs


def train_parallel(graph: DynamicGraph, jobs: Sequence[Job], workers: int,
                   log: Callable[[str], None]) -> None:
  """Runs `jobs` on `workers` processes, each job once its `after` are done.

  Args:
    graph: the dataset (sent to each worker once).
    jobs: from `seed_jobs`, of one or several seeds.
    workers: the number of processes (>= 2).
    log: a line when a job starts and when it ends.

  Raises:
    Whatever a job raised (the others are cancelled first).
  """
  rank = _critical_paths(jobs)
  pending, done, running = list(jobs), set(), {}
  start = time.perf_counter()
  with pinned_processes(graph, workers) as pool:
    while pending or running:
      ready = sorted((j for j in pending if set(j.after) <= done),
                     key=lambda j: -rank[j.id])
      for job in ready[:max(workers - len(running), 0)]:
        pending.remove(job)
        running[pool.submit(_run_job, job)] = job
        log(f"== seed {job.seed}: {_describe(job)} started in a worker "
            f"({time.perf_counter() - start:.1f}s elapsed)")
      if not running:
        raise ValueError(f"jobs wait on jobs that are not listed: "
                         f"{[j.id for j in pending]}")
      finished, _ = concurrent.futures.wait(
          running, return_when=concurrent.futures.FIRST_COMPLETED)
      for future in finished:
        job = running.pop(future)
        error = future.exception()
        if error is not None:
          for other in running:
            other.cancel()
          raise error
        done.add(job.id)
        log(f"== seed {job.seed}: {_describe(job)} done "
            f"({time.perf_counter() - start:.1f}s elapsed)")


@contextlib.contextmanager
def pinned_processes(graph: DynamicGraph, count: int
                     ) -> Iterator[concurrent.futures.ProcessPoolExecutor]:
  """A pool of `count` spawned processes, each pinned to its own share of
  the CPUs (none when there are fewer CPUs than processes) and holding
  `graph` (`worker_graph()`)."""
  cpus = sorted(os.sched_getaffinity(0)) if hasattr(
      os, "sched_getaffinity") else []
  shares = ([cpus[i::count] for i in range(count)]
            if len(cpus) >= count else [[] for _ in range(count)])
  context = multiprocessing.get_context("spawn")
  queue = context.Queue()
  for share in shares:
    queue.put(share)
  with concurrent.futures.ProcessPoolExecutor(
      count, mp_context=context, initializer=_start_worker,
      # A plain dict travels (the graph's read-only mapping does not pickle).
      initargs=(dataclasses.replace(graph, attributes=dict(graph.attributes)),
                queue)) as pool:
    yield pool


def worker_graph() -> DynamicGraph:
  """The graph of this worker process (`pinned_processes`)."""
  if _graph is None:
    raise RuntimeError("worker_graph: not in a pinned_processes worker")
  return _graph


def _critical_paths(jobs: Sequence[Job]) -> dict:
  """Job id -> its cost plus the costliest chain of jobs waiting on it: the
  order that starts early what holds the most work back (fix-m0, cheap, goes
  before the consumers it unblocks)."""
  waiting = {job.id: [] for job in jobs}
  for job in jobs:
    for before in job.after:
      waiting.setdefault(before, []).append(job)
  rank: dict = {}

  def visit(job: Job) -> float:
    if job.id not in rank:
      rank[job.id] = job.cost + max((visit(j) for j in waiting[job.id]),
                                    default=0.0)
    return rank[job.id]

  for job in jobs:
    visit(job)
  return rank


def _describe(job: Job) -> str:
  return {"version0": "version 0", "strategy": job.name}.get(job.kind,
                                                             job.kind)


_graph: DynamicGraph | None = None


def _start_worker(graph: DynamicGraph, queue) -> None:
  """Pins the worker to its CPU share and keeps the graph."""
  global _graph
  share = queue.get()
  if share:
    os.sched_setaffinity(0, share)
  _graph = dataclasses.replace(
      graph, attributes=types.MappingProxyType(graph.attributes))


class _Prefixed:
  """A text stream that starts every line with `prefix` (the progress lines
  of several workers interleave on one terminal)."""

  def __init__(self, stream, prefix: str):
    self.stream, self.prefix, self.at_line_start = stream, prefix, True

  def write(self, text: str) -> int:
    for piece in text.splitlines(keepends=True):
      if self.at_line_start:
        self.stream.write(self.prefix)
      self.stream.write(piece)
      self.at_line_start = piece.endswith("\n")
    return len(text)

  def flush(self) -> None:
    self.stream.flush()


def _run_job(job: Job) -> None:
  """Runs one job in a worker (see the module docstring)."""
  stderr = sys.stderr
  sys.stderr = _Prefixed(stderr, f"[seed {job.seed}] ")
  try:
    config = ml_collections.ConfigDict(job.config)
    experiment = Experiment(worker_graph(), config, Path(job.root))
    if job.kind == "version0":
      experiment.run(NOBC, [0])
    elif job.kind == "strategy":
      experiment.run(job.name)
    else:
      settings = configs.validate(config)
      if job.kind == "consumers":
        consumers.train_consumers(experiment.run_dir,
                                  consumers.all_task_data(experiment.splits),
                                  settings.consumer, seed=job.seed)
      else:
        names = [name for _, kind, name in job.after if kind == "strategy"]
        compatibility.run_compatibility(
            experiment.run_dir, experiment.splits, names, settings.compat,
            settings.consumer, seed=job.seed)
  finally:
    sys.stderr.flush()
    sys.stderr = stderr
