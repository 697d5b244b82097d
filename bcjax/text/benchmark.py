"""One seed of the text benchmark: every strategy's figures at the newest
version, from the cached embeddings.

The versions (`bcjax.data.text`): v0's movies embedded by `ORDER[0]`, v1's
by `ORDER[1]`, v2's by `ORDER[2]`. A seed splits each movie's reviews into
queries (`QUERY_SHARE`) and documents; the documents of the movies known at
version k are the index at version k. Each strategy gives every version's
table `[n, d_k]` and its backward maps B_k (version k's rows into version
k-1's space); B_1 ... B_k carry a row of version k into version 0's space.

  frozen index   built at v0 from v0's documents, never re-embedded: the
                 documents of version v's movies are inserted as B_1..B_v of
                 version v's table (as they would have been when they
                 arrived); the queries of the newest version are mapped the
                 same way. Recall@10 of same-movie documents
                 (hits / min(10, relevant)), cosine similarity, faiss exact.
  old movies     the same at the newest version, for the queries of
                 version 0's movies alone, whose documents are all vectors
                 nobody re-embedded; and those queries against an index of
                 version 0's documents alone (`v0_index`): the setting of
                 Drift-Adapter (EMNLP 2025), new queries mapped into an old
                 index.
  intended       Recall@10 with every text re-embedded by the strategy's
                 newest model (its own index, rebuilt).
  consumer       a ridge classifier of fresh/rotten trained once on v0's
                 document reviews in v0's space, scored (ROC-AUC) on the
                 query reviews mapped from the newest version, against the
                 same reviews embedded by version 0.
  alignment      mean L2 distance between a query's newest vector mapped to
                 v0 and its v0 vector.

The ceiling of the frozen index is re-embedding with the newest model that
no compatibility constrains (the raw newest encoder for the encoder
strategies, independently trained heads for the head strategies).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import jax
import numpy as np

from bcjax.backward import BackwardMap, apply_chain, fits as backward_fits
from bcjax.core import metrics
from bcjax.data.sampling import numpy_rng
from bcjax.data.text import KINDS, TextCorpus
from bcjax.store import faiss_index
from bcjax.text import heads
from bcjax.util import keys

ORDER = ("minilm-l3", "minilm-l6", "mpnet")  # Same width, then wider.
HEAD_DIMS = (128, 128, 256)
QUERY_SHARE = 0.2
K = 10
RIDGE = 1e-3
# strategy -> (family, label); the table's order. "enc-*" map the frozen
# encoders' own vectors, "heads-*" train a head over each encoder.
STRATEGIES = {
    "enc-fix-v0": ("encoders", "Fix-v0 (stale: v0's encoder kept)"),
    "enc-nobc": ("encoders", "No map (new vectors read as old; prefix)"),
    "enc-lstsq": ("encoders", "Least squares (post hoc)"),
    "enc-procrustes": ("encoders", "Procrustes (post hoc)"),
    "enc-lowrank-affine": ("encoders", "Low-rank affine (post hoc)"),
    "enc-residual-mlp": ("encoders", "Residual MLP (post hoc)"),
    "enc-reembed": ("encoders", "Re-embedded with mpnet (ceiling)"),
    "heads-fix-v0": ("heads", "Heads: Fix-v0 (stale: v0's head kept)"),
    "heads-nobc": ("heads", "Heads: No-BC (prefix; ceiling re-embedded)"),
    "heads-lstsq": ("heads", "Heads: No-BC + least squares (post hoc)"),
    "heads-bc-aligner": ("heads", "Heads: BC-Aligner (Lineage)"),
}
CEILINGS = {"encoders": "enc-reembed", "heads": "heads-nobc"}


def split_queries(corpus: TextCorpus, key: jax.Array,
                  share: float = QUERY_SHARE) -> np.ndarray:
  """`[n]` bool: the queries, `share` of each movie's reviews (at least
  one, never all of a movie's texts; plots are never queries)."""
  rng, query = numpy_rng(key), np.zeros(len(corpus), bool)
  for m in np.unique(corpus.movie):
    rows = np.flatnonzero(corpus.movie == m)
    reviews = rows[corpus.kind[rows] != KINDS.index("plot")]
    count = min(max(1, round(share * len(reviews))), len(rows) - 1)
    query[rng.permutation(reviews)[:count]] = True
  return query


def to_version0(tables: Sequence[np.ndarray], maps: Sequence[BackwardMap],
                k: int, rows: np.ndarray) -> np.ndarray:
  """Version k's vectors of `rows` carried to version 0 by B_k ... B_1
  (`maps` is `[B_1, ..., B_K]`; bcjax's chain applicator)."""
  return np.asarray(apply_chain(maps, tables[k][rows], k, 0), np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def recall_at_k(docs: np.ndarray, doc_vectors: np.ndarray,
                queries: np.ndarray, query_vectors: np.ndarray,
                group: np.ndarray, k: int = K) -> float:
  """Mean over queries of (same-group documents in the top k) / min(k,
  same-group documents), cosine similarity through a faiss exact index."""
  index = faiss_index.build_index(_unit(doc_vectors), "exact")
  _, found = faiss_index.search(index, _unit(query_vectors), min(k, len(docs)))
  hits = group[docs][found] == group[queries][:, None]
  relevant = (group[queries][:, None] == group[docs][None, :]).sum(1)
  keep = relevant > 0
  return float(np.mean(hits.sum(1)[keep] / np.minimum(k, relevant[keep])))


def frozen_recall(tables, maps, version: np.ndarray, query: np.ndarray,
                  group: np.ndarray, k: int,
                  ask: np.ndarray | None = None, insert: bool = True
                  ) -> float:
  """Recall@K at version k through the frozen index (module docstring), of
  the queries known at version k (only those in the `ask` mask, if given).
  `maps=None`: the index rebuilt from version k's table instead; `insert`
  False: the index holds version 0's documents alone."""
  docs = np.flatnonzero(~query & (version <= (k if insert else 0)))
  queries = np.flatnonzero(query & (version <= k)
                           & (True if ask is None else ask))
  if maps is None:
    return recall_at_k(docs, tables[k][docs], queries, tables[k][queries],
                       group)
  index = faiss_index.build_index(
      _unit(tables[0][docs[version[docs] == 0]]), "exact")
  for v in range(1, k + 1 if insert else 1):
    arrived = docs[version[docs] == v]
    index = faiss_index.with_inserted(
        index, _unit(to_version0(tables, maps, v, arrived)))
  order = np.concatenate([docs[version[docs] == v]
                          for v in range(k + 1 if insert else 1)])
  _, found = faiss_index.search(
      index, _unit(to_version0(tables, maps, k, queries)), min(K, len(order)))
  hits = group[order][found] == group[queries][:, None]
  relevant = (group[queries][:, None] == group[order][None, :]).sum(1)
  keep = relevant > 0
  return float(np.mean(hits.sum(1)[keep] / np.minimum(K, relevant[keep])))


def consumer_auc(train_x, train_y, test_x, test_y) -> float:
  """ROC-AUC of a ridge classifier (least squares on +-1 with a bias)."""
  x = np.c_[train_x, np.ones(len(train_x))].astype(np.float64)
  gram = x.T @ x + RIDGE * len(x) * np.eye(x.shape[1])
  w = np.linalg.solve(gram, x.T @ (2.0 * train_y - 1.0))
  score = np.c_[test_x, np.ones(len(test_x))] @ w
  return float(metrics.roc_auc(score, test_y))


def figures(tables, maps, corpus: TextCorpus, query: np.ndarray) -> dict:
  """One strategy's figures (module docstring). `maps=None`: every text
  re-embedded at every version (the index rebuilt; the consumers would be
  retrained, so they have no figure)."""
  version, group, last = corpus.version, corpus.movie, len(tables) - 1
  docs, queries = np.flatnonzero(~query), np.flatnonzero(query)
  out = {"intended": recall_at_k(docs, tables[last][docs], queries,
                                 tables[last][queries], group),
         "frozen_by_version": [
             frozen_recall(tables, maps, version, query, group, k)
             for k in range(last + 1)],
         "frozen_old": frozen_recall(tables, maps, version, query, group,
                                     last, ask=version == 0),
         "intended_old": frozen_recall(tables, None, version, query, group,
                                       last, ask=version == 0),
         "v0_index": frozen_recall(tables, maps, version, query, group,
                                   last, ask=version == 0, insert=False),
         "v0_index_ceiling": frozen_recall(tables, None, version, query,
                                           group, last, ask=version == 0,
                                           insert=False)}
  out["frozen"] = out["frozen_by_version"][-1]
  if maps is None:
    return {**out, "consumer_auc": None, "consumer_v0_auc": None,
            "alignment": None}
  reviews = corpus.kind != KINDS.index("plot")
  fresh = (corpus.kind == KINDS.index("fresh")).astype(np.float64)
  train = np.flatnonzero(~query & reviews & (version == 0))
  test = np.flatnonzero(query & reviews)
  mapped = to_version0(tables, maps, last, test)
  out["consumer_auc"] = consumer_auc(tables[0][train], fresh[train], mapped,
                                     fresh[test])
  out["consumer_v0_auc"] = consumer_auc(tables[0][train], fresh[train],
                                        tables[0][test], fresh[test])
  mapped_q = to_version0(tables, maps, last, queries)
  out["alignment"] = float(np.mean(np.linalg.norm(
      mapped_q - tables[0][queries], axis=1)))
  return out


def identity_maps(dims: Sequence[int]) -> list[BackwardMap]:
  """`[B_1, ..., B_K]` reading version k-1's width off version k's vectors:
  the first d_{k-1} dims (the identity at equal widths)."""
  eye = lambda k: np.eye(dims[k], dims[k - 1], dtype=np.float32)  # noqa: E731
  return [BackwardMap.from_matrix(eye(k))
          for k in range(1, len(dims))]


def fitted_maps(tables, fit: str, version: np.ndarray, query: np.ndarray,
                key: jax.Array) -> list[BackwardMap]:
  """B_k fitted post hoc on version k-1's documents (the texts both
  models embed when version k arrives), by `bcjax.backward.fits.fit`."""
  maps = []
  for k in range(1, len(tables)):
    rows = np.flatnonzero(~query & (version <= k - 1))
    maps.append(backward_fits.fit(fit, tables[k][rows], tables[k - 1][rows],
                                  keys.derive(key, "adapter", k)))
  return maps


def run_seed(corpus: TextCorpus, features: Mapping[str, np.ndarray],
             seed: int, epochs: int = heads.EPOCHS,
             log: Callable[[str], None] = lambda _: None) -> dict:
  """Every strategy's figures for one seed.

  Args:
    corpus: the texts (their versions, movies and kinds).
    features: encoder name -> `[n, d]` cached embeddings, for `ORDER`.
    seed: the run key's seed: the split (`split`), the adapters
      (`enc-<fit>`, `heads-lstsq`) and the heads (`heads`: both head
      lineages share version k's keys, so they train the same v0 head, as
      the main job's strategies share version 0) draw from named streams
      under it.
    epochs: the heads' epochs per version.
    log: one line per strategy done.

  Returns:
    strategy -> figures, plus `"frozen_pct"`, `"frozen_old_pct"` (the
    queries of version 0's movies only) and `"v0_index_pct"` (those
    queries against version 0's documents alone) as % of its family's
    ceiling.
  """
  root = keys.root(seed)
  query = split_queries(corpus, keys.derive(root, "split"))
  version = corpus.version
  raw = [np.asarray(features[name], np.float32) for name in ORDER]
  dims = [t.shape[1] for t in raw]
  out = {}

  def add(name, tables, maps):
    out[name] = figures(tables, maps, corpus, query)
    log(f"seed {seed}: {name} done")

  add("enc-fix-v0", [raw[0]] * len(raw), identity_maps([dims[0]] * len(raw)))
  add("enc-nobc", raw, identity_maps(dims))
  for fit in backward_fits.FITS:
    add(f"enc-{fit}", raw, fitted_maps(raw, fit, version, query,
                                       keys.derive(root, f"enc-{fit}")))
  add("enc-reembed", raw, None)
  train_rows = [np.flatnonzero(~query & (version <= k))
                for k in range(len(raw))]
  for name, compatible in (("heads-nobc", False), ("heads-bc-aligner", True)):
    tables, matrices = heads.train_lineage(
        dict(zip(ORDER, raw)), ORDER, HEAD_DIMS, train_rows, corpus.movie,
        keys.derive(root, "heads"), compatible, epochs)
    if compatible:
      add(name, tables, [BackwardMap.from_matrix(w) for w in matrices[1:]])
      add("heads-fix-v0", [tables[0]] * len(raw),
          identity_maps([HEAD_DIMS[0]] * len(raw)))
    else:
      add(name, tables, identity_maps(HEAD_DIMS))
      add("heads-lstsq", tables, fitted_maps(
          tables, "lstsq", version, query, keys.derive(root, "heads-lstsq")))
  for name, record in out.items():
    ceiling = out[CEILINGS[STRATEGIES[name][0]]]
    record["frozen_pct"] = 100.0 * record["frozen"] / ceiling["intended"]
    record["frozen_old_pct"] = (100.0 * record["frozen_old"]
                                / ceiling["intended_old"])
    record["v0_index_pct"] = (100.0 * record["v0_index"]
                              / ceiling["v0_index_ceiling"])
  return {name: out[name] for name in STRATEGIES}
