"""Tests of the report arithmetic and files, and the end-to-end reproduce job."""

import csv
import json
import os
from pathlib import Path
import subprocess
import sys
import time

import numpy as np
import pytest

from bcjax.paper import report
from bcjax.runs.strategies import STRATEGIES
from bcjax.util import io

ROOT = Path(__file__).resolve().parents[1]
BC = "joint-lin-mloss"

RECALL50 = {"fix-m0": [0.15, 0.15], "nobc": [0.2, 0.4], BC: [0.3, 0.24]}
AUC = {  # task -> strategy -> per version: per-seed AUCs (None: not scored)
    "t1": {"fix-m0": [None, [0.8, 0.6]], "nobc": [None, [0.5, 0.5]],
           BC: [None, [0.7, 0.7]]},
    "t2": {"fix-m0": [None, [0.9, 0.9]], "nobc": [None, [0.6, 0.8]],
           BC: [None, [0.8, 0.8]]},
}
ALIGNMENT = {"fix-m0": [0.0, 0.0], "nobc": [0.0, 2.0], BC: [0.0, 0.5]}


def test_summarize_by_hand():
  out = report.summarize(RECALL50, AUC, ALIGNMENT)
  # Mean R@50: fix 0.15, nobc 0.3, BC 0.27 -> -50 %, 0 %, -10 %.
  # Unintended: fix (0.7 + 0.9) / 2 = 0.8; nobc (0.5 + 0.7) / 2 = 0.6 -> -25 %;
  # BC (0.7 + 0.8) / 2 = 0.75 -> -6.25 %.
  expected = {"fix-m0": (-50.0, 0.0, -50.0, 0.0),
              "nobc": (0.0, -25.0, -25.0, 1.0),
              BC: (-10.0, -6.25, -16.25, 0.25)}
  for s, (intended, unintended, total, alignment) in expected.items():
    r = out[s]
    assert r["intended_pct"] == pytest.approx(intended)
    assert r["unintended_pct"] == pytest.approx(unintended)
    assert r["total_pct"] == pytest.approx(total)
    assert r["alignment_error"] == pytest.approx(alignment)
    assert r["recall50"] == RECALL50[s]
  assert out[BC]["auc"]["t1"] == [None, pytest.approx(0.7)]
  assert out["nobc"]["auc"]["t2"] == [None, pytest.approx(0.7)]


def test_summarize_without_references():
  out = report.summarize({BC: [0.3, 0.24]}, {"t1": {BC: AUC["t1"][BC]}}, {})
  r = out[BC]
  assert r["intended_pct"] is r["unintended_pct"] is r["total_pct"] is None
  assert r["alignment_error"] is None
  table = report.markdown_table(out)
  assert "**Joint-Lin-MLoss (BC-Aligner)**" in table and "n/a" in table


def test_nan_and_none_seeds_are_skipped():
  auc = {"t": {"fix-m0": [[0.5, float("nan")], None, [None, 0.7]]}}
  assert report.unintended_score(auc, "fix-m0") == pytest.approx(0.6)


def _fake_run(root: Path) -> None:
  """Three strategies, two versions; U = I = 2 rows of 2 dims."""
  io.save_json(root / "config.json", {"dataset": "toy", "preset": "test",
                                       "seed": 3, "times": [0.5, 0.7, 1.0]})
  for s, recalls in RECALL50.items():
    for k, r in enumerate(recalls):
      path = root / s / f"v{k}"
      path.mkdir(parents=True)
      users = np.zeros((2, 2), np.float32)
      if s == "nobc" and k == 1:
        users[:] = [3.0, 4.0]   # distance 5 on 2 of 4 rows: 2.5
      io.save_npy(path / "bc_users.npy", users)
      io.save_npy(path / "bc_items.npy", np.zeros((2, 2), np.float32))
      io.save_json(path / "metrics.json", {"best": {"recall@50": r},
                                           "best_epoch": 2 * k})
  (root / "consumers").mkdir()
  io.save_json(root / "consumers" / "auc.json", AUC)


def test_write_report(tmp_path):
  _fake_run(tmp_path)
  content, table, plots = report.write_report(tmp_path)
  assert content == json.loads((tmp_path / "report.json").read_text())
  assert list(content) == ["dataset", "preset", "seed", "strategies",
                           "compatibility"]
  assert content["compatibility"] == {}  # no matrices saved
  assert (content["dataset"], content["preset"], content["seed"]) == ("toy", "test", 3)
  assert list(content["strategies"]) == ["fix-m0", "nobc", BC]  # STRATEGIES order
  for r in content["strategies"].values():
    assert set(r) == {"recall50", "intended_pct", "unintended_pct", "total_pct",
                      "alignment_error", "alignment", "auc", "selected_epoch"}
    assert r["selected_epoch"] == [0, 2]
  nobc = content["strategies"]["nobc"]
  assert nobc["alignment_error"] == pytest.approx(1.25)  # (0 + 2.5) / 2
  assert nobc["alignment"] == pytest.approx([0.0, 2.5])
  assert nobc["unintended_pct"] == pytest.approx(-25.0)
  assert content["strategies"][BC]["intended_pct"] == pytest.approx(-10.0)

  rows = list(csv.DictReader((tmp_path / "report.csv").open()))
  assert [r["strategy"] for r in rows] == ["fix-m0", "nobc", BC]
  assert float(rows[2]["total_pct"]) == pytest.approx(-16.25)
  assert float(rows[1]["recall50_v1"]) == pytest.approx(0.4)

  assert table.splitlines()[0].startswith("| strategy | mean R@50 |")
  assert "| No-BC | 0.3000 | 0.00 | -25.00 | -25.00 | 1.25 |" in table
  assert [p.name for p in plots] == list(report.PLOTS)
  for p in plots:
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert not list(tmp_path.glob(".*.tmp"))  # atomic writes left nothing


def test_read_report_returns_what_write_report_wrote(tmp_path):
  with pytest.raises(FileNotFoundError, match="report.json"):
    report.read_report(tmp_path)
  _fake_run(tmp_path)
  written = report.write_report(tmp_path)
  before = (tmp_path / "report.json").stat().st_mtime_ns
  assert report.read_report(tmp_path) == written
  assert (tmp_path / "report.json").stat().st_mtime_ns == before  # not rewritten


def test_the_report_has_the_backfill_areas(tmp_path):
  """backfill.json's curves as areas (by hand: trapezoids over budgets 0,
  0.5, 1), the table and the plot; strategies outside the report dropped."""
  _fake_run(tmp_path)
  curves = {"random": {"recall@10": [0.1, 0.1, 0.1],
                       "recall@50": [0.2, 0.3, 0.4]},
            "residual": {"recall@10": [0.1, 0.2, 0.1],
                         "recall@50": [0.2, 0.38, 0.4]}}
  io.save_json(tmp_path / "backfill.json", {
      "settings": {"version": 1, "budgets": [0.0, 0.5, 1.0]},
      "consumer_tasks": [], "strategies": {BC: curves, "other": curves}})
  content, table, plots = report.write_report(tmp_path)
  filled = content["backfill"]
  assert filled["version"] == 1 and list(filled["strategies"]) == [BC]
  residual = filled["strategies"][BC]["residual"]
  assert residual["area"] == pytest.approx({"recall@10": 0.15,
                                            "recall@50": 0.34}, abs=1e-12)
  assert residual["at_budget"]["recall@50"] == pytest.approx(0.236, abs=1e-12)
  assert ("| **Joint-Lin-MLoss (BC-Aligner)** | residual | 0.1500 | 0.3400 | "
          "0.2360 | 0.0400 |") in table
  assert "Partial backfill of the legacy index at version 1" in table
  assert plots[-1].name == "backfill.png"
  assert plots[-1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert report.read_report(tmp_path) == (content, table, plots)


def test_comparison_table():
  first = report.summarize(RECALL50, AUC, ALIGNMENT)
  without_fix = lambda d: {s: v for s, v in d.items() if s != "fix-m0"}
  second = report.summarize(
      without_fix({s: [r + 0.1 for r in v] for s, v in RECALL50.items()}),
      {t: without_fix(by) for t, by in AUC.items()}, ALIGNMENT)
  runs = {"seed 0": {"strategies": first,
                     "compatibility": {BC: {"mean": 0.61, "tasks": {}}}},
          "seed 1": {"strategies": second, "compatibility": {}}}
  lines = report.comparison_table(runs).splitlines()
  assert lines[0].startswith("| strategy | run | mean R@50 |")
  assert len(lines) == 2 + 2 * 2  # fix-m0 is not in both runs
  assert lines[2] == "| No-BC | seed 0 | 0.3000 | 0.00 | -25.00 | -25.00 | 1.00 | n/a |"
  assert lines[4].startswith("| **Joint-Lin-MLoss (BC-Aligner)** | seed 0 | 0.2700 |")
  assert lines[4].endswith("| 0.6100 |") and lines[5].endswith("| n/a |")
  # seed 1 has no fix-m0: its unintended and total percentages are n/a.
  assert lines[5].startswith("| **Joint-Lin-MLoss (BC-Aligner)** | seed 1 | 0.3700 | -7.50 | n/a |")


def _reproduce(workdir, *flags, timeout=600):
  env = dict(os.environ)
  # Tiny programs: XLA's optimisation passes cost more than they save.
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      " --xla_backend_optimization_level=0").strip()
  return subprocess.run(
      [sys.executable, "-m", "launch.reproduce",
       "--config=launch/configs/test.py", f"--workdir={workdir}", *flags],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_reproduce_rejects_bad_config(tmp_path):
  for flag, message in (("--config.consumer.seeds=0", "config.consumer.seeds"),
                        ("--config.lam=nan", "config.lam must be a finite"),
                        ("--strategies=nobc,bogus", "unknown strategy"),
                        ("--config.versions=0", "every version")):
    result = _reproduce(tmp_path / "run", flag)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("reproduce: error: ")
    assert message in result.stderr
  assert not (tmp_path / "run").exists()


def test_reproduce_end_to_end(tmp_path):
  """The test preset on a small synthetic graph: every strategy, the report."""
  start = time.perf_counter()
  result = _reproduce(tmp_path / "run", "--dataset=synthetic",
                      "--synthetic_interactions=3000")
  elapsed = time.perf_counter() - start
  assert result.returncode == 0, result.stderr[-3000:]
  out = result.stdout
  assert "| strategy | mean R@50 | intended % |" in out
  assert "**Joint-Lin-MLoss (BC-Aligner)**" in out
  content = json.loads((tmp_path / "run" / "report.json").read_text())
  assert list(content["strategies"]) == list(STRATEGIES)
  assert content["preset"] == "test" and content["dataset"] == "synthetic"
  for name, r in content["strategies"].items():
    assert len(r["recall50"]) == 5
    assert set(r["auc"]) == {"binary-edge-rating", "user-activity",
                             "user-positive-activity", "binary-item-rating-avg",
                             "binary-item-rating-std"}
    assert r["auc"]["user-activity"][:2] == [None, None]
    assert r["auc"]["binary-edge-rating"][0] is None
    assert all(a is not None for a in r["auc"]["binary-edge-rating"][1:])
  fix = content["strategies"]["fix-m0"]
  assert fix["unintended_pct"] == 0.0 and fix["alignment_error"] == 0.0
  assert content["strategies"]["nobc"]["intended_pct"] == 0.0
  for plot in report.PLOTS:
    assert f"plot: {tmp_path / 'run' / plot}" in out
  # The compatibility matrix of the test preset's one strategy.
  compat = content["compatibility"]
  assert list(compat) == [BC] and set(compat[BC]["tasks"]) == set(
      content["strategies"][BC]["auc"])
  matrix = compat[BC]["tasks"]["binary-edge-rating"]["matrix"]
  assert len(matrix) == 5 and matrix[0][0] is None and matrix[0][1] is not None
  assert "| strategy | mean compatibility AUC |" in out
  # Legacy retrieval: every strategy through the frozen version-0 index.
  legacy = content["legacy_retrieval"]
  assert list(legacy) == list(STRATEGIES)
  for r in legacy.values():
    assert len(r["recall@10"]) == len(r["recall@50"]) == 4
    assert len(r["refreshed_recall@50"]) == 4
    assert 0 < r["ann_vs_exact"] <= 1.5 and r["pct_of_ceiling"] > 0
  assert legacy["fix-m0"]["vs_fix_m0_pct"] == 0.0
  # The ceiling is nobc's version-k model ranking every item: its Recall@50.
  assert content["legacy_retrieval_ceiling"]["recall@50"] == pytest.approx(
      [json.loads((tmp_path / "run" / "nobc" / f"v{k}" / "metrics.json"
                   ).read_text())["best"]["recall@50"] for k in range(1, 5)])
  assert "Legacy retrieval: Recall@50 through the frozen" in out
  assert f"plot: {tmp_path / 'run' / 'legacy_retrieval.png'}" in out
  assert f"plot: {tmp_path / 'run' / f'compatibility_{BC}.png'}" in out
  # Partial backfill at the last version: BC-Aligner's curves (test preset),
  # from the frozen index (budget 0) to the refreshed one (budget 1).
  measured = json.loads((tmp_path / "run" / "backfill.json").read_text())
  assert measured["settings"]["budgets"] == [0.0, 0.1, 0.5, 1.0]
  curves = measured["strategies"][BC]
  assert list(curves) == ["random", "residual", "popularity", "score-error"]
  for policy, by_metric in curves.items():
    assert by_metric["recall@50"][0] == pytest.approx(
        legacy[BC]["recall@50"][-1], abs=1e-12)
    assert by_metric["recall@50"][-1] == pytest.approx(
        legacy[BC]["refreshed_recall@50"][-1], abs=1e-12)
  assert set(content["backfill"]["strategies"][BC]) == set(curves)
  assert "Partial backfill of the legacy index at version 4" in out
  assert f"plot: {tmp_path / 'run' / 'backfill.png'}" in out
  print(f"reproduce end to end: {elapsed:.1f}s")


def _scalars(events_dir: Path) -> dict[str, list]:
  """tag -> [(step, value)] of the event files in `events_dir` (TFRecord
  framing: length, its CRC, the Event proto, its CRC)."""
  import struct

  from tensorboardX.proto.event_pb2 import Event
  out = {}
  for path in sorted(events_dir.glob("events.out.tfevents*")):
    data, at = path.read_bytes(), 0
    while at < len(data):
      (length,) = struct.unpack("<Q", data[at:at + 8])
      event = Event.FromString(data[at + 12:at + 12 + length])
      at += 12 + length + 4
      for value in event.summary.value:
        out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out


def test_report_writes_the_histories_as_tensorboard_curves(tmp_path):
  _fake_run(tmp_path)
  path = tmp_path / BC / "v1" / "metrics.json"
  record = json.loads(path.read_text())
  record["history"] = [{"epoch": 2, "loss": 1.5, "recall@50": 0.2},
                       {"epoch": 4, "loss": 0.5, "recall@50": 0.24,
                        "alignment_mse": float("nan")}]
  path.write_text(json.dumps(record))
  report.write_report(tmp_path)
  scalars = _scalars(tmp_path / "tensorboard" / BC / "v1")
  assert scalars == {"loss": [(2, 1.5), (4, 0.5)],
                     "recall_at_50": [(2, pytest.approx(0.2)),
                                   (4, pytest.approx(0.24))]}  # NaN left out
  assert _scalars(tmp_path / "tensorboard" / "nobc" / "v0") == {}
  report.write_report(tmp_path)  # Rebuilt, not appended to.
  assert len(_scalars(tmp_path / "tensorboard" / BC / "v1")["loss"]) == 2
  assert not list(tmp_path.glob(".tensorboard*"))
