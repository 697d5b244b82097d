"""Multi-device placement: a 1-D device mesh, data-parallel batches and
row-partitioned node arrays, with `NamedSharding` (no `pmap`).

Training stays one jitted program; placing its inputs is all it takes for
XLA's SPMD partitioner to split the work: each device takes a slice of every
batch of triples (axis "data"), and the large per-node arrays of the
alignment term (E_k(M_{k-1}), fixed post-hoc embeddings) are split by rows.
Parameters, optimizer state and the graph are replicated. Results equal the
single-device ones up to float summation order (tested on 4 simulated CPU
devices in `tests/test_sharding.py`).

Several processes (JAX's multi-controller runtime, e.g. one per host): call
`jax.distributed.initialize()` first in every process (the launch scripts'
`--coordinator_address --num_processes --process_id`); `make_mesh` then spans
every process's devices (`jax.devices()`), each process runs the same
program, and `split_batches` places only the process's own columns of every
batch on its own devices (`jax.make_array_from_process_local_data`).
Tested with 2 processes of 2 CPU devices in `tests/test_multiprocess.py`.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

AXIS = "data"


def make_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D mesh over the first `num_devices` devices (0: all of them).

  Args:
    num_devices: how many of `jax.devices()` to use; 0 uses all.

  Returns:
    A `Mesh` with the single axis `AXIS` ("data").

  Raises:
    ValueError: more devices asked for than there are, or, with several
      processes, fewer than all (every process must hold part of the mesh).
  """
  devices = jax.devices()
  n = num_devices or len(devices)
  if not 1 <= n <= len(devices):
    raise ValueError(f"asked for {num_devices} devices; {len(devices)} "
                     f"available ({devices[0].platform})")
  if jax.process_count() > 1 and n != len(devices):
    raise ValueError(f"asked for {num_devices} devices, but a run of "
                     f"{jax.process_count()} processes trains on all "
                     f"{len(devices)} devices of all of them: use devices=0")
  return Mesh(np.asarray(devices[:n]), (AXIS,))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Every leaf copied to every device of the mesh.

  Args:
    tree: a pytree of arrays (params, optimizer state, the graph).
    mesh: the device mesh.

  Returns:
    The same pytree, each leaf replicated (`PartitionSpec()`).
  """
  return jax.device_put(tree, NamedSharding(mesh, P()))


def split_rows(array: jax.Array | None, mesh: Mesh,
               axis: int = 0) -> jax.Array | None:
  """`array` partitioned along `axis` over the mesh, e.g. per-node rows.

  Args:
    array: e.g. `[num_nodes, d]`, or None.
    mesh: the device mesh.
    axis: the axis to split over `AXIS`.

  Returns:
    The array sharded along `axis`; replicated when that axis does not
    divide evenly by the device count; None for None.
  """
  if array is None:
    return None
  size = mesh.devices.size
  if array.shape[axis] % size:
    return replicate(array, mesh)
  spec = [None] * array.ndim
  spec[axis] = AXIS
  return jax.device_put(array, NamedSharding(mesh, P(*spec)))


def split_batches(batches: Any, mesh: Mesh) -> Any:
  """Stacked batches, each batch split over the devices (data parallelism).

  Args:
    batches: a pytree of `[num_batches, batch_size, ...]` arrays.
    mesh: the device mesh.

  Returns:
    The same pytree, each leaf sharded along its batch axis (axis 1); each
    process places only the columns of its own devices, so the whole batch
    is never put on one device.

  Raises:
    ValueError: a batch size that the device count does not divide.
  """
  size = mesh.devices.size
  for leaf in jax.tree.leaves(batches):
    if np.shape(leaf)[1] % size:
      raise ValueError(f"batch size {np.shape(leaf)[1]} is not divisible by "
                       f"the {size} devices of the mesh")

  def place(x):
    x = np.asarray(x)
    spec = NamedSharding(mesh, P(None, AXIS, *[None] * (x.ndim - 2)))
    columns = process_columns(spec, x.shape)
    return jax.make_array_from_process_local_data(spec, x[:, columns],
                                                  x.shape)
  return jax.tree.map(place, batches)


def process_columns(spec: NamedSharding, shape: tuple[int, ...]) -> slice:
  """The columns (axis 1) of an array of `shape` sharded by `spec` that this
  process's devices hold: one contiguous range, as the 1-D mesh lists each
  process's devices together.

  Raises:
    ValueError: this process's columns are not one range.
  """
  ranges = sorted({index[1].indices(shape[1])[:2] for index in
                   spec.addressable_devices_indices_map(shape).values()})
  for (_, stop), (start, _) in zip(ranges, ranges[1:]):
    if stop != start:
      raise ValueError(f"this process holds columns {ranges} of the batch, "
                       "not one range: its devices are not adjacent in the "
                       "mesh")
  return slice(ranges[0][0], ranges[-1][1])
