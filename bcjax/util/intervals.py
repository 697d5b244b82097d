"""Confidence intervals over training seeds (method §8).

Every report figure is computed per seed, then reported as the mean over the
S seeds with a 95% Student-t interval, mean +- t_{0.975, S-1} sd / sqrt(S)
(sd the sample standard deviation, S - 1 degrees of freedom). A difference
between two strategies is paired: per seed first (the strategies of a seed
share version 0 and every triple), then the interval of the S differences.
With one seed there is no interval (low = high = None).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import scipy.stats

LEVEL = 0.95


def interval(values: Sequence[float | None], level: float = LEVEL) -> dict:
  """Mean and Student-t interval of per-seed values.

  Args:
    values: one value per seed; None or non-finite values (a figure a seed
      could not compute) are left out.
    level: the confidence level.

  Returns:
    `{"mean", "low", "high", "per_seed"}`: mean, low and high None when no
    value is finite, low and high None with a single value; `per_seed` the
    values as given (None for missing).
  """
  per_seed = [None if v is None or not np.isfinite(v) else float(v)
              for v in values]
  finite = np.asarray([v for v in per_seed if v is not None], np.float64)
  out = {"mean": None, "low": None, "high": None, "per_seed": per_seed}
  if finite.size == 0:
    return out
  out["mean"] = float(finite.mean())
  if finite.size > 1:
    half = float(scipy.stats.t.ppf(0.5 + level / 2, finite.size - 1)
                 * finite.std(ddof=1) / np.sqrt(finite.size))
    out["low"], out["high"] = out["mean"] - half, out["mean"] + half
  return out


def paired(values: Sequence[float | None], others: Sequence[float | None],
           level: float = LEVEL) -> dict:
  """The interval of the per-seed differences `values - others` (a seed
  missing either value is left out), and whether it excludes zero."""
  if len(values) != len(others):
    raise ValueError(f"paired: {len(values)} seeds against {len(others)}")
  differences = [None if a is None or b is None else a - b
                 for a, b in zip(values, others)]
  out = interval(differences, level)
  out["excludes_zero"] = bool(out["low"] is not None
                              and (out["low"] > 0 or out["high"] < 0))
  return out


def by_figure(per_seed: Sequence[Mapping[str, float | None]],
              figures: Sequence[str]) -> dict[str, dict]:
  """figure -> `interval` of its per-seed values (`per_seed[s][figure]`)."""
  return {f: interval([seed.get(f) for seed in per_seed]) for f in figures}
