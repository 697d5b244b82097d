"""The report's "legacy retrieval" section (method §10): figures, table, plot.

`summarize` turns the measurements of `bcjax.evaluation.retrieval.evaluate_run`
(retrieval.json) into report.json's `"legacy_retrieval"` record per strategy;
`mean_over_seeds` averages those records over training seeds; `table` and
`plot` present them. All of it is arithmetic on per-version numbers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from bcjax.paper.plots import plot_versions
from bcjax.runs.strategies import FIX_M0, display_name
from bcjax.util.numbers import entrywise_mean, finite_mean, fmt, percent_change

PLOT = "legacy_retrieval.png"
# Per-version lists and scalars of a strategy's record.
SERIES = ("recall@10", "recall@50", "pct_of_ceiling_per_version",
          "refreshed_recall@50", "ann_recall@50")
SCALARS = ("pct_of_ceiling", "vs_fix_m0_pct", "ann_vs_exact")


def _ratio(value: float | None, reference: float | None) -> float | None:
  if value is None or not reference:
    return None
  return value / reference


def summarize(measured: Mapping) -> dict[str, dict]:
  """report.json's `"legacy_retrieval"` of one run.

  Args:
    measured: retrieval.json's content (`retrieval.evaluate_run`).

  Returns:
    strategy -> {"recall@10", "recall@50" (frozen exact index, versions
    1..K), "pct_of_ceiling_per_version" (100 R@50 / the ceiling's),
    "pct_of_ceiling" (100 mean R@50 / the ceiling's mean), "vs_fix_m0_pct"
    (percent change of mean R@50 from fix-m0's), "refreshed_recall@50",
    "ann_recall@50" (frozen HNSW index), "ann_vs_exact" (mean HNSW R@50 /
    mean exact R@50)}; a figure is None where its reference is missing or 0.
  """
  ceiling = measured["ceiling"]["recall@50"]
  by_strategy = measured["strategies"]
  fix = (finite_mean(by_strategy[FIX_M0]["exact"]["recall@50"])
         if FIX_M0 in by_strategy else None)
  out = {}
  for s, r in by_strategy.items():
    exact, ann = r["exact"]["recall@50"], r["hnsw"]["recall@50"]
    mean = finite_mean(exact)
    ratio = _ratio(mean, finite_mean(ceiling))
    out[s] = {
        "recall@10": list(r["exact"]["recall@10"]), "recall@50": list(exact),
        "pct_of_ceiling_per_version": [
            None if _ratio(a, b) is None else 100 * _ratio(a, b)
            for a, b in zip(exact, ceiling)],
        "pct_of_ceiling": None if ratio is None else 100 * ratio,
        "vs_fix_m0_pct": percent_change(mean, fix),
        "refreshed_recall@50": list(r["refreshed"]["recall@50"]),
        "ann_recall@50": list(ann),
        "ann_vs_exact": _ratio(finite_mean(ann), mean)}
  return out


def mean_over_seeds(records: Sequence[Mapping[str, dict]]) -> dict[str, dict]:
  """The per-seed `summarize` results averaged: per-version lists entry by
  entry, scalars as they are, over the seeds that have the strategy."""
  out = {}
  for s in dict.fromkeys(s for r in records for s in r):
    runs = [r[s] for r in records if s in r]
    out[s] = {f: entrywise_mean([r[f] for r in runs]) for f in SERIES}
    out[s].update({f: finite_mean([r[f] for r in runs]) for f in SCALARS})
  return out


def mean_ceiling(ceilings: Sequence[Mapping[str, list]]) -> dict[str, list]:
  """The ceiling's Recall@K per version, averaged over seeds."""
  return {key: entrywise_mean([c[key] for c in ceilings])
          for key in ceilings[0]}


def table(summary: Mapping[str, dict], ceiling: Mapping[str, list]) -> str:
  """Per strategy: frozen-index R@50 as % of the ceiling per version, its
  mean, change vs fix-m0, refreshed R@50 and ANN / exact; the ceiling's own
  R@50 in the last row."""
  versions = len(ceiling["recall@50"])
  heads = " | ".join(f"v{k} % of ceiling" for k in range(1, versions + 1))
  lines = [f"| strategy | {heads} | mean R@50 | % of ceiling | vs Fix-M0 % | "
           "refreshed R@50 | ANN / exact |",
           "|---|" + "---:|" * (versions + 5)]
  for s, r in summary.items():
    name = display_name(s, markdown=True)
    cells = [fmt(v, 1) for v in r["pct_of_ceiling_per_version"]]
    cells += [fmt(finite_mean(r["recall@50"]), 4), fmt(r["pct_of_ceiling"], 1),
              fmt(r["vs_fix_m0_pct"]),
              fmt(finite_mean(r["refreshed_recall@50"]), 4),
              fmt(r["ann_vs_exact"], 3)]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines.append("| ceiling (No-BC v_k, own index) | "
               + " | ".join(fmt(v, 4) for v in ceiling["recall@50"])
               + f" | {fmt(finite_mean(ceiling['recall@50']), 4)} | 100.0 |"
               " | | |")
  return ("Legacy retrieval: Recall@50 through the frozen version-0 exact "
          "index (new items inserted)\n\n" + "\n".join(lines))


def plot(summary: Mapping[str, dict], out_dir: str | os.PathLike,
         title: str = "") -> list[Path]:
  """`legacy_retrieval.png`: frozen-index R@50 as % of the ceiling per
  version (1..K), one line per strategy."""
  if not summary:
    return []
  curves = {s: r["pct_of_ceiling_per_version"] for s, r in summary.items()}
  versions = np.arange(1, len(next(iter(curves.values()))) + 1)
  path = Path(out_dir) / PLOT
  plot_versions(curves, versions, path, "frozen-index Recall@50 (% of ceiling)",
                title)
  return [path]
