"""The backward maps a store holds, as files.

Version k >= 1 of a store records B_k in its manifest entry's "transform":

  "v<k>_transform.npy"                  a linear map, W_k `[d_k, d_{k-1}]`
                                        (the format's first form);
  {"kind": "affine" | "residual-mlp",   any other `bcjax.backward.BackwardMap`
   "params": {name: "v<k>_backward_<name>.npy", ...}}
                                        (a post-hoc adapter), one float32
                                        file per parameter.

The store maps rows through `bcjax.backward.chains`, as training runs do:
a row read alone is bit for bit that row of the bulk read, and of the BC
embedding a run's report scored.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from bcjax.backward.maps import BackwardMap, file_stem
from bcjax.store import layout
from bcjax.store.layout import StoreError


def checked(transform: Any, k: int, d_prev: int) -> BackwardMap:
  """B_k as the store writes it: W_k `[d_k, d_{k-1}]` (any array) or a
  `BackwardMap`, its arrays float32 and finite, its output d_{k-1} wide.

  Raises:
    StoreError: a non-finite or misshapen parameter, or the wrong output.
  """
  if isinstance(transform, BackwardMap):
    params = {}
    for name, value in transform.params.items():
      value = np.ascontiguousarray(value, dtype=np.float32)
      if value.ndim not in (1, 2) or not np.isfinite(value).all():
        raise StoreError(f"transform {transform.kind} parameter {name!r} "
                         f"must be a finite 1-D or 2-D array")
      params[name] = value
    try:
      backward = BackwardMap(transform.kind, params)
    except ValueError as e:
      raise StoreError(f"transform: {e}") from None
  else:
    backward = BackwardMap.from_matrix(layout.as_float32("transform",
                                                         transform))
  if backward.d_out != d_prev:
    raise StoreError(f"transform has shape {(backward.d_in, backward.d_out)}, "
                     f"expected [d_{k}, {d_prev}]: version {k - 1} has "
                     f"{d_prev} dims")
  return backward


def to_files(k: int, backward: BackwardMap) -> tuple[Any, dict[str, Any]]:
  """Version k's manifest entry for `backward` and the arrays to write, by
  file name."""
  names = {p: f"v{k}_{file_stem(backward.kind, p)}.npy"
           for p in sorted(backward.params)}
  arrays = {names[p]: backward.params[p] for p in names}
  if backward.kind == "linear":
    return names["w"], arrays
  return {"kind": backward.kind, "params": names}, arrays


def from_files(entry: Any, read: Callable[[str], np.ndarray]) -> BackwardMap:
  """The map of a validated entry, its arrays read by file name."""
  files = layout.transform_files(entry)
  if isinstance(entry, str):
    return BackwardMap.from_matrix(read(files["w"]))
  return BackwardMap(entry["kind"], {p: read(f) for p, f in files.items()})
