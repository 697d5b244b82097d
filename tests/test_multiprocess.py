"""Training over several processes (JAX's multi-controller runtime), for real:
2 processes x 2 simulated CPU devices, collectives over gloo, coordinator on
127.0.0.1 at a port chosen free at run time. Every process is bounded by a
timeout and killed in `finally`."""

import json
import os
from pathlib import Path
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from bcjax.runs.rundir import CHECKPOINT

# Compares floats of two computations: `make test-numerics` runs it under
# other XLA CPU kernels.
pytestmark = pytest.mark.numerics

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240  # seconds for one run of the small command below
HEARTBEAT = 10  # --heartbeat_timeout of the runs, seconds
# A small run: 2 versions of BC-Aligner (its v0 is nobc's), 4 epochs each.
TRAIN = ["-m", "launch.train_embeddings", "--config=launch/configs/test.py",
         "--dataset=synthetic", "--synthetic_interactions=2000",
         "--config.versions=0,1", "--strategy=joint-lin-mloss",
         "--config.devices=0", "--config.checkpoint_every=1"]
# Run as process 1: refuses (and logs) any change to files under the run
# directory, so a write there fails the run and the test (Python's audit
# hooks see every open for writing, mkdir, rename, removal and copy).
WATCHED = r"""
import os, runpy, sys
workdir, log = os.path.abspath(sys.argv[1]), open(sys.argv[2], "w")
CHANGES = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir",
           "os.link", "os.symlink", "os.truncate", "os.chmod", "os.utime",
           "shutil.rmtree", "shutil.copytree", "shutil.copyfile",
           "shutil.move"}
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

def hook(event, args):
  if event == "open" and args and isinstance(args[0],
                                             (str, bytes, os.PathLike)):
    mode, flags = args[1] or "", args[2] or 0
    if not (any(c in mode for c in "wxa+") or flags & WRITE):
      return
  elif event not in CHANGES or not args:
    return
  paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
  for path in paths:
    path = os.path.abspath(os.fsdecode(path))
    if path == workdir or path.startswith(workdir + os.sep):
      log.write(f"{event} {path}\n")
      log.flush()
      raise PermissionError(f"process 1 changed {path} ({event})")

sys.addaudithook(hook)
sys.argv = ["train_embeddings", *sys.argv[3:]]
runpy.run_module("launch.train_embeddings", run_name="__main__")
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={devices}"
                      ).strip()
  return env


def _start(workdir: Path, logs: Path, *flags: str,
           watch_process_1: bool = False) -> list[subprocess.Popen]:
  """The two processes of one run, stdout and stderr into `logs`."""
  port = _free_port()
  processes = []
  for i in (0, 1):
    common = [*TRAIN, f"--workdir={workdir}", *flags,
              f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
              f"--process_id={i}", f"--heartbeat_timeout={HEARTBEAT}"]
    if i == 1 and watch_process_1:
      command = [sys.executable, "-c", WATCHED, str(workdir),
                 str(logs / "changes1.txt"), *common[2:]]
    else:
      command = [sys.executable, *common]
    with open(logs / f"out{i}.txt", "w") as out, \
        open(logs / f"err{i}.txt", "w") as err:
      processes.append(subprocess.Popen(command, cwd=ROOT, env=_env(2),
                                        stdout=out, stderr=err))
  return processes


def _stop(processes: list[subprocess.Popen]) -> None:
  for p in processes:
    if p.poll() is None:
      p.kill()
    p.wait()


def _run(workdir: Path, logs: Path, *flags: str, **kwargs) -> list[str]:
  """Runs both processes to the end; returns their stderr."""
  logs.mkdir(parents=True, exist_ok=True)
  processes = _start(workdir, logs, *flags, **kwargs)
  try:
    for p in processes:
      p.wait(timeout=TIMEOUT)
  finally:
    _stop(processes)
  errors = [(logs / f"err{i}.txt").read_text() for i in (0, 1)]
  for p, error in zip(processes, errors):
    assert p.returncode == 0, error[-3000:]
  return errors


def _artifacts(workdir: Path) -> dict[str, bytes]:
  return {str(p.relative_to(workdir)): p.read_bytes()
          for p in sorted(workdir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
  """One uninterrupted 2-process run, process 1 under the write watch."""
  root = tmp_path_factory.mktemp("two")
  start = time.monotonic()
  _run(root / "run", root / "logs", watch_process_1=True)
  print(f"2 processes x 2 devices: {time.monotonic() - start:.1f}s")
  return root


def test_two_processes_match_one_process_of_four_devices(two_processes,
                                                         tmp_path):
  one = tmp_path / "one"
  start = time.monotonic()
  done = subprocess.run([sys.executable, *TRAIN, f"--workdir={one}"], cwd=ROOT,
                        env=_env(4), capture_output=True, text=True,
                        timeout=TIMEOUT)
  print(f"1 process x 4 devices: {time.monotonic() - start:.1f}s")
  assert done.returncode == 0, done.stderr[-3000:]
  two = two_processes / "run"
  assert sorted(_artifacts(two)) == sorted(_artifacts(one))
  for name in ("nobc/v0", "joint-lin-mloss/v1"):
    a = json.loads((two / name / "metrics.json").read_text())
    b = json.loads((one / name / "metrics.json").read_text())
    assert a["best_epoch"] == b["best_epoch"], name
    # One mesh of 4 devices either way, the same program: only the order of
    # the cross-device sums differs (gloo across processes). Version 0's
    # mean loss over its first two epochs agrees to float rounding (1e-5
    # relative; 1.4e-7 measured); Adam then amplifies rounding (see
    # tests/test_sharding.py) and v1 aligns to a v0 that differs slightly:
    # every loss to 1e-2 relative, as in tests/test_sharding.py (2.4e-4
    # measured, 9.3e-4 with XLA_FLAGS=--xla_cpu_max_isa=SSE4_2), embeddings
    # and W_1 to 3e-2 absolute (6.3e-3 and 1.3e-2 measured; they are of
    # order 1).
    losses = [[h["loss"] for h in m["history"]] for m in (a, b)]
    if name == "nobc/v0":
      np.testing.assert_allclose(losses[0][0], losses[1][0], rtol=1e-5,
                                 atol=1e-6)
    np.testing.assert_allclose(*losses, rtol=1e-2, atol=1e-3, err_msg=name)
    for array in ("users", "items", "transform"):
      path = two / name / f"{array}.npy"
      if path.exists():
        np.testing.assert_allclose(np.load(path),
                                   np.load(one / name / f"{array}.npy"),
                                   atol=3e-2, err_msg=f"{name} {array}")


def test_only_process_0_writes(two_processes):
  changes = two_processes / "logs" / "changes1.txt"
  assert changes.read_text() == "", "process 1 changed the run directory"
  run = two_processes / "run"
  files = _artifacts(run)
  assert "config.json" in files and "joint-lin-mloss/v1/users.npy" in files
  assert not [name for name in files
              if name.endswith(".tmp") or CHECKPOINT in name]
  # Process 1 reached the end and read what process 0 wrote.
  out1 = (two_processes / "logs" / "out1.txt").read_text()
  assert "joint-lin-mloss v1: recall@10" in out1


def test_killed_and_restarted_ends_with_the_same_files(two_processes,
                                                       tmp_path):
  """Both processes SIGKILLed once a checkpoint exists, then restarted with
  the same commands: the files of the uninterrupted run, bit for bit."""
  run, logs = tmp_path / "run", tmp_path / "logs"
  logs.mkdir()
  processes = _start(run, logs)
  try:
    deadline = time.monotonic() + TIMEOUT
    while (not list(run.rglob(CHECKPOINT)) and time.monotonic() < deadline
           and all(p.poll() is None for p in processes)):
      time.sleep(0.02)
    assert list(run.rglob(CHECKPOINT)), "no checkpoint before the run ended"
  finally:
    _stop(processes)
  assert not (run / "joint-lin-mloss" / "v1" / "metrics.json").exists()
  errors = _run(run, tmp_path / "logs2")
  assert all("resumed after epoch" in error for error in errors)
  expected, actual = _artifacts(two_processes / "run"), _artifacts(run)
  assert sorted(actual) == sorted(expected)
  for name in expected:
    assert actual[name] == expected[name], f"{name} differs after resuming"


@pytest.mark.parametrize("killed", [0, 1])
def test_a_dead_process_stops_the_other(tmp_path, killed):
  """SIGKILL one process mid-training: the other exits non-zero within the
  heartbeat timeout (plus slack for a loaded machine), saying why."""
  logs = tmp_path / "logs"
  logs.mkdir()
  run = tmp_path / "run"
  processes = _start(run, logs, "--config.epochs=200")
  try:
    deadline = time.monotonic() + TIMEOUT
    while not list(run.rglob(CHECKPOINT)) and time.monotonic() < deadline:
      assert all(p.poll() is None for p in processes)
      time.sleep(0.05)
    assert list(run.rglob(CHECKPOINT)), "training did not start in time"
    processes[killed].send_signal(signal.SIGKILL)
    start = time.monotonic()
    survivor = processes[1 - killed]
    survivor.wait(timeout=HEARTBEAT + 30)
    elapsed = time.monotonic() - start
  finally:
    _stop(processes)
  error = (logs / f"err{1 - killed}.txt").read_text()
  print(f"process {1 - killed} stopped {elapsed:.1f}s after process {killed} "
        f"was killed (exit status {survivor.returncode})")
  assert survivor.returncode != 0
  assert elapsed < HEARTBEAT + 30
  # The ways the survivor stops, each seen here: a failed collective ends
  # the command with launch.common's one-line error (exit status 2); JAX's
  # runtime misses the dead process's heartbeats and ends this one ("...
  # most likely indicates that another task died", SIGABRT); rarely (once
  # in 26 kills of process 1) gloo aborts on its exchange with the dead
  # process cut short ("terminate called after throwing an instance of
  # 'gloo::EnforceNotMet'", SIGABRT).
  said = "\n".join(line for line in error.splitlines()
                   if line[:1] in "EF" or "error" in line or "gloo" in line)
  assert any(sign in error for sign in ("another process died",
                                        "another task died", "gloo::")
             ), said[-3000:]


def test_bad_process_settings_end_with_one_line(tmp_path):
  """Process flags given in part or out of range: exit 2 before JAX starts;
  two processes told to train on one device each: both refuse."""
  for flags, message in (
      (["--num_processes=2"], "go together"),
      (["--coordinator_address=127.0.0.1:1", "--num_processes=2",
        "--process_id=2"], "--process_id=2 must be below --num_processes=2")):
    done = subprocess.run([sys.executable, *TRAIN, f"--workdir={tmp_path}",
                           *flags], cwd=ROOT, env=_env(2), capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert done.returncode == 2 and message in done.stderr, done.stderr
  logs = tmp_path / "logs"
  logs.mkdir()
  processes = _start(tmp_path / "run", logs, "--config.devices=1")
  try:
    for p in processes:
      p.wait(timeout=TIMEOUT)
  finally:
    _stop(processes)
  for i, p in enumerate(processes):
    error = (logs / f"err{i}.txt").read_text()
    assert p.returncode == 2, error[-3000:]
    assert (f"(process {i} of 2): error: asked for 1 devices, but a run of 2 "
            "processes trains on all 4 devices") in error
  assert not (tmp_path / "run").exists()
