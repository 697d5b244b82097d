"""Looking a name up in a registry, with one error for an unknown name.

The library's registries (strategies, backward map kinds and fits, model
families, datasets, presets, tasks, index kinds, encoders) are plain dicts
or tuples keyed by name; `lookup` is the one way they are read, so every
unknown name is refused with the same message listing the known ones.
"""

from __future__ import annotations

from typing import Collection, Mapping, TypeVar

Value = TypeVar("Value")


def check(names: Collection[str], name: str, what: str,
          error: type[Exception] = ValueError) -> str:
  """`name` itself if it is one of `names`.

  Raises:
    `error`: "unknown <what> '<name>'; known: <names>".
  """
  if name not in names:
    raise error(f"unknown {what} {name!r}; known: {', '.join(names)}")
  return name


def lookup(table: Mapping[str, Value], name: str, what: str,
           error: type[Exception] = ValueError) -> Value:
  """`table[name]`, or `check`'s error naming the unknown `what`."""
  return table[check(table, name, what, error)]
