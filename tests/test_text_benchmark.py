"""The text benchmark on a small corpus: the split, the maps, the heads
trained through bcjax.Lineage, the figures, the report and the command."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import text_setup

text_setup.require_encoders()

from bcjax.text import benchmark, cache, heads, report  # noqa: E402
from bcjax.util import keys  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def features(tmp_path_factory):
  where = text_setup.small_cache(tmp_path_factory)
  corpus = text_setup.small_corpus()
  return {name: cache.load(corpus, name, where) for name in benchmark.ORDER}


def test_the_split_takes_a_fifth_of_each_movies_reviews():
  corpus = text_setup.small_corpus()
  query = benchmark.split_queries(corpus, keys.derive(keys.root(0), "split"))
  for m in range(len(corpus.movies)):
    rows = corpus.movie == m
    reviews = rows & (corpus.kind != 2)
    assert query[rows].sum() == round(0.2 * reviews.sum())
    assert not np.any(query & (corpus.kind == 2))
  again = benchmark.split_queries(corpus, keys.derive(keys.root(0), "split"))
  other = benchmark.split_queries(corpus, keys.derive(keys.root(1), "split"))
  np.testing.assert_array_equal(query, again)
  assert np.any(query != other)


def test_a_least_squares_map_beats_no_map(features):
  corpus = text_setup.small_corpus()
  raw = [features[n] for n in benchmark.ORDER]
  for seed in range(3):
    query = benchmark.split_queries(corpus, keys.derive(keys.root(seed),
                                                        "split"))
    no_map = benchmark.identity_maps([384, 384, 768])
    lstsq = benchmark.fitted_maps(raw, "lstsq", corpus.version, query,
                                  keys.root(seed))
    got = {name: benchmark.figures(raw, maps, corpus, query)
           for name, maps in (("none", no_map), ("lstsq", lstsq))}
    assert got["lstsq"]["frozen"] > got["none"]["frozen"]
    assert got["lstsq"]["alignment"] < got["none"]["alignment"]
    assert got["lstsq"]["consumer_auc"] > got["none"]["consumer_auc"]


def test_recall_counts_same_movie_hits_over_the_relevant():
  group = np.asarray([0, 0, 0, 1, 1, 0])
  docs, queries = np.arange(5), np.asarray([5])
  e = np.eye(3)
  vectors = np.stack([e[0], e[1], e[2], e[0] + 0.1 * e[1], e[2], 2 * e[0]])
  # Query 5 (movie 0): docs 0 (movie 0) then 3 (movie 1) in its top 2, so
  # one hit of min(2, 3 relevant).
  got = benchmark.recall_at_k(docs, vectors[docs], queries, vectors[queries],
                              group, k=2)
  assert got == pytest.approx(0.5)


def test_the_heads_train_through_the_lineage(features):
  corpus = text_setup.small_corpus()
  query = benchmark.split_queries(corpus, keys.derive(keys.root(0), "split"))
  rows = [np.flatnonzero(~query & (corpus.version <= k)) for k in range(3)]
  tables, maps = heads.train_lineage(features, benchmark.ORDER, (16, 16, 24),
                                     rows, corpus.movie, keys.root(0), True,
                                     epochs=2)
  assert [t.shape for t in tables] == [(len(corpus), d) for d in (16, 16, 24)]
  assert maps[0] is None and [m.shape for m in maps[1:]] == [(16, 16),
                                                             (24, 16)]
  again, _ = heads.train_lineage(features, benchmark.ORDER, (16, 16, 24),
                                 rows, corpus.movie, keys.root(0), True,
                                 epochs=2)
  np.testing.assert_array_equal(tables[2], again[2])
  batch = heads.pair_batches(rows[0], corpus.movie, keys.root(3), 8, 20)
  pairs, group, mask = batch
  anchors, positives = pairs[:, :8][mask], pairs[:, 8:][mask]
  assert mask.sum() > 30 and np.all(anchors != positives)
  np.testing.assert_array_equal(corpus.movie[anchors], corpus.movie[positives])
  np.testing.assert_array_equal(group[mask], corpus.movie[anchors])
  assert set(anchors) <= set(rows[0])


def test_one_seed_then_the_report(features, tmp_path):
  corpus = text_setup.small_corpus()
  seeds = [benchmark.run_seed(corpus, features, s, epochs=2) for s in (0, 1)]
  for seed in seeds:
    assert list(seed) == list(benchmark.STRATEGIES)
    assert seed["enc-fix-v0"]["alignment"] == 0.0
    fixed = seed["enc-fix-v0"]
    assert fixed["consumer_auc"] == fixed["consumer_v0_auc"]
    assert seed["enc-reembed"]["frozen_pct"] == pytest.approx(100.0)
    assert seed["enc-reembed"]["v0_index_pct"] == pytest.approx(100.0)
    assert seed["heads-nobc"]["frozen"] == pytest.approx(
        seed["heads-nobc"]["frozen_pct"] * seed["heads-nobc"]["intended"]
        / 100.0)
    for name, record in seed.items():
      assert len(record["frozen_by_version"]) == 3
      assert 0.0 <= record["frozen"] <= 1.0, name
  text = report.write(tmp_path, seeds, {"seeds": [0, 1]}, "header")
  assert text.startswith("header\n\n| strategy | R@10 re-embedded (v2) |")
  for label in ("Residual MLP (post hoc)", "Heads: BC-Aligner (Lineage)",
                "Re-embedded with mpnet (ceiling)"):
    assert f"| {label}" in text
  saved = json.loads((tmp_path / "report.json").read_text())
  assert (saved["per_seed"][1]["enc-nobc"]["frozen"]
          == seeds[1]["enc-nobc"]["frozen"])
  assert all((tmp_path / p).stat().st_size > 1000 for p in report.PLOTS)


def test_the_command_reads_the_cache_and_prints_the_report(tmp_path_factory,
                                                           tmp_path):
  where = text_setup.small_cache(tmp_path_factory)
  run = subprocess.run(
      [sys.executable, "-m", "launch.text_benchmark", f"--cache_dir={where}",
       f"--workdir={tmp_path / 'run'}", "--max_movies=9", "--per_movie=16",
       "--seeds=0,1", "--epochs=1"], cwd=ROOT, capture_output=True,
      text=True)
  assert run.returncode == 0, run.stderr[-2000:]
  corpus = text_setup.small_corpus()
  assert f"embeddings ready ({len(corpus)} texts x 3 encoders)" in run.stdout
  assert "| Heads: BC-Aligner (Lineage) |" in run.stdout
  assert "[embed" not in run.stderr  # Everything came from the cache.
  assert (tmp_path / "run" / "report.md").read_text() in run.stdout
  bad = subprocess.run(
      [sys.executable, "-m", "launch.text_benchmark", f"--cache_dir={where}",
       f"--workdir={tmp_path / 'bad'}", f"--corpus={tmp_path / 'none.bz2'}"],
      cwd=ROOT, capture_output=True, text=True)
  assert bad.returncode == 2
  assert "none.bz2" in bad.stderr and "Traceback" not in bad.stderr
