"""Hostile and broken input to the loaders and the splits (issue 8, item 4).

Property and fuzz tests: every malformed input gives a `DataError` (a
`ValueError`) whose message names the file and the line (or the version and
its window), never an unrelated traceback. The loaders write nothing, so no
partial output can be left; the store's side is in test_store_safety.py.

Fuzzed inputs per run (passing examples, `--hypothesis-show-statistics`):
  Amazon: truncated gzip 50 (random byte offsets of either file), invalid
    JSON lines 50, missing or mistyped fields 50, non-numeric or
    out-of-range ratings 40, duplicated ids 30;
  MovieLens: wrong column counts 40 (u.data) + 25 (u.item), non-numeric
    fields 50, invalid UTF-8 bytes 25, duplicated item ids 20 (every case);
  splits: non-increasing times 50, empty windows / no validation 50;
  480 fuzzed inputs, plus 9 hand-made cases. Also run once with 300 examples
  per test: no failure.
"""

import gzip
import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bcjax.data import DataError
from bcjax.data import amazon, movielens
from bcjax.data.graph import build_graph
from bcjax.data.splits import check_splits, make_splits

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# JSON values of every type, small.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)
# One line of text: no line breaks, no lone surrogates (not writable as UTF-8).
line_text = st.text(st.characters(blacklist_categories=("Cs",),
                                  blacklist_characters="\n\r"), max_size=30)


def _assert_names(error, path, *parts):
  """The message starts with the file (and line) and names the problem."""
  message = str(error.value)
  assert message.startswith(str(path)), message
  for part in parts:
    assert part in message, (part, message)


# ---------------------------------------------------------------- Amazon ---

def _review(user="u0", asin="A0", rating=5.0, time="09 1, 2015"):
  return {"reviewerID": user, "asin": asin, "overall": rating,
          "reviewTime": time}


def _reviews():
  return [_review(f"u{i % 4}", f"A{i % 3}", 1.0 + i % 5,
                  f"0{1 + i % 9} 2, 2015") for i in range(10)]


def _meta():
  return [{"asin": f"A{i}", "category": ["Toys", f"c{i}"], "brand": "Acme"}
          for i in range(3)]


def _write(path, records, compress=False):
  lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
  data = "".join(line + "\n" for line in lines).encode()
  path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
  return path


def _amazon(tmp_path, reviews=None, meta=None, compress=False):
  return (_write(tmp_path / "Toys_5.json.gz", _reviews() if reviews is None
                 else reviews, compress),
          _write(tmp_path / "meta_Toys.json.gz", _meta() if meta is None
                 else meta, compress))


@FUZZ
@given(st.sampled_from(["reviews", "meta"]), st.floats(0, 1, exclude_max=True))
def test_amazon_truncated_gzip_at_any_offset(tmp_path, which, fraction):
  reviews, meta = _amazon(tmp_path, compress=True)
  path = reviews if which == "reviews" else meta
  data = path.read_bytes()
  path.write_bytes(data[:int(fraction * len(data))])
  with pytest.raises(DataError) as error:
    amazon.read_amazon(reviews, meta)
  _assert_names(error, path)


@FUZZ
@given(line_text, st.integers(0, 10), st.sampled_from(["reviews", "meta"]),
       st.booleans())
def test_amazon_invalid_json_line_names_file_and_line(tmp_path, line, at,
                                                      which, compress):
  assume(line.strip())
  try:
    assume(not isinstance(json.loads(line), dict))
  except (ValueError, RecursionError):
    pass  # Not JSON at all: the case under test.
  records = _reviews() if which == "reviews" else _meta()
  records.insert(min(at, len(records)), line)
  reviews, meta = _amazon(tmp_path, compress=compress, **{which: records})
  path = reviews if which == "reviews" else meta
  with pytest.raises(DataError) as error:
    amazon.read_amazon(reviews, meta)
  _assert_names(error, f"{path}:{min(at, len(records) - 1) + 1}: ")


def test_amazon_hostile_json_documents(tmp_path):
  """Nesting that would overflow the parser, or an over-long integer."""
  for line in ["[" * 100_000, '{"overall": ' + "9" * 5000 + "}"]:
    reviews, meta = _amazon(tmp_path, reviews=[_review(), line])
    with pytest.raises(DataError) as error:
      amazon.read_amazon(reviews, meta)
    _assert_names(error, f"{reviews}:2: invalid JSON")


def _valid_review_field(key, value):
  """The loader's rule for one field, written independently."""
  if key in ("reviewerID", "asin"):
    return isinstance(value, str) and bool(value.strip())
  if key == "overall":
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and 1 <= value <= 5)
  try:
    amazon.review_timestamp(value)
    return isinstance(value, str)
  except (ValueError, AttributeError, TypeError):
    return False


@FUZZ
@given(st.sampled_from(["reviewerID", "asin", "overall", "reviewTime"]),
       st.one_of(st.just("<missing>"), json_values), st.integers(0, 9))
def test_amazon_missing_or_mistyped_field(tmp_path, key, value, row):
  reviews = _reviews()
  if value == "<missing>":
    del reviews[row][key]
  else:
    reviews[row][key] = value
  valid = value != "<missing>" and _valid_review_field(key, value)
  reviews_path, meta = _amazon(tmp_path, reviews=reviews)
  if valid:
    amazon.read_amazon(reviews_path, meta)  # Any item may lack metadata.
    return
  with pytest.raises(DataError) as error:
    amazon.read_amazon(reviews_path, meta)
  _assert_names(error, f"{reviews_path}:{row + 1}: ",
                "rating" if key == "overall" and isinstance(
                    value, (int, float)) and not isinstance(value, bool)
                else key)


@settings(FUZZ, max_examples=40)
@given(st.one_of(st.text(max_size=6), st.none(), st.booleans(),
                 st.floats(allow_nan=True, allow_infinity=True).filter(
                     lambda x: not 1 <= x <= 5),
                 st.integers(-10**400, 10**400).filter(
                     lambda x: not 1 <= x <= 5),
                 st.lists(st.integers(1, 5), max_size=2)))
def test_amazon_non_numeric_rating(tmp_path, rating):
  reviews = _reviews()
  reviews[3]["overall"] = rating
  reviews_path, meta = _amazon(tmp_path, reviews=reviews)
  with pytest.raises(DataError) as error:
    amazon.read_amazon(reviews_path, meta)
  _assert_names(error, f"{reviews_path}:4: ")
  assert len(str(error.value)) < 300  # A huge integer is not printed whole.


@settings(FUZZ, max_examples=30)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), min_size=1,
                max_size=25),
       st.lists(st.tuples(st.integers(0, 4), st.text("xyz", min_size=1,
                                                     max_size=2)),
                max_size=12))
def test_amazon_duplicated_ids(tmp_path, pairs, meta_rows):
  """Repeated reviews are separate interactions (method §4: duplicates count);
  an asin listed twice in the metadata keeps its first record."""
  reviews = [_review(f"u{u}", f"A{a}", 1 + i % 5, f"01 {1 + i}, 2015")
             for i, (u, a) in enumerate(pairs)]
  meta = [{"asin": f"A{a}", "category": [c], "brand": c}
          for a, c in meta_rows]
  reviews_path, meta_path = _amazon(tmp_path, reviews=reviews, meta=meta)
  first = {}
  for a, c in meta_rows:
    first.setdefault(f"A{a}", c)
  kept = [(f"u{u}", f"A{a}") for u, a in pairs if f"A{a}" in first]
  if not kept:
    with pytest.raises(DataError) as error:
      amazon.read_amazon(reviews_path, meta_path)
    if meta_rows:
      _assert_names(error, reviews_path, "no review has an item")
    else:
      _assert_names(error, meta_path, "no metadata records")
    return
  data = amazon.read_amazon(reviews_path, meta_path)
  graph = data.graph
  assert graph.num_interactions == len(kept)
  assert data.dropped_reviews == len(pairs) - len(kept)
  assert set(graph.user_ids) == {u for u, _ in kept}
  assert set(graph.item_ids) == {a for _, a in kept}
  for a in graph.item_ids:  # values are kept only on >= 5 items
    kind = graph.attributes["category"]
    item = list(graph.item_ids).index(a)
    assert set(kind.vocab[v] for v in kind.of_item(item)) <= {first[a]}


# ------------------------------------------------------------- MovieLens ---

GENRES = movielens.GROUPLENS_GENRES


def _item_line(item):
  flags = ["1"] + ["0"] * (len(GENRES) - 1)
  return "|".join([str(item), f"Movie {item}", "01-Jan-1995", "", "http://x"]
                  + flags)


def _grouplens(folder, data_rows=None, item_lines=None):
  rows = data_rows if data_rows is not None else [
      f"{1 + i % 3}\t{1 + i % 4}\t{1 + i % 5}\t{1000 + i}" for i in range(10)]
  items = item_lines if item_lines is not None else [
      _item_line(i) for i in range(1, 5)]
  (folder / "u.data").write_bytes(("\n".join(rows) + "\n").encode()
                                  if all(isinstance(r, str) for r in rows)
                                  else b"\n".join(rows) + b"\n")
  (folder / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
  return folder


@settings(FUZZ, max_examples=40)
@given(st.integers(1, 8).filter(lambda n: n != 4), st.integers(0, 9))
def test_movielens_wrong_column_count(tmp_path, width, row):
  rows = [f"{1 + i % 3}\t{1 + i % 4}\t{1 + i % 5}\t{1000 + i}"
          for i in range(10)]
  rows[row] = "\t".join((rows[row].split("\t") + ["7"] * 8)[:width])
  folder = _grouplens(tmp_path, data_rows=rows)
  with pytest.raises(DataError) as error:
    movielens.load_movielens_100k(str(folder))
  _assert_names(error, f"{folder / 'u.data'}:{row + 1}: ",
                f"expected 4 fields, got {width}")


@settings(FUZZ, max_examples=25)
@given(st.integers(1, 30).filter(lambda n: n != 5 + len(GENRES)),
       st.integers(0, 3))
def test_movielens_item_wrong_column_count(tmp_path, width, row):
  items = [_item_line(i) for i in range(1, 5)]
  items[row] = "|".join((items[row].split("|") + ["0"] * 30)[:width])
  folder = _grouplens(tmp_path, item_lines=items)
  with pytest.raises(DataError) as error:
    movielens.load_movielens_100k(str(folder))
  _assert_names(error, f"{folder / 'u.item'}:{row + 1}: ",
                f"expected {5 + len(GENRES)} fields, got {width}")


def _float_or_none(text):
  try:
    return float(text)
  except ValueError:
    return None


@FUZZ
@given(st.sampled_from(["user", "item", "rating", "timestamp"]),
       st.one_of(line_text.map(lambda s: s.replace("\t", " ")),
                 st.sampled_from(["nan", "inf", "-inf", "1e400", "1e30", "",
                                  " ", "0", "6", "3.5", "1_000", "٣"])),
       st.integers(0, 9))
def test_movielens_non_numeric_field(tmp_path, column, text, row):
  rows = [f"{1 + i % 3}\t{1 + i % 4}\t{1 + i % 5}\t{1000 + i}"
          for i in range(10)]
  fields = rows[row].split("\t")
  index = ["user", "item", "rating", "timestamp"].index(column)
  fields[index] = text
  rows[row] = "\t".join(fields)
  assume(rows[row].strip())  # A blank line is skipped, not an error.
  value = _float_or_none(text)
  if column in ("user", "item"):
    valid = bool(text.strip())
  elif column == "rating":
    valid = value is not None and 1 <= value <= 5
  else:
    valid = value is not None and abs(value) < 2.0**62
  folder = _grouplens(tmp_path, data_rows=rows)
  if valid:
    movielens.load_movielens_100k(str(folder))
    return
  with pytest.raises(DataError) as error:
    movielens.load_movielens_100k(str(folder))
  _assert_names(error, f"{folder / 'u.data'}:{row + 1}: ", column)


@settings(FUZZ, max_examples=25)
@given(st.binary(min_size=1, max_size=4).filter(
    lambda b: _not_utf8(b)), st.integers(0, 9))
def test_movielens_invalid_utf8(tmp_path, junk, row):
  rows = [f"{1 + i % 3}\t{1 + i % 4}\t{1 + i % 5}\t{1000 + i}".encode()
          for i in range(10)]
  rows[row] = junk + rows[row]
  folder = _grouplens(tmp_path, data_rows=rows)
  with pytest.raises(DataError) as error:
    movielens.load_movielens_100k(str(folder))
  _assert_names(error, f"{folder / 'u.data'}:{row + 1}: ", "not valid utf-8")


def _not_utf8(data):
  try:
    data.decode()
    return False
  except UnicodeDecodeError:
    return b"\n" not in data and b"\r" not in data


@settings(FUZZ, max_examples=25)
@given(st.integers(0, 3), st.integers(0, 4))
def test_movielens_duplicated_item_id(tmp_path, original, at):
  items = [_item_line(i) for i in range(1, 5)]
  items.insert(at, items[original].replace("Movie", "Other"))
  first = original + (at <= original)
  folder = _grouplens(tmp_path, item_lines=items)
  with pytest.raises(DataError) as error:
    movielens.load_movielens_100k(str(folder))
  lines = sorted([first + 1, at + 1])
  _assert_names(error, f"{folder / 'u.item'}:{lines[1]}: ",
                f"duplicate item id '{original + 1}'",
                f"first on line {lines[0]}")


def test_movielens_empty_files(tmp_path):
  folder = _grouplens(tmp_path)
  (folder / "u.data").write_text("\n\n")
  with pytest.raises(DataError) as error:
    movielens.load_movielens_100k(str(folder))
  _assert_names(error, folder / "u.data", "no interactions")


# ---------------------------------------------------------------- Splits ---

def _graph(num_rows, users):
  return build_graph("g", [f"u{u}" for u in users],
                     [f"i{i % 5}" for i in range(num_rows)],
                     [3.0] * num_rows, list(range(num_rows)), {})


@FUZZ
@given(st.lists(st.floats(0, 1), min_size=2, max_size=6).filter(
    lambda t: any(b <= a for a, b in zip(t, t[1:]))))
def test_non_increasing_times(times):
  with pytest.raises(DataError, match="not strictly increasing") as error:
    make_splits(_graph(10, range(10)), times)
  assert str(tuple(times)) in str(error.value)


@pytest.mark.parametrize("times", [["0.5", "x"], None, [0.5, None], "0.5"])
def test_times_that_are_not_numbers(times):
  with pytest.raises(DataError, match="version times"):
    make_splits(_graph(10, range(10)), times)


@FUZZ
@given(st.lists(st.integers(0, 6), min_size=2, max_size=30),
       st.lists(st.floats(0, 1), min_size=2, max_size=5, unique=True).map(
           sorted))
def test_empty_window_or_no_validation(users, times):
  """`require_validation` refuses exactly the time lists with a version that
  cannot be validated, naming the first one; the default keeps them."""
  graph = _graph(len(users), users)
  splits = make_splits(graph, times)
  bad = [s for s in splits
         if s.num_val == 0 or graph.num_edges_at(s.time_train)
         == graph.num_edges_at(s.time_val)]
  if not bad:
    assert len(make_splits(graph, times, require_validation=True)) == len(
        splits)
    return
  with pytest.raises(DataError) as error:
    make_splits(graph, times, require_validation=True)
  s = bad[0]
  _assert_names(error, "g: ", f"version {s.version}: ",
                f"({s.time_train}, {s.time_val}]")
  empty = graph.num_edges_at(s.time_train) == graph.num_edges_at(s.time_val)
  assert ("holds none of the" if empty else "no validation interactions"
          ) in str(error.value)


def test_version_without_validation_interactions():
  """Window (0.5, 1.0] of 6 rows holds rows 3..5: three new users with one
  interaction each, all to training, none to validation."""
  graph = _graph(6, [0, 1, 2, 3, 4, 5])
  (split,) = make_splits(graph, (0.5, 1.0))
  assert split.num_val == 0 and split.num_train == 6
  with pytest.raises(DataError, match=r"g: version 0: no validation "
                     r"interactions in the window \(0.5, 1.0\]"):
    check_splits(graph, [split])


def test_empty_window():
  """linspace(0, 1, 3) = 0, .5, 1: nothing lies in (0.6, 0.9]."""
  graph = _graph(3, [0, 0, 0])
  with pytest.raises(DataError, match=r"g: version 1: the window \(0.6, 0.9\] "
                     "holds none of the 3 interactions"):
    make_splits(graph, (0.1, 0.6, 0.9, 1.0), require_validation=True)
