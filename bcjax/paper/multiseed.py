"""The report of several training seeds: every figure with its interval.

With `config.seeds` = S > 1 the pipeline trains S complete runs, one run
directory per seed (`RunDir.seed_dir`), each with its own report. This
module reads their `report.json` files and writes the run's report at the
top: every figure of method §8 (mean R@50, intended, unintended and total
degradation, alignment error) as the mean over seeds with a 95% Student-t
interval, and the paired differences BC-Aligner minus every other strategy
(`bcjax.util.intervals`). Plots show the per-version means with a band.

report.json keeps the single-seed keys (each figure the mean over seeds)
and adds `"seeds"`, `"intervals": {strategy: {figure: {"mean", "low",
"high", "per_seed"}}}` and `"paired": {other: {figure: {"mean", "low",
"high", "excludes_zero"}}}`; `"legacy_retrieval"` (with its ceiling) is
the mean over the seeds that measured it, `"backfill"` the areas and curves
of partial backfill with their intervals over those seeds
(`bcjax.paper.retrieval_report`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from bcjax.paper import plots, report, retrieval_report
from bcjax.runs.rundir import RunDir, read_json
from bcjax.runs.strategies import BC_ALIGNER_NAME, display_name
from bcjax.util import intervals, io
from bcjax.util.numbers import entrywise_mean, finite_mean, fmt

FIGURES = ("recall50", "intended_pct", "unintended_pct", "total_pct",
           "alignment_error")
HEADERS = ("mean R@50", "intended %", "unintended %", "total %",
           "alignment error")


def figures(record: Mapping) -> dict[str, float | None]:
  """One seed's figures of one strategy (its report record)."""
  return {"recall50": finite_mean(record["recall50"]),
          **{f: record[f] for f in FIGURES[1:]}}


def _mean_compatibility(per_seed: Sequence[Mapping]) -> dict:
  """strategy -> the compatibility summary averaged over the seeds that
  have it: overall and per-task means, matrices entry by entry."""
  out = {}
  for s in dict.fromkeys(s for c in per_seed for s in c):
    runs = [c[s] for c in per_seed if s in c]
    tasks = {}
    for t in dict.fromkeys(t for r in runs for t in r["tasks"]):
      of_task = [r["tasks"][t] for r in runs if t in r["tasks"]]
      tasks[t] = {"mean": finite_mean([r["mean"] for r in of_task]),
                  "matrix": [entrywise_mean(rows)
                             for rows in zip(*(r["matrix"] for r in of_task))]}
    out[s] = {"mean": finite_mean([r["mean"] for r in runs]), "tasks": tasks,
              "per_seed": [r["mean"] for r in runs]}
  return out


def summarize_seeds(reports: Sequence[Mapping]) -> dict:
  """The multi-seed report of per-seed report.json contents.

  Args:
    reports: one report per seed (`report.write_report`'s content), in seed
      order; strategies missing from a seed are left out.

  Returns:
    `{"seeds", "strategies", "intervals", "paired", "compatibility"}`: per
    strategy the single-seed record with every figure the mean over seeds
    (per-version lists averaged entry-wise, `selected_epoch` per seed),
    the intervals, and BC-Aligner minus each other strategy, paired by seed.
  """
  names = [s for s in reports[0]["strategies"]
           if all(s in r["strategies"] for r in reports)]
  per_seed = {s: [figures(r["strategies"][s]) for r in reports] for s in names}
  found = {s: intervals.by_figure(per_seed[s], FIGURES) for s in names}
  strategies = {}
  for s in names:
    records = [r["strategies"][s] for r in reports]
    tasks = dict.fromkeys(t for r in records for t in r["auc"])
    strategies[s] = {
        "recall50": entrywise_mean([r["recall50"] for r in records]),
        **{f: found[s][f]["mean"] for f in FIGURES[1:]},
        "alignment": entrywise_mean([r.get("alignment", [])
                                        for r in records]),
        "auc": {t: entrywise_mean([r["auc"][t] for r in records
                                      if t in r["auc"]]) for t in tasks},
        "selected_epoch": [r.get("selected_epoch") for r in records]}
  paired = {}
  if BC_ALIGNER_NAME in names:
    paired = {o: {f: intervals.paired(
        [v[f] for v in per_seed[BC_ALIGNER_NAME]], [v[f] for v in per_seed[o]])
                  for f in FIGURES}
              for o in names if o != BC_ALIGNER_NAME}
  out = {"seeds": [r.get("seed") for r in reports], "strategies": strategies,
         "intervals": found, "paired": paired,
         "compatibility": _mean_compatibility(
             [r.get("compatibility") or {} for r in reports])}
  retrieved = [r for r in reports if r.get("legacy_retrieval")]
  if retrieved:
    out["legacy_retrieval"] = retrieval_report.mean_over_seeds(
        [r["legacy_retrieval"] for r in retrieved])
    out["legacy_retrieval_ceiling"] = retrieval_report.mean_ceiling(
        [r["legacy_retrieval_ceiling"] for r in retrieved])
  filled = [r["backfill"] for r in reports if r.get("backfill")]
  if filled:
    out["backfill"] = retrieval_report.backfill_over_seeds(filled)
  return out


def interval_table(content: Mapping) -> str:
  """Method §8's table, every figure mean ± 95% interval over seeds."""
  lines = [f"| strategy | {' | '.join(HEADERS)} |",
           "|---|" + "---:|" * len(FIGURES)]
  for s, by_figure in content["intervals"].items():
    name = display_name(s, markdown=True)
    cells = [retrieval_report.cell(by_figure[f], 4 if f == "recall50" else 2)
             for f in FIGURES]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def paired_table(content: Mapping) -> str:
  """BC-Aligner minus each strategy, per figure: mean [low, high], starred
  where the interval excludes zero."""
  lines = [f"| BC-Aligner minus | {' | '.join(HEADERS)} |",
           "|---|" + "---:|" * len(FIGURES)]
  for other, by_figure in content["paired"].items():
    cells = []
    for f in FIGURES:
      d, digits = by_figure[f], 4 if f == "recall50" else 2
      if d["low"] is None:
        cells.append(fmt(d["mean"], digits))
        continue
      star = " *" if d["excludes_zero"] else ""
      cells.append(f"{fmt(d['mean'], digits)} [{fmt(d['low'], digits)}, "
                   f"{fmt(d['high'], digits)}]{star}")
    lines.append(f"| {display_name(other)} | " + " | ".join(cells)
                 + " |")
  return "\n".join(lines)


def plot_seeds(reports: Sequence[Mapping], out_dir: str | os.PathLike,
               title: str = "") -> list[Path]:
  """The per-version plots of `bcjax.paper.plots`, each point the mean over seeds
  with its 95% interval as a band."""
  per_seed = [plots.curves(r["strategies"],
                           {s: v.get("alignment", [])
                            for s, v in r["strategies"].items()})
              for r in reports]
  means, bands = {}, {}
  for name in per_seed[0]:
    means[name], bands[name] = {}, {}
    for label in per_seed[0][name]:
      series = [c[name][label] for c in per_seed if label in c.get(name, {})]
      points = [intervals.interval(list(column)) for column in zip(*series)]
      means[name][label] = [p["mean"] for p in points]
      bands[name][label] = ([p["low"] for p in points],
                            [p["high"] for p in points])
  return plots.plot_curves(means, out_dir, title, bands)


def write_seeds_report(workdir: RunDir | str | os.PathLike,
                       seed_dirs: Sequence[RunDir]) -> tuple[dict, str, list]:
  """Writes the multi-seed report.json and plots into `workdir`.

  Args:
    workdir: the multi-seed run directory.
    seed_dirs: the seeds' run directories, each with its report written.

  Returns:
    (report.json's content, the interval table and the paired table, then
    the compatibility table when any, the plot paths).
  """
  run_dir = RunDir.of(workdir)
  reports = [read_json(d.report_path("report.json")) for d in seed_dirs]
  content = {"dataset": reports[0].get("dataset"),
             "preset": reports[0].get("preset"), **summarize_seeds(reports)}
  io.save_json(run_dir.report_path("report.json"), content)
  title = (f"{content['dataset']} ({content['preset']}), "
           f"{len(reports)} seeds")
  paths = plot_seeds(reports, run_dir.root, title)
  paths += plots.plot_compatibility(content["compatibility"], run_dir.root,
                                    title)
  table = interval_table(content)
  if content["paired"]:
    table += "\n\n" + paired_table(content)
  if content["compatibility"]:
    table += "\n\n" + report.compatibility_table(content["compatibility"])
  more_paths, more = retrieval_report.sections(
      content.get("legacy_retrieval"), content.get("legacy_retrieval_ceiling"),
      content.get("backfill"), run_dir.root, title)
  paths, table = paths + more_paths, table + more
  return content, table, paths

