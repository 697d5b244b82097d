"""A new user's mistakes with the public API (issue 28): each is refused
before anything is trained, or said plainly, instead of training silently
wrong or failing deep inside the jitted step.

A tiny BPR setup: 30 users and 20 items, a table model (a learned row per
node) of any dim."""

import json
import re

import flax.linen as nn
import flax.serialization
import jax
import numpy as np
import optax
import pytest

import bcjax
from bcjax.data.graph import DataError

NUM_USERS, NUM_ITEMS = 30, 20
USER = np.repeat(np.arange(NUM_USERS), 4)
ITEM = np.random.default_rng(0).integers(0, NUM_ITEMS, size=len(USER))
INPUTS = np.zeros(NUM_USERS + NUM_ITEMS)
QUIET = {"log": lambda _: None}


def _table(dim):
  return bcjax.FunctionalModel(
      lambda key, inputs, d: {"table": 0.1 * jax.random.normal(
          key, (inputs.shape[0], d))},
      lambda params, inputs: params["table"], dim)


class FlaxTable(nn.Module):
  """A Flax model with a learned row per node."""
  dim: int

  @nn.compact
  def __call__(self, inputs, train):
    return self.param("table", nn.initializers.normal(0.1),
                      (inputs.shape[0], self.dim))


def _batches(num_users=NUM_USERS):
  sampler = bcjax.TripleSampler(USER, ITEM, num_users, NUM_ITEMS)
  return lambda key: bcjax.epoch_batches(sampler, key, 32, num_users)


def _fit(model=None, batches=None, inputs=INPUTS, **kwargs):
  kwargs = {"objective": bcjax.Objective(), "key": bcjax.keys.root(0),
            "schedule": bcjax.Schedule(epochs=3), **QUIET, **kwargs}
  return bcjax.fit(model or _table(8), bcjax.BPRTask(), inputs,
                   batches or _batches(), **kwargs)


# Item 1: a checkpoint resumes only the training that wrote it.

@pytest.mark.parametrize("change,message", [
    ({"model": _table(10)},
     r"state.params\['model'\]\['table'\] is float32\[50, 8\] in the file "
     r"but float32\[50, 10\] here"),
    ({"key": bcjax.keys.root(1)}, "another key"),
])
def test_a_checkpoint_resumes_only_its_own_training(tmp_path, change,
                                                    message):
  checkpointing = bcjax.Checkpointing(tmp_path / "ckpt.msgpack")
  first = _fit(checkpointing=checkpointing)
  assert first.variables["params"]["table"].shape == (50, 8)
  with pytest.raises(ValueError, match=rf"ckpt.msgpack: not a checkpoint of "
                     rf".*{message}"):
    _fit(checkpointing=checkpointing, **change)
  # The same call resumes after the last epoch: the same result.
  again = _fit(checkpointing=checkpointing)
  np.testing.assert_array_equal(again.variables["params"]["table"],
                                first.variables["params"]["table"])


@pytest.mark.parametrize("tamper,message", [
    (lambda raw, record: record.update(epoch=9999),
     r"its epoch 9999 is not one of this schedule's epochs \(3\)"),
    (lambda raw, record: record.update(epoch=-5), "its epoch -5 is not one"),
    (lambda raw, record: raw["state"]["params"]["model"].update(
        table=np.zeros((50, 9), np.float32)), r"float32\[50, 9\] in the file"),
    (lambda raw, record: raw["best_state"]["params"]["model"].update(
        table=np.zeros((5,), np.float32)), r"float32\[5\] in the file"),
])
def test_a_tampered_checkpoint_is_refused_naming_the_file(tmp_path, tamper,
                                                          message):
  path = tmp_path / "ckpt.msgpack"
  _fit(checkpointing=bcjax.Checkpointing(path),
       evaluate=lambda v, w: {"score": 1.0},
       schedule=bcjax.Schedule(epochs=2, select="score"))
  raw = flax.serialization.msgpack_restore(path.read_bytes())
  record = json.loads(raw["record"])
  tamper(raw, record)
  raw["record"] = json.dumps(record)
  path.write_bytes(flax.serialization.msgpack_serialize(raw))
  with pytest.raises(ValueError,
                     match=rf"{re.escape(str(path))}: not a checkpoint .*"
                     rf"{message}"):
    _fit(checkpointing=bcjax.Checkpointing(path))


# Items 2 and 4: ids the sampler cannot index, items on users' node ids.

@pytest.mark.parametrize("user,item,message", [
    (45, 3, r"user ids must be whole numbers in 0..29 \(num_users=30\), but "
     r"row 120 holds 45"),
    (-1, 3, "user ids .* holds -1"),
    (2, 20, r"item ids must be whole numbers in 0..19 \(num_items=20\), but "
     "row 120 holds 20"),
    (2.5, 3, "user ids .* holds 2.5"),
    (np.nan, 3, "user ids .* holds nan"),
])
def test_the_triple_sampler_refuses_ids_it_cannot_index(user, item, message):
  with pytest.raises(DataError, match=message):
    bcjax.TripleSampler(np.r_[USER, user], np.r_[ITEM, item], NUM_USERS,
                        NUM_ITEMS)


def test_items_never_take_the_node_ids_of_users():
  sampler = bcjax.TripleSampler(USER, ITEM, NUM_USERS, NUM_ITEMS)
  with pytest.raises(ValueError, match=r"item_offset=0 would give items the "
                     r"node ids of users 0..29"):
    bcjax.epoch_batches(sampler, bcjax.keys.root(0), 32, 0)
  # By default items come right after the users.
  _, pos, neg, mask = bcjax.epoch_batches(sampler, bcjax.keys.root(0), 32)
  assert pos[mask].min() >= NUM_USERS and neg[mask].min() >= NUM_USERS
  assert max(pos[mask].max(), neg[mask].max()) < NUM_USERS + NUM_ITEMS


def test_a_version_of_fewer_dimensions_than_the_previous_is_said():
  previous = np.ones((NUM_USERS + NUM_ITEMS, 16), np.float32)
  with pytest.warns(UserWarning, match=r"dim=8 is below the previous "
                    r"version's 16"):
    _fit(objective=bcjax.BC_ALIGNER, previous=previous, chain=(),
         schedule=bcjax.Schedule(epochs=1))


# Item 5: a transductive previous model without (or with wrong) previous_ids.

@pytest.mark.parametrize("make", [_table, lambda d: bcjax.FlaxModel(
    FlaxTable(d))], ids=["functional", "flax"])
def test_lineage_names_a_forgotten_or_wrong_previous_ids(make):
  lineage = bcjax.Lineage()
  with pytest.raises(ValueError, match="version 0: `previous_ids`"):
    lineage.fit(make(8), bcjax.BPRTask(), INPUTS, _batches(),
                bcjax.keys.root(0), previous_ids=np.arange(50), **QUIET)
  lineage.fit(make(8), bcjax.BPRTask(), INPUTS, _batches(),
              bcjax.keys.root(0), **QUIET)
  grown = np.zeros(NUM_USERS + 5 + NUM_ITEMS)  # five new users
  batches = _batches(NUM_USERS + 5)
  with pytest.raises(ValueError, match=r"version 1: version 0's model .*"
                     r"learned row per node .* pass `previous_ids`"):
    lineage.fit(make(16), bcjax.BPRTask(), grown, batches,
                bcjax.keys.root(1), **QUIET)
  with pytest.raises(ValueError, match=r"version 1: `previous_ids` has 50 "
                     r"entries, but version 1's model embeds 55 nodes"):
    lineage.fit(make(16), bcjax.BPRTask(), grown, batches,
                bcjax.keys.root(1), previous_ids=np.arange(50), **QUIET)


# Items 6, 7, 8: batches, key and inputs are checked before tracing.

def test_batches_not_stacked_on_a_leading_axis_are_refused():
  def one_batch(key):
    return tuple(a[0] for a in _batches()(key))
  with pytest.raises(ValueError, match=r"stacked on a leading axis .* got "
                     r"the mask \[32\]"):
    _fit(batches=one_batch)


@pytest.mark.parametrize("key", [0, None, np.int64(3),
                                 jax.random.split(jax.random.key(0))],
                         ids=["int", "None", "numpy int", "two keys"])
def test_a_key_that_is_not_one_prng_key_is_refused(key):
  with pytest.raises(TypeError, match=r"`key` must be one JAX PRNG key, got "
                     r".*bcjax.keys.root\(seed\)"):
    _fit(key=key)


def test_nan_in_an_input_feature_is_refused_before_training():
  """A two-tower-like model reading features: the NaN is named where it is,
  not as a NaN loss after the first epoch."""
  features = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
  features[7, 2] = np.nan
  model = bcjax.FunctionalModel(
      lambda key, inputs, d: {"w": jax.random.normal(key, (4, d))},
      lambda params, inputs: inputs["features"] @ params["w"], 8)
  with pytest.raises(ValueError, match=r"train: inputs\['features'\] has 1 "
                     r"NaN or Inf entries, the first at index \[7, 2\]"):
    _fit(model, inputs={"features": features, "ids": np.arange(50)})


# Item 9: Ctrl-C says where the run resumes; the same call resumes it.

def _interrupted_in(epoch):
  batches, calls = _batches(), []

  def epoch_batches(key):
    calls.append(key)
    if len(calls) == epoch:
      raise KeyboardInterrupt
    return batches(key)
  return epoch_batches


def test_ctrl_c_names_the_checkpoint_and_the_same_call_resumes(tmp_path):
  fit = dict(schedule=bcjax.Schedule(epochs=4), tx=optax.adam(0.05))
  path = tmp_path / "ckpt.msgpack"
  with pytest.raises(KeyboardInterrupt, match=rf"train: interrupted in epoch "
                     rf"3; the last checkpoint, {re.escape(str(path))}, "
                     "holds epoch 2: run the same call again to resume"):
    _fit(batches=_interrupted_in(3), checkpointing=bcjax.Checkpointing(path),
         **fit)
  resumed = _fit(checkpointing=bcjax.Checkpointing(path), **fit)
  never_stopped = _fit(**fit)
  np.testing.assert_array_equal(resumed.variables["params"]["table"],
                                never_stopped.variables["params"]["table"])
  with pytest.raises(KeyboardInterrupt, match="interrupted in epoch 1; "
                     "nothing was saved"):
    _fit(batches=_interrupted_in(1), **fit)


# The sibling issue: settings refused where they are made.

@pytest.mark.parametrize("make,error,message", [
    (lambda: bcjax.Schedule(epochs=float("nan")), ValueError, "epochs=nan"),
    (lambda: bcjax.Schedule(epochs=2.5), ValueError, "epochs=2.5"),
    (lambda: bcjax.Schedule(min_select_epoch=-1), ValueError,
     "min_select_epoch=-1 must be an integer >= 0"),
    (lambda: bcjax.Schedule(select=10), TypeError, "select=10"),
    (lambda: bcjax.Objective(lam=-5), ValueError,
     "Objective.lam must be a finite number >= 0, got -5"),
    (lambda: bcjax.Objective(lam=float("inf")), ValueError, "Objective.lam"),
    (lambda: bcjax.Objective(transform="affine"), ValueError,
     "Objective.transform='affine': training learns a linear kind"),
    (lambda: bcjax.Checkpointing("c.msgpack", every=0), ValueError,
     "Checkpointing.every must be a positive integer"),
])
def test_settings_are_refused_when_made(make, error, message):
  with pytest.raises(error, match=message):
    make()


@pytest.mark.parametrize("metrics,error,message", [
    ({"recall": 0.1}, ValueError, r"Schedule\(select='recall@10'\) names no "
     r"metric of `evaluate`, which returned \['recall'\]"),
    ({10: 0.1}, TypeError, "str names, got 10"),
])
def test_select_must_name_a_metric_that_evaluate_returns(metrics, error,
                                                         message):
  with pytest.raises(error, match=message):
    _fit(evaluate=lambda v, w: metrics,
         schedule=bcjax.Schedule(epochs=3, eval_every=2, select="recall@10"))
