"""`bcjax.util.names`: the one lookup of the library's registries."""

import pytest

from bcjax.data import DataError, load_dataset
from bcjax.runs import strategies
from bcjax.util import names


def test_lookup_returns_the_entry_and_refuses_an_unknown_name():
  table = {"a": 1, "b": 2}
  assert names.lookup(table, "b", "letter") == 2
  assert names.check(("x", "y"), "x", "axis") == "x"
  with pytest.raises(ValueError, match=r"^unknown letter 'c'; known: a, b$"):
    names.lookup(table, "c", "letter")
  with pytest.raises(KeyError, match="unknown axis 'z'; known: x, y"):
    names.check(("x", "y"), "z", "axis", KeyError)


def test_registries_refuse_unknown_names_the_same_way():
  with pytest.raises(ValueError, match=r"unknown strategy 'bc'; known: fix-m0, "):
    strategies.get("bc")
  with pytest.raises(DataError, match=r"unknown dataset 'ml-1b'; known: "):
    load_dataset("ml-1b")
