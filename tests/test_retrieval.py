"""Tests of bcjax.evaluation.retrieval: recall through faiss indexes against brute force,
HNSW against exact, and insertion into a frozen index."""

import numpy as np
import pytest

from bcjax.core import metrics
from bcjax.evaluation import retrieval
from bcjax.paper import retrieval_report
from bcjax.store import faiss_index


def _graph(seed, num_users=60, num_items=300, dim=16):
  """Gaussian embeddings with duplicated item rows (exact score ties, as
  items without edges have), random training and validation pairs with
  duplicates, and one user trained on nearly every item."""
  rng = np.random.default_rng(seed)
  users = rng.normal(size=(num_users, dim)).astype(np.float32)
  items = rng.normal(size=(num_items, dim)).astype(np.float32)
  items[num_items // 2::7] = items[num_items // 3]
  train_user = rng.integers(0, num_users, 8 * num_users)
  train_item = rng.integers(0, num_items, 8 * num_users)
  heavy = np.arange(num_items - 20)
  train_user = np.concatenate([train_user, np.full_like(heavy, 3)])
  train_item = np.concatenate([train_item, heavy])
  val_user = rng.integers(0, num_users, 3 * num_users)
  val_item = rng.integers(0, num_items, 3 * num_users)
  val_user = np.concatenate([val_user, val_user[:5], [3, 3]])
  val_item = np.concatenate([val_item, val_item[:5], [0, num_items - 1]])
  inputs = metrics.prepare_recall_inputs(train_user, train_item, val_user,
                                         val_item, num_items, batch_users=16)
  return users, items, (train_user, train_item, val_user, val_item), inputs


def _brute_force(users, items, pairs, ks):
  """Every item ranked per user by numpy, training items left out."""
  train_user, train_item, val_user, val_item = pairs
  out = {k: [] for k in ks}
  for u in np.unique(val_user):
    allowed = np.setdiff1d(np.arange(len(items)), train_item[train_user == u])
    ranked = allowed[np.argsort(-(items[allowed] @ users[u]), kind="stable")]
    relevant = set(val_item[val_user == u].tolist())
    for k in ks:
      out[k].append(len(relevant & set(ranked[:k].tolist())) / len(relevant))
  return {k: np.mean(v) for k, v in out.items()}


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_index_recall_equals_brute_force(seed):
  users, items, pairs, inputs = _graph(seed)
  ks = (1, 10, 50)
  found = retrieval.recall(faiss_index.build_index(items, "exact"), users,
                           retrieval.Queries.of(inputs), ks)
  expected = _brute_force(users, items, pairs, ks)
  assert found == pytest.approx(expected, abs=1e-12)
  # The same figure as the intended task's Recall@K of the library.
  assert found == pytest.approx(metrics.recall_at_k(users, items, inputs, ks),
                                abs=1e-6)


def test_hnsw_recall_is_close_to_exact():
  """Bound: HNSW Recall@10 and @50 at least 95% of the exact index's on
  2000 Gaussian items (at the fixed M, efConstruction and efSearch)."""
  users, items, _, inputs = _graph(2, num_users=200, num_items=2000, dim=32)
  queries = retrieval.Queries.of(inputs)
  exact = retrieval.recall(faiss_index.build_index(items, "exact"), users,
                           queries)
  hnsw = retrieval.recall(faiss_index.build_index(items, "hnsw"), users, queries)
  for k in retrieval.RETRIEVAL_KS:
    assert hnsw[k] >= 0.95 * exact[k], (k, hnsw, exact)


@pytest.mark.parametrize("kind", faiss_index.KINDS)
def test_inserting_leaves_existing_vectors_bitwise_untouched(kind):
  rng = np.random.default_rng(3)
  old = rng.normal(size=(120, 8)).astype(np.float32)
  new = rng.normal(size=(40, 8)).astype(np.float32)
  frozen = faiss_index.build_index(old, kind)
  before = faiss_index.stored_vectors(frozen).copy()
  grown = faiss_index.with_inserted(frozen, new)
  stored = faiss_index.stored_vectors(grown)
  assert grown.ntotal == 160 and frozen.ntotal == 120
  assert stored[:120].tobytes() == old.tobytes() == before.tobytes()
  assert stored[120:].tobytes() == new.tobytes()
  assert faiss_index.stored_vectors(frozen).tobytes() == before.tobytes()
  # Nothing to insert: an equal copy.
  assert faiss_index.with_inserted(frozen, new[:0]).ntotal == 120


def test_bad_input_is_refused_by_name():
  users, items, _, inputs = _graph(4)
  index = faiss_index.build_index(items, "exact")
  queries = retrieval.Queries.of(inputs)
  with pytest.raises(ValueError, match="index kind"):
    faiss_index.build_index(items, "ivf")
  with pytest.raises(ValueError, match="NaN"):
    faiss_index.build_index(np.full((3, 2), np.nan), "exact")
  with pytest.raises(ValueError, match="dims"):
    faiss_index.with_inserted(index, np.zeros((2, 3)))
  with pytest.raises(ValueError, match="dims"):
    retrieval.recall(index, users[:, :4], queries)
  with pytest.raises(ValueError, match="holds 10 items"):
    retrieval.recall(faiss_index.build_index(items[:10], "exact"), users,
                     queries)
  with pytest.raises(ValueError, match=">= 1"):
    retrieval.recall(index, users, queries, ks=(0,))


def _measured(exact, ann, refreshed):
  return {"exact": {"recall@10": [r / 2 for r in exact], "recall@50": exact},
          "hnsw": {"recall@10": [0.0, 0.0], "recall@50": ann},
          "refreshed": {"recall@10": [0.0, 0.0], "recall@50": refreshed}}


def test_summary_by_hand_and_over_seeds():
  measured = {"ceiling": {"recall@10": [0.2, 0.2], "recall@50": [0.5, 0.3]},
              "strategies": {"fix-m0": _measured([0.2, 0.2], [0.2, 0.2],
                                                 [0.2, 0.2]),
                             "nobc": _measured([0.4, 0.24], [0.2, 0.12],
                                               [0.5, 0.3])}}
  summary = retrieval_report.summarize(measured)
  nobc = summary["nobc"]
  assert nobc["recall@10"] == [0.2, 0.12] and nobc["recall@50"] == [0.4, 0.24]
  assert nobc["pct_of_ceiling_per_version"] == pytest.approx([80.0, 80.0])
  assert nobc["pct_of_ceiling"] == pytest.approx(80.0)  # 0.32 / 0.4
  assert nobc["vs_fix_m0_pct"] == pytest.approx(60.0)  # 0.32 vs 0.2
  assert nobc["ann_vs_exact"] == pytest.approx(0.5)
  assert nobc["refreshed_recall@50"] == [0.5, 0.3]
  assert summary["fix-m0"]["vs_fix_m0_pct"] == 0.0
  other = retrieval_report.summarize(
      {**measured, "strategies": {"nobc": measured["strategies"]["nobc"]}})
  assert other["nobc"]["vs_fix_m0_pct"] is None  # no reference
  means = retrieval_report.mean_over_seeds([summary, other])
  assert means["nobc"]["recall@50"] == pytest.approx([0.4, 0.24])
  assert means["fix-m0"]["pct_of_ceiling"] == pytest.approx(50.0)
  table = retrieval_report.table(summary, measured["ceiling"])
  assert "| No-BC | 80.0 | 80.0 | 0.3200 | 80.0 | 60.00 | 0.4000 | 0.500 |" \
      in table
