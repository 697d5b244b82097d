"""Collapsing a chain of backward maps into one direct map, and choosing
between the two under a latency budget.

A chain B_{j+1}(... B_k(z)) costs one map per hop at serving time, and its
errors add up hop by hop. `collapse` replaces it by one map from k to j: a
linear chain exactly ("composed", `chains.chain_matrix`, which
`chains.apply_chain` applies bit for bit as it applies the chain); any chain
by distillation, fitting direct maps of the kinds `DIRECT` (`fits`) on
sample rows of version k against the chain's outputs, each one's error
measured on held-out rows it was not fitted on. `measure` times the options
per query, `choose_within_budget` picks one under a budget, and
`hop_errors` shows how a chain's error grows against direct maps.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Mapping, Sequence

import jax
import numpy as np

from bcjax.backward import chains, fits
from bcjax.backward.maps import BackwardMap
from bcjax.util import keys, names

CHAIN, COMPOSED = "chain", "composed"
# Distillation kinds: `fits` names, and "affine", the full-rank least-squares
# affine map ("lstsq" has no intercept).
DIRECT = ("lstsq", "affine", "lowrank-affine", "residual-mlp")
HELD_OUT_FRACTION = 0.2
MIN_SPLIT_ROWS = 10  # On each side of a split: fewer measure nothing.

Split = tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Error:
  """Mapped rows against reference rows: the mean squared error, the
  relative error ||mapped - ref||_F / ||ref||_F, the mean row cosine (1 for
  two zero rows, 0 for one) and the number of rows compared."""
  mse: float
  relative: float
  cosine: float
  rows: int

  @classmethod
  def of(cls, mapped, reference) -> Error:
    """The error of `mapped` against `reference`, both `[n, d]`, in float64."""
    p, t = np.asarray(mapped, np.float64), np.asarray(reference, np.float64)
    norms = np.linalg.norm(p, axis=1) * np.linalg.norm(t, axis=1)
    cosine = np.where(norms > 0, (p * t).sum(1) / np.where(norms, norms, 1),
                      ~p.any(1) & ~t.any(1))
    scale, miss = np.linalg.norm(t), np.linalg.norm(p - t)
    relative = miss / scale if scale else (np.inf if miss else 0.0)
    return cls(float(np.mean((p - t) ** 2)), float(relative),
               float(np.mean(cosine)), len(t))


@dataclasses.dataclass(frozen=True)
class Option:
  """One way to map version k's rows into version j's space: `name`
  (`CHAIN`, `COMPOSED` or a `DIRECT` kind), `maps` (`[B_{j+1}, ..., B_k]`
  for the chain, else the one direct map; calling the option applies them
  through `chains.apply_chain`), `error` (held-out, against the chain; None
  where the option is the chain bit for bit), and the measured cost in
  microseconds per query, median and `[min, max]` (None until measured)."""
  name: str
  maps: tuple[BackwardMap, ...] = dataclasses.field(repr=False)
  error: Error | None = None
  cost_us: float | None = None
  cost_spread_us: tuple[float, float] | None = None

  def __call__(self, z) -> np.ndarray:
    """`[n, d_k]` rows mapped to `[n, d_j]` float32."""
    return chains.apply_chain(list(self.maps), z, len(self.maps), 0)

  def describe(self) -> str:
    """The option, its error and its cost in words."""
    error = ("exact" if self.error is None else
             f"held-out relative error {self.error.relative:.4f}")
    cost = "" if self.cost_us is None else f", {self.cost_us:.2f} us/query"
    return f"{self.name} ({error}{cost})"


@dataclasses.dataclass(frozen=True)
class Collapsed:
  """A chain k -> j (`options[0]`) and its collapses (the other options);
  `split` is the (training, held-out) rows of the distillation (None when
  nothing was distilled)."""
  from_version: int
  to_version: int
  options: tuple[Option, ...]
  split: Split | None = None

  def __getitem__(self, name: str) -> Option:
    return {o.name: o for o in self.options}[name]

  def with_costs(self, costs: Mapping[str, float],
                 spreads: Mapping[str, Sequence[float]] | None = None
                 ) -> Collapsed:
    """A copy with measured costs (us per query) by option name."""
    spread = lambda name: tuple((spreads or {}).get(name, ())) or None
    return dataclasses.replace(self, options=tuple(
        dataclasses.replace(o, cost_us=float(costs[o.name]),
                            cost_spread_us=spread(o.name))
        if o.name in costs else o for o in self.options))


@dataclasses.dataclass(frozen=True)
class Choice:
  """The option `choose_within_budget` picked, and why."""
  option: Option
  reason: str


def _accuracy(option: Option) -> float:
  return 0.0 if option.error is None else option.error.relative


def _links(maps: Sequence[BackwardMap | None], from_version: int,
           to_version: int, what: str) -> list[BackwardMap]:
  """`[B_{j+1}, ..., B_k]`, checked to chain."""
  if not 0 <= to_version < from_version <= len(maps):
    raise ValueError(f"{what}: versions {from_version} -> {to_version} name "
                     f"no chain of the {len(maps)} maps (need 0 <= to < from "
                     f"<= {len(maps)})")
  for v in range(to_version + 1, from_version + 1):
    if not isinstance(maps[v - 1], BackwardMap):
      raise ValueError(f"{what}: B_{v} is missing (got {maps[v - 1]!r})")
  chains.chain(maps, from_version, to_version)  # Raises if they do not chain.
  return list(maps[to_version:from_version])


def _table(rows, width: int, what: str) -> np.ndarray:
  rows = np.asarray(rows, np.float32)
  if rows.ndim != 2 or rows.shape[1] != width:
    raise ValueError(f"{what}: expected rows [n, {width}], got shape "
                     f"{rows.shape}")
  return rows


def held_out_split(n: int, key: jax.Array,
                   fraction: float = HELD_OUT_FRACTION) -> Split:
  """(training rows, held-out rows): a random split of `range(n)`, sorted.
  Raises ValueError for a fraction outside (0, 1) or fewer than
  `MIN_SPLIT_ROWS` rows on either side."""
  if not 0 < fraction < 1:
    raise ValueError(f"held-out fraction {fraction} is not in (0, 1)")
  held = int(round(n * fraction))
  if min(held, n - held) < MIN_SPLIT_ROWS:
    raise ValueError(f"too few rows for a held-out split: {n} rows with "
                     f"{fraction:g} held out leave {held} held-out and "
                     f"{n - held} training rows; each side needs "
                     f">= {MIN_SPLIT_ROWS}")
  order = np.asarray(jax.random.permutation(key, n))
  return np.sort(order[held:]), np.sort(order[:held])


def _split(n: int, split: Split | None, key: jax.Array, what: str) -> Split:
  if split is None:
    return held_out_split(n, keys.derive(key, "held-out"))
  train, held = (np.asarray(s, np.int64).reshape(-1) for s in split)
  if (min(len(train), len(held)) < MIN_SPLIT_ROWS or np.intersect1d(
      train, held).size or min(train.min(), held.min()) < 0
      or max(train.max(), held.max()) >= n):
    raise ValueError(f"{what}: the split needs >= {MIN_SPLIT_ROWS} training "
                     f"and held-out rows, disjoint, in 0..{n - 1}")
  return train, held


def _fit(kind: str, x, y, key: jax.Array, hidden: int,
         steps: int) -> BackwardMap:
  if kind == "residual-mlp":
    return fits.residual_mlp(x, y, key, hidden=hidden, steps=steps)
  if kind == "affine":
    return fits.low_rank_affine(x, y, min(np.shape(x)[1], np.shape(y)[1]))
  return fits.fit(kind, x, y, key)


def collapse(maps: Sequence[BackwardMap | None], from_version: int,
             to_version: int, rows=None, key: jax.Array | None = None,
             kinds: Sequence[str] | None = None, split: Split | None = None,
             hidden: int = 128, steps: int = 500) -> Collapsed:
  """The chain k -> j (`maps` = `[B_1, ..., B_K]`, k > j) and its collapses
  into one direct map, one `Option` per kind after the chain's.

  Args:
    rows: `[n, d_k]` sample rows of version k to distil on (say the stored
      table); not needed for "composed" alone.
    key: the distillation's key: the split draws from `derive(key,
      "held-out")`, the fit of `DIRECT[i]` from `derive(key, "fit", i)`.
    kinds: among `COMPOSED` and `DIRECT` (default: "composed" for a linear
      chain, else `DIRECT`).
    split: (training, held-out) indices into `rows` (default: a random
      `HELD_OUT_FRACTION` held out, `held_out_split`).
    hidden, steps: the residual MLP's hidden width and Adam steps.

  Raises:
    ValueError: versions out of range, maps missing or that do not chain,
      an unknown kind, "composed" of a non-linear chain, distilling without
      rows or a key, rows of the wrong width, or too few rows to split.
  """
  links = _links(maps, from_version, to_version, "collapse")
  linear = all(m.kind == "linear" for m in links)
  kinds = tuple(kinds or ((COMPOSED,) if linear else DIRECT))
  for kind in kinds:
    names.check((COMPOSED, *DIRECT), kind, "collapse kind")
  if len(set(kinds)) < len(kinds):
    raise ValueError(f"collapse: kinds {kinds} repeat")
  if COMPOSED in kinds and not linear:
    kind = next(m.kind for m in links if m.kind != "linear")
    raise ValueError(f"collapse: only a chain of linear maps composes "
                     f"exactly; this one holds a {kind} map")
  options, distilled = [Option(CHAIN, tuple(links))], kinds != (COMPOSED,)
  if distilled:
    if rows is None or key is None:
      raise ValueError(f"collapse: distilling into {kinds} needs sample "
                       "rows of version k and a key")
    rows = _table(rows, links[-1].d_in, f"collapse: version {from_version}")
    train, held = split = _split(len(rows), split, key, "collapse")
    target = chains.apply_chain(links, rows, len(links), 0)
  for kind in kinds:
    if kind == COMPOSED:
      matrix = chains.chain_matrix([m.matrix for m in links], len(links), 0)
      options.append(Option(COMPOSED, (BackwardMap.from_matrix(matrix),)))
      continue
    direct = _fit(kind, rows[train], target[train],
                  keys.derive(key, "fit", DIRECT.index(kind)), hidden, steps)
    error = Error.of(chains.apply_chain([direct], rows[held], 1, 0),
                     target[held])
    options.append(Option(kind, (direct,), error))
  return Collapsed(from_version, to_version, tuple(options),
                   split if distilled else None)


def measure(collapsed: Collapsed, queries, repeats: int = 9,
            clock: Callable[[], float] = time.perf_counter) -> Collapsed:
  """A copy with each option's cost per query on the batch `queries`
  `[n, d_k]`, in microseconds: the median and `[min, max]` of `repeats`
  rounds, each timing every option once in turn (so that a change of load
  hits all of them), after one untimed round."""
  queries = _table(queries, collapsed.options[0].maps[-1].d_in, "measure")
  times = {o.name: [] for o in collapsed.options}
  for round_ in range(repeats + 1):
    for option in collapsed.options:
      start = clock()
      option(queries)
      if round_:
        times[option.name].append((clock() - start) * 1e6 / len(queries))
  return collapsed.with_costs(
      {name: float(np.median(t)) for name, t in times.items()},
      {name: (float(np.min(t)), float(np.max(t))) for name, t in times.items()})


def choose_within_budget(options: Collapsed | Sequence[Option],
                         budget_us: float,
                         quality: Mapping[str, float] | None = None
                         ) -> Choice:
  """The most accurate option whose measured cost per query fits
  `budget_us`, and why. Accuracy: exact options first, then the lowest
  held-out error; or, given `quality` by option name (higher is better: a
  Recall@50 the caller measured, say), the highest. Ties go to the cheaper.

  Raises:
    ValueError: no options, one without a cost (or quality), a budget <= 0,
      or none within the budget (naming it and the cheapest option).
  """
  options = tuple(options.options if isinstance(options, Collapsed)
                  else options)
  missing = [o.name for o in options if o.cost_us is None
             or (quality is not None and o.name not in quality)]
  if not options or missing:
    raise ValueError(f"choose_within_budget: no options, or some without a "
                     f"cost or quality ({', '.join(missing)}); use measure "
                     "or Collapsed.with_costs")
  if not budget_us > 0:
    raise ValueError(f"choose_within_budget: the budget must be positive, "
                     f"got {budget_us} us")
  rank = _accuracy if quality is None else lambda o: -quality[o.name]
  say = lambda o: o.describe() + ("" if quality is None else
                                  f" quality {quality[o.name]:.4f}")
  within = [o for o in options if o.cost_us <= budget_us]
  if not within:
    cheapest = min(options, key=lambda o: o.cost_us)
    raise ValueError(f"no option fits the budget of {budget_us:g} us per "
                     f"query; the cheapest is {say(cheapest)}")
  best = min(within, key=lambda o: (rank(o), o.cost_us))
  over = [say(o) for o in options
          if o.cost_us > budget_us and rank(o) < rank(best)]
  return Choice(best, f"{say(best)} is the most accurate within "
                f"{budget_us:g} us per query" +
                (f"; over budget: {', '.join(over)}" if over else ""))


@dataclasses.dataclass(frozen=True)
class Hop:
  """`hop_errors` at version j: the chain k -> j and a map fitted directly
  from k to j, each against version j's rows on held-out rows."""
  to_version: int
  hops: int
  chain: Error
  direct: Error


def hop_errors(maps: Sequence[BackwardMap | None], tables: Sequence,
               from_version: int, key: jax.Array, fit: str = "affine",
               split: Split | None = None, hidden: int = 128,
               steps: int = 500) -> list[Hop]:
  """How a chain's error grows hop by hop, against direct maps: one `Hop`
  per j = k-1 down to 0.

  On paired tables `[T_0, ..., T_k]` (T_v `[n, d_v]`, row i one node in
  every version), the chain k -> j and a `fit` map (`DIRECT` or
  `fits.FITS`) fitted on the training rows of (T_k, T_j) from `derive(key,
  "fit", j)` are both compared with T_j on the held-out rows (`split`, as
  in `collapse`). The chain's maps should not have been fitted on those
  rows either: pass the split they were fitted without.

  Raises:
    ValueError: maps that do not chain, fewer tables than versions, tables
      of the wrong width or of different lengths, too few rows to split.
  """
  _links(maps, from_version, 0, "hop_errors")
  if len(tables) < from_version + 1:
    raise ValueError(f"hop_errors: {len(tables)} tables, need versions "
                     f"0..{from_version}")
  widths = [maps[0].d_out] + [m.d_in for m in maps[:from_version]]
  tables = [_table(t, w, f"hop_errors: version {v}")
            for v, (t, w) in enumerate(zip(tables, widths))]
  if len({len(t) for t in tables}) != 1:
    raise ValueError(f"hop_errors: paired tables need the same rows, got "
                     f"{[len(t) for t in tables]} rows")
  top = tables[from_version]
  train, held = _split(len(top), split, key, "hop_errors")
  out = []
  for j in range(from_version - 1, -1, -1):
    direct = _fit(fit, top[train], tables[j][train],
                  keys.derive(key, "fit", j), hidden, steps)
    out.append(Hop(j, from_version - j, Error.of(
        chains.apply_chain(maps, top[held], from_version, j), tables[j][held]),
                   Error.of(chains.apply_chain([direct], top[held], 1, 0),
                            tables[j][held])))
  return out

