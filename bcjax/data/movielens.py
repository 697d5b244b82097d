"""MovieLens-100k (method §2): recbole's shipped copy or a GroupLens folder."""

from __future__ import annotations

import importlib.util
import math
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

  Returns:
    The folder's path (`ml-100k.inter`, `ml-100k.item`).

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
  """The release decade as a one-value list (`1995` -> [`1990s`]), or [].

  Args:
    year: the release year's text; anything but digits has no decade.

  Returns:
    `[decade]`, or [] for a non-numeric year.
  """
  year = year.strip()
  return [f"{int(year) // 10 * 10}s"] if year.isdigit() else []


def _rows(path: pathlib.Path, sep: str,
          encoding: str = "utf-8") -> Iterator[tuple[int, list[str]]]:
  """Yields (1-based line number, fields) of the non-blank lines of a file.

  Raises:
    DataError: a missing or unreadable file, or a line that is not valid
      `encoding`; the message names the file (and line).
  """
  if not path.is_file():
    raise DataError(f"{path}: no such file")
  try:
    with path.open("rb") as lines:
      for number, raw in enumerate(lines, 1):
        try:
          line = raw.decode(encoding)
        except UnicodeDecodeError as error:
          raise DataError(f"{path}:{number}: not valid {encoding} text "
                          f"({error.reason} at byte {error.start})") from None
        if line.strip():
          yield number, line.rstrip("\r\n").split(sep)
  except OSError as error:
    raise DataError(f"{path}: unreadable ({type(error).__name__}: {error})"
                    ) from None


def _check_width(path: pathlib.Path, number: int, fields: list[str],
                 count: int) -> None:
  if len(fields) != count:
    raise DataError(f"{path}:{number}: expected {count} fields, got "
                    f"{len(fields)}")


def _number(path: pathlib.Path, number: int, field: str, text: str) -> float:
  """A finite number of a line, else a DataError naming file and line."""
  try:
    value = float(text)
  except ValueError:
    value = None
  if value is None or not math.isfinite(value):
    raise DataError(f"{path}:{number}: {field} {text[:40]!r} is not a finite "
                    "number")
  return value


def _interactions(path: pathlib.Path, rows, columns: tuple[int, ...],
                  width: int):
  """Parses (user, item, rating, timestamp) columns into four lists."""
  users, items, ratings, times = [], [], [], []
  for number, fields in rows:
    _check_width(path, number, fields, width)
    user, item, rating, time = (fields[c] for c in columns)
    for field, raw_id in (("user id", user), ("item id", item)):
      if not raw_id.strip():
        raise DataError(f"{path}:{number}: empty {field}")
    rating = _number(path, number, "rating", rating)
    if not RATING_RANGE[0] <= rating <= RATING_RANGE[1]:
      raise DataError(f"{path}:{number}: rating {rating} outside "
                      f"{list(RATING_RANGE)}")
    time = _number(path, number, "timestamp", time)
    if not abs(time) < 2.0**62:  # Stored as int64 seconds.
      raise DataError(f"{path}:{number}: timestamp {time} out of range")
    users.append(user)
    items.append(item)
    ratings.append(rating)
    times.append(time)
  if not users:
    raise DataError(f"{path}: no interactions")
  return users, items, ratings, times


def _first_item_line(path: pathlib.Path, number: int, item: str,
                     seen: dict[str, int]) -> None:
  """Records the line of an item's attributes; an item may appear once."""
  if not item.strip():
    raise DataError(f"{path}:{number}: empty item id")
  if item in seen:
    raise DataError(f"{path}:{number}: duplicate item id {item!r} (first on "
                    f"line {seen[item]})")
  seen[item] = number


def _recbole_columns(path: pathlib.Path, rows, names: tuple[str, ...]):
  """Reads a recbole header; returns each name's column index and the width."""
  number, header = next(rows, (1, []))
  missing = [name for name in names if name not in header]
  if missing:
    raise DataError(f"{path}:{number}: header lacks columns {missing}")
  return tuple(header.index(name) for name in names), len(header)


def _read_recbole(folder: pathlib.Path):
  inter_path = folder / "ml-100k.inter"
  rows = _rows(inter_path, "\t")
  columns, width = _recbole_columns(inter_path, rows, (
      "user_id:token", "item_id:token", "rating:float", "timestamp:float"))
  interactions = _interactions(inter_path, rows, columns, width)
  item_path = folder / "ml-100k.item"
  rows = _rows(item_path, "\t")
  (item_col, year_col, class_col), width = _recbole_columns(item_path, rows, (
      "item_id:token", "release_year:token", "class:token_seq"))
  genres, years, seen = {}, {}, {}
  for number, fields in rows:
    _check_width(item_path, number, fields, width)
    item = fields[item_col]
    _first_item_line(item_path, number, item, seen)
    genres[item] = fields[class_col].split()
    # Non-numeric years give no value: item 267 has `unkonwn`, and item 1412
    # has `V` (recbole took the title's trailing "(V)" for the year) whereas
    # GroupLens gives it a release date.
    years[item] = decade(fields[year_col])
  return interactions, genres, years


def _read_grouplens(folder: pathlib.Path):
  data_path = folder / "u.data"
  interactions = _interactions(data_path, _rows(data_path, "\t"),
                               (0, 1, 2, 3), 4)
  item_path = folder / "u.item"
  genres, years, seen = {}, {}, {}
  for number, fields in _rows(item_path, "|", encoding="latin-1"):
    _check_width(item_path, number, fields, 5 + len(GROUPLENS_GENRES))
    item, date, flags = fields[0], fields[2], fields[5:]
    _first_item_line(item_path, number, item, seen)
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
