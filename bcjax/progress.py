"""Progress lines of long loops: epoch, loss, a metric, the rate and the ETA.

Every training of the library reports through `Progress` (the embedding
trainer, the consumer grid), so every line has one format. JAX dispatches
work asynchronously: a caller passes values it has already read back to the
host (a Python float), so the rate counts finished work, not queued work.
"""

from __future__ import annotations

import sys
import time
from typing import Callable

import numpy as np


def to_stderr(line: str) -> None:
  """The default destination of progress lines."""
  print(line, file=sys.stderr, flush=True)


class Progress:
  """Progress lines, at most one per `interval` seconds besides the first
  and the last epoch.

  Args:
    label: prefix of each line ("nobc v2").
    total_epochs: the last epoch (for the ETA).
    log: where lines go (default stderr).
    first_epoch: the first epoch of this run (> 1 when resumed).
    interval: minimum seconds between lines.
  """

  def __init__(self, label: str, total_epochs: int,
               log: Callable[[str], None] | None = None,
               first_epoch: int = 1, interval: float = 1.0):
    self.label, self.total, self.first = label, total_epochs, first_epoch
    self.log = log or to_stderr
    self.start = time.perf_counter()
    self.interval, self.last_line = interval, -np.inf

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
    if (now - self.last_line < self.interval and epoch != self.first
        and epoch != self.total):
      return
    self.last_line = now
    done = epoch - self.first + 1
    rate = done / (now - self.start) if now > self.start else float("nan")
    eta = (self.total - epoch) / rate if rate > 0 else float("nan")
    shown = f" {metric_name} {metric:.4f}" if metric is not None else ""
    self.log(f"[{self.label}] epoch {epoch}/{self.total} loss {loss:.4f}"
             f"{shown} | {rate:.2f} epochs/s ETA {eta:.0f}s")
