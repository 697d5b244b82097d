"""Tests of the dataset loaders: MovieLens-100k, Amazon 2018, synthetic."""

import calendar
import datetime
import gzip
import importlib.util
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bcjax.data import DataError, load_dataset, make_splits
from bcjax.data import amazon, movielens, synthetic


def _values(graph, kind, item_id):
  """The value strings of one item (by raw id) for one kind."""
  attribute = graph.attributes[kind]
  item = list(graph.item_ids).index(item_id)
  return [attribute.vocab[v] for v in attribute.of_item(item)]


# ---------------------------------------------------------------- Amazon ---

def _write_lines(path, lines, compress):
  data = "".join(line + "\n" for line in lines).encode()
  path.write_bytes(gzip.compress(data) if compress else data)
  return path


def _review(user, asin, rating=5.0, time="09 1, 2015"):
  return json.dumps({"reviewerID": user, "asin": asin, "overall": rating,
                     "reviewTime": time, "unixReviewTime": 0})


def _amazon_files(folder, compress=True, category="Toys"):
  """Six items with metadata, one without; see the asserts below."""
  reviews = [_review(f"u{i % 4}", f"A{i % 6}", 1.0 + i % 5,
                     f"0{1 + i % 9} {1 + i}, 2015") for i in range(12)]
  reviews += [_review("u9", "NOMETA"), _review("u0", "NOMETA")]
  meta = []
  for i in range(6):
    categories = ["Toys", "Games"] if i < 5 else ["Toys", ""]
    if i < 4:
      categories.append("Puzzles")
    categories.append('<span class="a">x</span>')
    meta.append(json.dumps({"asin": f"A{i}", "category": categories,
                            "brand": "Acme" if i < 5 else "", "title": "t"}))
  meta.append(json.dumps({"asin": "A0", "category": ["Late"], "brand": "Z"}))
  meta.append(json.dumps({"asin": "UNREVIEWED", "category": ["Toys"]}))
  reviews_path = _write_lines(folder / f"{category}_5.json.gz", reviews,
                              compress)
  meta_path = _write_lines(folder / f"meta_{category}.json.gz", meta, compress)
  return reviews_path, meta_path


@pytest.mark.parametrize("compress", [True, False])
def test_amazon_reads_gzip_and_plain(tmp_path, compress):
  data = amazon.read_amazon(*_amazon_files(tmp_path, compress))
  graph = data.graph
  assert data.dropped_reviews == 2
  assert graph.name == "amazon-Toys"
  assert graph.num_interactions == 12
  assert graph.num_users == 4 and graph.num_items == 6
  assert "NOMETA" not in graph.item_ids
  # `Puzzles` is on only 4 items; `</span>` values and empty strings go.
  assert graph.attributes["category"].vocab == ("Toys", "Games")
  assert _values(graph, "category", "A0") == ["Toys", "Games"]
  assert _values(graph, "category", "A5") == ["Toys"]
  assert graph.attributes["brand"].vocab == ("Acme",)
  assert _values(graph, "brand", "A5") == []
  assert np.all(np.diff(graph.timestamp) >= 0)
  assert set(graph.rating.tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_amazon_gzip_and_plain_agree(tmp_path):
  (tmp_path / "gz").mkdir()
  (tmp_path / "plain").mkdir()
  a = amazon.read_amazon(*_amazon_files(tmp_path / "gz", True)).graph
  b = amazon.read_amazon(*_amazon_files(tmp_path / "plain", False)).graph
  for field in ("user", "item", "rating", "timestamp", "item_ids"):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_load_amazon_returns_the_graph(tmp_path):
  graph = amazon.load_amazon(*_amazon_files(tmp_path), name="toys")
  assert graph.name == "toys" and graph.num_interactions == 12


@pytest.mark.parametrize("line, message", [
    ("{not json", "invalid JSON"),
    ('{"reviewerID": "u", "overall": 5.0, "reviewTime": "09 1, 2015"}',
     "'asin'"),
    ('{"reviewerID": "u", "asin": "A0", "overall": "five", '
     '"reviewTime": "09 1, 2015"}', "'overall'"),
    ('{"reviewerID": "u", "asin": "A0", "overall": 6.0, '
     '"reviewTime": "09 1, 2015"}', "outside"),
    ('{"reviewerID": "u", "asin": "A0", "overall": 5.0, '
     '"reviewTime": "13 1, 2015"}', "reviewTime"),
    ('{"reviewerID": "u", "asin": "A0", "overall": 5.0, '
     '"reviewTime": "2015-09-01"}', "reviewTime"),
    ("[1, 2]", "not a JSON object"),
])
@pytest.mark.parametrize("compress", [True, False])
def test_amazon_malformed_review_names_file_and_line(tmp_path, line, message,
                                                     compress):
  reviews, meta = _amazon_files(tmp_path, compress)
  _write_lines(reviews, [_review("u0", "A0"), "", line], compress)
  with pytest.raises(DataError, match=message) as error:
    amazon.read_amazon(reviews, meta)
  assert f"{reviews}:3:" in str(error.value)


def test_amazon_malformed_meta_names_file_and_line(tmp_path):
  reviews, meta = _amazon_files(tmp_path)
  _write_lines(meta, [json.dumps({"asin": "A0", "category": "x"}),
                      json.dumps({"asin": "A1", "category": [1]})], True)
  with pytest.raises(DataError, match=f"{meta}:2: field 'category'"):
    amazon.read_amazon(reviews, meta)


def test_amazon_truncated_gzip(tmp_path):
  reviews, meta = _amazon_files(tmp_path)
  meta.write_bytes(meta.read_bytes()[:-20])
  with pytest.raises(DataError, match=str(meta)):
    amazon.read_amazon(reviews, meta)


def test_amazon_missing_file(tmp_path):
  reviews, meta = _amazon_files(tmp_path)
  meta.unlink()
  with pytest.raises(DataError, match=f"{meta}: no such file"):
    amazon.read_amazon(reviews, meta)


def test_amazon_no_review_with_metadata(tmp_path):
  reviews, meta = _amazon_files(tmp_path)
  _write_lines(meta, [json.dumps({"asin": "OTHER"})], True)
  with pytest.raises(DataError, match="no review"):
    amazon.read_amazon(reviews, meta)


def test_review_timestamp_example():
  assert amazon.review_timestamp("09 1, 2015") == calendar.timegm(
      (2015, 9, 1, 0, 0, 0))


@given(st.dates(min_value=datetime.date(1990, 1, 1)))
def test_review_timestamp_is_utc_midnight(date):
  text = f"{date.month:02d} {date.day}, {date.year}"
  assert amazon.review_timestamp(text) == calendar.timegm(date.timetuple())


# ------------------------------------------------------------- MovieLens ---

GENRES = movielens.GROUPLENS_GENRES


def _grouplens_folder(folder):
  """Six items: Action on 5, Comedy on 4, unknown on 1; 1990s on 5 items."""
  items = []
  for item in range(1, 7):
    flags = ["0"] * len(GENRES)
    flags[GENRES.index("Action")] = "1" if item <= 5 else "0"
    flags[GENRES.index("Comedy")] = "1" if item <= 4 else "0"
    flags[GENRES.index("unknown")] = "1" if item == 6 else "0"
    date = f"01-Jan-199{item}" if item <= 5 else ""
    items.append("|".join([str(item), f"Movie {item} (1995)", date, "",
                           "http://x"] + flags))
  (folder / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
  rows = [f"{1 + i % 3}\t{1 + i % 6}\t{1 + i % 5}\t{1000 - i}"
          for i in range(12)]
  (folder / "u.data").write_text("\n".join(rows) + "\n")
  return folder


def test_grouplens_folder(tmp_path):
  graph = movielens.load_movielens_100k(str(_grouplens_folder(tmp_path)))
  assert graph.name == "ml100k"
  assert graph.num_interactions == 12
  assert graph.num_users == 3 and graph.num_items == 6
  assert np.all(np.diff(graph.timestamp) > 0)
  assert graph.attributes["genre"].vocab == ("Action",)
  assert graph.attributes["year"].vocab == ("1990s",)
  assert _values(graph, "genre", "1") == ["Action"]
  assert _values(graph, "genre", "6") == []
  assert _values(graph, "year", "6") == []


@pytest.mark.parametrize("name", ["u.data", "u.item"])
def test_grouplens_missing_file(tmp_path, name):
  (_grouplens_folder(tmp_path) / name).unlink()
  with pytest.raises(DataError, match=name):
    movielens.load_movielens_100k(str(tmp_path))


def test_grouplens_malformed_line(tmp_path):
  data = _grouplens_folder(tmp_path) / "u.data"
  data.write_text("1\t1\t5\t100\n1\t2\tfive\t101\n")
  with pytest.raises(DataError, match=f"{data}:2:"):
    movielens.load_movielens_100k(str(tmp_path))


def test_grouplens_missing_folder(tmp_path):
  with pytest.raises(DataError, match="no such"):
    movielens.load_movielens_100k(str(tmp_path / "absent"))


@pytest.mark.parametrize("year, expected", [
    ("1995", ["1990s"]), ("1922", ["1920s"]), ("2000", ["2000s"]),
    ("V", []), ("unkonwn", []), ("", [])])
def test_decade(year, expected):
  assert movielens.decade(year) == expected


def test_recbole_absent(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(DataError, match="pip install --no-deps recbole==1.2.1"):
    movielens.load_movielens_100k()


def test_movielens_100k_from_recbole():
  graph = movielens.load_movielens_100k()
  assert (graph.num_users, graph.num_items, graph.num_interactions) == (
      943, 1682, 100000)
  assert graph.attributes["genre"].num_values == 18
  assert "unknown" not in graph.attributes["genre"].vocab
  assert _values(graph, "genre", "1") == ["Animation", "Children's", "Comedy"]
  assert _values(graph, "year", "1") == ["1990s"]
  assert _values(graph, "year", "1412") == []
  assert graph.rating.min() == 1 and graph.rating.max() == 5
  assert len(make_splits(graph)) == 5


# ------------------------------------------------------------- Synthetic ---

def _arrays(graph):
  arrays = [graph.user, graph.item, graph.rating, graph.timestamp]
  for kind in graph.attributes.values():
    arrays += [kind.offsets, kind.values]
  return arrays


def test_synthetic_deterministic_for_a_seed():
  a, b = (synthetic.make_synthetic(2000, seed=3) for _ in range(2))
  for x, y in zip(_arrays(a), _arrays(b)):
    np.testing.assert_array_equal(x, y)
  c = synthetic.make_synthetic(2000, seed=4)
  assert not np.array_equal(a.item, c.item)


def test_synthetic_versions_bring_new_users_and_items():
  graph = synthetic.make_synthetic(5000, num_users=300, num_items=150)
  splits = make_splits(graph)
  users = [s.num_users for s in splits]
  items = [s.num_items for s in splits]
  assert all(a < b for a, b in zip(users, users[1:]))
  assert all(a < b for a, b in zip(items, items[1:]))
  assert all(s.num_val > 0 for s in splits)
  assert len(np.unique(graph.rating)) == 5


@settings(max_examples=15, deadline=None)
@given(st.integers(300, 3000), st.integers(0, 2**32 - 1))
def test_synthetic_shapes(num_interactions, seed):
  graph = synthetic.make_synthetic(num_interactions, num_brands=5, seed=seed)
  assert graph.num_interactions == num_interactions
  assert set(np.unique(graph.rating)) <= {1, 2, 3, 4, 5}
  assert set(graph.attributes) == {"category", "brand"}
  assert np.diff(graph.attributes["brand"].offsets).max() <= 1
  assert np.diff(graph.attributes["category"].offsets).max() <= 3


def test_synthetic_rejects_empty():
  with pytest.raises(ValueError, match="at least 1"):
    synthetic.make_synthetic(0)


# -------------------------------------------------------------- Registry ---

def test_load_dataset_registry(tmp_path):
  _amazon_files(tmp_path, category="Toys")
  graph = load_dataset("amazon", amazon_dir=str(tmp_path), category="Toys")
  assert graph.name == "amazon-Toys" and graph.num_interactions == 12
  graph = load_dataset("synthetic", num_interactions=400, seed=1)
  assert graph.num_interactions == 400
  graph = load_dataset("ml100k", path=str(_grouplens_folder(tmp_path)))
  assert graph.num_interactions == 12


@pytest.mark.parametrize("name, options, message", [
    ("nope", {}, "known: ml100k, amazon, synthetic"),
    ("ml100k", {"amazon_dir": "x"}, "bad options"),
    ("amazon", {"category": "Toys"}, "amazon_dir and category"),
    ("amazon", {"amazon_dir": "/absent", "category": "Toys"}, "no such"),
])
def test_load_dataset_errors(name, options, message):
  with pytest.raises(DataError, match=message):
    load_dataset(name, **options)
