"""The Rotten Tomatoes loader against the raw file read independently, its
version boundaries, its subsets and its errors on bad files."""

import bz2
import csv
import io
import re

import numpy as np
import pytest

import text_setup

text_setup.require_corpus()

from bcjax.data import text  # noqa: E402
from bcjax.data.graph import DataError  # noqa: E402


def raw_rows():
  """The file's rows, read here with csv alone."""
  with open(text.corpus_path(), "rb") as f:
    content = bz2.decompress(f.read()).decode("utf-8")
  return list(csv.reader(io.StringIO(content, newline="")))


def test_counts_and_versions_match_the_raw_file():
  header, *rows = raw_rows()
  col = {name: header.index(name) for name in ("category", "text",
                                               "movie_name")}
  rows = [r for r in rows if r[col["text"]].strip()]
  corpus = text.load_rotten_tomatoes()
  assert len(corpus) == len(rows) == 5022
  assert corpus.texts == tuple(r[col["text"]] for r in rows)
  names = sorted({r[col["movie_name"]] for r in rows})
  assert corpus.movies == tuple(names) and len(names) == 156
  for kind, count in (("fresh", 2455), ("rotten", 2411), ("plot", 156)):
    assert sum(r[col["category"]] == kind for r in rows) == count
    assert np.sum(corpus.kind == text.KINDS.index(kind)) == count
  # Movies by name: ranks 0..77 at v0, 78..116 at v1, 117..155 at v2.
  expected = [0 if names.index(r[col["movie_name"]]) < 78 else
              1 if names.index(r[col["movie_name"]]) < 117 else 2
              for r in rows]
  np.testing.assert_array_equal(corpus.version, expected)
  assert corpus.num_versions == 3
  for v in range(3):  # Every movie arrives whole at one version.
    movies = set(corpus.movie[corpus.version == v])
    assert not movies & set(corpus.movie[corpus.version != v])


def test_subsets_keep_the_first_movies_and_texts():
  corpus = text.load_rotten_tomatoes(max_movies=9, per_movie=16)
  full = text.load_rotten_tomatoes()
  assert corpus.movies == full.movies[:9]
  counts = np.minimum(np.bincount(full.movie)[:9], 16)
  assert np.bincount(corpus.movie).tolist() == counts.tolist()
  assert min(counts) < 16 and len(corpus) == counts.sum()
  for m in range(9):
    first = [i for i in range(len(full)) if full.movie[i] == m][:16]
    assert tuple(corpus.texts[i] for i in np.flatnonzero(corpus.movie == m)
                 ) == tuple(full.texts[i] for i in first)
  # 9 movies: round(4.5) = 4 at v0, round(6.75) = 7 -> 3 at v1, 2 at v2.
  by_movie = [corpus.version[corpus.movie == m][0] for m in range(9)]
  assert by_movie == [0] * 4 + [1] * 3 + [2] * 2
  assert corpus.fingerprint() != full.fingerprint()
  assert corpus.subset([3, 1]).texts == (corpus.texts[3], corpus.texts[1])


def test_movie_versions_refuses_bad_fractions():
  np.testing.assert_array_equal(text.movie_versions(4, (0.5, 1.0)),
                                [0, 0, 1, 1])
  for bad in ((0.5,), (0.6, 0.5, 1.0), (0.0, 1.0), (0.99, 1.0)):
    with pytest.raises(ValueError, match="fractions"):
      text.movie_versions(4, bad)


def write_bz2(path, content: str):
  path.write_bytes(bz2.compress(content.encode()))
  return path


def test_bad_files_are_named_with_the_field(tmp_path):
  missing = write_bz2(tmp_path / "a.csv.bz2", "category,text,movie_name\n")
  with pytest.raises(DataError, match=re.escape(str(missing))
                     + ".*lack.*filename"):
    text.load_rotten_tomatoes(missing)
  bad_kind = write_bz2(tmp_path / "b.csv.bz2",
                       "category,filename,text,movie_name\n"
                       "fresh,f,good,m1\nsplat,f,bad,m2\n")
  with pytest.raises(DataError, match=re.escape(str(bad_kind))
                     + ", line 3: field 'category' is 'splat'"):
    text.load_rotten_tomatoes(bad_kind)
  short = write_bz2(tmp_path / "c.csv.bz2",
                    "category,filename,text,movie_name\nfresh,f\n")
  with pytest.raises(DataError, match="line 2: no field 'text'"):
    text.load_rotten_tomatoes(short)
  plain = tmp_path / "d.csv.bz2"
  plain.write_text("category,filename,text,movie_name\n")
  with pytest.raises(DataError, match=re.escape(str(plain)) + ": not a "
                     "readable bz2"):
    text.load_rotten_tomatoes(plain)
  with pytest.raises(ValueError, match="per_movie=0"):
    text.load_rotten_tomatoes(per_movie=0)
