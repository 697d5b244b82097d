"""The report's PNG plots: per-version curves of every strategy (with a band
over training seeds when there are several) and the compatibility heat-maps.

`curves` is the arithmetic (a pure function of a report's per-strategy
numbers); `plot_curves` draws it, `plot` does both for one run.
"""

from __future__ import annotations

import io as _stdio
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from bcjax.runs.strategies import BC_ALIGNER_NAME, FIX_M0, NOBC, display_name
from bcjax.util import io
from bcjax.util.numbers import finite_mean, fmt, percent_change

PLOTS = ("recall50_vs_nobc.png", "auc_vs_fixm0.png", "alignment_error.png",
         "bc_aligner_auc.png")
YLABELS = ("Recall@50 vs No-BC (%)", "ROC-AUC vs Fix-M0, mean over tasks (%)",
           "alignment error (mean L2 to Fix-M0)",
           f"ROC-AUC of {display_name(BC_ALIGNER_NAME)}")


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def save_figure(figure, path: Path) -> None:
  """A figure as PNG, written atomically."""
  buffer = _stdio.BytesIO()
  figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
  io.save_bytes(path, buffer.getvalue())


def curves(strategies: Mapping[str, dict],
           alignment: Mapping[str, Sequence[float]]) -> dict[str, dict]:
  """plot file -> curve label -> one value (or None) per version.

  Args:
    strategies: strategy -> `report.summarize`'s record (recall50 and auc
      per version).
    alignment: strategy -> alignment error per version.
  """
  num_versions = len(next(iter(strategies.values()))["recall50"])
  nobc = strategies.get(NOBC, {}).get("recall50")

  def task_mean(s: str) -> list:
    aucs = strategies[s]["auc"].values()
    return [finite_mean([a[k] for a in aucs]) for k in range(num_versions)]

  fix = task_mean(FIX_M0) if FIX_M0 in strategies else [None] * num_versions
  out = {
      PLOTS[0]: {s: ([percent_change(r, b) for r, b in zip(v["recall50"], nobc)]
                     if nobc else [None] * num_versions)
                 for s, v in strategies.items()},
      PLOTS[1]: {s: [percent_change(a, b) for a, b in zip(task_mean(s), fix)]
                 for s in strategies},
      PLOTS[2]: {s: list(alignment[s]) for s in strategies if s in alignment}}
  if BC_ALIGNER_NAME in strategies:
    out[PLOTS[3]] = dict(strategies[BC_ALIGNER_NAME]["auc"])
  return out


def plot_versions(by_label: Mapping[str, Sequence], versions: Sequence[int],
                  path: Path, ylabel: str, title: str = "",
                  bands: Mapping[str, tuple] | None = None) -> None:
  """One PNG of per-version curves, one line per strategy (BC-Aligner bold).

  Args:
    by_label: curve label (a strategy) -> one value (or None) per version.
    versions: the x values, one per value.
    path: the PNG written.
    ylabel, title: the axis label and title.
    bands: curve label -> (low, high) per version, drawn shaded.
  """
  plt = _pyplot()
  as_array = lambda ys: np.asarray([np.nan if y is None else y for y in ys],
                                   np.float64)
  figure, axes = plt.subplots(figsize=(7, 4.5))
  for s, ys in by_label.items():
    line, = axes.plot(versions, as_array(ys), "o-",
                      label=display_name(s),
                      linewidth=2.5 if s == BC_ALIGNER_NAME else 1.2)
    band = (bands or {}).get(s)
    if band is not None:
      axes.fill_between(versions, as_array(band[0]), as_array(band[1]),
                        color=line.get_color(), alpha=0.15, linewidth=0)
  axes.set_xticks(versions)
  axes.set_xlabel("version")
  axes.set_ylabel(ylabel)
  axes.set_title(title)
  axes.grid(alpha=0.3)
  if by_label:  # A run without the strategies of this plot has no legend.
    axes.legend(fontsize=7)
  save_figure(figure, path)
  plt.close(figure)


def plot_curves(all_curves: Mapping[str, Mapping[str, Sequence]],
                out_dir: str | os.PathLike, title: str = "",
                bands: Mapping[str, Mapping[str, tuple]] | None = None
                ) -> list[Path]:
  """Draws `curves`' plots into `out_dir`; returns their paths.

  Args:
    all_curves: from `curves` (or their means over seeds).
    out_dir: where the PNGs go.
    title: every plot's title.
    bands: plot file -> curve label -> (low, high) per version, drawn as a
      shaded band (a 95% interval over seeds).
  """
  out_dir, paths = Path(out_dir), []
  for name, by_label in all_curves.items():
    num_versions = max((len(ys) for ys in by_label.values()), default=0)
    plot_versions(by_label, np.arange(num_versions), out_dir / name,
                  YLABELS[PLOTS.index(name)], title, (bands or {}).get(name))
    paths.append(out_dir / name)
  return paths


def plot(strategies: Mapping[str, dict], alignment: Mapping[str, Sequence[float]],
         out_dir: str | os.PathLike, title: str = "") -> list[Path]:
  """The four PNG plots of one run's report; returns their paths."""
  return plot_curves(curves(strategies, alignment), out_dir, title)


def _matrix(rows) -> np.ndarray:
  return np.asarray([[np.nan if v is None else v for v in row] for row in rows],
                    np.float64)


def plot_compatibility(summary: Mapping[str, dict], out_dir: str | os.PathLike,
                       title: str = "") -> list[Path]:
  """`compatibility_<strategy>.png`: one heat-map per task and their
  entry-wise mean (over the tasks defining the entry), trained-at version j
  down, scored-at version k across; one colour scale for every strategy."""
  plt = _pyplot()
  out_dir, paths = Path(out_dir), []
  matrices = {s: {t: _matrix(r["matrix"]) for t, r in v["tasks"].items()}
              for s, v in summary.items()}
  finite = np.concatenate([m[np.isfinite(m)] for by_task in matrices.values()
                           for m in by_task.values()] or [np.zeros(0)])
  if not finite.size:
    return paths
  low, high = float(finite.min()), float(finite.max())
  if high - low < 1e-6:
    low, high = low - 0.01, high + 0.01
  for s, by_task in matrices.items():
    if not by_task:
      continue
    stacked = np.stack(list(by_task.values()))
    defined = np.isfinite(stacked)
    mean = np.where(defined.any(0), np.where(defined, stacked, 0).sum(0)
                    / np.maximum(defined.sum(0), 1), np.nan)
    panels = {**by_task, "mean over tasks": mean}
    figure, axes = plt.subplots(1, len(panels),
                                figsize=(2.6 * len(panels) + 1, 3.0),
                                squeeze=False)
    for ax, (task, m) in zip(axes[0], panels.items()):
      image = ax.imshow(np.ma.masked_invalid(m), vmin=low, vmax=high,
                        cmap="viridis")
      for (j, k), v in np.ndenumerate(m):
        if np.isfinite(v):
          ax.text(k, j, f"{v:.2f}", ha="center", va="center", fontsize=6,
                  color="white" if v < (low + high) / 2 else "black")
      ax.set_title(task, fontsize=7)
      ax.set_xticks(range(m.shape[1]))
      ax.set_yticks(range(m.shape[0]))
      ax.set_xlabel("scored at version k", fontsize=7)
    axes[0][0].set_ylabel("trained at version j", fontsize=7)
    figure.colorbar(image, ax=list(axes[0]), shrink=0.8, label="ROC-AUC")
    figure.suptitle(f"{title}: compatibility of {display_name(s)} "
                    f"(mean {fmt(summary[s]['mean'], 4)})", fontsize=8)
    path = out_dir / f"compatibility_{s}.png"
    save_figure(figure, path)
    plt.close(figure)
    paths.append(path)
  return paths


def plot_budget_curves(panels: Mapping[str, Mapping[str, Mapping[str, tuple]]],
                       budgets: Sequence[float], path: Path,
                       title: str = "") -> None:
  """One PNG of curves against a budget: a row of panels per metric, a
  column per group (a strategy), a line per label (a policy) with a shaded
  band where its interval is known.

  Args:
    panels: metric (the row's y label) -> group (the column's title) ->
      label -> (mean, low, high), one value (or None) per budget each.
    budgets: the x values.
    path: the PNG written.
    title: the figure's title.
  """
  plt = _pyplot()
  as_array = lambda ys: np.asarray([np.nan if y is None else y for y in ys],
                                   np.float64)
  rows = list(panels)
  columns = list(dict.fromkeys(g for by_group in panels.values()
                               for g in by_group))
  figure, axes = plt.subplots(len(rows), len(columns), squeeze=False,
                              figsize=(4.5 * len(columns), 3.4 * len(rows)),
                              layout="constrained")
  x = np.asarray(budgets, np.float64)
  for i, metric in enumerate(rows):
    for j, group in enumerate(columns):
      ax = axes[i][j]
      for label, (mean, low, high) in panels[metric].get(group, {}).items():
        line, = ax.plot(x, as_array(mean), "o-", label=label, markersize=3)
        ax.fill_between(x, as_array(low), as_array(high),
                        color=line.get_color(), alpha=0.15, linewidth=0)
      if i == 0:
        ax.set_title(group, fontsize=8)
      if i == len(rows) - 1:
        ax.set_xlabel("budget (fraction of old items re-embedded)", fontsize=7)
      ax.set_ylabel(metric, fontsize=7)
      ax.grid(alpha=0.3)
      ax.legend(fontsize=6)
  figure.suptitle(title, fontsize=9)
  save_figure(figure, path)
  plt.close(figure)
