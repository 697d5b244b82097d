"""The probes of issue 29: faults that a run directory, a store and the
command lines must refuse with one line (exit status 2 from a command),
before anything is written, never a traceback or a wrong answer.

One table (or hypothesis test) per family; probes per family:
  graph identity (item 1): 6 edits of a graph, each refused by a run
    directory trained on the original; train_embeddings on 4,000
    interactions over a run of 3,000 (its ids still export right);
  run checksums (item 2): any bit of any of 8 run files (hypothesis, 40
    examples) through export, the arrays, the ids and the variables;
    a flipped bit through train_embeddings and export;
  output paths (items 3, 8): 7 outputs of `save_npz` (read_store --out: a
    FIFO, a link to a device, a folder, the manifest, a store file, a new
    file in a store, empty), 3 of export, an empty --workdir;
  writer lock (item 4): a held lock refuses an append and a create; two
    writers appending 15 versions each leave a valid store;
  ids and values (item 5): 40 hypothesis id lists (control characters,
    None, ints, floats, objects, empty) refused by `create`; 6 forged files
    of stores with recomputed checksums refused by what read_store reads;
  PinSAGE (item 6): an attribute kind with no kept value, in both forms of
    the first layer; a graph of 50 interactions;
  command lines (items 7, 8): 5 subprocesses started together (another
    graph, a flipped bit, a truncated metrics.json, an unknown config field,
    a missing config file); in process: config.json holding a list, a
    deleted users.npy, seed 10**20, an empty strategy list, `../x`, an
    empty run path;
  resources and messages (item 9): 2 memory estimates (batch size, dims), a
    full disk, non-finite values of a run, a truncated consumer file;
  leftovers (item 10): a checkpoint's and config.json's temporaries, a
    killed export's directory.
"""

import errno
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import threading

from hypothesis import HealthCheck, given, settings, strategies as st
import jax
import numpy as np
import pytest

from bcjax import store as store_lib
from bcjax.data import load_dataset
from bcjax.data.graph import build_graph
from bcjax.runs import configs, export
from bcjax.runs.rundir import RunDir
from bcjax.store import EmbeddingStore, StoreError
from bcjax.util import io

REPO = Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TE = [sys.executable, "-m", "launch.train_embeddings",
      f"--config={REPO}/launch/configs/test.py", "--dataset=synthetic",
      "--strategy=nobc", "--config.versions=0"]
ENV = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))


def _snapshot(root):
  """Every file under `root`: its bytes and modification time."""
  return {p: (p.read_bytes(), p.stat().st_mtime_ns)
          for p in sorted(Path(root).rglob("*")) if p.is_file()}


def _start(args, cwd=REPO):
  return subprocess.Popen(args, cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _one_line_error(process, *words):
  """None if `process` ended with status 2 and one line of stderr naming
  `words`, else what went wrong."""
  out, err = process.communicate(timeout=300)
  lines = err.strip().splitlines()
  if process.returncode != 2 or len(lines) != 1 or "Traceback" in err:
    return f"status {process.returncode}: {err[-1500:]}"
  missing = [w for w in words if w not in lines[0]]
  return f"{missing} not in {lines[0]!r}" if missing else None


# --------------------------------------------------- A finished run (CLI) ---

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """Version 0 of nobc on 3,000 synthetic interactions."""
  root = tmp_path_factory.mktemp("finished") / "run"
  result = subprocess.run(TE + ["--synthetic_interactions=3000",
                                f"--workdir={root}"], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return root


def _copy(finished_run, tmp_path, name):
  copy = tmp_path / name
  shutil.copytree(finished_run, copy)
  return copy


def _flip(path, offset_from_end=5, bit=0x40):
  data = bytearray(path.read_bytes())
  data[-offset_from_end] ^= bit
  path.write_bytes(bytes(data))


def test_command_lines_refuse_with_one_line(finished_run, tmp_path):
  """Items 1, 2, 7 through train_embeddings, started together: a graph of
  the same name, a flipped bit and a truncated metrics.json in a finished
  run, an unknown config field and a missing config file."""
  graph, bit, metrics = (_copy(finished_run, tmp_path, name)
                         for name in ("graph", "bit", "metrics"))
  before = _snapshot(graph)
  _flip(bit / "nobc" / "v0" / "items.npy")
  (metrics / "nobc" / "v0" / "metrics.json").write_text('{"be')
  rerun = lambda workdir, *flags: _start(TE + [
      "--synthetic_interactions=3000", f"--workdir={workdir}", *flags])
  probes = {
      "another graph": (rerun(graph, "--synthetic_interactions=4000"),
                        ["another graph", str(graph)]),
      "flipped bit": (rerun(bit), ["items.npy", "checksum"]),
      "truncated metrics": (rerun(metrics), ["metrics.json"]),
      "unknown config field": (rerun(tmp_path / "new",
                                     "--config.nosuchfield=3"),
                               ["nosuchfield"]),
      "missing config file": (rerun(tmp_path / "new",
                                    "--config=/nonexistent.py"),
                              ["/nonexistent.py"]),
  }
  failed = {name: problem for name, (process, words) in probes.items()
            if (problem := _one_line_error(process, *words))}
  assert not failed, failed
  # Nothing was touched, and the run still exports its own ids.
  assert _snapshot(graph) == before and not (tmp_path / "new").exists()
  exported = export.export_run(graph, "nobc", tmp_path / "s")
  ids = load_dataset("synthetic", num_interactions=3000).user_ids
  np.testing.assert_array_equal(exported.user_ids,
                                ids[:len(exported.user_ids)])


def test_a_finished_run_with_broken_files_names_them(finished_run, tmp_path,
                                                     capsys):
  """Items 2, 7, 8 in process: what the commands turn into one line."""
  from bcjax.paper.experiment import Experiment
  from launch import common
  graph = load_dataset("synthetic", num_interactions=3000)
  config = _copy(finished_run, tmp_path, "config")
  (config / "config.json").write_text("[1, 2]")
  with pytest.raises(ValueError, match=f"{config / 'config.json'}: not a "
                     "JSON object"):
    Experiment(graph, configs.get("test"), config)
  users = _copy(finished_run, tmp_path, "users")
  (users / "nobc" / "v0" / "users.npy").unlink()
  with pytest.raises(FileNotFoundError, match="users.npy"):
    Experiment(graph, configs.get("test"), users).artifacts.load("nobc", 0)
  bit = _copy(finished_run, tmp_path, "bit")
  _flip(bit / "nobc" / "v0" / "users.npy")
  with pytest.raises(StoreError, match="users.npy: checksum mismatch"):
    export.export_run(bit, "nobc", tmp_path / "out")
  here = os.getcwd()
  with pytest.raises(SystemExit) as status:
    common.output_path("workdir", "", directory=True)
  assert status.value.code == 2 and os.getcwd() == here
  assert "--workdir: an empty path" in capsys.readouterr().err


# -------------------------------------------------- Graph identity (1) ---

def _toy_graph(edit=None):
  """A small graph; `edit` changes one thing of its raw input."""
  raw = {"user": [f"u{i % 5}" for i in range(30)],
         "item": [f"i{(3 * i) % 7}" for i in range(30)],
         "rating": [1.0 + i % 5 for i in range(30)],
         "time": list(range(30)),
         "attributes": {"genre": {f"i{j}": [f"g{j % 2}"] for j in range(7)}}}
  if edit:
    edit(raw)
  return build_graph("toy", raw["user"], raw["item"], raw["rating"],
                     raw["time"], raw["attributes"], min_attribute_count=1)


def _set(key, row, value):
  return lambda raw: raw[key].__setitem__(row, value)


GRAPH_EDITS = {
    "one interaction's item": _set("item", 4, "i6"),
    "one rating": _set("rating", 7, 5.0),
    "one timestamp order": _set("time", 0, 100),
    "one id's name": lambda raw: raw.update(
        user=[u.replace("u4", "v4") for u in raw["user"]]),
    "an attribute value": lambda raw: raw["attributes"]["genre"].update(
        i3=["g9"]),
    "one more interaction": lambda raw: [
        raw[k].append(v) for k, v in (("user", "u1"), ("item", "i1"),
                                       ("rating", 3.0), ("time", 31))],
}


@pytest.mark.parametrize("edit", GRAPH_EDITS)
def test_a_run_refuses_another_graph_of_the_same_name(tmp_path, edit):
  run_dir = RunDir(tmp_path / "run")
  original, other = _toy_graph(), _toy_graph(GRAPH_EDITS[edit])
  record = lambda g: {"dataset": "toy", "graph": g.fingerprint()}
  run_dir.write_config(record(original), original.user_ids,
                       original.item_ids)
  run_dir.write_config(record(_toy_graph()), original.user_ids,
                       original.item_ids)  # The same graph resumes.
  before = _snapshot(run_dir.root)
  with pytest.raises(ValueError, match="trained on another graph named "
                     "'toy'"):
    run_dir.write_config(record(other), other.user_ids, other.item_ids)
  assert _snapshot(run_dir.root) == before


# ------------------------------------------------- Run checksums (2) ---

def _fake_run(root):
  """Two versions of strategy s, written as training writes them."""
  run_dir = RunDir(root)
  run_dir.write_config({"dataset": "toy"}, np.array(["u0", "u1", "u2"]),
                       np.array(["i0", "i1"]))
  rng = np.random.default_rng(0)
  for k in range(2):
    arrays = {"users": rng.normal(size=(3, 4)).astype(np.float32),
              "items": rng.normal(size=(2, 4)).astype(np.float32),
              "bc_users": rng.normal(size=(3, 4)).astype(np.float32),
              "bc_items": rng.normal(size=(2, 4)).astype(np.float32)}
    if k:
      arrays["transform"] = np.eye(4, dtype=np.float32)
    run_dir.save_version("s", k, b"\x80" * 40, arrays, {"best": {}})
  return run_dir


RUN_FILES = ["s/v1/users.npy", "s/v1/items.npy", "s/v1/transform.npy",
             "s/v1/bc_users.npy", "s/v0/bc_items.npy",
             "s/v1/variables.msgpack", "user_ids.npy", "item_ids.npy"]


@FUZZ
@given(st.sampled_from(RUN_FILES), st.integers(0, 63), st.integers(0, 7))
def test_any_flipped_bit_of_a_run_is_refused_by_its_readers(
    tmp_path_factory, name, at, bit):
  run_dir = _fake_run(tmp_path_factory.mktemp("run"))
  path = run_dir.root / name
  data = bytearray(path.read_bytes())
  data[len(data) - 1 - at % len(data)] ^= 1 << bit
  path.write_bytes(bytes(data))
  if not name.startswith(("s/v1/bc_", "s/v0/bc_", "s/v1/var")):  # Exported.
    out = tmp_path_factory.mktemp("out") / "store"
    with pytest.raises(StoreError, match=str(path)):
      export.export_run(run_dir.root, "s", out)
    assert not out.exists()
  if name.startswith("s/"):
    k, file = int(name[3]), name[5:]
    read = (lambda: run_dir.variables("s", k)) if file.endswith(
        ".msgpack") else (lambda: run_dir.array("s", k, file[:-4]))
  else:
    read = lambda: run_dir.ids(name.split("_")[0])
  with pytest.raises(ValueError, match=str(path)):
    read()


# --------------------------------------------------- Output paths (3) ---

def _store(root):
  store = EmbeddingStore.create(root, np.ones((3, 2), np.float32),
                                np.ones((2, 2), np.float32),
                                ["u0", "u1", "u2"], ["i0", "i1"], "d", "s")
  store.close()
  return root


OUTPUTS = {
    "FIFO": lambda tmp, store: (os.mkfifo(tmp / "fifo"), tmp / "fifo")[1],
    "link to a device": lambda tmp, store: (
        os.symlink("/dev/null", tmp / "dev"), tmp / "dev")[1],
    "folder": lambda tmp, store: (tmp / "folder").mkdir() or tmp / "folder",
    "the manifest": lambda tmp, store: store / "manifest.json",
    "a store file": lambda tmp, store: store / "v0_users.npy",
    "a new file in a store": lambda tmp, store: store / "new.npz",
    "empty": lambda tmp, store: "",
}


@pytest.mark.parametrize("kind", OUTPUTS)
def test_read_store_output_is_refused_unless_a_regular_file(tmp_path, kind):
  root = _store(tmp_path / "store")
  out = OUTPUTS[kind](tmp_path, root)
  before = {p: (p.is_symlink(), p.is_fifo(), p.is_dir()) for p in
            tmp_path.iterdir()}
  files = _snapshot(root)
  with EmbeddingStore.open(root) as store:
    with pytest.raises(StoreError, match="refused as an output|empty path"):
      store.save_npz(out)
  assert {p: (p.is_symlink(), p.is_fifo(), p.is_dir()) for p in
          tmp_path.iterdir()} == before
  assert _snapshot(root) == files
  EmbeddingStore.open(root).embeddings()


@pytest.mark.parametrize("where", ["store itself", "inside the store",
                                   "a file"])
def test_export_output_is_refused_inside_a_store_or_over_a_file(tmp_path,
                                                                 where):
  run_dir = _fake_run(tmp_path / "run")
  root = _store(tmp_path / "store")
  (tmp_path / "file").write_text("mine")
  out = {"store itself": root, "inside the store": root / "sub",
         "a file": tmp_path / "file"}[where]
  files = _snapshot(tmp_path)
  with pytest.raises(StoreError):
    export.export_run(run_dir.root, "s", out)
  assert _snapshot(tmp_path) == files


# ---------------------------------------------------- Writer lock (4) ---

def test_a_second_writer_is_refused_at_once(tmp_path):
  from bcjax.store import guard
  root = _store(tmp_path / "store")
  store = EmbeddingStore.open(root)
  files = _snapshot(root)
  with guard.writer_lock(root):  # Another writer at work.
    with pytest.raises(StoreError, match="being written by another writer"):
      store.append_version(np.ones((3, 2)), np.ones((2, 2)), np.eye(2),
                           ["u0", "u1", "u2"], ["i0", "i1"])
    with pytest.raises(StoreError, match="being written by another writer"):
      EmbeddingStore.create(root, np.ones((3, 2)), np.ones((2, 2)),
                            ["u0", "u1", "u2"], ["i0", "i1"], "d", "s",
                            replace=True)
  assert _snapshot(root) == files
  # Released (as the kernel releases a killed writer's lock): it proceeds.
  assert store.append_version(np.ones((3, 2)), np.ones((2, 2)), np.eye(2),
                              ["u0", "u1", "u2"], ["i0", "i1"]) == 1


def _append_until(root, value, attempts, done):
  """One writer: opens the store and appends, `attempts` times."""
  for _ in range(attempts):
    try:
      with EmbeddingStore.open(root) as store:
        k = store.latest_version + 1
        store.append_version(np.full((3 + k, 2), value, np.float32),
                             np.full((2, 2), value, np.float32),
                             np.eye(2, dtype=np.float32),
                             [f"u{i}" for i in range(3 + k)], ["i0", "i1"])
      done.append(value)
    except StoreError as error:
      assert "another writer" in str(error) or "changed since" in str(error)


def test_two_writers_at_once_leave_a_valid_store(tmp_path):
  """Two writers appending 15 versions each (threads: flock locks one open
  file against another, in one process as across processes)."""
  root = _store(tmp_path / "store")
  done = []
  writers = [threading.Thread(target=_append_until,
                              args=(root, value, 15, done))
             for value in (1.0, 2.0)]
  for writer in writers:
    writer.start()
  for writer in writers:
    writer.join()
  with EmbeddingStore.open(root) as store:
    assert store.latest_version == len(done)
    for j in store.versions:
      users, items = store.embeddings(j)
      assert users.shape == (3 + len(done), 2)
      assert (users == done[-1]).all() and (items == done[-1]).all()
    assert list(store.user_ids) == [f"u{i}" for i in range(3 + len(done))]


# ------------------------------------------------ Ids and values (5) ---

bad_id = st.one_of(
    st.text(st.characters(whitelist_categories=("Cc",)), min_size=1,
            max_size=2).map(lambda c: f"id{c}x"),
    st.sampled_from([None, 7, 2.5, object(), "", "tab\there", "new\nline"]))


@FUZZ
@given(st.lists(bad_id, min_size=1, max_size=3), st.integers(0, 3),
       st.sampled_from(["user", "item"]))
def test_ids_must_be_unique_printable_strings(tmp_path_factory, bad, at,
                                              kind):
  ids = {"user": ["u0", "u1", "u2", "u3"], "item": ["i0", "i1", "i2", "i3"]}
  ids[kind][at:at + len(bad)] = bad
  ids[kind] = ids[kind][:4]
  root = tmp_path_factory.mktemp("s") / "store"
  with pytest.raises(StoreError, match=f"{kind} id"):
    EmbeddingStore.create(root, np.ones((len(ids["user"]), 2)),
                          np.ones((len(ids["item"]), 2)), ids["user"],
                          ids["item"], "d", "s")
  assert not root.exists()


FORGED = {
    "tab in an id": ("v0_user_ids.npy", np.array(["a", "b\tc", "d"])),
    "newline in an id": ("v0_item_ids.npy", np.array(["a\nb", "c"])),
    "duplicate id": ("v0_user_ids.npy", np.array(["a", "a", "d"])),
    "NaN user": ("v0_users.npy", np.array([[np.nan, 1.0]] * 3, np.float32)),
    "infinite item": ("v0_items.npy",
                      np.array([[1.0, np.inf]] * 2, np.float32)),
    "NaN in a transform": ("v1_transform.npy",
                           np.array([[1.0, 0.0], [0.0, np.nan]], np.float32)),
}


@pytest.mark.parametrize("forgery", FORGED)
def test_the_reader_rechecks_what_the_writer_refuses(tmp_path, forgery):
  """A store whose checksums were recomputed over forged content."""
  root = _store(tmp_path / "store")
  if forgery == "NaN in a transform":
    with EmbeddingStore.open(root) as store:
      store.append_version(np.ones((3, 2)), np.ones((2, 2)), np.eye(2),
                           ["u0", "u1", "u2"], ["i0", "i1"])
  manifest = json.loads((root / "manifest.json").read_text())
  name, array = FORGED[forgery]
  name = name.replace("v0_", f"v{manifest['latest_version']}_")
  np.save(root / name, array)
  manifest["files"][name].update(
      sha256=io.sha256(root / name), size=(root / name).stat().st_size,
      dtype=array.dtype.str)
  (root / "manifest.json").write_text(json.dumps(manifest))
  with pytest.raises(StoreError, match=f"store file {name}"):
    with EmbeddingStore.open(root) as store:  # What read_store reads.
      store.embeddings(0)
      index = store_lib.version_index(store, 0, "exact")
      store_lib.neighbours(store, index, ["u0"], 1)


# ------------------------------------------------------- PinSAGE (6) ---

@pytest.mark.parametrize("factorise", [True, False])
def test_an_attribute_kind_without_kept_values_contributes_nothing(
    factorise):
  from bcjax.data.graph import AttributeKind
  from bcjax.models.pinsage import PinSage, make_graph_inputs
  user = np.array([0, 1, 2, 0, 3, 1])
  item = np.array([0, 1, 2, 3, 3, 0])
  kept = AttributeKind("genre", np.array([0, 1, 2, 2, 3]),
                       np.array([0, 1, 0], np.int32), ("g0", "g1"))
  empty = AttributeKind("brand", np.zeros(5, np.int64),
                        np.zeros(0, np.int32), ())
  outputs = []
  for attributes in ({"genre": kept}, {"genre": kept, "brand": empty}):
    # Padded as a run pads (`families.Budget`): the empty kind gets entries.
    inputs = make_graph_inputs(user, item, 4, 4, attributes, 8, 8,
                               attribute_nnz_pad={"genre": 8, "brand": 8},
                               factorise=factorise)
    model = PinSage(4, 2, tuple(k.num_values for k in attributes.values()))
    variables = model.init(jax.random.key(0), inputs, train=False)
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))  # As run.
    outputs.append(apply(variables, inputs))
  assert np.isfinite(outputs[1]).all()
  np.testing.assert_array_equal(outputs[0], outputs[1])


def test_a_graph_of_50_interactions_embeds():
  """`--synthetic_interactions=50`: every brand is on fewer than 5 items."""
  from bcjax.runs.run_data import RunData
  data = RunData(load_dataset("synthetic", num_interactions=50),
                 configs.get("test"))
  assert 0 in data.vocab_sizes
  model = data.model(0)
  variables = model.init(jax.random.key(0), data.data(0).inputs)
  assert np.isfinite(data.embeddings(model, variables, 0)).all()


# --------------------------------- Command lines, in process (7, 8) ---

def test_settings_refused_in_process(tmp_path):
  from bcjax.paper import pipeline
  config = configs.get("test")
  config.seed = 10**20
  with pytest.raises(ValueError, match="config.seed"):
    configs.validate(config)
  graph = load_dataset("synthetic", num_interactions=3000)
  with pytest.raises(ValueError, match="no strategy given"):
    pipeline.reproduce(graph, configs.get("test"), tmp_path / "r", [])
  assert not (tmp_path / "r").exists()
  run_dir = _fake_run(tmp_path / "run")
  (tmp_path / "x").mkdir()
  with pytest.raises(StoreError, match="not a plain name"):
    export.export_run(run_dir.root, "../x", tmp_path / "out")
  with pytest.raises(StoreError, match="empty path"):
    export.export_run("", "s", tmp_path / "out")
  assert not (tmp_path / "out").exists()


# ------------------------------------- Resources and messages (9) ---

@pytest.mark.parametrize("field, value", [("batch_size", 10**8),
                                          ("dims", (10**6, 8, 12, 12, 16))])
def test_sizes_are_checked_against_memory_before_allocating(field, value):
  from bcjax.runs.run_data import RunData
  config = configs.get("test")
  config[field] = value
  graph = load_dataset("synthetic", num_interactions=3000)
  with pytest.raises(ValueError, match=r"needs about [\d,.]+ GiB of memory "
                     r"\(estimated\), but [\d,.]+ GiB are available"):
    RunData(graph, config)
  RunData(graph, configs.get("test"))  # The preset fits.


def test_messages_name_the_file(tmp_path, monkeypatch):
  # A full disk.
  def full(f):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  with pytest.raises(OSError, match=str(tmp_path / "x.npy")):
    io.atomic_write(tmp_path / "x.npy", full)
  assert list(tmp_path.iterdir()) == []
  # Non-finite values in a run.
  run_dir = _fake_run(tmp_path / "run")
  io.save_npy(run_dir.path("s", 1, "users.npy"), np.full((3, 4), np.nan))
  metrics = json.loads(run_dir.path("s", 1, "metrics.json").read_text())
  metrics.pop("sha256")
  io.save_json(run_dir.path("s", 1, "metrics.json"), metrics)
  with pytest.raises(StoreError, match=f"{run_dir.version_dir('s', 1)}: "
                     "users has non-finite values"):
    export.export_run(run_dir.root, "s", tmp_path / "out")
  # A truncated consumer file.
  from bcjax.evaluation import consumers
  heads = consumers.Heads(4, 0.0, consumers.init_heads(
      4, 2, jax.random.split(jax.random.key(0), 2)), np.ones(2), np.ones(2),
                          {})
  stem = tmp_path / "task"
  consumers.save_heads(stem, heads, {"d_in": 2})
  consumers.load_heads(stem)
  data = stem.with_suffix(".msgpack").read_bytes()
  stem.with_suffix(".msgpack").write_bytes(data[:len(data) // 2])
  with pytest.raises(ValueError, match=str(stem.with_suffix(".msgpack"))):
    consumers.load_heads(stem)


# ---------------------------------------------------- Leftovers (10) ---

def test_resumes_remove_their_own_temporaries(tmp_path):
  run_dir = _fake_run(tmp_path / "run")
  folder = run_dir.version_dir("s", 1)
  left = [folder / f".checkpoint.msgpack.{'a' * 32}.tmp",
          run_dir.root / f".config.json.{'b' * 32}.tmp"]
  for path in left:
    path.write_bytes(b"killed mid-write")
  mine = folder / "notes.tmp"
  mine.write_text("not a temporary of bcjax")
  run_dir.write_config({"dataset": "toy"}, np.array(["u0", "u1", "u2"]),
                       np.array(["i0", "i1"]))
  run_dir.save_version("s", 1, b"\x80", {"users": np.ones((3, 4))}, {})
  assert not any(path.exists() for path in left) and mine.exists()
  killed = tmp_path / f".out.{'c' * 32}.tmp"
  killed.mkdir()
  (killed / "manifest.json").write_text("{}")
  other = tmp_path / f".other.{'d' * 32}.tmp"
  other.mkdir()
  export.export_run(_fake_run(tmp_path / "run2").root, "s",
                       tmp_path / "out")
  assert not killed.exists() and other.exists()
