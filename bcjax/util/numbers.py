"""Numbers that may be missing or wrong: records, tables and settings.

A figure that was not measured (a single-class version, an undefined matrix
entry) is NaN in arrays and None (JSON null) in records; these helpers are
the one place that converts between the two, averages what is there and
formats what may be absent. A setting is checked once, when a config is
validated, with an error that names its field.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def flatten(values: Any) -> list:
  """The leaves of nested lists, tuples and arrays, in order."""
  if isinstance(values, (list, tuple, np.ndarray)):
    return [x for v in values for x in flatten(v)]
  return [values]


def finite_or_none(values: Any) -> list:
  """A JSON-safe list of floats: NaN and infinities become None."""
  return [float(v) if v is not None and np.isfinite(v) else None
          for v in values]


def finite_mean(values: Any) -> float | None:
  """Mean of the finite numbers in nested `values` (None and NaN skipped);
  None when there are none."""
  flat = np.asarray([v for v in flatten(values) if v is not None], np.float64)
  flat = flat[np.isfinite(flat)]
  return float(flat.mean()) if flat.size else None


def entrywise_mean(lists: Any) -> list:
  """`finite_mean` of each position of equally long lists (the seeds'
  per-version figures): None where no list has a finite value."""
  return [finite_mean(list(column)) for column in zip(*lists)]


def percent_change(value: float | None, reference: float | None
                   ) -> float | None:
  """100 (value - reference) / reference; None if either is missing or the
  reference is 0."""
  if value is None or reference is None or reference == 0:
    return None
  return 100.0 * (value - reference) / reference


def fmt(value: float | None, digits: int = 2) -> str:
  """`value` with `digits` decimals, or "n/a" when it is missing."""
  return "n/a" if value is None else f"{value:.{digits}f}"


def positive_int(name: str, value: Any) -> int:
  """`value` as an int >= 1; a ValueError naming the field `name` otherwise."""
  if (isinstance(value, bool) or
      not isinstance(value, (int, float, np.integer)) or
      not math.isfinite(value) or int(value) != value or value < 1):
    raise ValueError(f"{name} must be a positive integer, got {value!r}")
  return int(value)


def finite_float(name: str, value: Any, minimum: float = -math.inf,
                 strict: bool = False) -> float:
  """`value` as a finite float >= `minimum` (> with `strict`); a ValueError
  naming the field `name` otherwise (NaN and infinities included)."""
  ok = (not isinstance(value, bool) and
        isinstance(value, (int, float, np.integer)) and
        math.isfinite(value) and
        (value > minimum if strict else value >= minimum))
  if not ok:
    bound = f"{'>' if strict else '>='} {minimum:g}"
    raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
  return float(value)


def positive_float(name: str, value: Any) -> float:
  """`value` as a finite float > 0 (see `finite_float`)."""
  return finite_float(name, value, 0.0, strict=True)
