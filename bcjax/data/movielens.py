"""MovieLens-100k (SPEC 2): recbole's shipped copy or a GroupLens folder."""

from __future__ import annotations

import importlib.util
import pathlib
from typing import Iterator

from bcjax.data.graph import DataError, DynamicGraph, build_graph

RECBOLE_SUBDIR = ("dataset_example", "ml-100k")
GROUPLENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy",
    "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror",
    "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
RATING_RANGE = (1.0, 5.0)


def recbole_dir() -> pathlib.Path:
  """The ml-100k folder shipped by recbole, found without importing it.

  Raises:
    DataError: recbole is not installed or lacks the folder.
  """
  spec = importlib.util.find_spec("recbole")
  folder = None
  if spec and spec.submodule_search_locations:
    package = pathlib.Path(spec.submodule_search_locations[0])
    folder = package.joinpath(*RECBOLE_SUBDIR)
  if folder is None or not folder.is_dir():
    raise DataError("MovieLens-100k not found: run `pip install --no-deps "
                    "recbole==1.2.1` or pass the path of a GroupLens ml-100k "
                    "folder")
  return folder


def decade(year: str) -> list[str]:
  """The release decade as a one-value list (`1995` -> [`1990s`]), or []."""
  year = year.strip()
  return [f"{int(year) // 10 * 10}s"] if year.isdigit() else []


def _rows(path: pathlib.Path, sep: str,
          encoding: str = "utf-8") -> Iterator[tuple[int, list[str]]]:
  """Yields (1-based line number, fields) of the non-blank lines of a file."""
  if not path.is_file():
    raise DataError(f"{path}: no such file")
  with path.open(encoding=encoding) as lines:
    for number, line in enumerate(lines, 1):
      if line.strip():
        yield number, line.rstrip("\r\n").split(sep)


def _check_width(path: pathlib.Path, number: int, fields: list[str],
                 count: int) -> None:
  if len(fields) < count:
    raise DataError(f"{path}:{number}: expected {count} fields, got "
                    f"{len(fields)}")


def _interactions(path: pathlib.Path, rows, columns: tuple[int, ...]):
  """Parses (user, item, rating, timestamp) columns into four lists."""
  users, items, ratings, times = [], [], [], []
  for number, fields in rows:
    _check_width(path, number, fields, max(columns) + 1)
    user, item, rating, time = (fields[c] for c in columns)
    try:
      ratings.append(float(rating))
      times.append(float(time))
    except ValueError as error:
      raise DataError(f"{path}:{number}: {error}") from None
    users.append(user)
    items.append(item)
  return users, items, ratings, times


def _recbole_columns(path: pathlib.Path, rows, names: tuple[str, ...]):
  """Reads a recbole header and returns the column index of each name."""
  number, header = next(rows, (1, []))
  missing = [name for name in names if name not in header]
  if missing:
    raise DataError(f"{path}:{number}: header lacks columns {missing}")
  return tuple(header.index(name) for name in names)


def _read_recbole(folder: pathlib.Path):
  inter_path = folder / "ml-100k.inter"
  rows = _rows(inter_path, "\t")
  columns = _recbole_columns(inter_path, rows, (
      "user_id:token", "item_id:token", "rating:float", "timestamp:float"))
  interactions = _interactions(inter_path, rows, columns)
  item_path = folder / "ml-100k.item"
  rows = _rows(item_path, "\t")
  item_col, year_col, class_col = _recbole_columns(item_path, rows, (
      "item_id:token", "release_year:token", "class:token_seq"))
  width = max(item_col, year_col, class_col) + 1
  genres, years = {}, {}
  for number, fields in rows:
    _check_width(item_path, number, fields, width)
    item = fields[item_col]
    genres[item] = fields[class_col].split()
    # Non-numeric years give no value: item 267 has `unkonwn`, and item 1412
    # has `V` (recbole took the title's trailing "(V)" for the year) whereas
    # GroupLens gives it a release date.
    years[item] = decade(fields[year_col])
  return interactions, genres, years


def _read_grouplens(folder: pathlib.Path):
  data_path = folder / "u.data"
  interactions = _interactions(data_path, _rows(data_path, "\t"), (0, 1, 2, 3))
  item_path = folder / "u.item"
  genres, years = {}, {}
  for number, fields in _rows(item_path, "|", encoding="latin-1"):
    _check_width(item_path, number, fields, 5 + len(GROUPLENS_GENRES))
    item, date, flags = fields[0], fields[2], fields[5:]
    genres[item] = [g for g, f in zip(GROUPLENS_GENRES, flags) if f == "1"]
    # The release date is dd-Mon-yyyy, or empty.
    years[item] = decade(date.rpartition("-")[2])
  return interactions, genres, years


def load_movielens_100k(path: str | None = None) -> DynamicGraph:
  """Loads MovieLens-100k with attribute kinds `genre` and `year` (decade).

  Args:
    path: a GroupLens `ml-100k` folder (`u.data`, `u.item`); None reads the
      copy shipped by the PyPI package recbole 1.2.1.

  Returns:
    The canonical graph named `ml100k`.

  Raises:
    DataError: the data is missing or malformed.
  """
  folder = recbole_dir() if path is None else pathlib.Path(path)
  if path is not None and not folder.is_dir():
    raise DataError(f"{folder}: no such MovieLens-100k folder")
  read = _read_recbole if path is None else _read_grouplens
  (users, items, ratings, times), genres, years = read(folder)
  return build_graph("ml100k", users, items, ratings, times,
                     {"genre": genres, "year": years},
                     rating_range=RATING_RANGE)
