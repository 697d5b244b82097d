"""Tests of partial backfill: the orders, the curve and its area
(bcjax.release.backfill), a run's curves (bcjax.evaluation.backfill) and the
report's arithmetic (bcjax.paper.retrieval_report)."""

import jax
import numpy as np
import pytest

from bcjax.core import metrics
from bcjax.data.splits import make_splits
from bcjax.data.synthetic import make_synthetic
from bcjax.evaluation import backfill as run_backfill, retrieval
from bcjax.paper import retrieval_report
from bcjax.release import backfill
from bcjax.runs.configs import BackfillConfig
from bcjax.runs.rundir import RunDir, read_json
from bcjax.runs.strategies import BC_ALIGNER_NAME as BC
from bcjax.store import faiss_index
from bcjax.util import io

KEY = jax.random.key(0)


def test_orders_on_hand_made_tables():
  frozen = np.array([[0, 0], [1, 0], [0, 0], [2, 2], [5, 5]], np.float32)
  newest = np.array([[3, 4], [1, 0], [0, 1], [2, 0], [5, 5], [9, 9]],
                    np.float32)
  # Residuals: 5, 0, 1, 2, 0 -> 0, 3, 2, then 1 and 4 tied (lower first).
  assert backfill.residual_order(frozen, newest).tolist() == [0, 3, 2, 1, 4]
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(2, 50, 6))
  expected = np.argsort(-np.linalg.norm(b - a, axis=1))
  assert backfill.residual_order(a, b).tolist() == expected.tolist()
  # Popularity: most interactions first, ties to the lower index.
  assert backfill.popularity_order([3, 7, 0, 7, 1]).tolist() == [1, 3, 0, 4, 2]
  counts = rng.permutation(50)
  assert backfill.popularity_order(counts).tolist() == (
      np.argsort(counts)[::-1].tolist())
  # Score error: queries along the first axis see only its residual.
  queries = np.array([[1.0, 0.0], [-2.0, 0.0]])
  # First-axis residuals: 3, 0, 0, 0, 0 -> item 0, then the rest in order.
  assert backfill.score_error_order(frozen, newest, queries).tolist() == [
      0, 1, 2, 3, 4]
  q = rng.normal(size=(30, 6))
  rms = np.sqrt(np.mean(((b - a) @ q.T) ** 2, axis=1))
  assert backfill.score_error_order(a, b, q).tolist() == (
      np.argsort(-rms).tolist())


def test_random_order_is_a_permutation_reproducible_by_key():
  first = backfill.random_order(100, KEY)
  assert sorted(first.tolist()) == list(range(100))
  assert np.array_equal(first, backfill.random_order(100, KEY))
  other = backfill.random_order(100, jax.random.key(1))
  assert not np.array_equal(first, other)
  assert np.array_equal(backfill.order("random", np.zeros((100, 2)),
                                       np.zeros((100, 2)), key=KEY), first)


def test_order_refuses_what_it_cannot_rank():
  table = np.zeros((4, 2))
  with pytest.raises(ValueError, match="unknown backfill policy 'oldest'"):
    backfill.order("oldest", table, table)
  with pytest.raises(ValueError, match="needs its counts"):
    backfill.order("popularity", table, table)
  with pytest.raises(ValueError, match="3 counts for 4 old items"):
    backfill.order("popularity", table, table, counts=[1, 2, 3])
  with pytest.raises(ValueError, match="non-negative"):
    backfill.popularity_order([1, -1])
  with pytest.raises(ValueError, match=r"m >= n"):
    backfill.residual_order(table, table[:2])
  with pytest.raises(ValueError, match=r"queries \(3, 5\)"):
    backfill.score_error_order(table, table, np.zeros((3, 5)))


def test_backfilled_table_by_hand():
  frozen = np.zeros((4, 2), np.float32)
  newest = np.arange(12, dtype=np.float32).reshape(6, 2)
  order = np.array([2, 0, 3, 1])
  # 0.3 * 4 = 1.2 -> 1 item; 0.5 * 4 = 2 items; 0.625 * 4 = 2.5 -> 3 (half up).
  expected = {0.0: [], 0.3: [2], 0.5: [2, 0], 0.625: [2, 0, 3],
              1.0: [0, 1, 2, 3]}
  for budget, chosen in expected.items():
    table = backfill.backfilled(frozen, newest, order, budget)
    want = np.concatenate([frozen, newest[4:]])
    want[chosen] = newest[chosen]
    np.testing.assert_array_equal(table, want)
  with pytest.raises(ValueError, match="permutation of the 4 old items"):
    backfill.backfilled(frozen, newest, [0, 0, 1, 2], 0.5)
  with pytest.raises(ValueError, match="outside"):
    backfill.backfilled(frozen, newest, order, 1.5)


def test_area_against_hand_trapezoids():
  assert backfill.area([0, 1], [0.3, 0.3]) == pytest.approx(0.3, abs=1e-15)
  assert backfill.area([0, 0.5, 1], [0.7] * 3) == pytest.approx(0.7, abs=1e-15)
  # (0.2 + 0.3) / 2 * 0.5 + (0.3 + 0.4) / 2 * 0.5 = 0.125 + 0.175
  assert backfill.area([0, 0.5, 1], [0.2, 0.3, 0.4]) == pytest.approx(
      0.3, abs=1e-15)
  # 0.1 * 0.5 + 0.1 * 1.5 + 0.8 * 2.5 = 0.05 + 0.15 + 2.0, a step up early.
  assert backfill.area([0, 0.1, 0.2, 1], [0, 1, 2, 3]) == pytest.approx(
      2.2, abs=1e-12)
  assert backfill.value_at([0, 0.5, 1], [0.2, 0.3, 0.4], 0.1) == pytest.approx(
      0.22, abs=1e-15)
  for bad in ([0.1, 1], [0, 0.9], [0, 0.5, 0.5, 1], [0, float("nan"), 1]):
    with pytest.raises(ValueError, match="from 0 to 1"):
      backfill.area(bad, [0.0] * len(bad))
  with pytest.raises(ValueError, match="each finite"):
    backfill.area([0, 1], [0.1, None])
  with pytest.raises(ValueError, match="2 values for 3 budgets"):
    backfill.area([0, 0.5, 1], [0.1, 0.2])


def _world(seed, num_users=80, num_old=200, num_new=40, dim=12, bad=0):
  """Users, newest item vectors (old then new), frozen vectors near them
  (the first `bad` old items badly wrong: their negation) and the users'
  Recall@K inputs, validation items their top-scored under the newest."""
  rng = np.random.default_rng(seed)
  users = rng.normal(size=(num_users, dim)).astype(np.float32)
  newest = rng.normal(size=(num_old + num_new, dim)).astype(np.float32)
  frozen = newest[:num_old] + 0.3 * rng.normal(size=(num_old, dim)).astype(
      np.float32)
  frozen[:bad] = -2 * newest[:bad]
  scores = users @ newest.T
  top = np.argsort(-scores, axis=1)
  train_item = top[:, 5:8].ravel()
  val_item = top[:, :5].ravel()
  user_of = np.repeat(np.arange(num_users), 3)
  inputs = metrics.prepare_recall_inputs(
      user_of, train_item, np.repeat(np.arange(num_users), 5), val_item,
      num_old + num_new, batch_users=32)
  return users, frozen, newest, retrieval.Queries.of(inputs), train_item


def _recall_score(users, queries):
  def score(items):
    found = retrieval.recall(faiss_index.build_index(items, "exact"), users,
                             queries, (10, 50))
    return {f"recall@{k}": v for k, v in found.items()}
  return score


def test_curve_runs_from_the_frozen_index_to_the_refreshed_one():
  users, frozen, newest, queries, _ = _world(1)
  num_old = len(frozen)
  budgets = [0.0, 0.25, 0.5, 1.0]
  order = backfill.random_order(num_old, KEY)
  found = backfill.curve(frozen, newest, order, budgets,
                         _recall_score(users, queries))
  frozen_index = faiss_index.with_inserted(
      faiss_index.build_index(frozen, "exact"), newest[num_old:])
  at_zero = retrieval.recall(frozen_index, users, queries, (10, 50))
  at_one = retrieval.recall(faiss_index.build_index(newest, "exact"), users,
                            queries, (10, 50))
  for k in (10, 50):
    values = found[f"recall@{k}"]
    assert values.shape == (4,)
    np.testing.assert_allclose(values[[0, -1]], [at_zero[k], at_one[k]],
                               rtol=0, atol=1e-12)
  assert at_one[10] > at_zero[10]  # Frozen vectors cost recall here.
  # A scalar score gives one value per budget.
  sums = backfill.curve(frozen, newest, order, budgets,
                        lambda items: float(items[:num_old].sum()))
  half = order[:100]
  np.testing.assert_allclose(
      sums[2], frozen.sum() - frozen[half].sum() + newest[half].sum(),
      rtol=1e-5, atol=1e-3)


def test_residual_order_beats_random_when_a_few_frozen_vectors_are_wrong():
  """A fifth of the old items have badly wrong frozen vectors (negated);
  re-embedding them first repairs most of the recall within a fifth of
  the budget, while a random order repairs it linearly."""
  users, frozen, newest, queries, train_item = _world(2, bad=40)
  budgets = [0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0]
  score = _recall_score(users, queries)
  areas = {}
  for policy in ("random", "residual", "score-error"):
    order = backfill.order(policy, frozen, newest, key=KEY, queries=users)
    values = backfill.curve(frozen, newest, order, budgets, score)["recall@10"]
    areas[policy] = backfill.area(budgets, values)
    if policy != "random":
      assert sorted(order[:40].tolist()) == list(range(40))  # the wrong ones
  assert areas["residual"] > areas["random"] + 0.05, areas
  assert areas["score-error"] > areas["random"] + 0.05, areas


def _run(tmp_path):
  """A two-version run of a synthetic graph: fix-m0's version-0 items and
  BC-Aligner's version-1 BC tables (random), saved with their checksums."""
  graph = make_synthetic(900, num_users=50, num_items=70, seed=3)
  split0, split1 = make_splits(graph, (0.5, 0.75, 1.0))
  rng = np.random.default_rng(4)
  run_dir = RunDir(tmp_path)
  tables = {("fix-m0", 0): (split0.num_users, split0.num_items),
            (BC, 1): (split1.num_users, split1.num_items)}
  for (s, k), (num_users, num_items) in tables.items():
    run_dir.save_version(s, k, b"", {
        "bc_users": rng.normal(size=(num_users, 6)).astype(np.float32),
        "bc_items": rng.normal(size=(num_items, 6)).astype(np.float32)}, {})
  inputs = metrics.prepare_recall_inputs(
      split1.train_user, split1.train_item, split1.val_user, split1.val_item,
      split1.num_items, batch_users=16)
  return run_dir, split1, inputs


def test_a_runs_curves_are_written_and_reused_for_the_same_inputs(tmp_path):
  run_dir, split, inputs = _run(tmp_path)
  config = BackfillConfig(strategies=(BC,), budgets=(0.0, 0.5, 1.0))
  out = run_backfill.evaluate_run(run_dir, split, inputs, [BC], config,
                                  seed=7)
  assert read_json(run_dir.backfill_path) == io.as_json(out)
  assert out["consumer_tasks"] == [] and out["settings"]["version"] == 1
  frozen = run_dir.bc_tables("fix-m0", 0)[1]
  users, newest = run_dir.bc_tables(BC, 1)
  queries = retrieval.Queries.of(inputs)
  curves = out["strategies"][BC]
  assert list(curves) == list(config.policies)
  at_zero = retrieval.recall(faiss_index.with_inserted(
      faiss_index.build_index(frozen, "exact"), newest[len(frozen):]), users,
      queries)
  at_one = retrieval.recall(faiss_index.build_index(newest, "exact"), users,
                            queries)
  for policy, by_metric in curves.items():
    assert set(by_metric) == {"recall@10", "recall@50"}
    for k in (10, 50):
      np.testing.assert_allclose(by_metric[f"recall@{k}"][::2],
                                 [at_zero[k], at_one[k]], rtol=0, atol=1e-12)
  # Popularity: the old items by their training interactions, counted here;
  # random: the seed's permutation.
  counts = np.zeros(len(frozen))
  for item in split.train_item[split.train_item < len(frozen)]:
    counts[item] += 1
  orders = {"popularity": np.argsort(-counts, kind="stable"),
            "random": backfill.random_order(len(frozen),
                                            run_backfill.random_key(7))}
  for policy, order in orders.items():
    half = backfill.backfilled(frozen, newest, order, 0.5)
    assert curves[policy]["recall@50"][1] == pytest.approx(
        retrieval.recall(faiss_index.build_index(half, "exact"), users,
                         queries)[50], abs=1e-12)
  settings = out["settings"]
  assert run_backfill.complete(run_dir, settings)
  assert not run_backfill.complete(run_dir, {**settings, "budgets": [0, 1]})
  assert not run_backfill.complete(run_dir, {**settings, "seed": 8})
  # A retrained version (other tables, other checksums) is measured again.
  run_dir.save_version(BC, 1, b"", {"bc_users": users,
                                    "bc_items": newest + 1}, {})
  assert not run_backfill.complete(run_dir, run_backfill.settings_record(
      run_dir, config, [BC], 1, 7))
  run_dir.backfill_path.write_text("{not json")
  assert not run_backfill.complete(run_dir, settings)


def _measured(budgets, curves, version=4):
  return {"settings": {"version": version, "budgets": budgets},
          "consumer_tasks": [], "strategies": {BC: curves}}


def test_report_areas_and_intervals_by_hand():
  budgets = [0.0, 0.5, 1.0]
  first = retrieval_report.summarize_backfill(_measured(budgets, {
      "random": {"recall@50": [0.2, 0.3, 0.4]},
      "residual": {"recall@50": [0.2, 0.38, 0.4]}}))
  r = first["strategies"][BC]
  # Areas: (0.25 + 0.35) / 2 = 0.3 and (0.29 + 0.39) / 2 = 0.34; at budget
  # 0.1, a fifth of the way to 0.5: 0.22 and 0.236 (0.244 in the second
  # seed below: mean 0.24, half-width 12.7062 * 0.004).
  assert r["random"]["area"]["recall@50"] == pytest.approx(0.3, abs=1e-12)
  assert r["residual"]["area"]["recall@50"] == pytest.approx(0.34, abs=1e-12)
  assert r["random"]["at_budget"]["recall@50"] == pytest.approx(0.22,
                                                                abs=1e-12)
  assert r["residual"]["at_budget"]["recall@50"] == pytest.approx(0.236,
                                                                  abs=1e-12)
  second = retrieval_report.summarize_backfill(_measured(budgets, {
      "random": {"recall@50": [0.2, 0.3, 0.4]},
      "residual": {"recall@50": [0.2, 0.42, 0.4]}}))  # area 0.36
  over = retrieval_report.backfill_over_seeds([first, second])
  residual = over["strategies"][BC]["residual"]
  assert residual["area"]["recall@50"]["mean"] == pytest.approx(0.35,
                                                                abs=1e-12)
  # Paired differences 0.04 and 0.06: mean 0.05, sd 0.01 sqrt(2), half-width
  # t(0.975, 1) sd / sqrt(2) = 12.7062 * 0.01.
  paired = residual["area_vs_random"]["recall@50"]
  assert paired["mean"] == pytest.approx(0.05, abs=1e-12)
  assert paired["high"] - paired["mean"] == pytest.approx(0.127062, abs=1e-5)
  assert not paired["excludes_zero"]
  assert residual["curves"]["recall@50"]["mean"] == pytest.approx(
      [0.2, 0.4, 0.4], abs=1e-12)
  assert residual["curves"]["recall@50"]["low"][0] == pytest.approx(0.2,
                                                                    abs=1e-12)
  table = retrieval_report.backfill_table(over)
  assert "at version 4" in table and "2 seeds" in table
  assert ("| **Joint-Lin-MLoss (BC-Aligner)** | residual | 0.3500 ± 0.1271 | "
          "0.2400 ± 0.0508 | 0.0500 ± 0.1271 |") in table
  single = retrieval_report.backfill_table(
      retrieval_report.backfill_over_seeds([first]))
  assert ("| **Joint-Lin-MLoss (BC-Aligner)** | random | 0.3000 | 0.2200 |  |"
          in single)
  with pytest.raises(ValueError, match="different budgets"):
    retrieval_report.backfill_over_seeds([first, {**second, "budgets": [0, 1]}])


def test_backfill_settings_are_checked_by_name():
  with pytest.raises(ValueError, match="config.backfill.budgets"):
    BackfillConfig(budgets=(0.0, 0.5))
  with pytest.raises(ValueError, match="config.backfill.policies"):
    BackfillConfig(policies=("random", "newest-first"))
  with pytest.raises(ValueError, match="config.backfill.policies"):
    BackfillConfig(policies=("random", "random"))
  with pytest.raises(ValueError, match="config.backfill.ks"):
    BackfillConfig(ks=(0,))
