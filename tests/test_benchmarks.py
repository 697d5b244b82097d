"""Smoke test of the benchmark record at tiny sizes (no timing assertions)."""

import json

import numpy as np
import pytest

from bcjax.benchmarks import projection, scaling, table
from bcjax.data.synthetic import make_synthetic
from bcjax.runs.configs import test as test_config
from bcjax.util import io
from launch import benchmark


def _config():
  config = test_config.get_config()
  config.times = (0.5, 0.7, 0.85, 1.0)
  config.dims = (8, 8, 12)
  config.layers = (1, 1, 2)
  return config


TINY = benchmark.Suite(
    "tiny", repeats=2, versions=(2,), train_repeats=2, overhead_version=2,
    overhead_repeats=2, consumer_tasks=("binary-item-rating-avg",),
    consumer_strategies=3, agg_scales=(1,), agg_dim=8, matmul_sizes=(64,),
    store_dims=(4, 6, 8), store_rows=(20, 30), sweep_seeds=2,
    workers_version=2,
    scaling_sizes=(3000,), full_scaling_sizes=(3000,), scaling_fanout=3,
    scaling_dim=8, scaling_layers=1,
    scaling_max_steps=1, scaling_repeats=2, scaling_timeout_s=300,
    config=_config, sweep_config=_config)


@pytest.fixture(scope="module")
def record(tmp_path_factory):
  graph = make_synthetic(4000, num_users=150, num_items=500, seed=0)
  lines = []
  result = benchmark.run_suite(TINY, graph, log=lines.append)
  path = tmp_path_factory.mktemp("bench") / "benchmark.json"
  io.save_json(path, result)
  return json.loads(path.read_text()), lines


def _is_spread(pair, median):
  return (isinstance(pair, list) and len(pair) == 2
          and pair[0] <= median * (1 + 1e-9) and median <= pair[1] * (1 + 1e-9))


def test_record_has_every_key(record):
  result, lines = record
  for key in ("jax_version", "devices", "matmul_peak_gflops", "versions",
              "strategy_overheads", "store", "legacy_index", "aggregation",
              "scaling", "layers", "workers",
              "sweep", "consumer_eval"):
    assert key in result, key
  assert isinstance(result["jax_version"], str)
  assert result["devices"] and all(isinstance(d, str) for d in result["devices"])
  assert result["matmul_peak_gflops"] > 0
  assert _is_spread(result["matmul_peak_spread_gflops"],
                    result["matmul_peak_gflops"])
  # One progress line per section.
  for section in benchmark.SECTIONS:
    assert any(f"] {section}:" in line for line in lines), section
  assert set(result["versions"]) == {"2"}
  v = result["versions"]["2"]
  assert _is_spread(v["epoch_spread_s"], v["epoch_s"])
  assert _is_spread(v["eval_spread_s"], v["eval_s"])
  assert set(result["strategy_overheads"]["epochs_s"]) == {
      "plain", "sloss", "mloss", "posthoc"}
  workers = result["workers"]
  assert workers["workers"] == 2 and len(workers["worker_epoch_s"]) == 2
  assert np.isclose(workers["speedup"], workers["workers_epochs_per_s"]
                    * workers["one_process_epoch_s"])
  assert np.isclose(workers["workers_epochs_per_s"],
                    sum(1 / t for t in workers["worker_epoch_s"]))
  layers = result["layers"]
  for name in ("batchnorm", "batchnorm_autodiff", "dropout", "bernoulli"):
    assert _is_spread(layers[f"{name}_ms_spread"], layers[f"{name}_ms"])
  assert np.isclose(layers["batchnorm_speedup"],
                    layers["batchnorm_autodiff_ms"] / layers["batchnorm_ms"])
  for row in result["aggregation"]:
    if row["fwd_ms"] is not None:
      assert _is_spread(row["fwd_ms_spread"], row["fwd_ms"])


def test_sweep_is_consistent(record):
  sweep = record[0]["sweep"]
  assert sweep["seeds"] == 2 and sweep["steps"] >= 1
  assert sweep["vmapped_s"] > 0 and sweep["sequential_s"] > 0
  assert _is_spread(sweep["vmapped_spread_s"], sweep["vmapped_s"])
  assert _is_spread(sweep["sequential_spread_s"], sweep["sequential_s"])
  assert np.isclose(sweep["speedup"],
                    sweep["sequential_s"] / sweep["vmapped_s"])
  # Both sides trained the same seeds from the same states.
  assert sweep["loss_max_abs_diff"] < 1e-4


def test_consumer_eval_is_consistent(record):
  c = record[0]["consumer_eval"]
  assert c["tasks"] == 1 and c["strategies"] == 3 and c["seeds"] == 2
  assert c["evaluations"] == c["scored_versions"] * c["strategies"] * c["seeds"]
  assert _is_spread(c["loop_spread_s"], c["loop_s"])
  assert np.isclose(c["speedup"], c["loop_s"] / c["vmapped_s"])
  assert c["auc_max_abs_diff"] < 1e-3


def test_store_and_scaling(record):
  result = record[0]
  store = result["store"]
  for name in ("composed_rows_per_s", "chained_rows_per_s"):
    assert store[name] > 0
    assert _is_spread(store[name + "_spread"], store[name])
  legacy = result["legacy_index"]
  for name in ("build_s", "exact_build_s", "qps_raw", "qps_linear", "qps_mlp",
               "map_linear_us", "map_mlp_us", "insert_items_per_s"):
    assert legacy[name] > 0
    assert _is_spread(legacy[name + "_spread"], legacy[name]), name
  assert (legacy["frozen_items"], legacy["inserted_items"]) == (15, 15)
  sampled, full = result["scaling"]
  for row in (sampled, full):
    assert {"interactions", "mode", "epoch_s", "peak_mem_gb"} <= set(row)
    assert row["interactions"] == 3000
    assert row["epoch_s"] > 0 and row["peak_mem_gb"] > 0
    assert np.isclose(row["epoch_s"], row["step_s"] * row["steps"]
                      + row["sample_s"])
  assert (sampled["mode"], sampled["fanout"]) == ("sampled", 3)
  assert full["mode"] == "full" and full["fanout"] is None
  assert full["extrapolated"] == (full["steps_timed"] < full["steps"])


def test_table_shows_every_section(record):
  text = table.record_table(record[0])
  for needle in ("dense matmul peak", "| version |", "extra work",
                 "seed sweep", "consumer scoring", "store,",
                 "frozen version-0 HNSW index", "| aggregation",
                 "sampled = neighbour sampling", "| 3,000 | full |",
                 "| 3,000 | sampled |"):
    assert needle in text, needle


def test_scaling_skips_sizes_beyond_memory():
  lines = []
  rows = scaling.scaling([2000, 10**9], memory_limit_gb=1e-3,
                            log=lines.append, dim=8, layers=1, max_steps=1,
                            repeats=1)
  assert rows[0]["epoch_s"] > 0
  assert rows[1]["epoch_s"] is None and "projected" in rows[1]["skipped"]
  assert len(lines) == 2


def test_accelerator_suite_projects_the_paper_preset_at_reduced_size():
  """`--suite=accelerator`'s figures at tiny sizes (paper sizes take hours
  on a CPU): the projection adds up every training `reproduce` runs."""
  import dataclasses
  import math

  from bcjax.runs import strategies
  from bcjax.runs.configs import paper
  accelerator = benchmark.SUITES["accelerator"]
  assert {"versions", "overheads", "sweep", "consumer_eval",
          benchmark.PROJECTION} <= set(accelerator.sections)
  assert accelerator.versions == tuple(range(len(paper.get_config().times) - 1))
  suite = dataclasses.replace(accelerator, repeats=1, versions=(0, 1, 2),
                              train_repeats=1, overhead_version=2,
                              overhead_repeats=1, config=_config,
                              sweep_config=_config)
  graph = make_synthetic(4000, num_users=150, num_items=500, seed=0)
  lines = []
  result = benchmark.run_suite(
      suite, graph, sections=("versions", "overheads", benchmark.PROJECTION),
      log=lines.append)
  p, config, versions = result["projection"], _config(), result["versions"]
  assert p["preset"] == "test" and p["total_s"] > 0
  assert np.isclose(p["total_s"],
                    p["version0_s"] + sum(p["by_strategy"].values()))
  assert set(p["by_strategy"]) == set(strategies.STRATEGIES)
  trained = [s for s in strategies.STRATEGIES.values()
             if s.model in ("scratch", "finetune", "posthoc")]
  assert p["trainings"] == 1 + 2 * len(trained)
  assert p["by_strategy"]["fix-m0"] == 0
  evaluations = math.ceil(config.epochs / config.eval_every)
  nobc = sum(config.epochs * versions[k]["epoch_s"]
             + evaluations * versions[k]["eval_s"] + versions[k]["compile_s"]
             for k in ("1", "2"))
  assert np.isclose(p["by_strategy"]["nobc"], nobc)
  assert "projected wall time of the test preset" in table.record_table(result)
  with pytest.raises(ValueError, match=r"no epoch figures for versions \[1\]"):
    projection.paper_wall_time(config, {"0": versions["0"],
                                        "2": versions["2"]},
                               result["strategy_overheads"])
