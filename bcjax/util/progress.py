"""The library's one way of writing lines: progress of long loops (epoch,
loss, a metric, the rate and the ETA) and notices.

Every line the library writes goes to a caller's `log` callable or, by
default, to `to_stderr` (stage lines of the main job to `to_stdout`); no
module prints or logs otherwise.

Every training of the library reports through `Progress` (the embedding
trainer, the consumer grid), so every line has one format. JAX dispatches
work asynchronously: a caller passes values it has already read back to the
host (a Python float), so the rate counts finished work, not queued work.
The first line's time includes compiling; the rate and the ETA are measured
from it on.
"""

from __future__ import annotations

import sys
import time
from typing import Callable

import numpy as np


def to_stderr(line: str) -> None:
  """The default destination of progress lines and notices."""
  print(line, file=sys.stderr, flush=True)


def to_stdout(line: str) -> None:
  """The destination of the main job's stage lines and report."""
  print(line, flush=True)


class Progress:
  """Progress lines, at most one per `interval` seconds besides the first
  and the last epoch.

  Args:
    label: prefix of each line ("nobc v2").
    total_epochs: the last epoch (for the ETA).
    log: where lines go (default stderr).
    interval: minimum seconds between lines.
  """

  def __init__(self, label: str, total_epochs: int,
               log: Callable[[str], None] | None = None,
               interval: float = 1.0):
    self.label, self.total = label, total_epochs
    self.log = log or to_stderr
    self.start = time.perf_counter()
    self.interval, self.last_line = interval, -np.inf
    self.reference: tuple[int, float] | None = None  # The first line's.

  def update(self, epoch: int, loss: float, metric_name: str | None = None,
             metric: float | None = None):
    """Logs the line of a finished epoch, unless one was logged lately.

    Args:
      epoch: the finished epoch.
      loss: its mean loss (a host float: the epoch's work is done).
      metric_name: the metric shown, or None.
      metric: its value, or None to show no metric.
    """
    now = time.perf_counter()
    shown = f" {metric_name} {metric:.4f}" if metric is not None else ""
    head = f"[{self.label}] epoch {epoch}/{self.total} loss {loss:.4f}{shown}"
    if self.reference is None:  # Compiling happened in these epochs.
      self.reference, self.last_line = (epoch, now), now
      self.log(f"{head} | {now - self.start:.1f}s so far, compiling included")
      return
    if (now - self.last_line < self.interval and epoch != self.total):
      return
    self.last_line = now
    first_epoch, first_time = self.reference
    rate = ((epoch - first_epoch) / (now - first_time) if now > first_time
            else float("nan"))
    eta = (self.total - epoch) / rate if rate > 0 else float("nan")
    self.log(f"{head} | {rate:.2f} epochs/s ETA {eta:.0f}s")
