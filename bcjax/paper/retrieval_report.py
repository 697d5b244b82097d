"""The report's "legacy retrieval" section (method §10, §11): figures,
tables, plots.

`summarize` turns the measurements of `bcjax.evaluation.retrieval.evaluate_run`
(retrieval.json) into report.json's `"legacy_retrieval"` record per strategy;
`mean_over_seeds` averages those records over training seeds; `table` and
`plot` present them. The partial backfill of the same index
(`bcjax.evaluation.backfill`, backfill.json) is `summarize_backfill` per
seed, `backfill_over_seeds` (areas and curves with intervals over seeds),
`backfill_table` and `backfill_plot`. All of it is arithmetic on the
measured numbers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from bcjax.paper.plots import plot_budget_curves, plot_versions
from bcjax.release import backfill
from bcjax.runs.strategies import FIX_M0, display_name
from bcjax.util import intervals
from bcjax.util.numbers import entrywise_mean, finite_mean, fmt, percent_change

PLOT = "legacy_retrieval.png"
BACKFILL_PLOT = "backfill.png"
# The budget whose Recall@K the backfill table shows, and its baseline order.
TABLE_BUDGET, BASELINE = 0.1, "random"
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


# Partial backfill (method §11).


def cell(found: Mapping, digits: int = 2) -> str:
  """An interval (`bcjax.util.intervals.interval`) as "mean ± half-width",
  the mean alone without an interval, "n/a" without a mean."""
  if found["mean"] is None:
    return "n/a"
  if found["low"] is None:
    return fmt(found["mean"], digits)
  half = (found["high"] - found["low"]) / 2
  return f"{fmt(found['mean'], digits)} ± {fmt(half, digits)}"


def summarize_backfill(measured: Mapping) -> dict:
  """report.json's `"backfill"` of one run.

  Args:
    measured: backfill.json's content (`backfill.evaluate_run`).

  Returns:
    The curves and areas by strategy and policy (an area or value is None
    where the curve misses a value; areas by `backfill.area`), as
    ``{"version", "budgets", "consumer_tasks", "strategies": {s: {policy:
    {"curves": {metric: per budget}, "area": {metric: area}, "at_budget":
    {metric: the curve at TABLE_BUDGET}}}}}``.
  """
  budgets = measured["settings"]["budgets"]

  def figures(values: Sequence) -> tuple:
    if any(v is None for v in values):
      return None, None
    return (backfill.area(budgets, values),
            backfill.value_at(budgets, values, TABLE_BUDGET))

  out = {}
  for s, by_policy in measured["strategies"].items():
    out[s] = {}
    for policy, curves in by_policy.items():
      found = {m: figures(v) for m, v in curves.items()}
      out[s][policy] = {"curves": {m: list(v) for m, v in curves.items()},
                        "area": {m: f[0] for m, f in found.items()},
                        "at_budget": {m: f[1] for m, f in found.items()}}
  return {"version": measured["settings"]["version"], "budgets": list(budgets),
          "consumer_tasks": list(measured.get("consumer_tasks", [])),
          "strategies": out}


def backfill_over_seeds(records: Sequence[Mapping]) -> dict:
  """The per-seed `summarize_backfill` records with intervals over seeds.

  Args:
    records: one per seed, measured at the same budgets.

  Returns:
    The intervals (`bcjax.util.intervals`) for the (strategy, policy)
    pairs every seed has, "area_vs_random" the paired interval of the area
    minus random's, as
    ``{"version", "budgets", "seeds", "consumer_tasks", "strategies": {s:
    {policy: {"curves": {metric: {"mean", "low", "high"} per budget},
    "area", "at_budget": {metric: interval}, "area_vs_random": {metric:
    interval}}}}}``.

  Raises:
    ValueError: seeds measured at different budgets.
  """
  budgets = records[0]["budgets"]
  if any(r["budgets"] != budgets for r in records):
    raise ValueError("backfill: the seeds were measured at different budgets: "
                     f"{[r['budgets'] for r in records]}")
  seeds = [r["strategies"] for r in records]
  out = {}
  for s, by_policy in seeds[0].items():
    out[s] = {}
    for policy, first in by_policy.items():
      if not all(policy in r.get(s, {}) for r in seeds):
        continue
      runs = [r[s][policy] for r in seeds]
      baseline = ([r[s].get(BASELINE) for r in seeds]
                  if all(BASELINE in r[s] for r in seeds) else None)
      curves = {}
      for m in first["curves"]:
        points = [intervals.interval(list(c)) for c in zip(
            *(r["curves"][m] for r in runs))]
        curves[m] = {b: [p[b] for p in points] for b in ("mean", "low", "high")}
      out[s][policy] = {
          "curves": curves,
          **{f: {m: intervals.interval([r[f][m] for r in runs])
                 for m in first[f]} for f in ("area", "at_budget")},
          "area_vs_random": {} if baseline is None else {
              m: intervals.paired([r["area"][m] for r in runs],
                                  [b["area"][m] for b in baseline])
              for m in first["area"]}}
  return {"version": records[0]["version"], "budgets": list(budgets),
          "seeds": len(records),
          "consumer_tasks": list(records[0].get("consumer_tasks", [])),
          "strategies": out}


def _metric_name(metric: str) -> str:
  return ("consumer AUC" if metric == "consumer_auc"
          else metric.replace("recall@", "R@"))


def _deepest_recall(metrics: Sequence[str]) -> str | None:
  recalls = [m for m in metrics if m.startswith("recall@")]
  return max(recalls, key=lambda m: int(m.split("@")[1]), default=None)


def backfill_table(content: Mapping) -> str:
  """Per strategy and policy: the area under each backfill curve, the
  deepest Recall@K at TABLE_BUDGET, and its area minus random's (paired by
  seed, starred where the interval excludes zero); mean ± 95% interval."""
  pairs = [(s, p, r) for s, by_policy in content["strategies"].items()
           for p, r in by_policy.items()]
  if not pairs:
    return ""
  metrics = list(pairs[0][2]["area"])
  deepest = _deepest_recall(metrics)
  names = [_metric_name(m) for m in metrics]
  heads = [f"area {n}" for n in names]
  if deepest:
    heads += [f"{_metric_name(deepest)} at {TABLE_BUDGET:.0%}",
              f"area {_metric_name(deepest)} - random"]
  lines = ["| strategy | policy | " + " | ".join(heads) + " |",
           "|---|---|" + "---:|" * len(heads)]
  for s, policy, r in pairs:
    cells = [cell(r["area"][m], 4) for m in metrics]
    if deepest:
      cells.append(cell(r["at_budget"][deepest], 4))
      paired = r["area_vs_random"].get(deepest)
      cells.append("" if policy == BASELINE or paired is None else
                   cell(paired, 4) + (" *" if paired["excludes_zero"] else ""))
    lines.append(f"| {display_name(s, markdown=True)} | {policy} | "
                 + " | ".join(cells) + " |")
  seeds = content.get("seeds", 1)
  return (f"Partial backfill of the legacy index at version "
          f"{content['version']}: areas under the backfill curves (budget 0: "
          f"frozen, 1: refreshed; {seeds} seed{'s' if seeds > 1 else ''})\n\n"
          + "\n".join(lines))


def backfill_plot(content: Mapping, out_dir: str | os.PathLike,
                  title: str = "") -> list[Path]:
  """`backfill.png`: the deepest Recall@K (and the consumer AUC) against
  the budget, one panel per strategy, one line per policy with its band."""
  strategies = content["strategies"]
  first = next((r for by in strategies.values() for r in by.values()), None)
  if first is None:
    return []
  metrics = [m for m in (_deepest_recall(first["curves"]), "consumer_auc")
             if m in first["curves"]]
  panels = {_metric_name(m): {display_name(s): {
      p: (r["curves"][m]["mean"], r["curves"][m]["low"], r["curves"][m]["high"])
      for p, r in by_policy.items()} for s, by_policy in strategies.items()}
            for m in metrics}
  path = Path(out_dir) / BACKFILL_PLOT
  plot_budget_curves(panels, content["budgets"], path,
                     f"{title}: backfill at version {content['version']}")
  return [path]


def sections(retrieval: Mapping | None, ceiling: Mapping | None,
             backfill_content: Mapping | None, out_dir: str | os.PathLike,
             title: str) -> tuple[list[Path], str]:
  """The legacy-retrieval and backfill sections of a report, one seed's or
  several seeds' alike: their plots, and their tables after two newlines
  each ("" when neither was measured).

  Args:
    retrieval: `summarize`'s (or `mean_over_seeds`'), or None.
    ceiling: the refreshed ceiling of `table`.
    backfill_content: `backfill_over_seeds`', or None.
    out_dir: where the plots go.
    title: the plots' title.
  """
  paths, text = [], ""
  if retrieval:
    paths += plot(retrieval, out_dir, title)
    text += "\n\n" + table(retrieval, ceiling)
  if backfill_content:
    paths += backfill_plot(backfill_content, out_dir, title)
    text += "\n\n" + backfill_table(backfill_content)
  return paths, text

