"""Tests of the compatibility matrix (consumers trained at every version)."""

import json

import numpy as np
import pytest
from test_consumers import _hand_graph  # One hand-worked graph for both.

from bcjax.data import load_dataset
from bcjax.data.splits import make_splits
from bcjax.data.targets import version_targets
from bcjax.evaluation import compatibility, consumers, scoring, unintended
from bcjax.paper import report
from bcjax.runs import configs
from bcjax.runs.configs import paper, quick, test as test_config
from bcjax.util import io

# Compares floats of two computations: `make test-numerics` runs it under
# other XLA CPU kernels.
pytestmark = pytest.mark.numerics

TIMES = (0.4, 0.52, 0.64, 0.76, 0.88)  # four versions
TASKS = ("user-activity", "binary-item-rating-std")


def _same(a: unintended.Examples, b: unintended.Examples) -> bool:
  return (np.array_equal(a.rows, b.rows) and np.array_equal(a.labels, b.labels))


def test_task_data_at_a_later_version_by_hand():
  splits = make_splits(_hand_graph(), (0.5, 0.75, 1.0))
  s1 = splits[1]
  edge = unintended.task_data("binary-edge-rating", splits, train_version=1)
  # Trained on version 1's training interactions, early-stopped on version
  # 1's validation rows (32 A r 5, 33 E r 1, 34-40 D r 5), scored nowhere.
  assert edge.train.rows.tolist() == np.stack(
      [s1.train_user, s1.train_item], 1).tolist()
  assert edge.val.rows.tolist() == [[0, 2], [4, 2]] + [[3, 2]] * 7
  assert edge.evaluation == {}
  # The user tasks early-stop on j + 1, clipped to the last version.
  active = unintended.task_data("user-activity", splits, train_version=1)
  assert active.train.rows[:, 0].tolist() == [0, 1, 2, 3, 4]
  assert active.train.labels.tolist() == [True, False, False, True, True]
  assert _same(active.val, active.train) and active.evaluation == {}
  assert unintended.early_stop_version(active.task, 0, 2) == 1
  assert unintended.early_stop_version(active.task, 1, 2) == 1
  with pytest.raises(ValueError, match="train_version=2"):
    unintended.task_data("user-activity", splits, train_version=2)


@pytest.fixture(scope="module")
def splits():
  graph = load_dataset("synthetic", num_interactions=3000, seed=0)
  return make_splits(graph, TIMES)


@pytest.mark.parametrize("name", list(unintended.TASKS))
def test_task_data_at_version_j_is_version_0_of_the_later_splits(splits, name):
  """Training at j: the method §7 examples of the run that starts at version j."""
  targets = [version_targets(s) for s in splits]
  for j in range(len(splits)):
    data = unintended.task_data(name, splits, targets, train_version=j)
    task = data.task
    assert sorted(data.evaluation) == list(
        range(j + task.first_version, len(splits)))
    if len(splits) - j > task.val_version:  # the clip does not bite
      shifted = unintended.task_data(name, splits[j:], targets[j:])
      assert _same(data.train, shifted.train) and _same(data.val, shifted.val)
      assert sorted(data.evaluation) == [k + j for k in shifted.evaluation]
      for k, examples in shifted.evaluation.items():
        assert _same(data.evaluation[k + j], examples)
    else:  # early-stopped on the last version, as version 1 of the run
      # starting one version earlier (a user task: no threshold involved)
      assert _same(data.val, unintended.task_data(
          name, splits[j - 1:], targets[j - 1:]).val)


def _invertible(rng, d):
  q, _ = np.linalg.qr(rng.standard_normal((d, d)))
  return (q * rng.uniform(0.5, 2.0, d)).astype(np.float32)


def _fake_run(root, splits, strategy="s", d=4, seed=0):
  """Version k's embeddings are B[:rows_k] @ Q_k (Q_0 = I) and
  W_k = Q_k^-1 Q_{k-1}, so M_{k->j} maps them onto B[:rows_k] @ Q_j."""
  rng = np.random.default_rng(seed)
  base = [rng.standard_normal((splits[-1].num_users, d)).astype(np.float32),
          rng.standard_normal((splits[-1].num_items, d)).astype(np.float32)]
  qs = [np.eye(d, dtype=np.float32)] + [_invertible(rng, d)
                                        for _ in splits[1:]]
  for k, s in enumerate(splits):
    path = root / strategy / f"v{k}"
    path.mkdir(parents=True)
    io.save_npy(path / "users.npy", base[0][:s.num_users] @ qs[k])
    io.save_npy(path / "items.npy", base[1][:s.num_items] @ qs[k])
    if k:
      io.save_npy(path / "transform.npy", np.linalg.solve(qs[k], qs[k - 1]))
  return base, qs


CONFIG = consumers.ConsumerConfig(epochs=2, hidden=(4,), dropout=(0.0,),
                                  seeds=2, batch_size=64)
COMPAT = compatibility.CompatConfig(("s",), epochs=2, seeds=2)


def test_mapped_tables_use_the_chain_into_version_j(tmp_path, splits):
  base, qs = _fake_run(tmp_path, splits)
  tables = compatibility.StrategyTables.load(tmp_path, "s", len(splits))
  for j in range(len(splits)):
    for k in range(j, len(splits)):
      users, items = tables.mapped(k, j)
      np.testing.assert_allclose(users, base[0][:splits[k].num_users] @ qs[j],
                                 atol=1e-4)
      np.testing.assert_allclose(items, base[1][:splits[k].num_items] @ qs[j],
                                 atol=1e-4)


def test_matrix_equals_consumers_on_the_original_embeddings(tmp_path, splits):
  splits = splits[:3]  # fewer consumer shapes to compile
  base, qs = _fake_run(tmp_path, splits)
  lines = []
  results = compatibility.run_compatibility(
      tmp_path, splits, ["s"], COMPAT, CONFIG, seed=3, tasks=TASKS,
      log=lines.append)
  num = len(splits)
  targets = [version_targets(s) for s in splits]
  for name in TASKS:
    record = results["s"][name]
    assert record == json.loads(
        (tmp_path / "compatibility" / "s" / f"{name}.json").read_text())
    matrix = np.asarray([[np.nan if v is None else v for v in row]
                         for row in record["matrix"]])
    first = unintended.TASKS[name].first_version
    # Upper-triangular from the task's first scored offset, NaN elsewhere.
    assert matrix.shape == (num, num)
    expected_defined = np.triu(np.ones((num, num), bool), first)
    np.testing.assert_array_equal(np.isfinite(matrix), expected_defined)
    assert record["mean"] == pytest.approx(np.nanmean(matrix))
    assert (record["hidden"], record["dropout"]) == (4, 0.0)  # first grid entry
    # Each row: consumers trained on version j's own embeddings, scored on
    # the originals B[:rows_k] @ Q_j, give the same AUCs.
    for j in range(num - first):
      data = unintended.task_data(name, splits, targets, train_version=j)
      original = {k: (base[0][:splits[k].num_users] @ qs[j],
                      base[1][:splits[k].num_items] @ qs[j])
                  for k in range(num)}
      val_k = unintended.early_stop_version(data.task, j, num)
      pick = lambda pair: [pair[0] if i == "user" else pair[1]
                           for i in data.task.inputs]
      heads = consumers.train_heads(
          pick(original[j]), data.train, pick(original[val_k]), data.val,
          CONFIG, compatibility.row_key(3, name, j), log=lambda _: None)
      direct = scoring.evaluate(heads, scoring.prepare_evaluation(
          data, {"s": original}, ["s"]))
      for v, k in enumerate(sorted(data.evaluation)):
        np.testing.assert_allclose(record["auc"][j][k], direct["s"][v],
                                   atol=2e-3)
        assert matrix[j, k] == pytest.approx(np.mean(direct["s"][v]), abs=2e-3)
  assert len(lines) == len(TASKS)

  # Resumable: saved matrices with the same settings are reused...
  again = compatibility.run_compatibility(
      tmp_path, splits, ["s"], COMPAT, CONFIG, seed=3, tasks=TASKS,
      log=lambda line: pytest.fail(f"recomputed: {line}"))
  assert again == results
  assert compatibility.load_results(tmp_path) == results
  # ... and recomputed when they differ.
  lines = []
  other = compatibility.CompatConfig(("s",), epochs=1, seeds=2)
  compatibility.run_compatibility(tmp_path, splits, ["s"], other, CONFIG,
                                  seed=3, tasks=TASKS[:1], log=lines.append)
  assert "other settings" in lines[0]
  saved = json.loads((tmp_path / "compatibility" / "s" / f"{TASKS[0]}.json")
                     .read_text())
  assert saved["config"]["epochs"] == 1 and len(saved["auc"][0][2]) == 2



def test_each_row_checkpoints_its_heads_and_removes_them_once_scored(
    tmp_path, splits, monkeypatch):
  """Row j's heads checkpoint beside the matrix while they train (a killed
  compatibility stage resumes them), under a stem of their own; the files
  go once the row is scored, and the AUCs are those of a run without."""
  splits = splits[:3]
  _fake_run(tmp_path, splits)
  tables = compatibility.StrategyTables.load(tmp_path, "s", len(splits))
  targets = [version_targets(s) for s in splits]
  monkeypatch.setattr(consumers, "CHECKPOINT_EVERY", 1)
  train_heads, stems = consumers.train_heads, []

  def recording(*args, checkpoints=None, **kwargs):
    heads = train_heads(*args, checkpoints=checkpoints, **kwargs)
    stems.append(checkpoints)
    assert consumers.checkpoint_path(checkpoints, 4, 0.0).is_file()
    return heads
  monkeypatch.setattr(consumers, "train_heads", recording)
  stem = tmp_path / "compatibility" / "s" / TASKS[0]
  stem.parent.mkdir(parents=True)
  with_checkpoints = compatibility.task_matrix(
      TASKS[0], splits, targets, tables, CONFIG, seed=3, checkpoints=stem)
  assert stems == [stem.with_name(f"{TASKS[0]}.v{j}")
                   for j in range(len(stems))] and stems
  assert not list(stem.parent.glob("*.checkpoint.msgpack"))
  stems.clear()
  monkeypatch.setattr(consumers, "train_heads", train_heads)
  assert compatibility.task_matrix(TASKS[0], splits, targets, tables, CONFIG,
                                   seed=3) == with_checkpoints

def test_hyper_parameters_of_the_main_consumers(tmp_path):
  assert compatibility.chosen_hyper(tmp_path, "user-activity", CONFIG) == (4, 0.0)
  (tmp_path / "consumers").mkdir()
  io.save_json(tmp_path / "consumers" / "user-activity.json",
               {"hidden": 256, "dropout": 0.25})
  assert compatibility.chosen_hyper(tmp_path, "user-activity", CONFIG) == (256, 0.25)


def test_summarize_by_hand():
  n = None
  results = {"s": {"t1": {"matrix": [[n, 0.6, 0.8], [n, n, 0.7], [n, n, n]]},
                   "t2": {"matrix": [[n, n, 0.5], [n, n, n], [n, n, n]]}},
             "u": {"t1": {"matrix": [[n] * 3] * 3}}}
  out = compatibility.summarize(results)
  assert out["s"]["tasks"]["t1"]["mean"] == pytest.approx(0.7)
  assert out["s"]["tasks"]["t2"]["mean"] == pytest.approx(0.5)
  assert out["s"]["mean"] == pytest.approx(0.6)
  assert out["s"]["tasks"]["t1"]["matrix"] == results["s"]["t1"]["matrix"]
  assert out["u"]["mean"] is None and out["u"]["tasks"]["t1"]["mean"] is None


def test_config_fields():
  for module in (paper, quick, test_config):
    c = compatibility.CompatConfig(**module.get_config().compat)
    assert c.strategies and c.epochs >= 1 and c.seeds >= 1
  assert compatibility.CompatConfig(**paper.get_config().compat) == (
      compatibility.CompatConfig())
  config = test_config.get_config()
  config.compat.strategies = ["nobc", "joint-lin-mloss"]
  assert configs.validate(config).compat.strategies == ("nobc",
                                                        "joint-lin-mloss")
  config.compat.strategies = ("nobc", "bogus")
  with pytest.raises(ValueError, match="unknown strategy"):
    configs.validate(config)
  config = test_config.get_config()
  config.compat.epochs = 0
  with pytest.raises(ValueError, match="config.compat.epochs"):
    compatibility.CompatConfig(**config.compat)


def test_report_has_the_compatibility_summary(tmp_path):
  io.save_json(tmp_path / "config.json", {"dataset": "toy", "preset": "test",
                                           "seed": 0, "times": [0.3, 0.6, 1.0]})
  for s in ("nobc", "joint-lin-mloss"):
    for k in range(2):
      path = tmp_path / s / f"v{k}"
      path.mkdir(parents=True)
      for kind in ("users", "items"):
        io.save_npy(path / f"bc_{kind}.npy", np.zeros((2, 2), np.float32))
      io.save_json(path / "metrics.json", {"best": {"recall@50": 0.1},
                                           "best_epoch": 0})
  n = None
  record = lambda m: {"matrix": m, "mean": None}
  out = tmp_path / "compatibility" / "joint-lin-mloss"
  out.mkdir(parents=True)
  io.save_json(out / "user-activity.json", record([[n, n], [n, n]]))
  io.save_json(out / "binary-edge-rating.json", record([[n, 0.75], [n, n]]))
  content, table, plots = report.write_report(tmp_path)
  assert content == json.loads((tmp_path / "report.json").read_text())
  compat = content["compatibility"]
  assert list(compat) == ["joint-lin-mloss"]
  assert list(compat["joint-lin-mloss"]["tasks"]) == [
      "binary-edge-rating", "user-activity"]  # unintended.TASKS order
  assert compat["joint-lin-mloss"] == {
      "mean": 0.75,
      "tasks": {"binary-edge-rating": {"mean": 0.75,
                                       "matrix": [[n, 0.75], [n, n]]},
                "user-activity": {"mean": None, "matrix": [[n, n], [n, n]]}}}
  assert "| strategy | mean compatibility AUC | binary-edge-rating | " \
         "user-activity |" in table
  assert "| **Joint-Lin-MLoss (BC-Aligner)** | 0.7500 | 0.7500 | n/a |" in table
  heat = tmp_path / "compatibility_joint-lin-mloss.png"
  assert heat in plots and heat.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert not list(tmp_path.glob(".*.tmp"))
