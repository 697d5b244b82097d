"""Nodes new in version k, for a transductive model (a learned row per node).

A planted case: users and items with latent factors, a consumer label that
is a property of an item's factors, and version 1 adding users and items
that version 0's matrix-factorisation model never saw. A logistic-regression
consumer trained on version-0 item embeddings is scored on version 1's items
mapped back through W_1. Aligning the new items to zero rows (what padding
the previous embeddings with zeros does) ruins them for the consumer; bcjax
refuses that unless told, and its two readings (leave them out, fold them
in from neighbours) keep them usable.
"""

import jax
import numpy as np
import optax
import pytest

import bcjax

DIM_V0, DIM_V1, FACTORS = 16, 24, 8
USERS, ITEMS = (300, 350), (200, 300)     # per version: old first, new last
PER_USER = 20


def _table_init(key, inputs, dim):
  return {"table": 0.1 * jax.random.normal(key, (inputs.shape[0], dim))}


def _table_apply(params, inputs):
  del inputs
  return params["table"]


def _mf(dim):
  return bcjax.FunctionalModel(_table_init, _table_apply, dim)


def _planted():
  """Per version: (users, items) interaction arrays; and the item labels."""
  rng = np.random.default_rng(0)
  user_f = rng.normal(size=(USERS[-1], FACTORS))
  item_f = rng.normal(size=(ITEMS[-1], FACTORS))
  labels = item_f[:, 0] > 0
  versions = []
  for num_users, num_items in zip(USERS, ITEMS):
    scores = user_f[:num_users] @ item_f[:num_items].T
    scores += rng.gumbel(size=scores.shape)
    top = np.argsort(-scores, axis=1)[:, :PER_USER]
    versions.append((np.repeat(np.arange(num_users), PER_USER), top.ravel()))
  return versions, labels


def _batches(interactions, num_users, num_items):
  sampler = bcjax.TripleSampler(*interactions, num_users, num_items)
  return lambda key: bcjax.epoch_batches(sampler, key, 512, num_users)


def _consumer(x, y, steps=500, lr=0.5):
  """Logistic regression by gradient descent (numpy): weights, bias."""
  x = (x - x.mean(0)) / x.std(0)
  w, b = np.zeros(x.shape[1]), 0.0
  for _ in range(steps):
    p = 1 / (1 + np.exp(-(x @ w + b)))
    w -= lr * x.T @ (p - y) / len(y)
    b -= lr * np.mean(p - y)
  return w, b


def _auc(scores, labels):
  return float(bcjax.metrics.roc_auc(scores, labels))


FIT = dict(schedule=bcjax.Schedule(epochs=40), tx=optax.adam(0.02),
           log=lambda _: None)


@pytest.fixture(scope="module")
def version_zero():
  (v0, v1), labels = _planted()
  lineage = bcjax.Lineage()
  inputs = np.zeros(USERS[0] + ITEMS[0])
  lineage.fit(_mf(DIM_V0), bcjax.BPRTask(), inputs,
              _batches(v0, USERS[0], ITEMS[0]), jax.random.key(0), **FIT)
  items = np.asarray(lineage.embed(inputs))[USERS[0]:]
  # The consumer: trained on 150 old items' version-0 embeddings.
  mean, std = items.mean(0), items.std(0)
  w, b = _consumer(items[:150], labels[:150])
  score = lambda x: ((x - mean) / std) @ w + b  # noqa: E731
  return lineage, v1, labels, score


def _previous_ids():
  """Version 1's node -> its version-0 row: old users keep their ids, new
  users are -1, items move up by the 50 new users; new items are -1."""
  users = np.where(np.arange(USERS[1]) < USERS[0], np.arange(USERS[1]), -1)
  items = np.where(np.arange(ITEMS[1]) < ITEMS[0],
                   USERS[0] + np.arange(ITEMS[1]), -1)
  return np.concatenate([users, items])


def _version_one(version_zero, **reading):
  lineage, v1, labels, score = version_zero
  base = bcjax.Lineage(lineage.last, lineage.backward,
                       last_inputs=lineage.last_inputs)
  inputs = np.zeros(USERS[1] + ITEMS[1])
  base.fit(_mf(DIM_V1), bcjax.BPRTask(), inputs,
           _batches(v1, USERS[1], ITEMS[1]), jax.random.key(1),
           **reading, **FIT)
  mapped = np.asarray(base.embed(inputs))[USERS[1]:] @ base.backward[-1]
  old, new = slice(150, ITEMS[0]), slice(ITEMS[0], ITEMS[1])
  return (_auc(score(mapped[old]), labels[old]),
          _auc(score(mapped[new]), labels[new]))


def test_zero_rows_for_new_nodes_are_refused(version_zero):
  lineage, v1, _, _ = version_zero
  previous, _ = lineage.target(np.zeros(USERS[1] + ITEMS[1]), _previous_ids())
  with pytest.raises(ValueError, match=r"`previous` is all zeros at 150 of"):
    bcjax.fit(_mf(DIM_V1), bcjax.BPRTask(), np.zeros(USERS[1] + ITEMS[1]),
              _batches(v1, USERS[1], ITEMS[1]), jax.random.key(1),
              previous=previous, chain=(), **FIT)


def test_new_items_stay_usable_left_out_or_folded_in(version_zero):
  (v0, v1), labels = _planted()
  del v0
  _, _, _, score = version_zero
  users, items = v1
  edges = (users, USERS[1] + items)
  readings = {
      "left out": dict(previous_ids=_previous_ids()),
      "folded in": dict(previous_ids=_previous_ids(), neighbours=edges),
  }
  aucs = {name: _version_one(version_zero, **r) for name, r in readings.items()}
  # Zero rows, aligned on purpose (previous padded with zeros, known all True).
  lineage = version_zero[0]
  previous, _ = lineage.target(np.zeros(USERS[1] + ITEMS[1]), _previous_ids())
  result = bcjax.fit(_mf(DIM_V1), bcjax.BPRTask(),
                     np.zeros(USERS[1] + ITEMS[1]),
                     _batches(v1, USERS[1], ITEMS[1]), jax.random.key(1),
                     previous=previous, known=np.ones(len(previous), bool),
                     chain=(), **FIT)
  mapped = (np.asarray(result.variables["params"]["table"])[USERS[1]:]
            @ result.transform)
  new = slice(ITEMS[0], ITEMS[1])
  aucs["zero rows"] = (_auc(score(mapped[150:ITEMS[0]]), labels[150:ITEMS[0]]),
                       _auc(score(mapped[new]), labels[new]))
  report = ", ".join(f"{name}: old {o:.3f} new {n:.3f}"
                     for name, (o, n) in aucs.items())
  print("consumer AUC on version 1 through W_1 —", report)
  for name in ("left out", "folded in"):
    old, new = aucs[name]
    assert old > 0.8, report
    assert new > 0.7, report
    assert new > aucs["zero rows"][1] + 0.1, report
  assert aucs["zero rows"][1] < 0.65, report
