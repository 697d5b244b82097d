"""Amazon reviews 2018 (method §2): the reviews and metadata of one category.

The files are `<Category>_5.json.gz` and `meta_<Category>.json.gz`; each
holds one JSON object per line, gzip-compressed or plain (told apart by the
gzip magic bytes). Reviews of items without metadata are dropped and counted.
Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import json
import math
import os
import pathlib
from typing import Any, Iterator
import zlib

from bcjax.data.graph import DataError, DynamicGraph, build_graph
from bcjax.util.progress import to_stderr

GZIP_MAGIC = b"\x1f\x8b"
RATING_RANGE = (1.0, 5.0)
HTML_MARK = "</span>"
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()


@dataclasses.dataclass(frozen=True)
class AmazonData:
  """A loaded Amazon category.

  Attributes:
    graph: the canonical graph, attribute kinds `category` and `brand`.
    dropped_reviews: reviews dropped because their item has no metadata.
  """
  graph: DynamicGraph
  dropped_reviews: int


def _json_lines(path: pathlib.Path) -> Iterator[tuple[int, dict[str, Any]]]:
  """Yields (1-based line number, object) of each non-blank line.

  Raises:
    DataError: a missing or unreadable file (e.g. truncated gzip), or a line
      that is not a JSON object; the message names the file (and line).
  """
  try:
    with path.open("rb") as raw:
      compressed = raw.read(2) == GZIP_MAGIC
    opener = gzip.open if compressed else open
    with opener(path, "rt", encoding="utf-8") as lines:
      for number, line in enumerate(lines, 1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
        except RecursionError:
          raise DataError(f"{path}:{number}: invalid JSON: nested too deeply"
                          ) from None
        except ValueError as error:  # JSONDecodeError, or a too long integer.
          raise DataError(f"{path}:{number}: invalid JSON: {error}") from None
        if not isinstance(record, dict):
          raise DataError(f"{path}:{number}: not a JSON object")
        yield number, record
  except FileNotFoundError:
    raise DataError(f"{path}: no such file") from None
  except (EOFError, OSError, zlib.error, UnicodeDecodeError) as error:
    raise DataError(f"{path}: unreadable ({type(error).__name__}: {error})"
                    ) from None


def _field(path, number: int, record: dict[str, Any], key: str,
           kinds: tuple[type, ...] = (str,), what: str = "a string"):
  """A required field of one of `kinds` (never a bool)."""
  value = record.get(key)
  if not isinstance(value, kinds) or isinstance(value, bool):
    raise DataError(f"{path}:{number}: field {key!r} missing or not {what} "
                    f"(got {_short(value)})")
  return value


def _short(value: Any, limit: int = 60) -> str:
  """`repr(value)`, cut to `limit` characters for error messages."""
  if isinstance(value, int) and value.bit_length() > 128:
    return f"an integer of {value.bit_length()} bits"
  text = repr(value)
  return text if len(text) <= limit else text[:limit] + "..."


def _id(path, number: int, record: dict[str, Any], key: str) -> str:
  """A required id field: a non-empty string of valid Unicode."""
  value = _field(path, number, record, key)
  if not value.strip():
    raise DataError(f"{path}:{number}: field {key!r} is empty")
  try:
    value.encode("utf-8")
  except UnicodeEncodeError:
    raise DataError(f"{path}:{number}: field {key!r} is not valid Unicode "
                    f"(got {_short(value)})") from None
  return value


def review_timestamp(review_time: str) -> int:
  """Parses reviewTime `MM D, YYYY` to a Unix timestamp (UTC midnight).

  Args:
    review_time: e.g. "09 13, 2009".

  Returns:
    Seconds since 1970-01-01 of that day's midnight, UTC.

  Raises:
    ValueError: not a valid date of that form.
  """
  month, _, rest = review_time.strip().partition(" ")
  day, _, year = rest.partition(",")
  try:
    date = datetime.date(int(year), int(month), int(day))
  except OverflowError:
    raise ValueError(f"date out of range: {review_time!r}") from None
  return (date.toordinal() - _EPOCH_ORDINAL) * 86400


def _read_reviews(path: pathlib.Path):
  users, items, ratings, times = [], [], [], []
  for number, record in _json_lines(path):
    users.append(_id(path, number, record, "reviewerID"))
    items.append(_id(path, number, record, "asin"))
    overall = _field(path, number, record, "overall", (int, float), "a number")
    rating = float(overall) if abs(overall) < 1e300 else math.inf  # NaN too.
    if not RATING_RANGE[0] <= rating <= RATING_RANGE[1]:  # NaN fails too.
      raise DataError(f"{path}:{number}: rating {_short(overall)} outside "
                      f"{list(RATING_RANGE)}")
    ratings.append(rating)
    review_time = _field(path, number, record, "reviewTime")
    try:
      times.append(review_timestamp(review_time))
    except ValueError:
      raise DataError(f"{path}:{number}: bad reviewTime {_short(review_time)}"
                      ", expected 'MM D, YYYY'") from None
  if not users:
    raise DataError(f"{path}: no reviews")
  return users, items, ratings, times


def _values(path, number: int, record: dict[str, Any], key: str) -> list[str]:
  """The non-empty strings of an optional string or list-of-strings field."""
  value = record.get(key)
  values = [value] if isinstance(value, str) else value or []
  if not (isinstance(values, list) and all(isinstance(v, str) for v in values)):
    raise DataError(f"{path}:{number}: field {key!r} is not a string or a "
                    f"list of strings (got {_short(value)})")
  values = [v.strip() for v in values]
  return [v for v in values if v and HTML_MARK not in v]


def _read_meta(path: pathlib.Path, wanted: set[str]):
  """Categories and brand of the wanted items; an asin's first record wins."""
  categories, brands, number = {}, {}, 0
  for number, record in _json_lines(path):
    asin = _id(path, number, record, "asin")
    if asin in wanted and asin not in categories:
      categories[asin] = _values(path, number, record, "category")
      brands[asin] = _values(path, number, record, "brand")[:1]
  if not number:
    raise DataError(f"{path}: no metadata records")
  return categories, brands


def _default_name(reviews_path: pathlib.Path) -> str:
  stem = reviews_path.name
  for suffix in (".gz", ".json", "_5"):
    stem = stem.removesuffix(suffix)
  return f"amazon-{stem}"


def read_amazon(reviews_path: str | os.PathLike, meta_path: str | os.PathLike,
                name: str | None = None) -> AmazonData:
  """Loads one Amazon category and reports the reviews it dropped.

  Args:
    reviews_path: `<Category>_5.json.gz` (fields reviewerID, asin, overall,
      reviewTime), gzip or plain.
    meta_path: `meta_<Category>.json.gz` (fields asin, brand, category).
    name: the graph's name; default `amazon-<Category>` from the file name.

  Returns:
    The graph over the reviews whose item has metadata, and the number of
    reviews dropped for lacking it.

  Raises:
    DataError: a missing, truncated or malformed file (naming the file and
      line), or no review with metadata.
  """
  reviews_path, meta_path = pathlib.Path(reviews_path), pathlib.Path(meta_path)
  users, items, ratings, times = _read_reviews(reviews_path)
  categories, brands = _read_meta(meta_path, set(items))
  keep = [i for i, item in enumerate(items) if item in categories]
  if not keep:
    raise DataError(f"{reviews_path}: no review has an item in {meta_path}")
  return AmazonData(
      graph=build_graph(
          name or _default_name(reviews_path),
          [users[i] for i in keep], [items[i] for i in keep],
          [ratings[i] for i in keep], [times[i] for i in keep],
          {"category": categories, "brand": brands},
          rating_range=RATING_RANGE),
      dropped_reviews=len(items) - len(keep))


def load_amazon(reviews_path: str | os.PathLike, meta_path: str | os.PathLike,
                name: str | None = None) -> DynamicGraph:
  """`read_amazon`'s graph; the number of dropped reviews is logged.

  Args:
    reviews_path: `<Category>_5.json.gz`, gzip or plain.
    meta_path: `meta_<Category>.json.gz`.
    name: the graph's name; default `amazon-<Category>`.

  Returns:
    The canonical `DynamicGraph` (see `read_amazon`).

  Raises:
    DataError: see `read_amazon`.
  """
  data = read_amazon(reviews_path, meta_path, name)
  to_stderr(f"{data.graph.name}: dropped {data.dropped_reviews} reviews of "
            "items without metadata")
  return data.graph
