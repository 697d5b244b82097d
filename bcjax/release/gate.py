"""The release gate: checks a candidate version against every registered
consumer before it is published.

A candidate is version k = K + 1 of a store (its users, items, ids and its
backward map B_k), not yet appended. `check` maps its embeddings into the
space of each consumer's version j (B_k, then the store's chain K -> j),
scores the consumer there (`bcjax.store.registry`) and compares with the
baseline the consumer recorded on version j:

- a classifier: the drop of its metric (ROC-AUC by default), new - old >=
  -`Thresholds.max_metric_drop` (for a classifier this is the backward
  compatibility criterion, with the allowed drop as its tolerance);
- a frozen index: Recall@K of the candidate's users, mapped into version j,
  through the frozen index (version j's item vectors, the candidate's newer
  items inserted as their mapped vectors), as a fraction of the refreshed
  ceiling (the same queries through an index rebuilt from every item of
  the candidate mapped into version j: what the consumer would get by
  re-ingesting the store; both share the queries, so pairs the candidate
  trained on favour neither), >= `Thresholds.min_ceiling_ratio`; and the
  backward compatibility criterion, new-to-old Recall@K - old-to-old >=
  -`Thresholds.bc_tolerance`.

The rule: each figure gets a paired percentile bootstrap over the
consumer's examples or queries (`Thresholds.resamples` resamples, the same
ones for old, new and ceiling; seeded by `keys.derive`). A check whose
whole 95% interval clears its threshold passes; one whose whole interval
misses it FAILs (the harm is shown); one whose interval straddles it is
"unsure" (the consumer's examples cannot tell), which passes by default,
as a guardrail test of an A/B experiment does, and fails with
`Thresholds.strict` (non-inferiority: the release must show it keeps every
consumer within its margin, which small evaluation sets rarely can). An
exact copy (interval [0, 0]) passes either way.
`publish` runs `check` and appends only a passing candidate unless forced.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import numpy as np

from bcjax.backward.maps import BackwardMap
from bcjax.data.sampling import numpy_rng
from bcjax.store import consumer_kinds, faiss_index, layout, maps, registry
from bcjax.store.embedding_store import EmbeddingStore
from bcjax.store.layout import StoreError
from bcjax.util import io, keys
from bcjax.util.progress import to_stderr


@dataclasses.dataclass(frozen=True)
class Thresholds:
  """What a release must keep, and how sure the gate must be.

  Attributes:
    max_metric_drop: a classifier may lose at most this much of its metric
      (0.01: one point of ROC-AUC).
    min_ceiling_ratio: a frozen index keeps at least this fraction of the
      refreshed ceiling's Recall@K.
    bc_tolerance: new-to-old Recall@K may lie this much below old-to-old.
    resamples: bootstrap resamples per consumer.
    level: the two-sided level of the intervals.
    seed: the bootstrap's seed.
    strict: an "unsure" check fails (see the module docstring).
  """
  max_metric_drop: float = 0.01
  min_ceiling_ratio: float = 0.9
  bc_tolerance: float = 0.01
  resamples: int = 200
  level: float = 0.95
  seed: int = 0
  strict: bool = False


@dataclasses.dataclass(frozen=True)
class Candidate:
  """Version k before it is published.

  Attributes:
    users: `[num_users, d_k]`; the stored users first, in their order.
    items: `[num_items, d_k]`; likewise.
    backward: W_k `[d_k, d_{k-1}]` or a `BackwardMap` into version k-1.
    user_ids, item_ids: raw ids; the stored ids must be a prefix.
  """
  users: Any
  items: Any
  backward: Any
  user_ids: Any
  item_ids: Any


@dataclasses.dataclass(frozen=True)
class Check:
  """One row of the gate: a figure, its interval and its threshold.

  Attributes:
    consumer, kind, version: the consumer checked, its kind and version j.
    measure: what is compared ("roc_auc new - old", ...).
    old, new: the two figures compared (old: the baseline or the ceiling).
    estimate: new - old, or new / old for a ratio.
    low, high: the bootstrap interval of `estimate`.
    bound: the threshold `estimate` must reach.
    strict: an "unsure" verdict fails.
  """
  consumer: str
  kind: str
  version: int
  measure: str
  old: float
  new: float
  estimate: float
  low: float
  high: float
  bound: float
  strict: bool = False

  @property
  def verdict(self) -> str:
    """"pass" (the whole interval clears the bound), "FAIL" (it misses it
    whole, or is NaN) or "unsure" (it straddles the bound)."""
    if self.low >= self.bound:
      return "pass"
    return "unsure" if self.high >= self.bound else "FAIL"

  @property
  def passed(self) -> bool:
    return self.verdict == "pass" or (self.verdict == "unsure"
                                      and not self.strict)


@dataclasses.dataclass(frozen=True)
class GateReport:
  """The gate's verdict on candidate version `version`."""
  version: int
  checks: tuple[Check, ...]
  thresholds: Thresholds

  @property
  def passed(self) -> bool:
    """Whether every check passed (vacuously, with no consumer)."""
    return all(c.passed for c in self.checks)

  @property
  def failing(self) -> list[str]:
    """The consumers with a failed check, in registration order."""
    return list(dict.fromkeys(c.consumer for c in self.checks
                              if not c.passed))

  def table(self) -> str:
    """A Markdown pass/fail table with the thresholds and the verdict."""
    t = self.thresholds
    lines = [
        f"Release gate, version {self.version}: "
        f"{'PASS' if self.passed else 'FAIL'} (a check passes when its whole "
        f"{t.level:.0%} paired-bootstrap interval ({t.resamples} resamples) "
        "clears the threshold, FAILs when it misses it whole, and is unsure "
        f"otherwise, which {'fails' if t.strict else 'passes'})", "",
        "| consumer | at v | check | old | new | estimate | "
        f"{t.level:.0%} interval | threshold | result |",
        "|---|---:|---|---:|---:|---:|---|---:|---|"]
    for c in self.checks:
      lines.append(
          f"| {c.consumer} | {c.version} | {c.measure} | {c.old:.4f} | "
          f"{c.new:.4f} | {c.estimate:+.4f} | [{c.low:+.4f}, {c.high:+.4f}] "
          f"| >= {c.bound:+.4f} | {c.verdict} |")
    if not self.checks:
      lines.append("| (no registered consumer) | | | | | | | | pass |")
    return "\n".join(lines)

  def __str__(self) -> str:
    return self.table()

  def as_json(self) -> dict:
    """The report as JSON-ready values."""
    return {"version": self.version, "passed": self.passed,
            "failing": self.failing,
            "thresholds": dataclasses.asdict(self.thresholds),
            "checks": [dict(dataclasses.asdict(c), verdict=c.verdict,
                            passed=c.passed) for c in self.checks]}


class ReleaseRefused(StoreError):
  """`publish` refused a candidate that failed the gate; `report` says why."""

  def __init__(self, report: GateReport):
    super().__init__(
        f"version {report.version} fails the release gate for consumers "
        f"{', '.join(report.failing)}; nothing was published (force=True "
        "publishes anyway)")
    self.report = report


def interval(samples: np.ndarray, level: float) -> tuple[float, float]:
  """The percentile interval of bootstrap `samples` at two-sided `level`
  (NaN samples, from a resample without both classes, left out)."""
  tail = 100 * (1 - level) / 2
  low, high = np.nanpercentile(samples, [tail, 100 - tail])
  return float(low), float(high)


def _classifier(c: consumer_kinds.Classifier, users, items, picks,
                t: Thresholds) -> list[Check]:
  """The metric drop of a classifier, through paired resamples."""
  new_scores = c.scores(users, items)
  metric = jax.vmap(consumer_kinds.METRICS[c.metric])
  labels = c.labels[picks]
  drops = (np.asarray(metric(new_scores[picks], labels), np.float64) -
           np.asarray(metric(c.baseline_scores[picks], labels), np.float64))
  new = consumer_kinds.metric_value(c.metric, new_scores, c.labels)
  return [Check(c.name, "classifier", c.version, f"{c.metric} new - old",
                c.baseline, new, new - c.baseline,
                *interval(drops, t.level), -t.max_metric_drop, t.strict)]


def _index(c: consumer_kinds.FrozenIndex, users, items, picks,
           t: Thresholds) -> list[Check]:
  """A frozen index's fraction of the ceiling and the BC criterion."""
  frozen = faiss_index.build_index(c.items, c.index_kind)
  new = c.recall(faiss_index.with_inserted(frozen, items[len(c.items):]),
                 users)
  ceiling = c.recall(faiss_index.build_index(items, c.index_kind), users)

  def ratio(a, b):
    return np.where(b > 0, a / np.where(b > 0, b, 1.0), 1.0)

  mean = lambda x: x[picks].mean(axis=1)
  old, at_k = c.baseline_recall, f"recall@{c.k}"
  return [
      Check(c.name, "index", c.version, f"{at_k} new / refreshed ceiling",
            float(ceiling.mean()), float(new.mean()),
            float(ratio(new.mean(), ceiling.mean())),
            *interval(ratio(mean(new), mean(ceiling)), t.level),
            t.min_ceiling_ratio, t.strict),
      Check(c.name, "index", c.version, f"BC: {at_k} new-to-old - old-to-old",
            c.baseline, float(new.mean()), float(new.mean() - c.baseline),
            *interval(mean(new) - mean(old), t.level), -t.bc_tolerance,
            t.strict)]


def checked_candidate(store: EmbeddingStore, candidate: Candidate
                      ) -> tuple[Candidate, BackwardMap]:
  """The candidate as the store would take it as version K + 1, with its
  map as a `BackwardMap`.

  Raises:
    StoreError: what `append_version` refuses: a map of the wrong shape,
      non-finite values, ids that do not extend the stored ones.
  """
  k = store.latest_version + 1
  backward = maps.checked(candidate.backward, k, store.dims[-1])
  users, items, user_ids, item_ids = layout.check_latest(
      candidate.users, candidate.items, candidate.user_ids,
      candidate.item_ids)
  if users.shape[1] != backward.d_in:
    raise StoreError(f"candidate version {k}: users have {users.shape[1]} "
                     f"dims, its backward map reads {backward.d_in}")
  layout.check_prefix("user", store.user_ids, user_ids)
  layout.check_prefix("item", store.item_ids, item_ids)
  return Candidate(users, items, backward, user_ids, item_ids), backward


def check(store: EmbeddingStore, candidate: Candidate,
          thresholds: Thresholds = Thresholds()) -> GateReport:
  """Scores every registered consumer on the candidate (module docstring).

  Args:
    store: the open store, at version K.
    candidate: version K + 1.
    thresholds: the margins, the bootstrap and its seed.

  Returns:
    The `GateReport`; nothing is written.

  Raises:
    StoreError: a bad candidate (`checked_candidate`), or a registry or
      consumer file that fails verification (naming the consumer).
  """
  t = thresholds
  if t.resamples < 1 or not 0 < t.level < 1:
    raise StoreError(f"thresholds: resamples={t.resamples} must be >= 1 and "
                     f"level={t.level} in (0, 1)")
  candidate, backward = checked_candidate(store, candidate)
  k = store.latest_version + 1
  previous = (backward(candidate.users), backward(candidate.items))
  mapped = {}  # version j -> the candidate's (users, items) in its space
  root = keys.root(t.seed)
  checks = []
  for c in registry.consumers(store):
    if c.version not in mapped:
      mapped[c.version] = tuple(store.transform(z, k - 1, c.version)
                                for z in previous)
    users, items = mapped[c.version]
    n = len(c.labels) if isinstance(c, consumer_kinds.Classifier) else len(
        c.queries)
    picks = numpy_rng(keys.derive(root, f"gate:{c.name}")).integers(
        0, n, size=(t.resamples, n))
    if isinstance(c, consumer_kinds.Classifier):
      checks += _classifier(c, users, items, picks, t)
    else:
      checks += _index(c, users, items, picks, t)
  return GateReport(k, tuple(checks), t)


def publish(store: EmbeddingStore, candidate: Candidate,
            thresholds: Thresholds = Thresholds(), force: bool = False,
            log: Callable[[str], None] | None = None
            ) -> tuple[int, GateReport]:
  """Checks the candidate and appends it when it passes (or with `force`).

  Args:
    store: the open store, at version K.
    candidate: version K + 1.
    thresholds: see `check`.
    force: append even if the gate fails (a notice goes to `log`).
    log: where the notice goes (default stderr).

  Returns:
    (K + 1, the gate's report).

  Raises:
    ReleaseRefused: the gate failed and `force` is False; the store is
      unchanged.
    StoreError: see `check` and `EmbeddingStore.append_version`.
  """
  report = check(store, candidate, thresholds)
  if not report.passed:
    if not force:
      raise ReleaseRefused(report)
    (log or to_stderr)(f"release gate: version {report.version} fails for "
                       f"{', '.join(report.failing)}; published anyway "
                       "(force)")
  candidate, _ = checked_candidate(store, candidate)
  version = store.append_version(candidate.users, candidate.items,
                                 candidate.backward, candidate.user_ids,
                                 candidate.item_ids)
  return version, report


def save_candidate(path: str | os.PathLike, candidate: Candidate) -> None:
  """Writes a candidate as `.npz` atomically: users, items, user_ids,
  item_ids and W (a linear map) or map_kind and map_<param> arrays."""
  backward = candidate.backward
  if not isinstance(backward, BackwardMap):
    backward = BackwardMap.from_matrix(backward)
  arrays = ({"W": backward.matrix} if backward.kind == "linear" else
            {"map_kind": np.str_(backward.kind),
             **{f"map_{p}": v for p, v in backward.params.items()}})
  io.atomic_write(path, lambda f: np.savez(
      f, users=candidate.users, items=candidate.items,
      user_ids=np.asarray(candidate.user_ids, np.str_),
      item_ids=np.asarray(candidate.item_ids, np.str_), **arrays))


def load_candidate(path: str | os.PathLike) -> Candidate:
  """The candidate `save_candidate` wrote (read without pickle).

  Raises:
    StoreError: an unreadable file, or one missing an array (naming it).
  """
  try:
    with io.open_regular(path) as f, np.load(f, allow_pickle=False) as npz:
      arrays = {name: npz[name] for name in npz.files}
  except (OSError, ValueError, EOFError, io.FileFormatError) as e:
    raise StoreError(f"candidate {path}: not a readable .npz ({e})") from None
  missing = [n for n in ("users", "items", "user_ids", "item_ids")
             if n not in arrays]
  if "W" not in arrays and "map_kind" not in arrays:
    missing.append("W (or map_kind and map_<param>)")
  if missing:
    raise StoreError(f"candidate {path}: no array {', '.join(missing)}")
  if "W" in arrays:
    backward = arrays["W"]
  else:
    try:
      backward = BackwardMap(str(arrays["map_kind"]), {
          n[4:]: v for n, v in arrays.items() if n.startswith("map_")
          and n != "map_kind"})
    except ValueError as e:
      raise StoreError(f"candidate {path}: {e}") from None
  return Candidate(arrays["users"], arrays["items"], backward,
                   arrays["user_ids"], arrays["item_ids"])
