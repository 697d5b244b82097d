"""Backward compatibility for a user-defined model, through the public API only.

  python -m launch.two_tower_example --workdir=/tmp/two_tower --size=test

A two-tower model, defined here and nowhere in bcjax, is trained on three
versions of MovieLens-100k (data up to 50%, 60%, 70% of the interactions;
embedding sizes growing per version) with BC-Aligner: `bcjax.Lineage.fit`
with the BPR task, where version k also aligns B_k(z_k) with version k-1's
model applied to version k's data through the earlier matrices W_1..W_{k-1}
(the lineage keeps both from one version to the next).

  item tower: MLP([genre + year multi-hot, a learned item-id vector])
  user tower: MLP(mean of the item-tower inputs of the user's history)

Each version's embeddings are published to an `EmbeddingStore`
(`Lineage.publish`: created at version 0, appended with W_k after). A frozen
consumer -- logistic regression
predicting "the item's mean rating is above the median", a label the
recommender never sees (BPR uses implicit feedback only) -- is trained once
on version-0 item embeddings and registered with the store; every later
version passes the release gate (`bcjax.gate.check`: the consumer scored
through the chain against its version-0 baseline) before it is published.
Its ROC-AUC on held-out items is then measured
on (a) the version-0 embeddings it was trained on, (b) the version-2
embeddings read back from the store in version 0's space, and (c) the first
d_0 dimensions of the raw version-2 embeddings (no backward compatibility).
(b) stays close to (a); (c) falls towards chance.
"""

from __future__ import annotations

import functools

from absl import app, flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import bcjax
from bcjax import data, metrics
from launch import common

TIMES = (0.5, 0.6, 0.7, 0.8)  # Three versions.
SIZES = {
    "test": dict(dims=(16, 24, 32), hidden=64, id_dim=16, epochs=4,
                 eval_every=2, batch_size=2048, lr=3e-3),
    "quick": dict(dims=(32, 48, 64), hidden=128, id_dim=32, epochs=30,
                  eval_every=5, batch_size=1024, lr=1e-3),
}


class TwoTower(nn.Module):
  """Users first, then items: `[num_users + num_items, dim]`."""
  dim: int
  num_items: int
  hidden: int = 64
  id_dim: int = 16

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    ids = self.param("item_ids", nn.initializers.normal(0.1),
                     (self.num_items, self.id_dim))
    item_x = jnp.concatenate([inputs["attributes"], ids], axis=1)
    user_x = inputs["history"] @ item_x  # Mean over each user's history.
    def tower(x, name):
      x = nn.relu(nn.Dense(self.hidden, name=f"{name}_hidden")(x))
      return nn.Dense(self.dim, name=f"{name}_out")(x)
    return jnp.concatenate([tower(user_x, "user"), tower(item_x, "item")])


def make_inputs(split, num_users: int, num_items: int) -> dict:
  """Version k's features, padded to the last version's user/item counts."""
  blocks = []
  for kind in split.attributes.values():
    block = np.zeros((num_items, kind.num_values), np.float32)
    rows = np.repeat(np.arange(split.num_items), np.diff(kind.offsets))
    block[rows, kind.values] = 1.0
    blocks.append(block)
  history = np.zeros((num_users, num_items), np.float32)
  np.add.at(history, (split.train_user, split.train_item), 1.0)
  history /= np.maximum(history.sum(1, keepdims=True), 1.0)
  return {"attributes": jnp.asarray(np.concatenate(blocks, 1)),
          "history": jnp.asarray(history)}


@functools.partial(jax.jit, static_argnames="steps")
def train_consumer(x, y, steps: int = 500):
  """Logistic regression on standardised features, full-batch Adam."""
  mean, std = x.mean(0), x.std(0) + 1e-6
  def loss(p):
    logits = ((x - mean) / std) @ p["w"] + p["b"]
    return optax.sigmoid_binary_cross_entropy(logits, y).mean() + 1e-3 * (
        p["w"] ** 2).sum()
  params = {"w": jnp.zeros(x.shape[1]), "b": jnp.zeros(())}
  opt = optax.adam(0.05)
  def step(carry, _):
    p, s = carry
    updates, s = opt.update(jax.grad(loss)(p), s)
    return (optax.apply_updates(p, updates), s), None
  (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, steps)
  return {**params, "mean": mean, "std": std}


def score_consumer(c, x, y) -> dict:
  logits = ((x - c["mean"]) / c["std"]) @ c["w"] + c["b"]
  return {"auc": float(metrics.roc_auc(logits, y)),
          "accuracy": float(jnp.mean((logits > 0) == y))}


def linear_head(c) -> "bcjax.registry.LinearHead":
  """The consumer as the store's registry holds it: x @ w' + b'."""
  weights = np.asarray(c["w"] / c["std"], np.float64)
  return bcjax.registry.LinearHead(
      weights, float(c["b"]) - float(np.asarray(c["mean"]) @ weights))


def run(workdir: str, size: str = "test", seed: int = 0) -> dict:
  """Trains three versions, fills the store, scores the frozen consumer."""
  cfg = SIZES[size]
  graph = data.load_dataset("ml100k")
  splits = data.make_splits(graph, TIMES)
  num_users, num_items = splits[-1].num_users, splits[-1].num_items
  num_batches = -(-max(s.num_train for s in splits) // cfg["batch_size"])
  task, key = bcjax.BPRTask(reg=0.01), bcjax.keys.root(seed)
  tx = optax.adam(cfg["lr"])  # One optimizer object: one compiled epoch.
  lineage, result = bcjax.Lineage(), {}
  # The frozen consumer: version-0 items, label = mean rating above median.
  stats = data.item_stats(splits[0].train_item, splits[0].train_rating,
                          splits[0].num_items)
  labels = stats.mean > np.median(stats.mean)
  held_out = np.random.default_rng(seed).random(len(stats.item)) < 0.4
  train, test = stats.item[~held_out], stats.item[held_out]
  for k, (split, d) in enumerate(zip(splits, cfg["dims"])):
    inputs = make_inputs(split, num_users, num_items)
    model = bcjax.FlaxModel(TwoTower(d, num_items, cfg["hidden"],
                                     cfg["id_dim"]))
    sampler = bcjax.TripleSampler(split.train_user, split.train_item,
                                  split.num_users, split.num_items)
    recall_inputs = metrics.prepare_recall_inputs(
        split.train_user, split.train_item, split.val_user, split.val_item,
        split.num_items)
    def evaluate(variables, w, model=model, inputs=inputs, r=recall_inputs):
      z = bcjax.embed(model, variables, inputs)
      return {"recall@20": metrics.recall_at_k(
          z[:num_users], z[num_users:], r, ks=(20,))[20]}
    # Version 0: the task alone; then BC-Aligner against the lineage.
    fitted = lineage.fit(
        model, task, inputs,
        lambda key, s=sampler: bcjax.epoch_batches(
            s, key, cfg["batch_size"], num_users, num_batches),
        bcjax.keys.derive(key, "version", k), evaluate=evaluate,
        schedule=bcjax.Schedule(epochs=cfg["epochs"],
                                eval_every=cfg["eval_every"],
                                select="recall@20"),
        tx=tx, label=f"v{k}")
    z = np.asarray(lineage.embed(inputs))
    users, items = z[:split.num_users], z[num_users:num_users + split.num_items]
    ids = (graph.user_ids[:split.num_users], graph.item_ids[:split.num_items])
    if k:  # The release gate over the registered consumer, then publish.
      report = bcjax.gate.check(lineage.store, bcjax.gate.Candidate(
          users, items, lineage.backward[-1], *ids))
      print(report)
      result[f"gate v{k}"] = report.passed
    lineage.publish(f"{workdir}/store", users, items, *ids,
                    dataset=graph.name, strategy="two-tower")
    if k == 0:
      v0_items = items
      consumer = train_consumer(jnp.asarray(v0_items[train]),
                                jnp.asarray(labels[~held_out], jnp.float32))
      bcjax.registry.register_classifier(
          lineage.store, "rating-above-median", 0, linear_head(consumer),
          ["item"], graph.item_ids[test], labels[held_out])
    result[f"recall@20 v{k}"] = fitted.metrics["recall@20"]
    print(f"v{k}: d={d} recall@20={fitted.metrics['recall@20']:.4f} "
          f"(epoch {fitted.epoch})")

  reopened = bcjax.EmbeddingStore.open(f"{workdir}/store")
  d0 = reopened.dims[0]
  tables = {"a: v0": v0_items,
            "b: v2 via store": reopened.embeddings(version=0)[1],
            "c: v2 prefix": reopened.embeddings()[1][:, :d0]}
  for name, table in tables.items():
    scores = score_consumer(consumer, jnp.asarray(table[test]),
                            jnp.asarray(labels[held_out]))
    result.update({f"{s} {name}": v for s, v in scores.items()})
  result["versions"] = len(reopened.versions)
  print(f"\n{'consumer input':<18}{'ROC-AUC':>9}{'accuracy':>10}")
  for name in tables:
    print(f"{name:<18}{result['auc ' + name]:>9.4f}"
          f"{result['accuracy ' + name]:>10.4f}")
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  run(common.output_path("workdir", flags.FLAGS.workdir, directory=True),
      flags.FLAGS.size, flags.FLAGS.seed)


if __name__ == "__main__":
  # Defined here, not at import, so tests can import `run` next to other
  # launch scripts that define the same flag names.
  flags.DEFINE_string("workdir", None, "Output directory (the store goes to "
                      "WORKDIR/store).", required=True)
  flags.DEFINE_enum("size", "test", list(SIZES), "Model/training size.")
  flags.DEFINE_integer("seed", 0, "Random seed.")
  app.run(main)
