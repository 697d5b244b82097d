"""Unintended tasks (method §7): targets, consumer training, cross-version scoring.

A task is data: for the training set, the early-stopping set and every scored
version k, rows into the BC embedding tables (a user, an item, or a (user,
item) pair whose input is [z_u, z_i]) with binary labels. Consumers are
trained once on fix-m0's version-0 embeddings, for every hidden size h, every
dropout rate and every seed at once: dropout rates and seeds are `jax.vmap`ped
in one compiled epoch (a `lax.scan` over batches); only h changes shapes and
is looped over. The grid point with the best mean validation ROC-AUC is kept,
with each seed's best-epoch head. Scoring then runs every (strategy, version,
seed) of a task in one jitted call over padded, masked inputs.

In the run directory (`bcjax.rundir`): `consumers/<task>.msgpack` holds the
chosen heads, leaves stacked over seeds; `consumers/<task>.json` (written
last) h, dropout and validation AUCs; `consumers/auc.json` the ROC-AUC of
every task, strategy, version and seed.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bcjax import io, metrics, numbers
from bcjax.numbers import finite_or_none
from bcjax.data.splits import VersionSplit
from bcjax.data.targets import VersionTargets, version_targets
from bcjax.models.consumer import ConsumerMLP
from bcjax.rundir import RunDir, read_json

REFERENCE = "fix-m0"   # consumers train on this strategy's embeddings
STD_THRESHOLD = 1.0
_EVAL_BUDGET_BYTES = 1 << 30


@dataclasses.dataclass(frozen=True)
class UnintendedTask:
  """One unintended task.

  Attributes:
    name: the method §7 name.
    inputs: the embedding tables whose rows are concatenated, in order.
    val_version: the version whose labels (and fix-m0 embeddings) early-stop.
    first_version: the first scored version.
  """
  name: str
  inputs: tuple[str, ...]
  val_version: int
  first_version: int


TASKS: dict[str, UnintendedTask] = {t.name: t for t in (
    UnintendedTask("binary-edge-rating", ("user", "item"), 0, 1),
    UnintendedTask("user-activity", ("user",), 1, 2),
    UnintendedTask("user-positive-activity", ("user",), 1, 2),
    UnintendedTask("binary-item-rating-avg", ("item",), 0, 1),
    UnintendedTask("binary-item-rating-std", ("item",), 0, 1),
)}


@dataclasses.dataclass(frozen=True)
class Examples:
  """`rows`: `[N, len(task.inputs)]` int32 table rows; `labels`: `[N]` bool."""
  rows: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class TaskData:
  """Training (version 0 unless built with another `train_version`),
  early-stopping and per-version scoring examples."""
  task: UnintendedTask
  train: Examples
  val: Examples
  evaluation: dict[int, Examples]


def _examples(name: str, split: VersionSplit, targets: VersionTargets,
              side: str, avg_threshold: float) -> Examples:
  """A task's examples on one split; side "train" or "eval" (method §7 table)."""
  if name == "binary-edge-rating":
    user, item, label = ((split.train_user, split.train_item,
                          targets.train_edge_positive) if side == "train" else
                         (split.val_user, split.val_item,
                          targets.val_edge_positive))
    return Examples(np.stack([user, item], 1).astype(np.int32),
                    np.asarray(label, bool))
  if name in ("user-activity", "user-positive-activity"):
    label = (targets.user_active if name == "user-activity"
             else targets.user_positive_active)
    return Examples(np.arange(split.num_users, dtype=np.int32)[:, None],
                    np.asarray(label, bool))
  stats = targets.item_stats_train if side == "train" else targets.item_stats_all
  label = (stats.mean >= avg_threshold if name == "binary-item-rating-avg"
           else stats.std >= STD_THRESHOLD)
  return Examples(stats.item.astype(np.int32)[:, None], np.asarray(label, bool))


def task_key(seed: int, task: str) -> jax.Array:
  """The key of a task's consumers: `fold_in(key(seed), crc32(task))`, the
  same for every strategy (common random numbers)."""
  return jax.random.fold_in(jax.random.key(seed),
                            zlib.crc32(task.encode()) & 0x7FFFFFFF)


def early_stop_version(task: UnintendedTask, train_version: int,
                       num_versions: int) -> int:
  """The version whose labels early-stop consumers trained on `train_version`:
  `train_version + task.val_version`, clipped to the last version."""
  return min(train_version + task.val_version, num_versions - 1)


def task_data(name: str, splits: Sequence[VersionSplit],
              targets: Sequence[VersionTargets] | None = None,
              train_version: int = 0) -> TaskData:
  """Builds one task's examples from a run's splits.

  With `train_version` j (method §7 is j = 0), the consumers train on version
  j's examples, early-stop on version j + `task.val_version` (clipped to the
  last version) and are scored at every version k >= j + `task.first_version`;
  the rating-average threshold is the median of version j's training means.

  Args:
    name: a key of `TASKS`.
    splits: every version's split, version 0 first.
    targets: their `version_targets` (computed if None).
    train_version: j, the version the consumers train on.

  Raises:
    ValueError: an unknown task, too few versions for its early stopping, or
      a training version out of range.
  """
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
  task = TASKS[name]
  if len(splits) <= task.val_version:
    raise ValueError(f"task {name}: needs {task.val_version + 1} versions, "
                     f"the run has {len(splits)}")
  if not 0 <= train_version < len(splits):
    raise ValueError(f"task {name}: train_version={train_version} is out of "
                     f"range 0..{len(splits) - 1}")
  targets = targets or [version_targets(s) for s in splits]
  j = train_version
  threshold = float(np.median(targets[j].item_stats_train.mean))
  examples = lambda k, side: _examples(name, splits[k], targets[k], side,
                                       threshold)
  val_version = early_stop_version(task, j, len(splits))
  return TaskData(task, examples(j, "train"), examples(val_version, "eval"),
                  {k: examples(k, "eval")
                   for k in range(j + task.first_version, len(splits))})


def all_task_data(splits: Sequence[VersionSplit]) -> dict[str, TaskData]:
  targets = [version_targets(s) for s in splits]
  return {name: task_data(name, splits, targets) for name in TASKS}


def single_class(examples: Examples) -> bool:
  return len(examples) == 0 or examples.labels.all() or not examples.labels.any()


# Consumer training.


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


@dataclasses.dataclass
class Heads:
  """A task's frozen consumers: the chosen grid point, one head per seed.

  Attributes:
    hidden, dropout: the chosen hyper-parameters.
    variables: {"params", "batch_stats"}, every leaf `[seeds, ...]`.
    val_auc: `[seeds]` best validation ROC-AUC of each seed.
    best_epoch: `[seeds]` the epoch of that best (0: never improved).
    grid: "h=<h>,dropout=<p>" -> per-seed best validation AUC.
  """
  hidden: int
  dropout: float
  variables: Any
  val_auc: np.ndarray
  best_epoch: np.ndarray
  grid: dict[str, list[float]]


def features(tables: Sequence[jax.Array], rows: jax.Array) -> jax.Array:
  """`[N, sum d]`: row j of `rows` picks table j's rows, concatenated."""
  return jnp.concatenate([t[rows[:, j]] for j, t in enumerate(tables)], -1)


def init_heads(hidden: int, d_in: int, keys: jax.Array):
  """Fresh variables of `len(keys)` consumer heads of width `hidden` over
  `d_in` inputs, leaves stacked on a leading seed axis."""
  model = ConsumerMLP(hidden)
  return jax.vmap(lambda k: model.init(k, jnp.zeros((2, d_in)), train=False))(keys)


@functools.partial(jax.jit, static_argnames=("hidden", "d_in", "seeds",
                                             "num_rates", "lr"))
def _start(key: jax.Array, *, hidden: int, d_in: int, seeds: int,
           num_rates: int, lr: float):
  """The initial grid state of one h: model m has seed m % seeds (the same
  initialisation for every dropout rate), and its key."""
  seed_keys = jax.vmap(lambda s: jax.random.fold_in(
      jax.random.fold_in(key, hidden), s))(jnp.arange(seeds))
  keys = seed_keys[jnp.tile(jnp.arange(seeds), num_rates)]
  variables = init_heads(hidden, d_in, keys)
  # best_auc strongly typed, as _grid_epoch returns it: else its second call
  # recompiles.
  return {"params": variables["params"],
          "batch_stats": variables["batch_stats"],
          "opt_state": jax.vmap(optax.adam(lr).init)(variables["params"]),
          "best": jax.tree.map(jnp.copy, variables),
          "best_auc": jnp.full(len(keys), -jnp.inf, jnp.float32),
          "best_epoch": jnp.zeros(len(keys), jnp.int32)}, keys


def _predict(model: ConsumerMLP, variables, tables, rows: jax.Array,
             chunk: int) -> jax.Array:
  """Eval-mode logits of `[C * chunk, c]` rows, `chunk` rows at a time."""
  out = jax.lax.map(lambda r: model.apply(variables, features(tables, r)),
                    rows.reshape(-1, chunk, rows.shape[-1]))
  return out.reshape(-1)


@functools.partial(jax.jit, static_argnames=("hidden", "batch_size", "lr"),
                   donate_argnames=("state",))
def _grid_epoch(state, keys, rates, epoch, train_tables, train_rows,
                train_labels, val_tables, val_rows, val_labels, val_mask, *,
                hidden: int, batch_size: int, lr: float):
  """One epoch of M models (vmapped), then validation and best-keeping.

  Args:
    state: dict of params, batch_stats, opt_state, best (variables), best_auc
      `[M]`, best_epoch `[M]`; every leaf stacked over the M models.
    keys: `[M]` model keys; epoch e uses `fold_in(key, e)`.
    rates: `[M]` dropout rates.
    epoch: the (1-based) epoch number.
    train_tables, train_rows, train_labels: the training examples.
    val_tables, val_rows, val_labels, val_mask: the early-stopping examples,
      padded to a multiple of batch_size.
  """
  model, tx = ConsumerMLP(hidden), optax.adam(lr)
  n = train_rows.shape[0]
  num_batches = -(-n // batch_size)

  def one_model(params, stats, opt_state, key, rate):
    key = jax.random.fold_in(key, epoch)
    order_key, dropout_key = jax.random.split(key)
    order = jnp.concatenate([jax.random.permutation(order_key, n),
                             jnp.zeros(num_batches * batch_size - n, jnp.int32)])
    mask = jnp.arange(num_batches * batch_size) < n
    batches = (order.reshape(num_batches, batch_size),
               mask.reshape(num_batches, batch_size), jnp.arange(num_batches))

    def step(carry, batch):
      params, stats, opt_state = carry
      index, real, i = batch
      x = features(train_tables, train_rows[index])
      y = train_labels[index].astype(jnp.float32)

      def loss_fn(p):
        logits, updates = model.apply(
            {"params": p, "batch_stats": stats}, x, train=True, rate=rate,
            mask=real, rngs={"dropout": jax.random.fold_in(dropout_key, i)},
            mutable=["batch_stats"])
        loss = optax.sigmoid_binary_cross_entropy(logits, y)
        return jnp.sum(loss * real) / jnp.sum(real), updates["batch_stats"]

      (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), stats, opt_state), loss

    (params, stats, opt_state), losses = jax.lax.scan(
        step, (params, stats, opt_state), batches)
    logits = _predict(model, {"params": params, "batch_stats": stats},
                      val_tables, val_rows, batch_size)
    auc = metrics.roc_auc(logits, val_labels, val_mask)
    return params, stats, opt_state, jnp.mean(losses), auc

  params, stats, opt_state, loss, auc = jax.vmap(one_model)(
      state["params"], state["batch_stats"], state["opt_state"], keys, rates)
  improved = auc > state["best_auc"]  # NaN never improves.
  keep = lambda new, old: jnp.where(
      improved.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
  best = jax.tree.map(keep, {"params": params, "batch_stats": stats},
                      state["best"])
  return {"params": params, "batch_stats": stats, "opt_state": opt_state,
          "best": best, "best_auc": jnp.where(improved, auc, state["best_auc"]),
          "best_epoch": jnp.where(improved, epoch, state["best_epoch"])}, loss


def _pad_rows(examples: Examples, multiple: int):
  n = len(examples)
  size = max(multiple, -(-n // multiple) * multiple)
  rows = np.zeros((size, examples.rows.shape[1]), np.int32)
  rows[:n] = examples.rows
  labels = np.zeros(size, bool)
  labels[:n] = examples.labels
  return rows, labels, np.arange(size) < n


def train_heads(train_tables: Sequence[np.ndarray], train: Examples,
                val_tables: Sequence[np.ndarray], val: Examples,
                config: ConsumerConfig, key: jax.Array, label: str = "consumer",
                log: Callable[[str], None] | None = None) -> Heads:
  """Trains the whole grid (h x dropout x seed) and keeps the best grid point.

  Args:
    train_tables: the embedding tables of `task.inputs`, `[rows, d]` each,
      for the training examples.
    train: the training examples.
    val_tables: the tables the early-stopping examples index.
    val: the early-stopping examples.
    config: schedule and grid.
    key: PRNG key; seed s of size h starts from `fold_in(fold_in(key, h), s)`
      whatever the dropout rate.
    label: the prefix of progress lines.
    log: where progress lines go (default stderr).

  Returns:
    The chosen `Heads`: the (h, dropout) with the highest mean over seeds of
    the best validation AUC (ties: the first in grid order).
  """
  log = log or (lambda line: print(line, file=sys.stderr, flush=True))
  train_tables = tuple(jnp.asarray(t, jnp.float32) for t in train_tables)
  val_tables = tuple(jnp.asarray(t, jnp.float32) for t in val_tables)
  train_rows, train_labels = jnp.asarray(train.rows), jnp.asarray(train.labels)
  val_rows, val_labels, val_mask = map(jnp.asarray,
                                       _pad_rows(val, config.batch_size))
  d_in = sum(t.shape[1] for t in train_tables)
  num_rates, seeds = len(config.dropout), config.seeds
  rates = jnp.asarray(np.repeat(np.asarray(config.dropout, np.float32), seeds))
  report_every = max(1, config.epochs // 5)
  best_mean, chosen, grid = -np.inf, None, {}
  for hidden in config.hidden:
    state, keys = _start(key, hidden=hidden, d_in=d_in, seeds=seeds,
                         num_rates=num_rates, lr=config.lr)
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
      state, loss = _grid_epoch(
          state, keys, rates, np.int32(epoch), train_tables, train_rows,
          train_labels, val_tables, val_rows, val_labels, val_mask,
          hidden=hidden, batch_size=config.batch_size, lr=config.lr)
      if epoch % report_every == 0 or epoch == config.epochs:
        rate = epoch / (time.perf_counter() - start)
        log(f"[{label} h={hidden}] epoch {epoch}/{config.epochs} loss "
            f"{np.mean(loss):.4f} best val AUC "
            f"{np.mean(state['best_auc']):.4f} | {rate:.2f} epochs/s")
    best_auc = np.asarray(state["best_auc"]).reshape(num_rates, seeds)
    for r, p in enumerate(config.dropout):
      grid[f"h={hidden},dropout={p}"] = best_auc[r].tolist()
      if best_auc[r].mean() > best_mean:
        best_mean = best_auc[r].mean()
        pick = lambda a, r=r: np.asarray(a)[r * seeds:(r + 1) * seeds]
        chosen = Heads(hidden, p, jax.tree.map(pick, state["best"]),
                       best_auc[r],
                       pick(state["best_epoch"]), grid)
  if chosen is None:
    raise ValueError(f"{label}: no grid point reached a finite validation AUC")
  return chosen


def save_heads(path_stem: Path, heads: Heads, extra: dict) -> None:
  """`<stem>.msgpack` then `<stem>.json` (which marks the task complete)."""
  io.save_bytes(path_stem.with_suffix(".msgpack"),
                flax.serialization.to_bytes(heads.variables))
  io.save_json(path_stem.with_suffix(".json"), {
      **extra, "hidden": heads.hidden, "dropout": heads.dropout,
      "seeds": len(heads.val_auc), "val_auc": heads.val_auc.tolist(),
      "best_epoch": heads.best_epoch.tolist(), "grid_val_auc": heads.grid})


def load_heads(path_stem: Path) -> Heads:
  meta = read_json(path_stem.with_suffix(".json"))
  template = jax.eval_shape(lambda: init_heads(
      meta["hidden"], meta["d_in"],
      jax.random.split(jax.random.key(0), meta["seeds"])))
  variables = flax.serialization.from_bytes(
      template, path_stem.with_suffix(".msgpack").read_bytes())
  return Heads(meta["hidden"], meta["dropout"], variables,
               np.asarray(meta["val_auc"]), np.asarray(meta["best_epoch"]),
               meta["grid_val_auc"])


# Cross-version scoring.


@dataclasses.dataclass(frozen=True)
class EvalInputs:
  """Every (strategy, version) of one task, padded to common shapes.

  Attributes:
    strategies: P names; versions: V scored versions.
    tables: one `[P, V, R_pad, d]` array per task input (zero padding rows).
    rows: `[V, N_pad, c]` int32; labels, mask: `[V, N_pad]` bool.
  """
  strategies: tuple[str, ...]
  versions: tuple[int, ...]
  tables: tuple[np.ndarray, ...]
  rows: np.ndarray
  labels: np.ndarray
  mask: np.ndarray


def _table(embeddings, task: UnintendedTask, strategy: str, k: int,
           j: int) -> np.ndarray:
  users, items = embeddings[strategy][k]
  return users if task.inputs[j] == "user" else items


def prepare_evaluation(data: TaskData, embeddings: Mapping[str, Mapping[int, Any]],
                       strategies: Sequence[str]) -> EvalInputs:
  """Pads and stacks the scored versions of `strategies` (host, numpy).

  Args:
    data: the task.
    embeddings: strategy -> version -> (bc_users `[U1_k, d0]`, bc_items
      `[I1_k, d0]`).
    strategies: the strategies to score.
  """
  task, versions = data.task, tuple(sorted(data.evaluation))
  n_pad = max(len(data.evaluation[k]) for k in versions)
  padded = [_pad_rows(data.evaluation[k], n_pad) for k in versions]
  tables = []
  for j in range(len(task.inputs)):
    r_pad = max(_table(embeddings, task, s, k, j).shape[0]
                for s in strategies for k in versions)
    d = _table(embeddings, task, strategies[0], versions[0], j).shape[1]
    stacked = np.zeros((len(strategies), len(versions), r_pad, d), np.float32)
    for p, s in enumerate(strategies):
      for v, k in enumerate(versions):
        t = _table(embeddings, task, s, k, j)
        stacked[p, v, :len(t)] = t
    tables.append(stacked)
  return EvalInputs(tuple(strategies), versions, tuple(tables),
                    *(np.stack(a) for a in zip(*padded)))


@functools.partial(jax.jit, static_argnames=("hidden", "strategy_batch"))
def _evaluate(variables, tables, rows, labels, mask, *, hidden: int,
              strategy_batch: int) -> jax.Array:
  """`[P, V, S]` ROC-AUC: strategies mapped in batches, versions and seeds vmapped."""
  model = ConsumerMLP(hidden)

  def one_version(version_tables, version_rows, version_labels, version_mask):
    x = features(version_tables, version_rows)
    return jax.vmap(lambda v: metrics.roc_auc(
        model.apply(v, x), version_labels, version_mask))(variables)

  def one_strategy(strategy_tables):
    return jax.vmap(one_version)(strategy_tables, rows, labels, mask)

  return jax.lax.map(one_strategy, tables, batch_size=strategy_batch)


def evaluate(heads: Heads, inputs: EvalInputs) -> dict[str, np.ndarray]:
  """Every (strategy, version, seed) of a task in one jitted, vmapped call.

  Returns:
    strategy -> `[V, S]` ROC-AUC, V the scored versions (`inputs.versions`).
  """
  num_seeds = len(heads.val_auc)
  width = heads.hidden * 3 + sum(t.shape[-1] for t in inputs.tables)
  per_strategy = 4 * len(inputs.versions) * num_seeds * inputs.rows.shape[1] * width
  batch = int(np.clip(_EVAL_BUDGET_BYTES // max(per_strategy, 1), 1,
                      len(inputs.strategies)))
  auc = _evaluate(heads.variables, tuple(jnp.asarray(t) for t in inputs.tables),
                  jnp.asarray(inputs.rows), jnp.asarray(inputs.labels),
                  jnp.asarray(inputs.mask), hidden=heads.hidden,
                  strategy_batch=batch)
  auc = np.asarray(auc)
  return {s: auc[p] for p, s in enumerate(inputs.strategies)}


@functools.partial(jax.jit, static_argnames=("hidden",))
def _logits(variables, tables, rows: jax.Array, *, hidden: int) -> jax.Array:
  x = features(tables, rows)
  return jax.vmap(lambda v: ConsumerMLP(hidden).apply(v, x))(variables)


def predict(heads: Heads, tables: Sequence[Any], rows: Any) -> np.ndarray:
  """Every seed's eval-mode logits on some examples: what a frozen consumer
  predicts from the embeddings it is given.

  Args:
    heads: the frozen consumers.
    tables: the embedding tables of the task's inputs (`task.inputs` order),
      `[rows, d]` each, in the space the heads were trained in.
    rows: `[N, len(tables)]` rows into the tables, e.g. `Examples.rows`.

  Returns:
    `[seeds, N]` float32 logits.

  Raises:
    ValueError: if the tables' total width is not the heads' input width
      (embeddings of another version, say).
  """
  d_in = heads.variables["params"]["dense_0"]["kernel"].shape[-2]
  tables = tuple(jnp.asarray(t, jnp.float32) for t in tables)
  width = sum(t.shape[1] for t in tables)
  if width != d_in:
    raise ValueError(f"the consumers read {d_in} input dims, the tables give "
                     f"{width}: embeddings of another version?")
  rows = jnp.asarray(rows, jnp.int32).reshape(-1, len(tables))
  return np.asarray(_logits(heads.variables, tables, rows,
                            hidden=heads.hidden))


@functools.partial(jax.jit, static_argnames=("hidden",))
def _score(variables, x: jax.Array, labels: jax.Array, *, hidden: int):
  return metrics.roc_auc(ConsumerMLP(hidden).apply(variables, x), labels)


def evaluate_reference(heads: Heads, data: TaskData,
                       embeddings: Mapping[str, Mapping[int, Any]],
                       strategies: Sequence[str]) -> dict[str, np.ndarray]:
  """`evaluate` as plain loops over strategies, versions and seeds, unpadded:
  one small jitted call per (strategy, version, seed).

  Agrees with `evaluate` up to float rounding: identical input rows (say a
  repeated interaction) may round differently at different positions of the
  batched computation, which can break their AUC tie (half a pair).
  """
  out = {}
  for s in strategies:
    per_version = []
    for k in sorted(data.evaluation):
      examples = data.evaluation[k]
      tables = [_table(embeddings, data.task, s, k, j)
                for j in range(len(data.task.inputs))]
      x = np.concatenate([t[examples.rows[:, j]] for j, t in enumerate(tables)], 1)
      per_version.append([
          float(_score(jax.tree.map(lambda a: a[seed], heads.variables), x,
                       examples.labels, hidden=heads.hidden))
          for seed in range(len(heads.val_auc))])
    out[s] = np.asarray(per_version)
  return out


# The run directory.


def load_embeddings(workdir: RunDir | str | os.PathLike,
                    strategies: Sequence[str], versions: Sequence[int]
                    ) -> dict[str, dict[int, tuple]]:
  """strategy -> version -> (bc_users, bc_items) of a run (method §6)."""
  run_dir = RunDir.of(workdir)
  return {s: {k: run_dir.bc_tables(s, k) for k in versions}
          for s in strategies}


def train_consumers(workdir: RunDir | str | os.PathLike, data: Mapping[str, TaskData],
                    config: ConsumerConfig, seed: int = 0,
                    log: Callable[[str], None] | None = None
                    ) -> dict[str, Heads]:
  """Trains (or loads, if saved) every task's consumers on fix-m0's embeddings.

  Task t's key is `task_key(seed, t)`. Saved heads are reused when
  their consumer settings and input width match, else retrained. Tasks whose
  training or early-stopping labels have a single class are skipped (absent
  from the result), with a log line.
  """
  log = log or (lambda line: print(line, file=sys.stderr, flush=True))
  run_dir = RunDir.of(workdir)
  run_dir.consumers_dir.mkdir(parents=True, exist_ok=True)
  versions = sorted({0} | {d.task.val_version for d in data.values()})
  embeddings = load_embeddings(run_dir, [REFERENCE], versions)[REFERENCE]
  heads = {}
  settings = io.as_json(dataclasses.asdict(config))
  for name, d in data.items():
    stem = run_dir.consumer_stem(name)
    d_in = sum(embeddings[0][0 if kind == "user" else 1].shape[1]
               for kind in d.task.inputs)
    if stem.with_suffix(".json").exists():
      meta = read_json(stem.with_suffix(".json"))
      if meta.get("config") == settings and meta.get("d_in") == d_in:
        heads[name] = load_heads(stem)
        continue
      log(f"[consumer {name}] saved heads have other settings; retraining")
    if single_class(d.train) or single_class(d.val):
      log(f"[consumer {name}] skipped: its training or early-stopping labels "
          "have a single class")
      continue
    tables = lambda k: [embeddings[k][0 if kind == "user" else 1]
                        for kind in d.task.inputs]
    start = time.perf_counter()
    key = task_key(seed, name)
    heads[name] = train_heads(tables(0), d.train, tables(d.task.val_version),
                              d.val, config, key, label=f"consumer {name}",
                              log=log)
    save_heads(stem, heads[name], {
        "task": name, "trained_on": f"{REFERENCE} v0",
        "val_version": d.task.val_version,
        "d_in": d_in, "num_train": len(d.train), "num_val": len(d.val),
        "config": settings})
    log(f"[consumer {name}] h={heads[name].hidden} dropout="
        f"{heads[name].dropout} val AUC {heads[name].val_auc.mean():.4f} "
        f"({time.perf_counter() - start:.1f}s)")
  return heads


def evaluate_consumers(workdir: RunDir | str | os.PathLike, data: Mapping[str, TaskData],
                       heads: Mapping[str, Heads], strategies: Sequence[str],
                       num_versions: int) -> dict[str, dict[str, list]]:
  """Scores every trained task on every strategy; writes `consumers/auc.json`.

  Returns:
    task -> strategy -> per version (all `num_versions`): the per-seed AUCs,
    or None where the version is not scored.
  """
  run_dir = RunDir.of(workdir)
  embeddings = load_embeddings(run_dir, strategies, range(num_versions))
  result = {}
  for name, h in heads.items():
    inputs = prepare_evaluation(data[name], embeddings, strategies)
    auc = evaluate(h, inputs)
    result[name] = {s: [finite_or_none(auc[s][inputs.versions.index(k)])
                        if k in inputs.versions else None
                        for k in range(num_versions)] for s in strategies}
  io.save_json(run_dir.auc_path, result)
  return result
