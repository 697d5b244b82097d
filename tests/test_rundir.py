"""Tests of bcjax.runs.rundir, the one owner of the run directory's layout."""

from pathlib import Path
import re

import numpy as np
import pytest

from bcjax.runs.rundir import CHECKPOINT, METRICS, RunDir, read_json
from bcjax.util import io

PACKAGE = Path(__file__).resolve().parents[1] / "bcjax"


def _version(run_dir, strategy, k, dim=3):
  arrays = {"users": np.full((2, dim), k, np.float32),
            "items": np.full((4, dim), -k, np.float32)}
  if k:
    arrays["transform"] = np.eye(dim, dtype=np.float32) * (k + 1)
  run_dir.save_version(strategy, k, b"variables", arrays, {"version": k})


def test_layout_and_round_trip(tmp_path):
  run_dir = RunDir(tmp_path / "run")
  assert not run_dir.root.exists()  # Nothing is written until asked.
  for k in range(3):
    _version(run_dir, "s", k)
  assert run_dir.version_dir("s", 2) == tmp_path / "run" / "s" / "v2"
  assert sorted(p.name for p in run_dir.version_dir("s", 1).iterdir()) == [
      "items.npy", METRICS, "transform.npy", "users.npy", "variables.msgpack"]
  users, items = run_dir.tables("s", 2)
  np.testing.assert_array_equal(users, 2.0)
  np.testing.assert_array_equal(items, -2.0)
  assert [w[0, 0] for w in run_dir.chain("s", 2)] == [2.0, 3.0]
  assert run_dir.chain("s", 0) == []
  assert run_dir.metrics("s", 1) == {"version": 1}
  assert RunDir.of(run_dir) is run_dir
  assert RunDir.of(str(tmp_path / "run")).root == run_dir.root


def test_completeness_is_metrics_json(tmp_path):
  run_dir = RunDir(tmp_path)
  for k in range(2):
    _version(run_dir, "a", k)
  _version(run_dir, "b", 0)
  # A version with its arrays but no metrics.json is present, not complete.
  run_dir.path("b", 1, "users.npy").parent.mkdir(parents=True)
  io.save_npy(run_dir.path("b", 1, "users.npy"), np.zeros((1, 1)))
  assert run_dir.present_versions("b") == [0, 1]
  assert run_dir.present_versions("nobody") == []
  assert run_dir.complete("b", 0) and not run_dir.complete("b", 1)
  assert run_dir.complete_in(["b", "a", "c"], 2) == ["a"]
  assert run_dir.complete_in(["b", "a"], 1) == ["b", "a"]


def test_saving_a_version_commits_metrics_last_and_drops_its_checkpoint(
    tmp_path, monkeypatch):
  run_dir = RunDir(tmp_path)
  run_dir.version_dir("s", 0).mkdir(parents=True)
  run_dir.path("s", 0, CHECKPOINT).write_bytes(b"old")
  written = []
  save_json, save_npy = io.save_json, io.save_npy
  monkeypatch.setattr(io, "save_json",
                      lambda p, o: (written.append(Path(p).name), save_json(p, o)))
  monkeypatch.setattr(io, "save_npy",
                      lambda p, a: (written.append(Path(p).name), save_npy(p, a)))
  _version(run_dir, "s", 0)
  assert written[-1] == METRICS and "users.npy" in written
  assert not run_dir.path("s", 0, CHECKPOINT).exists()


IDS = (np.array(["u0", "u1"]), np.array(["i0"]))


def test_settings_check_names_the_field(tmp_path):
  run_dir = RunDir(tmp_path)
  run_dir.write_config({"dataset": "toy", "dims": (4, 8), "lr": 0.1}, *IDS)
  # Fields that do not change trained artifacts may change.
  run_dir.write_config({"dataset": "toy", "dims": [4, 8], "lr": 0.1,
                        "preset": "other"}, *IDS)
  assert run_dir.config()["preset"] == "other"
  with pytest.raises(ValueError, match=r"trained with dims=\[4, 8\], not "
                     r"\[4, 16\]; use a new workdir"):
    run_dir.write_config({"dataset": "toy", "dims": (4, 16), "lr": 0.1}, *IDS)
  # A field added later compares with its default.
  run_dir.write_config({"dataset": "toy", "dims": [4, 8], "lr": 0.1,
                        "model": "pinsage"}, *IDS)
  with pytest.raises(ValueError, match="model='pinsage', not 'lightgcn'"):
    run_dir.write_config({"dataset": "toy", "dims": [4, 8], "lr": 0.1,
                          "model": "lightgcn"}, *IDS)


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b""])
def test_unreadable_json_names_the_file(tmp_path, content):
  run_dir = RunDir(tmp_path)
  _version(run_dir, "s", 0)
  run_dir.path("s", 0, METRICS).write_bytes(content)
  with pytest.raises(ValueError, match=re.escape(
      str(run_dir.path("s", 0, METRICS))) + ": not valid JSON"):
    run_dir.metrics("s", 0)
  with pytest.raises(FileNotFoundError):
    read_json(tmp_path / "absent.json")


def test_only_rundir_builds_run_directory_paths():
  """No other module of bcjax spells the layout: `.../v<k>/...` paths, the
  completeness file and the consumers / compatibility directories."""
  layout = re.compile(r'/ f"v\{|"metrics\.json"|"checkpoint\.msgpack"|'
                      r'/ "consumers"|/ "compatibility"|"auc\.json"')
  offenders = [f"{path.relative_to(PACKAGE)}:{n}"
               for path in PACKAGE.rglob("*.py") if path.name != "rundir.py"
               for n, line in enumerate(path.read_text().splitlines(), 1)
               if layout.search(line)]
  assert not offenders, offenders


def test_replace_dir_swaps_a_complete_directory_in(tmp_path):
  """io.replace_dir: the new directory takes the old one's place; the old
  is gone only afterwards, and nothing is left beside them."""
  from bcjax.util import io
  root = tmp_path / "curves"
  root.mkdir()
  (root / "old.txt").write_text("old")
  staging = io.staging_dir(root)
  assert staging.name == ".curves.partial" and not staging.exists()
  staging.mkdir()
  (staging / "new.txt").write_text("new")
  io.replace_dir(staging, root)
  assert [p.name for p in root.iterdir()] == ["new.txt"]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["curves"]
  fresh = tmp_path / "absent"
  built = io.staging_dir(fresh)
  built.mkdir()
  io.replace_dir(built, fresh)  # No old directory: just renamed.
  assert fresh.is_dir() and not built.exists()


def test_joining_a_started_run_checks_and_writes_nothing(tmp_path):
  """A worker joins the run its main process started: while another writer
  has a temporary at the top, joining leaves it and config.json alone."""
  record = {"dataset": "toy", "dims": [4, 8], "lr": 0.1}
  with pytest.raises(ValueError, match="no config.json to join"):
    RunDir(tmp_path).write_config(record, *IDS, join=True)
  assert not any(tmp_path.iterdir())
  run_dir = RunDir(tmp_path)
  run_dir.write_config(record, *IDS)
  writing = tmp_path / io.temporary_name("retrieval.json")
  writing.write_bytes(b"half")
  before = run_dir.config_path.read_bytes()
  run_dir.write_config({**record, "preset": "other"}, *IDS, join=True)
  assert writing.read_bytes() == b"half"
  assert run_dir.config_path.read_bytes() == before
  with pytest.raises(ValueError, match=r"trained with lr=0.1, not 0.2"):
    run_dir.write_config({**record, "lr": 0.2}, *IDS, join=True)
  run_dir.write_config(record, *IDS)  # Starting (not joining) clears it.
  assert not writing.exists()
