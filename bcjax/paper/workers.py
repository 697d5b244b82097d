"""Runs a plan of stages: in this process, or on worker processes pinned to
their own CPUs.

A `Stage` is a unit of work with an id, the ids of the stages whose
artifacts it reads (`after`) and a module-level function to call with its
arguments, so that it travels to another process. `run_serial` runs a plan
in this process, each stage once its `after` are done, in the plan's order
otherwise; `run_parallel` runs it on worker processes (`pinned_processes`:
spawned, each pinned to its own share of the CPUs, which on a small CPU
trains more epochs per second than one process on every CPU; docs/records.md
has the figures), starting first, among the stages that are ready, the one
that the most stages wait on (ties in plan order). Neither knows what a
stage does: `bcjax.paper.stages` writes the main job's plan.
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
from typing import Any, Callable, Iterator, NamedTuple, Sequence

from bcjax.data import DynamicGraph


class Context(NamedTuple):
  """What every stage's function gets first: the graph, and a dict that the
  stages of one execution share in one process (a cache)."""
  graph: DynamicGraph
  cache: dict


@dataclasses.dataclass(frozen=True)
class Stage:
  """One unit of work of a plan.

  Attributes:
    id: unique in its plan.
    after: the ids of the stages it reads, which run before it.
    fn: a module-level function (it is pickled by name), called as
      `fn(context, *args)` with a `Context`; what it returns is the stage's
      result.
    args: picklable arguments.
    label: the line logged when it starts (in this process).
    local: run in the calling process (its result stays there, and its
      figures do not depend on a worker's share of the CPUs).
  """
  id: str
  after: tuple[str, ...]
  fn: Callable[..., Any]
  args: tuple = ()
  label: str = ""
  local: bool = False

  def run(self, context: Context) -> Any:
    return self.fn(context, *self.args)


def waiting(plan: Sequence[Stage]) -> dict[str, int]:
  """Stage id -> how many stages wait on it, directly or not: the order of
  `run_parallel`, which starts early what holds the most work back."""
  after = _check(plan)
  waiters: dict[str, set[str]] = {s.id: set() for s in plan}
  for stage in reversed(_topological(plan, after)):
    for before in after[stage.id]:
      waiters[before] |= {stage.id} | waiters[stage.id]
  return {id_: len(ids) for id_, ids in waiters.items()}


def run_serial(plan: Sequence[Stage], graph: DynamicGraph,
               log: Callable[[str], None] | None = None,
               cache: dict | None = None) -> dict[str, Any]:
  """Runs `plan` in this process, each stage once, after its `after`.

  Args:
    plan: the stages, in the order to run those that are ready.
    graph: the dataset, every stage's `Context.graph`.
    log: a line per stage, its label and the elapsed time (default none).
    cache: the stages' `Context.cache` (default a new dict).

  Returns:
    Stage id -> its result.

  Raises:
    ValueError: two stages with one id, or stages that wait on stages that
      are not listed (before any stage runs).
  """
  order = _topological(plan, _check(plan))
  context = Context(graph, {} if cache is None else cache)
  start, results = time.perf_counter(), {}
  for stage in order:
    if log:
      log(f"== {stage.label or stage.id} "
          f"({time.perf_counter() - start:.1f}s elapsed)")
    results[stage.id] = stage.run(context)
  return results


def run_parallel(plan: Sequence[Stage], graph: DynamicGraph, workers: int,
                 log: Callable[[str], None],
                 cache: dict | None = None) -> dict[str, Any]:
  """Runs `plan` on `workers` processes, each stage once its `after` are
  done; the local stages in this process.

  Args:
    plan: the stages (ties of `waiting` go in this order).
    graph: the dataset (sent to each worker once).
    workers: the number of processes (>= 2).
    log: a line when a stage starts and when it ends.
    cache: the local stages' `Context.cache` (each worker has its own).

  Returns:
    Stage id -> its result.

  Raises:
    ValueError: as `run_serial`.
    Whatever a stage raised (the stages not started are cancelled first).
  """
  rank, order = waiting(plan), {s.id: i for i, s in enumerate(plan)}
  context = Context(graph, {} if cache is None else cache)
  pending, done, running, results = list(plan), set(), {}, {}
  start = time.perf_counter()
  elapsed = lambda: f"({time.perf_counter() - start:.1f}s elapsed)"
  with pinned_processes(graph, workers) as pool:
    try:
      while pending or running:
        ready = sorted((s for s in pending if set(s.after) <= done),
                       key=lambda s: (-rank[s.id], order[s.id]))
        free = workers - len(running)
        for stage in [s for s in ready if not s.local][:free]:
          pending.remove(stage)
          running[pool.submit(_run_stage, stage)] = stage
          log(f"== {stage.id} started in a worker {elapsed()}")
        local = [s for s in ready if s.local]
        if local:  # Run here; the workers go on meanwhile.
          pending.remove(local[0])
          log(f"== {local[0].label or local[0].id} {elapsed()}")
          results[local[0].id] = local[0].run(context)
          done.add(local[0].id)
          continue
        finished, _ = concurrent.futures.wait(
            running, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in finished:
          stage = running.pop(future)
          results[stage.id] = future.result()  # Raises what the stage did.
          done.add(stage.id)
          log(f"== {stage.id} done {elapsed()}")
    except BaseException:
      for future in running:
        future.cancel()
      raise
  return results


def _check(plan: Sequence[Stage]) -> dict[str, tuple[str, ...]]:
  """Stage id -> its `after`; refuses duplicated ids and unlisted `after`."""
  after = {}
  for stage in plan:
    if stage.id in after:
      raise ValueError(f"two stages have the id {stage.id!r}")
    after[stage.id] = stage.after
  missing = sorted({a for s in plan for a in s.after} - set(after))
  if missing:
    raise ValueError(f"stages wait on stages that are not listed: {missing}")
  return after


def _topological(plan: Sequence[Stage], after: dict) -> list[Stage]:
  """The plan, each stage after its `after` and otherwise in plan order."""
  order, done, pending = [], set(), list(plan)
  while pending:
    stage = next((s for s in pending if set(after[s.id]) <= done), None)
    if stage is None:
      raise ValueError("stages wait on each other: "
                       f"{[s.id for s in pending]}")
    pending.remove(stage)
    order.append(stage)
    done.add(stage.id)
  return order


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


# A worker's graph, and its stages' cache: one pool runs one plan.
_graph: DynamicGraph | None = None
_cache: dict = {}


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


def _run_stage(stage: Stage) -> Any:
  """Runs one stage in a worker, its progress lines prefixed by its id."""
  stderr = sys.stderr
  sys.stderr = _Prefixed(stderr, f"[{stage.id}] ")
  try:
    return stage.run(Context(worker_graph(), _cache))
  finally:
    sys.stderr.flush()
    sys.stderr = stderr
