"""Seed sweeps: N independently initialised models trained together (vmap).

`train_seeds` trains N copies of one version's model, seed i initialised from
its own key and fed its own epoch batches, as one program: the N train
states are stacked on a leading axis and the trainer's epoch
(`bcjax.core.epoch.epoch_core`, un-jitted) is `jax.vmap`ped over them. Seed
i is the run `training.fit(model, task, inputs, batches, keys[i],
objective=..., schedule=Schedule(epochs=E), tx=...)` would make on its own
(no evaluation: the last epoch is kept), up to float rounding of the batched
computation.

What it buys: one compiled program does every seed's step at once, so the
per-operation overhead is paid once, the shared graph operators (`inputs`)
are read once per step for all seeds, and the matmuls are N times wider.
That is the point on an accelerator, where one small model leaves most of
the chip idle. On a small CPU, whose cores one model's step already keeps
busy, the batched program runs at about the speed of N sequential runs
(`launch.benchmark`'s "sweep" section measures both). Three things keep the batched
program from doing more work than the N runs:

- Batch leaves that are equal across seeds (the BPR padding mask: every
  epoch has as many triples) are passed unbatched, so the trainer's
  `lax.cond` that skips padding batches stays a branch instead of becoming
  a select that computes both sides.
- The CSR aggregation product (the `sparse` layout) folds the seeds into
  its columns under vmap: one call of the same kernel, `[n, N * d]`,
  exactly the per-seed numbers, where JAX's own batching rule would go
  through a COO gather and scatter ~100x slower on CPU
  (`bcjax.models.aggregate`).
- On CPU the program compiles without XLA's YNNPACK fusions
  (`CPU_COMPILER_OPTIONS`), which are several times slower on the batched
  reductions; the plain trainer's program is unaffected either way.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bcjax.core import epoch
from bcjax.core.tasks import Task
from bcjax.core.epoch import AlignmentInputs, EmbeddingLoss, Objective, TrainState
from bcjax.models.interface import EmbeddingModel, Variables
from bcjax.util import keys as key_streams, loop
from bcjax.util.loop import Schedule


def stack(trees: Sequence[Any]) -> Any:
  """Pytrees of equal structure stacked leaf-wise on a new leading axis."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack(tree: Any, i: int) -> Any:
  """Entry `i` of a pytree stacked by `stack` (host numpy copies)."""
  return jax.tree.map(lambda a: np.array(a[i]), tree)


def init_states(model: EmbeddingModel, inputs, objective: Objective,
                keys: Sequence[jax.Array], d_prev: int | None,
                tx: optax.GradientTransformation | None,
                model_variables: Variables | None = None) -> TrainState:
  """`epoch.init_state` of every key, stacked (exactly the per-seed states)."""
  return stack([epoch.init_state(model, inputs, objective, key, d_prev, tx,
                                    model_variables=model_variables)
                for key in keys])


def stack_batches(batches: Sequence[Any]) -> tuple[Any, tuple]:
  """Per-seed epochs stacked on a leading seed axis, and the vmap axes.

  A leaf equal in every seed's epoch is kept once (axis None): it is shared,
  and a shared padding mask keeps the trainer's skip of padding batches a
  real branch under vmap.

  Returns:
    (the stacked batches, the per-leaf axes `(0 | None, ...)` in leaf order).
  """
  per_seed = [jax.tree.leaves(b) for b in batches]
  treedef = jax.tree.structure(batches[0])
  leaves, axes = [], []
  for column in zip(*per_seed):
    first = np.asarray(column[0])
    if all(np.array_equal(first, np.asarray(c)) for c in column[1:]):
      leaves.append(first)
      axes.append(None)
    else:
      leaves.append(np.stack([np.asarray(c) for c in column]))
      axes.append(0)
  return treedef.unflatten(leaves), tuple(axes)


def _vmapped_epoch(states: TrainState, data, batches, *, loss: EmbeddingLoss,
                   batch_axes: tuple) -> tuple[TrainState, jax.Array]:
  in_axes = jax.tree.structure(batches).unflatten(batch_axes)
  core = functools.partial(epoch.epoch_core, loss=loss)
  states, means = jax.vmap(core, in_axes=(0, None, in_axes))(states, data,
                                                              batches)
  return states, means["loss"]


_STATIC = dict(static_argnames=("loss", "batch_axes"),
               donate_argnames=("states",))
# XLA CPU hands reductions to YNNPACK fusions, which reduce a seed-batched
# [N, nodes, d] array over its middle axis (BatchNorm's statistics) several
# times slower than XLA's own loops; the sweep's program compiles without
# them on CPU (measured: a 4-seed PinSAGE gradient 76 ms -> 26 ms).
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
_jitted = {"cpu": jax.jit(_vmapped_epoch, compiler_options=CPU_COMPILER_OPTIONS,
                          **_STATIC),
           None: jax.jit(_vmapped_epoch, **_STATIC)}


def vmapped_epoch(states: TrainState, data, batches, *, loss: EmbeddingLoss,
                  batch_axes: tuple) -> tuple[TrainState, jax.Array]:
  """One epoch of every seed: `train_epoch` vmapped over the seed axis (jitted).

  Args:
    states: the seeds' train states stacked on a leading `[N]` axis (donated).
    data: `(inputs, AlignmentInputs)`, shared by every seed.
    batches: from `stack_batches`: leaves with axis 0 are `[N, num_batches,
      ...]`, the others (shared) `[num_batches, ...]`.
    loss: static, as in `train_epoch`.
    batch_axes: the per-leaf axes from `stack_batches`.

  Returns:
    The new states and each seed's mean epoch loss `[N]`.
  """
  jitted = _jitted.get(jax.default_backend(), _jitted[None])
  return jitted(states, data, batches, loss=loss, batch_axes=batch_axes)


@dataclasses.dataclass
class SweepResult:
  """N seeds trained together.

  Attributes:
    states: the final train states, every leaf stacked `[N, ...]`.
    losses: `[epochs, N]` mean loss of every epoch and seed.
  """
  states: TrainState
  losses: np.ndarray

  @property
  def num_seeds(self) -> int:
    return self.losses.shape[1]

  def variables(self, i: int) -> Variables:
    """Seed i's final model variables (host)."""
    return unstack(self.states, i).model_variables()


def seed_keys(key: jax.Array, num_seeds: int) -> list[jax.Array]:
  """`num_seeds` independent run keys: `keys.derive(key, "seed", i)`."""
  return [key_streams.derive(key, "seed", i) for i in range(num_seeds)]


def train_seeds(model: EmbeddingModel, task: Task, inputs,
                batches: Callable[[jax.Array], Any],
                keys: Sequence[jax.Array], *, epochs: int = 1,
                objective: Objective = Objective(),
                tx: optax.GradientTransformation | None = None,
                align: AlignmentInputs = AlignmentInputs(),
                d_prev: int | None = None,
                init_variables: Variables | None = None,
                label: str = "sweep",
                log: Callable[[str], None] | None = None) -> SweepResult:
  """Trains one model per key, all seeds in one vmapped program per epoch.

  Seed i is initialised from `keys.derive(keys[i], "init")` and its epoch e
  reads `batches(keys.derive(keys[i], "epoch", e))`: the streams of
  `training.fit`, so seed i reproduces `fit(..., keys[i], objective=objective,
  schedule=Schedule(epochs=epochs), tx=tx)` without evaluation.

  Args:
    model, task, inputs: what to train (inputs shared by every seed).
    batches: epoch key -> one epoch's stacked batches (see `epoch_core`).
    keys: one PRNG key per seed (e.g. `seed_keys(key, N)`).
    epochs: epochs of every seed.
    objective, tx: as in `training.fit` (default `adam(1e-3)`).
    align: alignment inputs, shared by every seed (the objective's target).
    d_prev: the previous version's dims when the objective aligns.
    init_variables: start every seed from these model variables (then only
      the transformation's initialisation and the batches differ).
    label: names the sweep in progress lines and errors.
    log: where progress lines go (default stderr).

  Returns:
    The `SweepResult`.

  Raises:
    ValueError: no keys.
    FloatingPointError: a seed's loss or parameters turn NaN or Inf (the
      message names the model, i.e. the seed's index).
  """
  keys = list(keys)
  if not keys:
    raise ValueError(f"{label}: no seeds (empty `keys`)")
  loss = EmbeddingLoss(model, task, objective)
  states = init_states(model, inputs, objective,
                       [key_streams.derive(k, "init") for k in keys], d_prev,
                       tx, model_variables=init_variables)

  def epoch_fn(states, epoch):
    stacked, axes = stack_batches(
        [batches(key_streams.derive(k, "epoch", epoch)) for k in keys])
    states, losses = vmapped_epoch(states, (inputs, align), stacked, loss=loss,
                                   batch_axes=axes)
    return states, {"loss": losses}

  # No metric: every epoch's losses go into the history, the last states
  # are kept.
  last, history = loop.run(epoch_fn, states, Schedule(epochs=epochs),
                           label=label, evaluate=lambda states: {},
                           snapshot=lambda states: states, log=log)
  return SweepResult(last.state, np.asarray([h["loss"] for h in history],
                                            np.float32))


def train_sequential(model: EmbeddingModel, task: Task, inputs,
                     batches: Callable[[jax.Array], Any],
                     keys: Sequence[jax.Array], *, epochs: int = 1,
                     objective: Objective = Objective(),
                     tx: optax.GradientTransformation | None = None,
                     align: AlignmentInputs = AlignmentInputs(),
                     d_prev: int | None = None,
                     init_variables: Variables | None = None
                     ) -> list[tuple[TrainState, np.ndarray]]:
  """The same seeds one after the other with `epoch.train_epoch`: the
  reference of `train_seeds` (and its benchmark baseline).

  Returns:
    Per seed, (final state, `[epochs]` losses).
  """
  loss, out = EmbeddingLoss(model, task, objective), []
  for i, k in enumerate(keys):
    state = epoch.init_state(model, inputs, objective,
                                key_streams.derive(k, "init"), d_prev,
                                tx, model_variables=init_variables)
    epoch_fn = lambda state, n, k=k: epoch.train_epoch(
        state, (inputs, align), batches(key_streams.derive(k, "epoch", n)),
        loss=loss)
    last, history = loop.run(epoch_fn, state, Schedule(epochs=epochs),
                             label=f"sequential seed {i}",
                             evaluate=lambda state: {},
                             snapshot=lambda state: state, log=lambda _: None)
    out.append((last.state, np.asarray([h["loss"] for h in history])))
  return out
