"""The dataset registry: a name and options -> the canonical graph."""

from __future__ import annotations

import inspect
import pathlib

from bcjax.data.amazon import load_amazon
from bcjax.data.graph import DataError, DynamicGraph
from bcjax.data.movielens import load_movielens_100k
from bcjax.data.synthetic import make_synthetic
from bcjax.util import names


def _amazon(amazon_dir: str | None = None,
            category: str | None = None) -> DynamicGraph:
  if not amazon_dir or not category:
    raise DataError("dataset amazon needs the options amazon_dir and category")
  folder = pathlib.Path(amazon_dir)
  if not folder.is_dir():
    raise DataError(f"{folder}: no such Amazon folder")
  return load_amazon(folder / f"{category}_5.json.gz",
                     folder / f"meta_{category}.json.gz",
                     name=f"amazon-{category}")


LOADERS = {
    "ml100k": load_movielens_100k,
    "amazon": _amazon,
    "synthetic": make_synthetic,
}


def load_dataset(name: str, **options) -> DynamicGraph:
  """Loads a dataset by name.

  Args:
    name: `ml100k` (option `path`: a GroupLens folder, default recbole's
      copy), `amazon` (options `amazon_dir`, `category`: reads
      `<amazon_dir>/<category>_5.json.gz` and `meta_<category>.json.gz`) or
      `synthetic` (the arguments of `make_synthetic`).
    **options: the dataset's options.

  Returns:
    The canonical graph.

  Raises:
    DataError: an unknown name, options the dataset does not take, or the
      loader's own errors.
  """
  loader = names.lookup(LOADERS, name, "dataset", DataError)
  try:
    inspect.signature(loader).bind(**options)
  except TypeError as error:
    raise DataError(f"dataset {name}: bad options {options}: {error}") from None
  return loader(**options)
