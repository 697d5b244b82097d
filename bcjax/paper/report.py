"""The report of a finished run (method §8): table, JSON, CSV and plots.

Reads the run directory (`bcjax.runs.rundir`: the config, every version's metrics
and BC embedding, the consumers' AUCs, the compatibility matrices, the
legacy retrieval and the backfill curves where present) and writes
`report.json`, `report.csv` and PNG plots into it, every file atomically.
The arithmetic (`summarize`, `compatibility.summarize`) is a pure function of
per-version numbers, tested on its own; the plots are `bcjax.paper.plots`'.
"""

from __future__ import annotations

import csv
import io as _stdio
import os
from pathlib import Path
from typing import Mapping, Sequence

from bcjax.core import metrics
from bcjax.evaluation import compatibility, curves
from bcjax.paper import retrieval_report
from bcjax.paper.plots import PLOTS, plot, plot_compatibility
from bcjax.runs.rundir import RunDir, read_json
from bcjax.runs.strategies import FIX_M0, NOBC, STRATEGIES, display_name
from bcjax.util import io
from bcjax.util.numbers import finite_mean, fmt, percent_change


def task_version_means(auc: Mapping[str, Mapping[str, Sequence]]
                       ) -> dict[str, dict[str, list]]:
  """task -> strategy -> per version: the mean AUC over seeds, or None."""
  return {task: {s: [None if seeds is None else finite_mean(seeds)
                     for seeds in per_version]
                 for s, per_version in by_strategy.items()}
          for task, by_strategy in auc.items()}


def unintended_score(auc: Mapping[str, Mapping[str, Sequence]],
                     strategy: str) -> float | None:
  """Mean over tasks of the mean over scored versions and seeds of ROC-AUC."""
  per_task = [finite_mean([a for a in by_strategy[strategy] if a is not None])
              for by_strategy in auc.values() if strategy in by_strategy]
  return finite_mean([p for p in per_task if p is not None])


def summarize(recall50: Mapping[str, Sequence[float]],
              auc: Mapping[str, Mapping[str, Sequence]],
              alignment: Mapping[str, Sequence[float]]) -> dict[str, dict]:
  """The method §8 numbers of every strategy.

  Args:
    recall50: strategy -> Recall@50 per version.
    auc: task -> strategy -> per version: per-seed AUCs (None: not scored).
    alignment: strategy -> alignment error per version.

  Returns:
    strategy -> {"recall50", "intended_pct", "unintended_pct", "total_pct",
    "alignment_error" (the mean over versions, version 0 included),
    "alignment" (per version), "auc": task -> per-version mean over seeds};
    a percentage is None when its reference strategy is missing.
  """
  mean_recall = {s: finite_mean(r) for s, r in recall50.items()}
  fix_score = unintended_score(auc, FIX_M0)
  means = task_version_means(auc)
  out = {}
  for s in recall50:
    intended = percent_change(mean_recall[s], mean_recall.get(NOBC))
    unintended = percent_change(unintended_score(auc, s), fix_score)
    total = (None if intended is None or unintended is None
             else intended + unintended)
    out[s] = {"recall50": [float(r) for r in recall50[s]],
              "intended_pct": intended, "unintended_pct": unintended,
              "total_pct": total,
              "alignment_error": finite_mean(alignment.get(s, [])),
              "alignment": [float(a) for a in alignment.get(s, [])],
              "auc": {task: by_strategy[s] for task, by_strategy in means.items()
                      if s in by_strategy}}
  return out


# Reading a run.


def completed_strategies(workdir: RunDir | str | os.PathLike,
                         num_versions: int) -> list[str]:
  """The strategies (in `STRATEGIES` order) with every version complete."""
  return RunDir.of(workdir).complete_in(STRATEGIES, num_versions)


def read_recall50(workdir: RunDir | str | os.PathLike,
                  strategies: Sequence[str],
                  num_versions: int) -> dict[str, list[float]]:
  run_dir = RunDir.of(workdir)
  return {s: [run_dir.metrics(s, k)["best"]["recall@50"]
              for k in range(num_versions)] for s in strategies}


def selected_epochs(workdir: RunDir | str | os.PathLike,
                    strategies: Sequence[str],
                    num_versions: int) -> dict[str, list[int]]:
  """strategy -> per version: the epoch whose model (post-hoc: whose B_k)
  was kept (0: not trained by gradient there)."""
  run_dir = RunDir.of(workdir)
  out = {}
  for s in strategies:
    records = [run_dir.metrics(s, k) for k in range(num_versions)]
    out[s] = [int(r.get("alignment_epoch", r["best_epoch"])) for r in records]
  return out


def alignment_errors(workdir: RunDir | str | os.PathLike,
                     strategies: Sequence[str],
                     num_versions: int) -> dict[str, list[float]]:
  """strategy -> per version: mean L2 distance of its BC embedding to fix-m0's.

  Version 0 is included (where every strategy shares nobc's model, so the
  distance is 0), as in the paper's released analysis.
  """
  run_dir = RunDir.of(workdir)
  out = {}
  for s in strategies:
    out[s] = [float(metrics.alignment_error(*run_dir.bc_tables(s, k),
                                            *run_dir.bc_tables(FIX_M0, k)))
              for k in range(num_versions)]
  return out


# Writing.


def markdown_table(strategies: Mapping[str, dict]) -> str:
  """Strategy, mean R@50, intended %, unintended %, total %, alignment error."""
  lines = ["| strategy | mean R@50 | intended % | unintended % | total % | "
           "alignment error |", "|---|---:|---:|---:|---:|---:|"]
  for s, r in strategies.items():
    name = display_name(s, markdown=True)
    lines.append(f"| {name} | {fmt(finite_mean(r['recall50']), 4)} | "
                 f"{fmt(r['intended_pct'])} | {fmt(r['unintended_pct'])} | "
                 f"{fmt(r['total_pct'])} | {fmt(r['alignment_error'])} |")
  return "\n".join(lines)


def compatibility_table(summary: Mapping[str, dict]) -> str:
  """Strategy, mean compatibility AUC, then each task's mean (beyond the paper:
  consumers trained at every version j, scored at every later k)."""
  tasks = list(dict.fromkeys(t for r in summary.values() for t in r["tasks"]))
  lines = ["| strategy | mean compatibility AUC | " + " | ".join(tasks) + " |",
           "|---|---:|" + "---:|" * len(tasks)]
  for s, r in summary.items():
    name = display_name(s, markdown=True)
    cells = [fmt(r["tasks"][t]["mean"], 4) if t in r["tasks"] else "n/a"
             for t in tasks]
    lines.append(f"| {name} | {fmt(r['mean'], 4)} | " + " | ".join(cells)
                 + " |")
  return "\n".join(lines)


def csv_text(strategies: Mapping[str, dict], num_versions: int) -> str:
  out = _stdio.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(["strategy", "name", "mean_recall50", "intended_pct",
                   "unintended_pct", "total_pct", "alignment_error",
                   *[f"recall50_v{k}" for k in range(num_versions)]])
  value = lambda v: "" if v is None else repr(float(v))
  for s, r in strategies.items():
    writer.writerow([s, display_name(s),
                     value(finite_mean(r["recall50"])),
                     value(r["intended_pct"]), value(r["unintended_pct"]),
                     value(r["total_pct"]), value(r["alignment_error"]),
                     *[value(v) for v in r["recall50"]]])
  return out.getvalue()


def read_report(workdir: RunDir | str | os.PathLike
                ) -> tuple[dict, str, list[Path]]:
  """Reads the report a finished run already wrote, without rewriting it.

  Returns:
    (report.json's content, its markdown table (followed by the
    compatibility table when the report has one), the paths of its PNG plots
    that exist in the run directory).

  Raises:
    FileNotFoundError: if the run has no report.json (`write_report` makes
      one from a run whose strategies are complete).
  """
  run_dir = RunDir.of(workdir)
  path = run_dir.report_path("report.json")
  if not path.exists():
    raise FileNotFoundError(f"{path} does not exist: no finished run there "
                            "(report.write_report(workdir) writes it)")
  content = read_json(path)
  table = markdown_table(content["strategies"])
  compat = content.get("compatibility") or {}
  if compat:
    table += "\n\n" + compatibility_table(compat)
  if content.get("legacy_retrieval"):
    table += "\n\n" + retrieval_report.table(
        content["legacy_retrieval"], content["legacy_retrieval_ceiling"])
  if content.get("backfill"):
    table += "\n\n" + retrieval_report.backfill_table(
        retrieval_report.backfill_over_seeds([content["backfill"]]))
  names = (list(PLOTS) + [f"compatibility_{s}.png" for s in compat]
           + [retrieval_report.PLOT, retrieval_report.BACKFILL_PLOT])
  paths = [run_dir.report_path(n) for n in names]
  return content, table, [p for p in paths if p.exists()]


def comparison_table(reports: Mapping[str, Mapping]) -> str:
  """The method §8 numbers of several runs, strategy by strategy.

  Args:
    reports: run label -> its report.json content (`read_report`).

  Returns:
    A markdown table with one row per (strategy, run) for the strategies
    every run has, in the first run's order, plus each run's mean
    compatibility AUC ("n/a" where a run has no matrix for the strategy).
  """
  labels = list(reports)
  runs = [reports[label] for label in labels]
  common = [s for s in runs[0]["strategies"] if all(s in r["strategies"]
                                                    for r in runs)] if runs else []
  lines = ["| strategy | run | mean R@50 | intended % | unintended % | "
           "total % | alignment error | mean compatibility AUC |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
  for s in common:
    name = display_name(s, markdown=True)
    for label, run in zip(labels, runs):
      r = run["strategies"][s]
      compat = (run.get("compatibility") or {}).get(s, {}).get("mean")
      recall = fmt(finite_mean(r["recall50"]), 4)
      lines.append(f"| {name} | {label} | {recall} | "
                   f"{fmt(r['intended_pct'])} | {fmt(r['unintended_pct'])} | "
                   f"{fmt(r['total_pct'])} | {fmt(r['alignment_error'])} | "
                   f"{fmt(compat, 4)} |")
  return "\n".join(lines)


def write_report(workdir: RunDir | str | os.PathLike,
                 strategies: Sequence[str] | None = None
                 ) -> tuple[dict, str, list[Path]]:
  """Builds and writes the report of a finished run.

  Args:
    workdir: the run directory.
    strategies: default: every strategy with all versions complete.

  Returns:
    (report.json's content, the markdown table (followed by the
    compatibility table when any matrix is saved), the plot paths).
  """
  run_dir = RunDir.of(workdir)
  config = run_dir.config()
  num_versions = len(config["times"]) - 1
  strategies = list(strategies or completed_strategies(run_dir, num_versions))
  auc = read_json(run_dir.auc_path) if run_dir.auc_path.exists() else {}
  auc = {t: {s: v for s, v in by.items() if s in strategies}
         for t, by in auc.items()}
  alignment = (alignment_errors(run_dir, strategies, num_versions)
               if FIX_M0 in strategies else {})
  summary = summarize(read_recall50(run_dir, strategies, num_versions), auc,
                      alignment)
  for s, epochs in selected_epochs(run_dir, strategies, num_versions).items():
    summary[s]["selected_epoch"] = epochs
  compat = compatibility.summarize(
      compatibility.load_results(run_dir, strategies))
  report = {"dataset": config.get("dataset"), "preset": config.get("preset"),
            "seed": config.get("seed"), "strategies": summary,
            "compatibility": compat}
  if run_dir.retrieval_path.exists():
    measured = read_json(run_dir.retrieval_path)
    measured["strategies"] = {s: r for s, r in measured["strategies"].items()
                              if s in strategies}
    report["legacy_retrieval"] = retrieval_report.summarize(measured)
    report["legacy_retrieval_ceiling"] = measured["ceiling"]
  if run_dir.backfill_path.exists():
    measured = read_json(run_dir.backfill_path)
    measured["strategies"] = {s: r for s, r in measured["strategies"].items()
                              if s in strategies}
    report["backfill"] = retrieval_report.summarize_backfill(measured)
  io.save_json(run_dir.report_path("report.json"), report)
  io.save_bytes(run_dir.report_path("report.csv"),
                csv_text(summary, num_versions).encode())
  curves.write_curves(run_dir, strategies, num_versions)
  title = f"{report['dataset']} ({report['preset']})"
  paths = plot(summary, alignment, run_dir.root, title) if summary else []
  paths += plot_compatibility(compat, run_dir.root, title)
  table = markdown_table(summary)
  if compat:
    table += "\n\n" + compatibility_table(compat)
  more_paths, more = retrieval_report.sections(
      report.get("legacy_retrieval"), report.get("legacy_retrieval_ceiling"),
      report.get("backfill") and retrieval_report.backfill_over_seeds(
          [report["backfill"]]), run_dir.root, title)
  paths, table = paths + more_paths, table + more
  return report, table, paths
