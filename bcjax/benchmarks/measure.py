"""Timers and memory readers shared by the benchmarks.

Every timing blocks on its result and excludes compilation (a warm-up run
compiles first); figures are medians with their spread `[min, max]`.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Callable, Sequence

import jax
import numpy as np


def spread(times: Sequence[float]) -> list[float]:
  """`[min, max]` of a list of measurements."""
  return [float(np.min(times)), float(np.max(times))]


def timed(fn: Callable, *args, repeats: int = 5,
          slow_s: float | None = None, warmup: bool = True) -> dict:
  """Median and spread (min, max) of `fn(*args)` in seconds, after a warm-up.

  With `slow_s`, a function whose second call takes longer than that is
  timed once (its spread is then zero). `warmup=False` when the caller has
  already run `fn` (compiled it).
  """
  if warmup:
    jax.block_until_ready(fn(*args))
  times = []
  if slow_s is not None:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
    if times[0] > slow_s:
      repeats = 0
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return {"median_s": float(np.median(times)), "min_s": float(np.min(times)),
          "max_s": float(np.max(times))}


def matmul_peak_detail(sizes=(1024, 2048, 3072), repeats: int = 5) -> dict:
  """The machine's dense peak: the best median GFLOP/s of n x n x n float32
  matmuls, with that size's spread.

  Returns:
    `{"gflops", "gflops_spread", "n"}`.
  """
  best = {"gflops": 0.0, "gflops_spread": [0.0, 0.0], "n": 0}
  for n in sizes:
    x = jax.random.normal(jax.random.key(0), (n, n))
    t = timed(jax.jit(lambda a: a @ a), x, repeats=repeats)
    rate = lambda seconds: 2 * n ** 3 / seconds / 1e9
    if rate(t["median_s"]) > best["gflops"]:
      best = {"gflops": rate(t["median_s"]),
              "gflops_spread": [rate(t["max_s"]), rate(t["min_s"])], "n": n}
  return best


def proc_gb(path: str, field: str) -> float | None:
  """A `field: N kB` line of a Linux /proc file in GB, or None without it."""
  try:
    with open(path) as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) * 1024 / 1e9
  except OSError:
    pass
  return None


def available_gb() -> float | None:
  """MemAvailable of /proc/meminfo, or None where there is none."""
  return proc_gb("/proc/meminfo", "MemAvailable")


def peak_rss_gb() -> float:
  """This process's peak resident memory.

  Linux's VmHWM, the high-water mark of this program's memory: `ru_maxrss`
  is not used where VmHWM exists because Linux carries it across exec, so a
  child started by a big parent would report the parent's peak.
  """
  peak = proc_gb("/proc/self/status", "VmHWM")
  if peak is not None:
    return peak
  # ru_maxrss: KiB on Linux, bytes on macOS.
  scale = 1 if sys.platform == "darwin" else 1024
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


def device_peak_gb() -> float | None:
  """Peak bytes in use on the first device, where the backend reports it."""
  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:  # Backends without memory statistics.
    return None
  if not stats or "peak_bytes_in_use" not in stats:
    return None
  return stats["peak_bytes_in_use"] / 1e9
