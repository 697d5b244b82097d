"""Intervals over seeds and the multi-seed report, against hand computation."""

import numpy as np
import pytest

from bcjax.paper import multiseed
from bcjax.runs.strategies import BC_ALIGNER_NAME as BC
from bcjax.util import intervals

# t_{0.975, 3} = 3.182446 and t_{0.975, 2} = 4.302653 (Student-t tables).
T3, T2 = 3.182446, 4.302653


def test_interval_by_hand():
  found = intervals.interval([1.0, 2.0, 3.0, 4.0])
  sd = np.sqrt((1.5 ** 2 + 0.5 ** 2) * 2 / 3)
  half = T3 * sd / 2
  assert found["mean"] == pytest.approx(2.5)
  assert found["low"] == pytest.approx(2.5 - half, abs=1e-5)
  assert found["high"] == pytest.approx(2.5 + half, abs=1e-5)
  assert found["per_seed"] == [1.0, 2.0, 3.0, 4.0]


def test_interval_skips_missing_seeds_and_needs_two():
  found = intervals.interval([None, 5.0, float("nan")])
  assert found == {"mean": 5.0, "low": None, "high": None,
                   "per_seed": [None, 5.0, None]}
  assert intervals.interval([None])["mean"] is None


def test_paired_differences_by_hand():
  wide = intervals.paired([1.0, 2.0, 3.0], [0.0, 2.0, 1.0])  # d = 1, 0, 2
  assert wide["mean"] == pytest.approx(1.0)
  assert wide["high"] - wide["mean"] == pytest.approx(T2 / np.sqrt(3), abs=1e-5)
  assert not wide["excludes_zero"]
  tight = intervals.paired([1.0, 1.1, 0.9], [0.0, 0.0, 0.0])
  assert tight["low"] == pytest.approx(1 - T2 * 0.1 / np.sqrt(3), abs=1e-5)
  assert tight["excludes_zero"]
  with pytest.raises(ValueError, match="3 seeds against 2"):
    intervals.paired([1.0, 2.0, 3.0], [1.0, 2.0])


def _seed_report(seed, bc_recall, nobc_recall, bc_total, nobc_total):
  def record(recall, total, alignment):
    return {"recall50": recall, "intended_pct": total / 2,
            "unintended_pct": total / 2, "total_pct": total,
            "alignment_error": float(np.mean(alignment)),
            "alignment": alignment, "auc": {"t": [None, 0.7]},
            "selected_epoch": [4, 6]}
  return {"dataset": "toy", "preset": "test", "seed": seed, "strategies": {
      "nobc": record(nobc_recall, nobc_total, [0.0, 2.0]),
      BC: record(bc_recall, bc_total, [0.0, 1.0])}, "compatibility": {}}


def test_summarize_seeds_by_hand():
  reports = [_seed_report(0, [0.2, 0.4], [0.3, 0.3], -4.0, -10.0),
             _seed_report(1, [0.3, 0.3], [0.2, 0.2], -6.0, -11.0),
             _seed_report(2, [0.1, 0.2], [0.3, 0.4], -5.0, -12.0)]
  out = multiseed.summarize_seeds(reports)
  assert out["seeds"] == [0, 1, 2]
  bc = out["intervals"][BC]
  # Mean R@50 per seed: 0.3, 0.3, 0.15.
  assert bc["recall50"]["per_seed"] == pytest.approx([0.3, 0.3, 0.15])
  assert bc["recall50"]["mean"] == pytest.approx(0.25)
  assert bc["total_pct"]["mean"] == pytest.approx(-5.0)
  assert bc["total_pct"]["high"] - (-5.0) == pytest.approx(T2 * 1 / np.sqrt(3),
                                                            abs=1e-5)
  # Paired totals: -4 - -10 = 6, 5, 7 -> mean 6, sd 1.
  total = out["paired"]["nobc"]["total_pct"]
  assert total["mean"] == pytest.approx(6.0)
  assert total["excludes_zero"]
  # The single-seed keys hold the means over seeds.
  assert out["strategies"][BC]["recall50"] == pytest.approx([0.2, 0.3])
  assert out["strategies"]["nobc"]["alignment"] == pytest.approx([0.0, 2.0])
  assert out["strategies"][BC]["selected_epoch"] == [[4, 6]] * 3
  table = multiseed.interval_table(out)
  assert "| **Joint-Lin-MLoss (BC-Aligner)** | 0.2500 ± " in table
  assert "| No-BC | 6." not in table  # nobc's own row has its own figures
  paired = multiseed.paired_table(out)
  assert "| No-BC |" in paired and "6.00 [" in paired and " *" in paired


def test_intervals_are_plain_json_values():
  import json
  found = intervals.paired([1.0, 1.1, 0.9], [0.0, 0.0, 0.0])
  assert json.loads(json.dumps(found)) == found
