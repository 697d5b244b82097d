"""The memory a run's training needs, estimated and checked against what the
machine has before anything is allocated.

Without the check a batch size of 10^8 grows until the system kills the
process, and an embedding size of 10^6 ends in an out-of-memory error of
XLA after minutes of setup. The estimate counts the dominant arrays only
(a lower bound, so a run that fits is never refused): every node's
activations of every layer and their gradients, a batch's gathered rows,
the parameters with their gradients and Adam moments, and an epoch's
batches on the host.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

FLOAT_BYTES = 4
# An epoch's batches: user, positive, negative and mask, int32 each.
BATCH_ENTRY_BYTES = 16
_CGROUP = Path("/sys/fs/cgroup")


def training_bytes(num_nodes: int, num_values: int, dim: int, layers: int,
                   batch_size: int, num_batches: int) -> int:
  """The estimated bytes of training one version.

  Args:
    num_nodes: padded users plus items.
    num_values: item attribute values over every kind.
    dim: the embedding size d.
    layers: L.
    batch_size: BPR triples per batch.
    num_batches: batches per epoch.
  """
  activations = 2 * num_nodes * dim * (layers + 1)
  batch = 2 * 3 * batch_size * dim
  params = 4 * (2 * layers * dim * dim + (num_nodes + num_values) * dim)
  return (FLOAT_BYTES * (activations + batch + params)
          + BATCH_ENTRY_BYTES * batch_size * num_batches)


def available_bytes() -> tuple[int, str]:
  """`(bytes, where)`: what the run may still allocate on its first device
  (an accelerator's free memory) or, on CPU, on the host (the kernel's
  available memory, within the container's limit)."""
  device = jax.local_devices()[0]
  stats = {}
  if device.platform != "cpu":
    stats = device.memory_stats() or {}
  if "bytes_limit" in stats:
    return (stats["bytes_limit"] - stats.get("bytes_in_use", 0),
            f"{device.platform} device")
  free = [os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
  try:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    free = [int(line.split()[1]) * 1024 for line in meminfo
            if line.startswith("MemAvailable:")] or free
    limit = (_CGROUP / "memory.max").read_text().strip()
    if limit != "max":
      used = int((_CGROUP / "memory.current").read_text())
      free.append(int(limit) - used)
  except (OSError, ValueError, IndexError):
    pass  # No /proc or no cgroup v2: what sysconf says.
  return min(free), "host"


def gigabytes(num_bytes: float) -> str:
  return f"{num_bytes / 2**30:,.1f} GiB"


def check(needed: int, what: str, available: tuple[int, str] | None = None
          ) -> None:
  """Refuses work that needs more memory than there is.

  Args:
    needed: the estimated bytes (`training_bytes`).
    what: names the work and the settings that size it, for the message.
    available: `(bytes, where)`; default `available_bytes()`.

  Raises:
    ValueError: `needed` exceeds what is available (both in the message).
  """
  free, where = available or available_bytes()
  if needed > free:
    raise ValueError(f"{what} needs about {gigabytes(needed)} of memory "
                     f"(estimated), but {gigabytes(free)} are available on "
                     f"the {where}")
