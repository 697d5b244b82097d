"""The text benchmark's report over seeds: the interval table, the paired
table, the PNG plots and report.json / report.md.

Every figure is computed per seed (`benchmark.run_seed`) and reported as the
mean ± half-width of its 95% Student-t interval over the seeds
(`bcjax.util.intervals`); differences are paired per seed (the strategies of a
seed share its split).
"""

from __future__ import annotations

import os
import pathlib
from typing import Mapping, Sequence

import numpy as np

from bcjax.paper import plots
from bcjax.text.benchmark import STRATEGIES
from bcjax.util import intervals, io
from bcjax.util.numbers import fmt, percent_change

# figure -> (column header, decimals).
COLUMNS = {
    "intended": ("R@10 re-embedded (v2)", 4),
    "frozen": ("frozen-index R@10 (v2)", 4),
    "frozen_pct": ("% of ceiling", 1),
    "v0_index_pct": ("v0 index alone, v0 movies' queries, % of ceiling", 1),
    "consumer_pct": ("consumer AUC vs v0 %", 2),
    "alignment": ("alignment error", 3),
}
# The paired table's reference in each family: least squares post hoc.
REFERENCES = {"encoders": "enc-lstsq", "heads": "heads-lstsq"}
PAIRED = ("frozen", "v0_index_pct", "consumer_pct", "alignment")
PLOTS = ("frozen_pct.png", "frozen_by_version.png",
         "consumer_vs_alignment.png")


def per_seed_figures(seeds: Sequence[Mapping]) -> dict[str, list[dict]]:
  """strategy -> one dict of `COLUMNS` figures per seed."""
  out = {}
  for name in STRATEGIES:
    rows = []
    for seed in seeds:
      r = seed[name]
      rows.append({"intended": r["intended"], "frozen": r["frozen"],
                   "frozen_pct": r["frozen_pct"],
                   "v0_index_pct": r["v0_index_pct"],
                   "consumer_pct": percent_change(r["consumer_auc"],
                                                  r["consumer_v0_auc"]),
                   "alignment": r["alignment"]})
    out[name] = rows
  return out


def summarize(seeds: Sequence[Mapping]) -> dict:
  """`{"intervals": strategy -> figure -> interval, "paired": strategy ->
  figure -> paired interval (strategy minus its family's `REFERENCES`)}`."""
  figures = per_seed_figures(seeds)
  summary = {"intervals": {s: intervals.by_figure(rows, list(COLUMNS))
                           for s, rows in figures.items()},
             "paired": {}}
  for s, rows in figures.items():
    reference = REFERENCES[STRATEGIES[s][0]]
    if s != reference:
      summary["paired"][s] = {
          f: intervals.paired([r[f] for r in rows],
                              [r[f] for r in figures[reference]])
          for f in PAIRED}
  return summary


def _cell(found: Mapping, digits: int) -> str:
  if found["mean"] is None:
    return "n/a"
  if found["low"] is None:
    return fmt(found["mean"], digits)
  return f"{fmt(found['mean'], digits)} ± " \
         f"{fmt((found['high'] - found['low']) / 2, digits)}"


def interval_table(summary: Mapping) -> str:
  """strategy rows, `COLUMNS` figures as mean ± half-width."""
  lines = ["| strategy | " + " | ".join(h for h, _ in COLUMNS.values()) + " |",
           "|---|" + "---:|" * len(COLUMNS)]
  for s, found in summary["intervals"].items():
    cells = [_cell(found[f], d) for f, (_, d) in COLUMNS.items()]
    lines.append(f"| {STRATEGIES[s][1]} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def paired_table(summary: Mapping) -> str:
  """Each strategy minus its family's least squares: mean [low, high],
  starred where the interval excludes zero."""
  lines = ["| strategy | minus | " + " | ".join(COLUMNS[f][0] for f in PAIRED)
           + " |", "|---|---|" + "---:|" * len(PAIRED)]
  for s, found in summary["paired"].items():
    cells = []
    for f in PAIRED:
      d, digits = found[f], COLUMNS[f][1]
      if d["mean"] is None or d["low"] is None:
        cells.append(fmt(d["mean"], digits))
        continue
      star = " *" if d["excludes_zero"] else ""
      cells.append(f"{fmt(d['mean'], digits)} [{fmt(d['low'], digits)}, "
                   f"{fmt(d['high'], digits)}]{star}")
    reference = STRATEGIES[REFERENCES[STRATEGIES[s][0]]][1]
    lines.append(f"| {STRATEGIES[s][1]} | {reference} | " + " | ".join(cells)
                 + " |")
  return "\n".join(lines)


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def plot(seeds: Sequence[Mapping], summary: Mapping,
         out_dir: str | os.PathLike) -> list[pathlib.Path]:
  """The three PNGs (`PLOTS`): frozen-index R@10 as % of the ceiling with
  its interval, frozen-index R@10 per version (mean over seeds), and the
  consumer's change against the alignment error."""
  plt, out_dir = _pyplot(), pathlib.Path(out_dir)
  names = list(STRATEGIES)
  labels = [STRATEGIES[s][1] for s in names]
  paths = [out_dir / p for p in PLOTS]
  found = [summary["intervals"][s]["frozen_pct"] for s in names]
  means = [f["mean"] for f in found]
  errors = [0.0 if f["low"] is None else (f["high"] - f["low"]) / 2
            for f in found]
  fig, ax = plt.subplots(figsize=(8, 4.5))
  ax.barh(labels, means, xerr=errors, color="tab:blue", alpha=0.8)
  ax.axvline(100.0, color="black", lw=0.8)
  ax.set_xlabel("frozen-index Recall@10 at v2, % of re-embedding (95% CI)")
  ax.invert_yaxis()
  plots.save_figure(fig, paths[0])
  plt.close(fig)
  fig, ax = plt.subplots(figsize=(7, 4.5))
  colours = plt.get_cmap("tab20").colors
  for i, (s, label) in enumerate(zip(names, labels)):
    curve = np.mean([seed[s]["frozen_by_version"] for seed in seeds], axis=0)
    ax.plot(range(len(curve)), curve, marker="o", label=label,
            color=colours[i % len(colours)],
            linestyle="--" if STRATEGIES[s][0] == "heads" else "-")
  ax.set_xlabel("version")
  ax.set_ylabel("frozen-index Recall@10 (mean over seeds)")
  ax.set_xticks(range(len(curve)))
  ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
  plots.save_figure(fig, paths[1])
  plt.close(fig)
  fig, ax = plt.subplots(figsize=(6, 4.5))
  for s, label in zip(names, labels):
    x = summary["intervals"][s]["alignment"]["mean"]
    y = summary["intervals"][s]["consumer_pct"]["mean"]
    if x is not None and y is not None:
      ax.scatter([x], [y], label=label,
                 marker="s" if STRATEGIES[s][0] == "heads" else "o")
  ax.set_xlabel("alignment error (mean L2 to v0's vector)")
  ax.set_ylabel("consumer ROC-AUC vs v0 (%)")
  ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
  plots.save_figure(fig, paths[2])
  plt.close(fig)
  return paths


def render(summary: Mapping, header: str) -> str:
  """The report's Markdown: a header, the interval and paired tables."""
  return (f"{header}\n\n{interval_table(summary)}\n\nPaired over seeds "
          "(each strategy minus its family's least squares; * the 95% "
          f"interval excludes zero):\n\n{paired_table(summary)}\n")


def write(out_dir: str | os.PathLike, seeds: Sequence[Mapping],
          meta: Mapping, header: str) -> str:
  """Writes report.json, report.md and the plots into `out_dir`; returns
  the Markdown."""
  out_dir = pathlib.Path(out_dir)
  io.make_dir(out_dir)
  summary = summarize(seeds)
  text = render(summary, header)
  io.save_json(out_dir / "report.json", {**meta, "per_seed": list(seeds),
                                         **summary})
  io.save_bytes(out_dir / "report.md", text.encode())
  plot(seeds, summary, out_dir)
  return text
