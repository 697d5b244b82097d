"""The release gate on MovieLens-100k, from a finished run of the main job.

  python -m launch.release_demo --workdir=/tmp/run_test --out=/tmp/release_demo

Builds a store holding version 0 (Fix-M0's version-0 tables, which every
strategy shares), registers at version 0 the run's consumer heads of the
unintended tasks (seed 0's head of each task, on its version-0 held-out
examples) and a frozen exact index of version 0's items with the intended
task's version-0 validation queries (Recall@K), then gates three releases
of version 1 and on (`bcjax.release.gate`):

- No-BC's version 1 with its raw prefix as the map (the first d_0 dims);
- a planted bad release: BC-Aligner's version 1 with the columns of W_1
  permuted (a seeded permutation);
- BC-Aligner's versions 1..K, each published when it passes.

Prints every table and writes them to `<out>/release_demo.md` and
`<out>/release_demo.json`; the store is `<out>/store`.
"""

from pathlib import Path
import time

from absl import flags
import jax
import numpy as np

from bcjax.core import metrics
from bcjax.data import load_dataset, make_splits
from bcjax.data.sampling import numpy_rng
from bcjax.evaluation import retrieval, unintended
from bcjax.evaluation.consumers import load_heads
from bcjax.release import gate
from bcjax.runs import strategies
from bcjax.runs.rundir import RunDir
from bcjax.store import EmbeddingStore, registry
from bcjax.store.consumer_kinds import MLPHead
from bcjax.util import io, keys
from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished run directory "
                               "with fix-m0, nobc and joint-lin-mloss.",
                               required=True)
_OUT = flags.DEFINE_string("out", None, "Folder of the store and the report.",
                           required=True)
_K = flags.DEFINE_integer("k", 50, "The frozen index's K.", lower_bound=1)
_MAX_DROP = flags.DEFINE_float("max_metric_drop", 0.01,
                               "A classifier's largest allowed ROC-AUC drop.")
_MIN_RATIO = flags.DEFINE_float("min_ceiling_ratio", 0.9,
                                "The frozen index's least fraction of the "
                                "refreshed ceiling.")
_BC_TOL = flags.DEFINE_float("bc_tolerance", 0.01, "How far new-to-old "
                             "Recall@K may lie below old-to-old.")
_RESAMPLES = flags.DEFINE_integer("resamples", 200, "Bootstrap resamples.",
                                  lower_bound=1)
_STRICT = flags.DEFINE_bool("strict", False, "An unsure check fails.")


def register_consumers(store, run_dir, splits, user_ids, item_ids) -> list:
  """The run's version-0 consumers, registered at version 0 of `store`."""
  sizes = {"user": len(store.user_ids), "item": len(store.item_ids)}
  lines = []
  for name in unintended.TASKS:
    stem = run_dir.consumer_stem(name)
    if not stem.with_suffix(".json").exists():
      continue
    heads = load_heads(stem)
    task = unintended.task_data(name, splits)
    rows, labels = task.val.rows, task.val.labels
    # Held-out examples whose rows exist at version 0.
    keep = np.all([rows[:, c] < sizes[kind]
                   for c, kind in enumerate(task.task.inputs)], axis=0)
    rows, labels = rows[keep], labels[keep]
    if labels.all() or not labels.any():
      lines.append(f"{name}: skipped (one class at version 0)")
      continue
    ids = np.stack([(user_ids if kind == "user" else item_ids)[rows[:, c]]
                    for c, kind in enumerate(task.task.inputs)], axis=1)
    head = MLPHead(heads.hidden, jax.tree.map(lambda x: x[0], heads.variables))
    consumer = registry.register_classifier(
        store, name, 0, head, task.task.inputs, ids, labels, replace=True)
    lines.append(f"{name}: {len(labels)} examples, ROC-AUC "
                 f"{consumer.baseline:.4f}")
  split = splits[0]
  queries = retrieval.Queries.of(metrics.prepare_recall_inputs(
      split.train_user, split.train_item, split.val_user, split.val_item,
      split.num_items))
  per_query = lambda table: [item_ids[np.flatnonzero(row)].tolist()
                             for row in table]
  consumer = registry.register_index(
      store, "legacy-index", 0, user_ids[queries.users],
      per_query(queries.validation), per_query(queries.excluded), _K.value,
      replace=True)
  lines.append(f"legacy-index: {len(queries.users)} queries, "
               f"Recall@{_K.value} {consumer.baseline:.4f}")
  return lines


def candidate(run_dir, strategy, k, user_ids, item_ids, backward=None):
  users, items = run_dir.tables(strategy, k)
  return gate.Candidate(users, items, run_dir.backward_map(strategy, k)
                        if backward is None else backward,
                        user_ids[:len(users)], item_ids[:len(items)])


def main(argv):
  del argv
  start = time.perf_counter()
  out = Path(common.output_path("out", _OUT.value, directory=True))
  run_dir = RunDir(_WORKDIR.value)
  thresholds = gate.Thresholds(_MAX_DROP.value, _MIN_RATIO.value,
                               _BC_TOL.value, _RESAMPLES.value,
                               strict=_STRICT.value)
  bc, nobc = strategies.BC_ALIGNER_NAME, strategies.NOBC
  try:
    config = run_dir.config()
    splits = make_splits(load_dataset(config["dataset"]), config["times"])
    user_ids, item_ids = run_dir.ids("user"), run_dir.ids("item")
    users, items = run_dir.tables(strategies.FIX_M0, 0)
    io.make_dir(out)
    store = EmbeddingStore.create(
        out / "store", users, items, user_ids[:len(users)],
        item_ids[:len(items)], config["dataset"], bc, replace=True)
    sections = ["Consumers registered at version 0:", "",
                *(f"- {line}" for line in register_consumers(
                    store, run_dir, splits, user_ids, item_ids))]
    results = {}
    d0, d1 = store.dims[0], len(run_dir.tables(nobc, 1)[0][0])
    prefix = np.eye(d1, d0, dtype=np.float32)
    w1 = run_dir.transform(bc, 1)
    permutation = numpy_rng(keys.derive(keys.root(0), "planted")).permutation(
        d0)
    releases = [("No-BC v1, raw prefix as the map",
                 candidate(run_dir, nobc, 1, user_ids, item_ids, prefix),
                 False),
                ("Planted bad release: BC-Aligner v1, W_1's columns permuted",
                 candidate(run_dir, bc, 1, user_ids, item_ids,
                           w1[:, permutation]), False)]
    releases += [(f"BC-Aligner v{k}", candidate(run_dir, bc, k, user_ids,
                                                item_ids), True)
                 for k in range(1, len(splits))]
    for title, release, publish in releases:
      if publish:
        try:
          _, report = gate.publish(store, release, thresholds)
          verdict = "published"
        except gate.ReleaseRefused as refused:
          report, verdict = refused.report, "refused"
          publish = False
      else:
        report, verdict = gate.check(store, release, thresholds), "checked"
      results[title] = dict(report.as_json(), action=verdict)
      sections += ["", f"### {title}: {verdict}", "", report.table()]
      print(f"\n### {title}: {verdict}\n\n{report.table()}", flush=True)
      if not publish and title.startswith("BC-Aligner"):
        break
  except common.USER_ERRORS as e:
    common.fail(e)
  elapsed = time.perf_counter() - start
  sections.append(f"\n({elapsed:.0f}s)")
  text = "\n".join(sections) + "\n"
  io.atomic_write(out / "release_demo.md", lambda f: f.write(text.encode()))
  io.save_json(out / "release_demo.json", {
      "workdir": str(run_dir.root), "thresholds": results and
      next(iter(results.values()))["thresholds"], "releases": results,
      "seconds": elapsed})
  print(f"\nwrote {out / 'release_demo.md'} and {out / 'release_demo.json'} "
        f"({elapsed:.0f}s)")


if __name__ == "__main__":
  common.run(main, resumable=False)
