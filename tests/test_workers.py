"""Worker processes: the jobs' order, the pipeline's result, and errors."""

import numpy as np
import pytest

from bcjax import configs, pipeline, workers
from bcjax.configs import test as test_config
from bcjax.data.synthetic import make_synthetic
from bcjax.rundir import RunDir
from bcjax.strategies import BC_ALIGNER_NAME as BC

NAMES = ["fix-m0", "nobc", "posthoc-lstsq", BC]


def test_seed_jobs_wait_for_what_they_read(tmp_path):
  config = test_config.get_config()
  config.seed = 5
  jobs = {(j.kind, j.name): j for j in workers.seed_jobs(config, tmp_path,
                                                         NAMES)}
  v0 = (5, "version0", "")
  assert jobs["version0", ""].after == ()
  assert jobs["strategy", "nobc"].after == (v0,)
  assert jobs["strategy", BC].after == (v0,)
  # Post-hoc: on nobc's models.
  assert set(jobs["strategy", "posthoc-lstsq"].after) == {
      v0, (5, "strategy", "nobc")}
  assert jobs["consumers", ""].after == ((5, "strategy", "fix-m0"),)
  # The test preset's compatibility matrix is BC-Aligner's.
  assert set(jobs["compatibility", ""].after) == {
      (5, "consumers", ""), (5, "strategy", BC)}
  assert all(j.seed == 5 and j.root == str(tmp_path) for j in jobs.values())


def _events(lines):
  """(seed, what, "started" | "done") of the workers' log lines, in order."""
  out = []
  for line in lines:
    if line.startswith("== seed ") and line.split(" (")[0].endswith(
        ("in a worker", "done")):
      head = line[len("== seed "):].split(" (")[0]
      seed, rest = head.split(": ", 1)
      what = rest.replace(" started in a worker", "").replace(" done", "")
      out.append((int(seed), what,
                  "done" if rest.endswith(" done") else "started"))
  return out


def test_two_workers_train_every_job_in_order_and_reproducibly(tmp_path):
  """Each job starts after the jobs it reads are done; the pipeline then
  retrains nothing; seed 0 run again with workers (alone, so the jobs run
  in another order) is bit for bit the first run's seed 0."""
  config = test_config.get_config()
  config.seeds, config.workers = 2, 2
  graph = make_synthetic(1500, num_users=60, num_items=90, seed=1)
  lines = []
  result = pipeline.reproduce(graph, config, tmp_path / "a", NAMES,
                              log=lines.append)
  events = _events(lines)
  done_at = {(s, w): i for i, (s, w, e) in enumerate(events) if e == "done"}
  start_at = {(s, w): i for i, (s, w, e) in enumerate(events)
              if e == "started"}
  assert len(done_at) == len(start_at) == 2 * (len(NAMES) + 3)
  for seed in (0, 1):
    for name in NAMES:
      assert start_at[seed, name] > done_at[seed, "version 0"]
    assert start_at[seed, "posthoc-lstsq"] > done_at[seed, "nobc"]
    assert start_at[seed, "consumers"] > done_at[seed, "fix-m0"]
    assert start_at[seed, "compatibility"] > max(done_at[seed, "consumers"],
                                                 done_at[seed, BC])
  # After the workers, the pipeline's own stages found every job done.
  assert not any(line.startswith("[") for line in lines)
  assert result.content["seeds"] == [0, 1]
  config.seeds = 1
  pipeline.reproduce(graph, config, tmp_path / "b", NAMES, log=lambda _: None)
  a, b = RunDir(tmp_path / "a").seed_dir(0), RunDir(tmp_path / "b")
  for name in NAMES:
    for k in range(5):
      np.testing.assert_array_equal(
          np.load(a.version_dir(name, k) / "bc_users.npy"),
          np.load(b.version_dir(name, k) / "bc_users.npy"))
  assert (a.consumer_stem("user-activity").with_suffix(".msgpack").read_bytes()
          == b.consumer_stem("user-activity").with_suffix(".msgpack")
          .read_bytes())


def test_jobs_waiting_on_unlisted_jobs_are_refused(tmp_path):
  config = test_config.get_config()
  jobs = [j for j in workers.seed_jobs(config, tmp_path, ["nobc"])
          if j.kind != "version0"]
  graph = make_synthetic(500, num_users=20, num_items=30, seed=0)
  with pytest.raises(ValueError, match="jobs wait on jobs that are not listed"):
    workers.train_parallel(graph, jobs, 2, log=lambda _: None)


def test_workers_setting_is_checked():
  config = test_config.get_config()
  config.workers = 0
  with pytest.raises(ValueError, match="config.workers must be a positive"):
    configs.validate(config)
  config.workers, config.devices = 2, 2
  with pytest.raises(ValueError, match="config.workers=2 trains one device"):
    configs.validate(config)
  config.devices = 1
  assert configs.validate(config).workers == 2
