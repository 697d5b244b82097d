"""Consumers of the unintended tasks: training the heads, saving and loading.

Consumers are trained once on fix-m0's version-0 embeddings, for every hidden
size h, every dropout rate and every seed: per grid point (h, dropout), the
trainer's epoch core (`bcjax.core.epoch.epoch_core`, a `lax.scan` of optimizer
steps) is `jax.vmap`ped over the seeds in one compiled epoch. The rate is
static so that rate 0 draws no dropout mask (the draws dominate a step on
the CPU), and the example orders are shuffled on the host (`epoch_orders`;
a sort-based permutation under jit cost a tenth of the epoch). The grid
point with the best mean validation ROC-AUC is kept, with each seed's
best-epoch head. The tasks are
`bcjax.evaluation.unintended`'s; the cross-version scoring is `bcjax.evaluation.scoring`'s.

In the run directory (`bcjax.runs.rundir`): `consumers/<task>.msgpack` holds the
chosen heads, leaves stacked over seeds; `consumers/<task>.json` (written
last) h, dropout and validation AUCs; `consumers/auc.json` the ROC-AUC of
every task, strategy, version and seed.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
import time
from typing import Any, Callable, Mapping, Sequence

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bcjax.core import metrics
from bcjax.core.epoch import TrainState, adam, epoch_core
from bcjax.data.sampling import numpy_rng
from bcjax.evaluation.unintended import (
  Examples,
  TaskData,
  padded_examples,
  single_class,
  task_key,
)
from bcjax.models.consumer import ConsumerMLP
from bcjax.runs import strategies
from bcjax.runs.configs import ConsumerConfig
from bcjax.runs.rundir import SHA256, RunDir, listed_digest, read_record
from bcjax.util import io, keys, loop, padding
from bcjax.util.checkpointing import Checkpointing, Selection
from bcjax.util.loop import Schedule
from bcjax.util.progress import to_stderr

REFERENCE = strategies.FIX_M0  # consumers train on its embeddings


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


@dataclasses.dataclass(frozen=True)
class ConsumerLoss:
  """The consumers' `bcjax.core.epoch.Loss`: binary cross-entropy of a head of
  width `hidden` with dropout at `rate`, masked to the batch's real rows.

  `data` is `(tables, rows, labels, dropout_key)` (the training examples and
  the head's epoch dropout key); a batch is `(index [B], real [B], i)`,
  batch i's examples and mask.
  """
  hidden: int
  rate: float

  def __call__(self, params, state: TrainState, data, batch):
    tables, rows, labels, dropout_key = data
    index, real, i = batch
    logits, updates = ConsumerMLP(self.hidden).apply(
        {"params": params["model"], **state.model_state},
        features(tables, rows[index]), train=True, rate=self.rate, mask=real,
        rngs={"dropout": keys.derive(dropout_key, "batch", i)},
        mutable=["batch_stats"])
    loss = optax.sigmoid_binary_cross_entropy(logits,
                                              labels[index].astype(jnp.float32))
    return (jnp.sum(loss * real) / jnp.sum(real),
            ({"batch_stats": updates["batch_stats"]}, {}))

  @property
  def terms(self) -> tuple[str, ...]:
    return ()

  def real(self, batch) -> jax.Array:
    return jnp.any(batch[1])


def _start(model_keys: jax.Array, hidden: int, d_in: int,
           tx: optax.GradientTransformation) -> tuple[TrainState, Selection]:
  """The initial grid state of one h: a train state per model (stacked), and
  the selection before any epoch (the initial heads, AUC -inf, epoch 0)."""
  variables = init_heads(hidden, d_in, model_keys)
  train = jax.vmap(lambda v: TrainState.create(
      {"model": v["params"]}, tx, model_state={"batch_stats": v["batch_stats"]}
  ))(variables)
  m = len(model_keys)
  return train, Selection(np.full(m, -np.inf, np.float32),
                          np.zeros(m, np.int32),
                          jax.tree.map(jnp.copy, variables),
                          {"val AUC": np.full(m, np.nan, np.float32)})


def _predict(model: ConsumerMLP, variables, tables, rows: jax.Array,
             chunk: int) -> jax.Array:
  """Eval-mode logits of `[C * chunk, c]` rows, `chunk` rows at a time."""
  out = jax.lax.map(lambda r: model.apply(variables, features(tables, r)),
                    rows.reshape(-1, chunk, rows.shape[-1]))
  return out.reshape(-1)


def epoch_orders(model_keys: Sequence[jax.Array], epoch: int, n: int,
                 batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Each model's shuffled order of its n examples in `epoch`, on the host.

  Model m's order is a numpy permutation seeded by
  `keys.derive(keys.derive(model_keys[m], "epoch", epoch), "order")`; the
  orders are padded to whole batches (padding points at example 0).

  Returns:
    (`[M, num_batches, batch_size]` int32 example indices, the
    `[num_batches, batch_size]` bool mask of real rows, shared by the
    models).
  """
  size = padding.round_up(n, batch_size)
  orders = []
  for key in model_keys:
    rng = numpy_rng(keys.derive(keys.derive(key, "epoch", epoch), "order"))
    (order,), real = padding.pad_rows((rng.permutation(n).astype(np.int32),),
                                      size)
    orders.append(order.reshape(-1, batch_size))
  return np.stack(orders), real.reshape(-1, batch_size)


@functools.partial(jax.jit, static_argnames=("hidden", "rate"),
                   donate_argnames=("state",))
def _grid_epoch(state, model_keys, orders, real, epoch, train_tables,
                train_rows, train_labels, *, hidden: int, rate: float):
  """One epoch of the M models of one grid point (`epoch_core` vmapped).

  Args:
    state: from `_start`, every leaf stacked over the M models.
    model_keys: `[M]` model keys; epoch e's dropout draws from
      `keys.derive(keys.derive(key, "epoch", e), "dropout")`.
    orders, real: the models' batches and their shared mask
      (`epoch_orders`).
    epoch: the (1-based) epoch number.
    train_tables, train_rows, train_labels: the training examples.
    hidden, rate: the grid point (static).

  Returns:
    The state and the `[M]` mean losses.
  """
  loss = ConsumerLoss(hidden, rate)

  def one_model(train, key, order):
    key = keys.derive(key, "epoch", epoch)
    batches = (order, real, jnp.arange(order.shape[0]))
    train, means = epoch_core(
        train, (train_tables, train_rows, train_labels,
                keys.derive(key, "dropout")), batches, loss=loss)
    return train, means["loss"]

  return jax.vmap(one_model)(state, model_keys, orders)


@functools.partial(jax.jit, static_argnames=("hidden", "chunk"))
def _grid_auc(variables, val_tables, val_rows, val_labels, val_mask, *,
              hidden: int, chunk: int) -> jax.Array:
  """`[M]` validation ROC-AUC of M stacked heads (the early stopping)."""
  model = ConsumerMLP(hidden)
  return jax.vmap(lambda v: metrics.roc_auc(
      _predict(model, v, val_tables, val_rows, chunk), val_labels,
      val_mask))(variables)


# Epochs between two checkpoints of a consumer grid point.
CHECKPOINT_EVERY = 10


def checkpoint_path(stem: Path, hidden: int, rate: float) -> Path:
  """Where the grid point (hidden, rate) of the heads saved at `stem`
  keeps its progress."""
  return stem.with_name(f"{stem.name}.h{hidden}-dropout{rate}.checkpoint."
                        "msgpack")


def train_heads(train_tables: Sequence[np.ndarray], train: Examples,
                val_tables: Sequence[np.ndarray], val: Examples,
                config: ConsumerConfig, key: jax.Array, label: str = "consumer",
                checkpoints: Path | None = None,
                log: Callable[[str], None] | None = None) -> Heads:
  """Trains the whole grid (h x dropout x seed) and keeps the best grid point.

  Args:
    train_tables: the embedding tables of `task.inputs`, `[rows, d]` each,
      for the training examples.
    train: the training examples.
    val_tables: the tables the early-stopping examples index.
    val: the early-stopping examples.
    config: schedule and grid.
    key: PRNG key; seed s of size h draws from `keys.derive(key, "heads", h,
      s)` whatever the dropout rate (common random numbers across rates).
    label: the prefix of progress lines.
    checkpoints: the stem of the grid points' checkpoint files
      (`checkpoint_path`): each saves its progress every `CHECKPOINT_EVERY`
      epochs and resumes from it (None: no checkpoints).
    log: where progress lines go (default stderr).

  Returns:
    The chosen `Heads`: the (h, dropout) with the highest mean over seeds of
    the best validation AUC (ties: the first in grid order).

  Raises:
    FloatingPointError: a head's loss, parameters or validation AUC turn
      NaN or Inf (naming the grid point, the epoch and the model).
  """
  log = log or to_stderr
  train_tables = tuple(jnp.asarray(t, jnp.float32) for t in train_tables)
  val_tables = tuple(jnp.asarray(t, jnp.float32) for t in val_tables)
  train_rows, train_labels = jnp.asarray(train.rows), jnp.asarray(train.labels)
  val_rows, val_labels, val_mask = map(
      jnp.asarray, padded_examples(val, config.batch_size))
  d_in = sum(t.shape[1] for t in train_tables)
  best_mean, chosen, grid = -np.inf, None, {}
  for hidden in config.hidden:
    # The same seed keys for every dropout rate.
    model_keys = jnp.stack([keys.derive(key, "heads", hidden, s)
                            for s in range(config.seeds)])
    for rate in config.dropout:
      state, initial = _start(model_keys, hidden, d_in, adam(config.lr))

      def epoch_fn(state, epoch):  # Run at once: the loop's values hold.
        orders, real = epoch_orders(model_keys, epoch, len(train),
                                    config.batch_size)
        state, loss = _grid_epoch(
            state, model_keys, orders, real, np.int32(epoch), train_tables,
            train_rows, train_labels, hidden=hidden, rate=rate)
        return state, {"loss": loss}

      evaluate = lambda state: {"val AUC": _grid_auc(
          state.model_variables(), val_tables, val_rows, val_labels, val_mask,
          hidden=hidden, chunk=config.batch_size)}
      best, _ = loop.run(
          epoch_fn, state, Schedule(epochs=config.epochs, select="val AUC"),
          label=f"{label} h={hidden} dropout={rate}", evaluate=evaluate,
          best=initial, snapshot=lambda state: state.model_variables(),
          checkpointing=None if checkpoints is None else Checkpointing(
              checkpoint_path(checkpoints, hidden, rate), CHECKPOINT_EVERY),
          key=key, log=log)
      best_auc = np.asarray(best.score)
      grid[f"h={hidden},dropout={rate}"] = best_auc.tolist()
      if best_auc.mean() > best_mean:
        best_mean = best_auc.mean()
        chosen = Heads(hidden, rate, jax.device_get(best.state), best_auc,
                       np.asarray(best.epoch), grid)
  if chosen is None:
    raise ValueError(f"{label}: no grid point reached a finite validation AUC")
  return chosen


def save_heads(path_stem: Path, heads: Heads, extra: dict) -> None:
  """`<stem>.msgpack` then `<stem>.json` (which marks the task complete and
  lists the msgpack's sha256)."""
  path = path_stem.with_suffix(".msgpack")
  digest = io.save_bytes(path, flax.serialization.to_bytes(heads.variables))
  io.save_json(path_stem.with_suffix(".json"), {
      **extra, "hidden": heads.hidden, "dropout": heads.dropout,
      "seeds": len(heads.val_auc), "val_auc": heads.val_auc.tolist(),
      "best_epoch": heads.best_epoch.tolist(), "grid_val_auc": heads.grid,
      SHA256: {path.name: digest}})


def load_heads(path_stem: Path) -> Heads:
  """The heads `save_heads` wrote, checked against the listed sha256.

  Raises:
    ValueError: a file that fails its checksum or does not hold the heads
      its `.json` describes (naming the file).
  """
  record = path_stem.with_suffix(".json")
  path = path_stem.with_suffix(".msgpack")
  meta = read_record(record)
  data = io.read_bytes(path, listed_digest(record, path.name))
  try:
    template = jax.eval_shape(lambda: init_heads(
        meta["hidden"], meta["d_in"],
        jax.random.split(jax.random.key(0), meta["seeds"])))
    variables = flax.serialization.from_bytes(template, data)
  except (ValueError, TypeError, KeyError) as error:
    raise ValueError(f"{path}: not the heads {record} describes "
                     f"({type(error).__name__}: {error})") from None
  return Heads(meta["hidden"], meta["dropout"], variables,
               np.asarray(meta["val_auc"]), np.asarray(meta["best_epoch"]),
               meta["grid_val_auc"])


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
  log = log or to_stderr
  run_dir = RunDir.of(workdir)
  io.make_dir(run_dir.consumers_dir)
  versions = sorted({0} | {d.task.val_version for d in data.values()})
  embeddings = load_embeddings(run_dir, [REFERENCE], versions)[REFERENCE]
  heads = {}
  settings = io.as_json(dataclasses.asdict(config))
  for name, d in data.items():
    stem = run_dir.consumer_stem(name)
    d_in = sum(embeddings[0][0 if kind == "user" else 1].shape[1]
               for kind in d.task.inputs)
    if stem.with_suffix(".json").exists():
      meta = read_record(stem.with_suffix(".json"))
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
                              checkpoints=stem, log=log)
    save_heads(stem, heads[name], {
        "task": name, "trained_on": f"{REFERENCE} v0",
        "val_version": d.task.val_version,
        "d_in": d_in, "num_train": len(d.train), "num_val": len(d.val),
        "config": settings})
    for hidden in config.hidden:  # Saved: the progress is no longer needed.
      for rate in config.dropout:
        io.remove(checkpoint_path(stem, hidden, rate))
    log(f"[consumer {name}] h={heads[name].hidden} dropout="
        f"{heads[name].dropout} val AUC {heads[name].val_auc.mean():.4f} "
        f"({time.perf_counter() - start:.1f}s)")
  return heads
