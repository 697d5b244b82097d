"""Run presets and the one validation of a run config.

A run config is an `ml_collections.ConfigDict` (see `paper.get_config` for
every field): the training fields at the top level, the consumers' settings
under `config.consumer` (`ConsumerConfig`) and the compatibility stage's
under `config.compat` (`CompatConfig`): this package owns every stage's
settings, and imports none of the stages. Presets:

  paper   the paper's values (method §4-§7), meant for an accelerator
  quick   CPU-sized: the whole pipeline on MovieLens-100k on 2 cores
  test    seconds per strategy, for the test suite

`validate` checks a config before any work is done, so a bad value is a
one-line error naming its field, never a failure deep inside training.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import NamedTuple, Sequence

import ml_collections

from bcjax.models import families
from bcjax.release import backfill
from bcjax.runs import strategies
from bcjax.runs.strategies import BC_ALIGNER_NAME, STRATEGIES
from bcjax.util import names, numbers

PRESETS = ("paper", "quick", "test")
MAX_SEED = 2**32 - 1


@dataclasses.dataclass(frozen=True)
class ConsumerConfig:
  """The consumer schedule and hyper-parameter grid (method §7).

  Built from a run config as `ConsumerConfig(**config.consumer)`; the values
  are checked (and lists made tuples) on construction.

  Raises:
    ValueError: a non-positive count or learning rate, an empty grid or a
      dropout rate outside [0, 1), naming the `config.consumer` field.
  """
  epochs: int = 300
  hidden: tuple[int, ...] = (128, 256, 512, 1024)
  dropout: tuple[float, ...] = (0.0, 0.25, 0.5)
  seeds: int = 10
  batch_size: int = 2048
  lr: float = 1e-3

  def __post_init__(self):
    field = lambda name, value: object.__setattr__(self, name, value)
    for name in ("epochs", "seeds", "batch_size"):
      field(name, numbers.positive_int(f"config.consumer.{name}",
                                       getattr(self, name)))
    field("hidden", tuple(numbers.positive_int("config.consumer.hidden", h)
                          for h in self.hidden))
    field("dropout", tuple(float(p) for p in self.dropout))
    field("lr", numbers.positive_float("config.consumer.lr", self.lr))
    if not self.hidden:
      raise ValueError("config.consumer.hidden must list positive sizes, got ()")
    if not self.dropout or not all(0.0 <= p < 1.0 for p in self.dropout):
      raise ValueError(f"config.consumer.dropout must lie in [0, 1), got "
                       f"{self.dropout}")


@dataclasses.dataclass(frozen=True)
class CompatConfig:
  """The compatibility stage's settings, `CompatConfig(**config.compat)`
  (`bcjax.runs.configs.validate` also makes the strategy names canonical).

  Raises:
    ValueError: a non-positive count, naming the `config.compat` field.
  """
  strategies: tuple[str, ...] = tuple(STRATEGIES)
  epochs: int = 300
  seeds: int = 10

  def __post_init__(self):
    field = lambda name, value: object.__setattr__(self, name, value)
    field("strategies", tuple(self.strategies))
    for name in ("epochs", "seeds"):
      field(name, numbers.positive_int(f"config.compat.{name}",
                                         getattr(self, name)))


@dataclasses.dataclass(frozen=True)
class BackfillConfig:
  """The backfill stage's settings, `BackfillConfig(**config.backfill)`
  (`validate` also makes the strategy names canonical): the curves of
  `strategies` under every policy of `policies` (`bcjax.release.backfill`),
  at `budgets` (from 0 to 1), as Recall@K for every K of `ks`.

  Raises:
    ValueError: an unknown or repeated policy, budgets that do not increase
      from 0 to 1, or a non-positive K, naming the `config.backfill` field.
  """
  strategies: tuple[str, ...] = (BC_ALIGNER_NAME, "posthoc-lstsq")
  policies: tuple[str, ...] = backfill.POLICIES
  budgets: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
  ks: tuple[int, ...] = (10, 50)

  def __post_init__(self):
    field = lambda name, value: object.__setattr__(self, name, value)
    field("strategies", tuple(self.strategies))
    field("policies", tuple(self.policies))
    unknown = [p for p in self.policies if p not in backfill.POLICIES]
    if unknown or not self.policies or len(set(self.policies)) < len(
        self.policies):
      raise ValueError(f"config.backfill.policies must list distinct "
                       f"policies of {', '.join(backfill.POLICIES)}; got "
                       f"{self.policies}")
    field("budgets", tuple(float(b) for b in backfill.check_budgets(
        self.budgets, "config.backfill.budgets")))
    field("ks", tuple(numbers.positive_int("config.backfill.ks", k)
                      for k in self.ks))
    if not self.ks:
      raise ValueError("config.backfill.ks must list positive cut-offs, got ()")


def get(preset: str) -> ml_collections.ConfigDict:
  """A fresh config of the named preset (`PRESETS`)."""
  names.check(PRESETS, preset, "preset")
  return importlib.import_module(f"bcjax.runs.configs.{preset}").get_config()


class Settings(NamedTuple):
  """What a validated config means: the versions to train, the consumer,
  compatibility and backfill settings, the training seeds, the worker
  processes."""
  versions: list[int]
  consumer: ConsumerConfig
  compat: CompatConfig
  seeds: list[int]
  workers: int = 1
  backfill: BackfillConfig = BackfillConfig()

  def compat_strategies(self, names: Sequence[str]) -> list[str]:
    """The compatibility matrix's strategies among those a run trains."""
    return [s for s in self.compat.strategies if s in names]

  def backfill_strategies(self, names: Sequence[str]) -> list[str]:
    """The backfill curves' strategies among those a run trains."""
    return [s for s in self.backfill.strategies if s in names]


def validate(config: ml_collections.ConfigDict) -> Settings:
  """Checks every field of a run config before any work.

  Args:
    config: a run config (a preset, maybe edited by flags).

  Returns:
    The `Settings`: `versions` is `config.versions` resolved ("all", or
    comma-separated integers such as "0,2", sorted); `seeds` the training
    seeds `config.seed, ..., config.seed + config.seeds - 1`; `workers`
    the training processes of `bcjax.paper.workers` (1: none).

  Raises:
    ValueError: naming the first bad field (non-finite numbers included).
  """
  num_versions = len(config.times) - 1
  for field in ("dims", "layers"):
    if len(config[field]) != num_versions:
      raise ValueError(f"config.{field} has {len(config[field])} entries for "
                       f"{num_versions} versions (config.times)")
    for value in config[field]:
      numbers.positive_int(f"config.{field}", value)
  for field in ("batch_size", "epochs", "eval_every", "finetune_epochs",
                "posthoc_epochs", "recall_batch_users", "chunk_batches"):
    numbers.positive_int(f"config.{field}", config[field])
  numbers.positive_int("config.seeds", config.get("seeds", 1))
  workers = numbers.positive_int("config.workers", config.get("workers", 1))
  if workers > 1 and int(config.devices) != 1:
    raise ValueError(f"config.workers={workers} trains one device per "
                     f"worker; it needs config.devices=1, not "
                     f"{config.devices}")
  for field in ("seed", "min_select_epoch", "checkpoint_every", "devices",
                "fanout"):
    if numbers.finite_float(f"config.{field}", config[field], 0) % 1:
      raise ValueError(f"config.{field} must be an integer >= 0, got "
                       f"{config[field]!r}")
  if int(config.seed) + int(config.get("seeds", 1)) > MAX_SEED + 1:
    raise ValueError(f"config.seed={config.seed!r}: every training seed must "
                     f"be at most {MAX_SEED} (a JAX key keeps 32 bits of its "
                     "seed; larger seeds would repeat smaller ones)")
  numbers.positive_float("config.lr", config.lr)
  for field in ("weight_decay", "lam"):
    numbers.finite_float(f"config.{field}", config[field], 0)
  families.check(config.model)
  if config.fanout and config.model != "pinsage":
    raise ValueError(f"config.fanout: neighbour sampling is implemented for "
                     f"pinsage, not {config.model}")
  compat = CompatConfig(**config.compat)
  compat = dataclasses.replace(compat, strategies=tuple(
      strategies.get(s).name for s in compat.strategies))
  filling = BackfillConfig(**config.get("backfill", {}))
  filling = dataclasses.replace(filling, strategies=tuple(
      strategies.get(s).name for s in filling.strategies))
  seeds = [int(config.seed) + i for i in range(int(config.get("seeds", 1)))]
  return Settings(_versions(config.versions, num_versions),
                  ConsumerConfig(**config.consumer), compat, seeds, workers,
                  filling)


def resolve(config: ml_collections.ConfigDict
            ) -> ml_collections.FrozenConfigDict:
  """The run config every stage reads: validated (`validate`), every field
  the paper preset has filled in where `config` lacks it, and frozen, so
  that no stage can change it under another (the caller's config is not
  touched).

  Raises:
    ValueError: as `validate`.
  """
  full = get("paper")
  full.update(config)
  validate(full)
  return ml_collections.FrozenConfigDict(full)


def _versions(versions, num_versions: int) -> list[int]:
  if versions == "all":
    return list(range(num_versions))
  try:
    chosen = sorted({int(v) for v in str(versions).split(",")})
  except ValueError:
    raise ValueError(f"config.versions={versions!r}: expected 'all' or "
                     "comma-separated integers") from None
  bad = [v for v in chosen if not 0 <= v < num_versions]
  if bad:
    raise ValueError(f"config.versions: version {bad[0]} is out of range "
                     f"0..{num_versions - 1}")
  return chosen
