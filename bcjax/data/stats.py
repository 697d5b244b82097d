"""Summary statistics of a dataset and its versions, as a dict or a table."""

from __future__ import annotations

from typing import Any, Sequence

from bcjax.data.graph import DynamicGraph
from bcjax.data.splits import PAPER_TIMES, make_splits

VERSION_COLUMNS = ("version", "time_train", "time_val", "num_users",
                   "num_items", "num_existing_users", "train_interactions",
                   "val_interactions")


def data_stats(graph: DynamicGraph,
               times: Sequence[float] = PAPER_TIMES) -> dict[str, Any]:
  """The sizes of a graph, its attribute kinds and every version's split.

  Args:
    graph: the canonical graph.
    times: the version times (see `make_splits`).

  Returns:
    A JSON-ready dict: dataset, num_users, num_items, num_interactions,
    attributes (kind -> number of values) and versions (one dict per version
    with the keys `VERSION_COLUMNS`).

  Raises:
    DataError: a bad time list.
  """
  versions = [
      dict(zip(VERSION_COLUMNS, (
          s.version, s.time_train, s.time_val, s.num_users, s.num_items,
          s.num_existing_users, s.num_train, s.num_val)))
      for s in make_splits(graph, times)
  ]
  return {
      "dataset": graph.name,
      "num_users": graph.num_users,
      "num_items": graph.num_items,
      "num_interactions": graph.num_interactions,
      "attributes": {k: a.num_values for k, a in graph.attributes.items()},
      "versions": versions,
  }


def stats_table(stats: dict[str, Any]) -> str:
  """Formats `data_stats`'s dict as aligned plain text.

  Args:
    stats: the dict `data_stats` returns.

  Returns:
    The graph's sizes, then one row per version (no trailing newline).
  """
  attributes = ", ".join(f"{k} {n}" for k, n in stats["attributes"].items())
  lines = [
      f"dataset       {stats['dataset']}",
      f"users         {stats['num_users']}",
      f"items         {stats['num_items']}",
      f"interactions  {stats['num_interactions']}",
      f"attributes    {attributes or '-'}",
      "",
  ]
  rows = [VERSION_COLUMNS] + [
      tuple(str(v[c]) for c in VERSION_COLUMNS) for v in stats["versions"]]
  widths = [max(len(cell) for cell in column) for column in zip(*rows)]
  lines += ["  ".join(cell.rjust(w) for cell, w in zip(row, widths))
            for row in rows]
  return "\n".join(lines)
