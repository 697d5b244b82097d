"""Tests of the dataset statistics and the `launch.data_stats` command."""

import json
import pathlib
import subprocess
import sys

import pytest

from bcjax.data import make_splits
from bcjax.data.stats import VERSION_COLUMNS, data_stats, stats_table
from bcjax.data.synthetic import make_synthetic

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(*flags):
  return subprocess.run([sys.executable, "-m", "launch.data_stats", *flags],
                        cwd=REPO, capture_output=True, text=True, timeout=300)


def test_data_stats_matches_the_splits():
  graph = make_synthetic(3000, num_users=200, num_items=100)
  stats = data_stats(graph, (0.5, 0.75, 1.0))
  assert stats["num_interactions"] == 3000
  assert set(stats["attributes"]) == {"category", "brand"}
  splits = make_splits(graph, (0.5, 0.75, 1.0))
  assert [v["train_interactions"] for v in stats["versions"]] == [
      s.num_train for s in splits]
  assert [v["num_existing_users"] for v in stats["versions"]] == [
      s.num_existing_users for s in splits]
  json.dumps(stats)  # JSON-ready: plain Python numbers only.


def test_stats_table_is_aligned():
  stats = data_stats(make_synthetic(1000))
  lines = stats_table(stats).splitlines()
  rows = lines[lines.index("") + 1:]
  assert rows[0].split() == list(VERSION_COLUMNS)
  assert len(rows) == 6 and len({len(row) for row in rows}) == 1


def test_json_on_movielens():
  result = _run("--dataset=ml100k", "--format=json")
  assert result.returncode == 0, result.stderr
  stats = json.loads(result.stdout)
  assert list(stats) == ["dataset", "num_users", "num_items",
                         "num_interactions", "attributes", "versions"]
  assert (stats["num_users"], stats["num_items"],
          stats["num_interactions"]) == (943, 1682, 100000)
  assert stats["attributes"]["genre"] == 18
  assert [v["version"] for v in stats["versions"]] == [0, 1, 2, 3, 4]
  assert all(list(v) == list(VERSION_COLUMNS) for v in stats["versions"])
  assert stats["versions"][-1]["num_users"] == 943


def test_table_on_synthetic_with_times():
  result = _run("--dataset=synthetic", "--synthetic_interactions=500",
                "--times=0.5,1.0")
  assert result.returncode == 0, result.stderr
  assert "interactions  500" in result.stdout
  assert result.stdout.splitlines()[-1].split()[:3] == ["0", "0.5", "1.0"]


@pytest.mark.parametrize("flags, message", [
    (["--dataset=nope"], "unknown dataset 'nope'"),
    (["--dataset=amazon", "--amazon_dir=/absent/dir", "--category=Toys"],
     "/absent/dir"),
    (["--format=xml"], "--format"),
    (["--times=0.5,x"], "x"),
])
def test_errors_are_one_line_with_status_2(flags, message):
  result = _run(*flags)
  assert result.returncode == 2
  assert result.stdout == ""
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and message in lines[0], result.stderr
