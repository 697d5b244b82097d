"""Several training seeds through the pipeline: a run directory per seed,
the report over seeds at the top, per-seed resume."""

import numpy as np
import pytest

from bcjax.data.synthetic import make_synthetic
from bcjax.paper import pipeline
from bcjax.release import backfill
from bcjax.runs.configs import test as test_config
from bcjax.runs.rundir import RunDir, read_json
from bcjax.runs.strategies import BC_ALIGNER_NAME as BC

NAMES = ["nobc", BC]


def test_two_seeds_report_intervals_and_resume_per_seed(tmp_path):
  config = test_config.get_config()
  config.seed, config.seeds = 3, 2
  graph = make_synthetic(2000, num_users=80, num_items=120, seed=0)
  result = pipeline.reproduce(graph, config, tmp_path, NAMES,
                              log=lambda _: None)
  run_dir = RunDir(tmp_path)
  content = result.content
  assert content["seeds"] == [3, 4]
  assert set(content["intervals"]) == {"fix-m0", "nobc", BC}
  assert set(content["paired"]) == {"fix-m0", "nobc"}
  for s, by_figure in content["intervals"].items():
    for figure, found in by_figure.items():
      assert len(found["per_seed"]) == 2, (s, figure)
      if found["low"] is not None:
        assert found["low"] <= found["mean"] <= found["high"]
  # The single-seed keys are the means of the seeds' own reports.
  seeds = [run_dir.seed_dir(s) for s in (3, 4)]
  for seed, d in zip((3, 4), seeds):
    assert d.config()["seed"] == seed and d.config()["seeds"] == 1
  per_seed = [d.metrics(BC, 1)["best"]["recall@50"] for d in seeds]
  assert content["strategies"][BC]["recall50"][1] == pytest.approx(
      np.mean(per_seed))
  first, second = (np.load(d.version_dir(BC, 2) / "users.npy") for d in seeds)
  assert not np.allclose(first, second)  # Different seeds train differently.
  assert "± " in result.table and "BC-Aligner minus" in result.table
  # Legacy retrieval: the mean over seeds of each seed's report.
  legacy = [d.report_path("report.json") for d in seeds]
  legacy = [read_json(p)["legacy_retrieval"][BC] for p in legacy]
  assert content["legacy_retrieval"][BC]["recall@50"] == pytest.approx(
      np.mean([r["recall@50"] for r in legacy], axis=0))
  assert content["legacy_retrieval"][BC]["ann_vs_exact"] == pytest.approx(
      np.mean([r["ann_vs_exact"] for r in legacy]))
  assert len(content["legacy_retrieval_ceiling"]["recall@50"]) == 4
  assert "Legacy retrieval" in result.table
  # Partial backfill: each seed's curves; their areas with intervals.
  measured = [read_json(d.backfill_path) for d in seeds]
  filled = content["backfill"]
  assert filled["seeds"] == 2 and filled["budgets"] == [0.0, 0.1, 0.5, 1.0]
  assert list(filled["strategies"]) == [BC]
  for policy, r in filled["strategies"][BC].items():
    areas = [backfill.area(m["settings"]["budgets"],
                           m["strategies"][BC][policy]["recall@50"])
             for m in measured]
    assert r["area"]["recall@50"]["per_seed"] == pytest.approx(areas,
                                                               abs=1e-12)
    assert r["area"]["recall@50"]["mean"] == pytest.approx(np.mean(areas),
                                                           abs=1e-12)
  # At budget 1 the item consumers read BC-Aligner's last BC table, which
  # the cross-version evaluation scored too (batched, padded).
  for d, m in zip(seeds, measured):
    auc = read_json(d.auc_path)
    expected = np.mean([np.mean(auc[t][BC][4]) for t in m["consumer_tasks"]])
    for r in m["strategies"][BC].values():
      assert r["consumer_auc"][-1] == pytest.approx(expected, abs=1e-3)
  assert "Partial backfill of the legacy index" in result.table
  assert tmp_path / "backfill.png" in result.plots
  for path in result.plots:
    assert path.parent == tmp_path and path.read_bytes()[:4] == b"\x89PNG"
  # Again: every version and consumer of both seeds is reused, not retrained,
  # and the backfill curves are not measured again.
  stamps = {p: p.stat().st_mtime_ns for p in [
      *tmp_path.rglob("metrics.json"), *tmp_path.rglob("backfill.json")]}
  again = pipeline.reproduce(graph, config, tmp_path, NAMES, log=lambda _: None)
  assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
  assert again.content["intervals"] == content["intervals"]
