"""A store or run directory from someone else, and the store under concurrent
readers and a writer (issue 8, items 4-6).

Crafted stores try, one attack each: paths that escape the directory (`..`,
absolute, a symlink, a NUL byte), a pickled object array whose unpickling
would create a marker file, sizes and shapes that claim 10^12 rows, a FIFO
where a file should be, an over-large or deeply nested manifest, a missing
file, an altered byte in any file, invalid JSON, and values of the wrong type
anywhere in the manifest. Each is refused with a `StoreError` naming the file
and the problem, before any data is read or allocated, and without running
code. The same holds for `.npy` files of a run directory (`io.load_npy`,
`export_run`).

Per run: 30 hand-crafted attacks; fuzzed, 50 manifests with one value
replaced by a random JSON value (or a key deleted), 40 truncated manifests,
50 single-byte changes to a store file (also run once with 400/300/400: no
failure); concurrency, 1 writer process appending 30 versions while 3 reader
processes reopen the store and check every version they see (378 reads of
18-19 distinct versions each in one run on 2 cores; the code before this
test failed it 3 times out of 3 with "store file v1_users.npy is missing").
"""

import json
import os
from pathlib import Path
import subprocess
import sys
import textwrap

from hypothesis import HealthCheck, given, settings, strategies as st
import numpy as np
import pytest

from bcjax import store as store_lib
from bcjax.runs import export
from bcjax.store import EmbeddingStore, StoreError
from bcjax.util import io

REPO = Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
DIM = 4


def _version(k):
  """Version k: 3 + k users and 2 + k items, every value k; W_k = identity."""
  users = np.full((3 + k, DIM), k, dtype=np.float32)
  items = np.full((2 + k, DIM), k, dtype=np.float32)
  return (users, items, np.eye(DIM, dtype=np.float32),
          [f"u{i}" for i in range(3 + k)], [f"i{i}" for i in range(2 + k)])


def _build(root, num_versions=3):
  users, items, _, user_ids, item_ids = _version(0)
  store = EmbeddingStore.create(root, users, items, user_ids, item_ids,
                                "synthetic", "bc")
  for k in range(1, num_versions):
    users, items, w, user_ids, item_ids = _version(k)
    store.append_version(users, items, w, user_ids, item_ids)
  return root


def _read_all(root):
  """Opens the store and reads every file through every version."""
  with EmbeddingStore.open(root) as store:
    for j in store.versions:
      store.embeddings(j)
    store.user_ids, store.item_ids  # pylint: disable=pointless-statement


def _manifest(root):
  return json.loads((Path(root) / "manifest.json").read_text())


def _set_manifest(root, manifest):
  (Path(root) / "manifest.json").write_text(json.dumps(manifest))


def _entry(array, path):
  """A manifest entry that matches `path` exactly (size and checksum)."""
  return {"sha256": io.sha256(Path(path)),
          "size": Path(path).stat().st_size, "shape": list(array.shape),
          "dtype": array.dtype.str}


def _point_latest(root, role, name, entry):
  """Points the manifest's latest `role` at `name`, described by `entry`."""
  manifest = _manifest(root)
  old = manifest["latest"][role]
  manifest["latest"][role] = name
  manifest["files"].pop(old)
  manifest["files"][name] = entry
  _set_manifest(root, manifest)


# ---------------------------------------------------------- Path escapes ---

@pytest.mark.parametrize("how", ["dotdot", "absolute"])
def test_manifest_path_outside_the_store_is_refused(tmp_path, how):
  """Even when the outside file is a perfect match for its manifest entry."""
  root = _build(tmp_path / "s")
  users = _version(2)[0]
  outside = tmp_path / "x.npy"
  np.save(outside, users)
  name = "../x.npy" if how == "dotdot" else str(outside)
  _point_latest(root, "users", name, _entry(users, outside))
  with pytest.raises(StoreError, match=f"file path {name!r} escapes the "
                     "store directory"):
    EmbeddingStore.open(root)


def test_symlink_escaping_the_store_is_refused(tmp_path):
  root = _build(tmp_path / "s")
  outside = tmp_path / "outside.npy"
  outside.write_bytes((root / "v2_users.npy").read_bytes())  # Same checksum.
  (root / "v2_users.npy").unlink()
  (root / "v2_users.npy").symlink_to(outside)
  with pytest.raises(StoreError, match="'v2_users.npy' escapes the store"):
    EmbeddingStore.open(root)


def test_symlinked_store_directory_is_fine(tmp_path):
  """Only paths that leave the store are refused, not a link to the store."""
  root = _build(tmp_path / "s")
  (tmp_path / "link").symlink_to(root)
  _read_all(tmp_path / "link")


def test_nul_byte_in_a_file_name_is_refused(tmp_path):
  root = _build(tmp_path / "s")
  manifest = _manifest(root)
  manifest["latest"]["users"] = "v2_users\0.npy"
  manifest["files"]["v2_users\0.npy"] = manifest["files"].pop("v2_users.npy")
  _set_manifest(root, manifest)
  with pytest.raises(StoreError, match="bad file name"):
    EmbeddingStore.open(root)


# ---------------------------------------------------------------- Pickle ---

class _Marker:
  """Unpickling this creates the file `path`: the attack to refuse."""

  def __init__(self, path):
    self.path = str(path)

  def __reduce__(self):
    return (open, (self.path, "w"))


def _pickle_bomb(path, marker):
  """An object-array `.npy` that creates `marker` when unpickled."""
  np.save(path, np.array([_Marker(marker)] * 5, dtype=object),
          allow_pickle=True)
  return path


def test_the_pickle_bomb_is_real(tmp_path):
  """The attack works on a reader that allows pickle."""
  marker = tmp_path / "marker"
  np.load(_pickle_bomb(tmp_path / "bomb.npy", marker), allow_pickle=True)
  assert marker.exists()


@pytest.mark.parametrize("honest", [True, False])
def test_object_array_in_a_store_is_never_unpickled(tmp_path, honest):
  """The manifest either admits the object dtype (refused on open) or claims
  unicode ids with the bomb's true size and checksum (refused on read)."""
  root = _build(tmp_path / "s")
  marker = tmp_path / "marker"
  path = _pickle_bomb(root / "v2_user_ids.npy", marker)
  entry = _entry(np.empty(5, dtype="<U2"), path)
  entry["dtype"] = "|O" if honest else "<U2"
  manifest = _manifest(root)
  manifest["files"]["v2_user_ids.npy"] = entry
  _set_manifest(root, manifest)
  with pytest.raises(StoreError, match=(
      r"manifest.json: file 'v2_user_ids.npy' has dtype '\|O'" if honest
      else r"store file v2_user_ids.npy holds \|O \(5,\)")):
    _read_all(root)
  assert not marker.exists()


def test_object_array_is_refused_by_load_npy(tmp_path):
  marker = tmp_path / "marker"
  path = _pickle_bomb(tmp_path / "users.npy", marker)
  with pytest.raises(io.FileFormatError, match=f"{path}: holds Python "
                     r"objects \(dtype \|O\)"):
    io.load_npy(path)
  assert not marker.exists()


def _fake_run(root, users_file=None):
  """A run directory with two versions of strategy bc."""
  root.mkdir()
  np.save(root / "user_ids.npy", np.array([f"u{i}" for i in range(4)]))
  np.save(root / "item_ids.npy", np.array([f"i{i}" for i in range(3)]))
  for k in range(2):
    users, items, w, _, _ = _version(k)
    version = root / "bc" / f"v{k}"
    version.mkdir(parents=True)
    np.save(version / "users.npy", users)
    np.save(version / "items.npy", items)
    if k:
      np.save(version / "transform.npy", w)
    (version / "metrics.json").write_text("{}")
  if users_file:
    (root / "bc" / "v1" / "users.npy").write_bytes(users_file.read_bytes())


def test_export_of_a_run_with_a_pickle_bomb_is_refused(tmp_path):
  marker = tmp_path / "marker"
  _fake_run(tmp_path / "run", _pickle_bomb(tmp_path / "bomb.npy", marker))
  with pytest.raises(StoreError, match=r"run file .*bc/v1/users.npy cannot "
                     "be read: .*holds Python objects"):
    export.export_run(tmp_path / "run", "bc", tmp_path / "out")
  assert not marker.exists()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.npy", "run"]


@pytest.mark.parametrize("config", [b"\xff\xfe", b"[" * 100_000, b"[1]",
                                    b'{"x": 1}', "fifo"])
def test_export_of_a_run_with_a_broken_config(tmp_path, config):
  _fake_run(tmp_path / "run")
  path = tmp_path / "run" / "config.json"
  if config == "fifo":
    os.mkfifo(path)
  else:
    path.write_bytes(config)
  with pytest.raises(StoreError, match=f"run file {path} names no dataset"):
    export.export_run(tmp_path / "run", "bc", tmp_path / "out")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# ------------------------------------------------- Sizes before allocating ---

def _huge_npy(path, shape, dtype="<f4", payload=64):
  """A `.npy` whose header claims `shape` but holds `payload` bytes."""
  with open(path, "wb") as f:
    np.lib.format.write_array_header_1_0(
        f, {"descr": dtype, "fortran_order": False, "shape": shape})
    f.write(b"\0" * payload)
  return path


@pytest.fixture
def forbid_reads(monkeypatch):
  """Call it to fail the test if any array data is then read or mapped."""

  def refuse(*args, **kwargs):
    raise AssertionError("array data read before the size check")

  def forbid():
    for name in ("load", "memmap", "fromfile", "frombuffer"):
      monkeypatch.setattr(np, name, refuse)

  return forbid


def test_a_trillion_rows_are_refused_before_allocation(tmp_path,
                                                       forbid_reads):
  """Manifest and header agree on 10^12 users and the manifest has the true
  file size: only the header-against-size check can stop it."""
  root = _build(tmp_path / "s")
  rows = 10**12
  path = _huge_npy(root / "v2_users.npy", (rows, DIM))
  manifest = _manifest(root)
  manifest["files"]["v2_users.npy"].update(
      shape=[rows, DIM], size=path.stat().st_size,
      sha256=io.sha256(path))
  manifest["files"]["v2_user_ids.npy"]["shape"] = [rows]
  _set_manifest(root, manifest)
  store = EmbeddingStore.open(root)
  forbid_reads()
  with pytest.raises(StoreError, match="store file v2_users.npy: its header "
                     r"does not describe its \d+ bytes"):
    store.embeddings()


def test_manifest_size_claiming_terabytes_is_refused(tmp_path, forbid_reads):
  root = _build(tmp_path / "s")
  manifest = _manifest(root)
  manifest["files"]["v2_users.npy"]["size"] = 4 * 10**12
  _set_manifest(root, manifest)
  store = EmbeddingStore.open(root)
  forbid_reads()
  with pytest.raises(StoreError, match=r"store file v2_users.npy has \d+ "
                     "bytes, the manifest says 4000000000000"):
    store.embeddings()


@pytest.mark.parametrize("shape, dtype, payload, message", [
    ((10**12, 4), "<f4", 64, r"header says <f4 \(1000000000000, 4\)"),
    ((10**6, 10**6), "<U100", 0, r"header says <U100"),
    ((-4, -2), "<f4", 32, "negative dimension"),
])
def test_load_npy_checks_the_header_against_the_file(tmp_path, forbid_reads,
                                                     shape, dtype, payload,
                                                     message):
  path = _huge_npy(tmp_path / "users.npy", shape, dtype, payload)
  forbid_reads()
  with pytest.raises(io.FileFormatError, match=f"{path}: .*{message}"):
    io.load_npy(path)


def test_load_npy_refuses_an_over_long_header(tmp_path, forbid_reads):
  path = tmp_path / "users.npy"
  path.write_bytes(b"\x93NUMPY\x02\x00" + (2**31).to_bytes(4, "little"))
  forbid_reads()
  with pytest.raises(io.FileFormatError, match="header of 2147483648 bytes"):
    io.load_npy(path)


@pytest.mark.parametrize("data", [b"", b"not an npy", b"\x93NUMPY\x09\x00",
                                  b"\x93NUMPY\x01\x00\x10\x00{'descr': (("])
def test_load_npy_names_a_broken_file(tmp_path, data):
  path = tmp_path / "transform.npy"
  path.write_bytes(data)
  with pytest.raises(io.FileFormatError, match=f"{path}: not a valid .npy"):
    io.load_npy(path)


def test_load_npy_round_trip_and_memory_map(tmp_path):
  for array in (np.arange(12, dtype=np.float32).reshape(3, 4),
                np.array(["a", "bc"]), np.zeros((0, 3), np.float32)):
    io.save_npy(tmp_path / "a.npy", array)
    for mmap in (False, True):
      np.testing.assert_array_equal(io.load_npy(tmp_path / "a.npy", mmap),
                                    array)


# ------------------------------------------------ Special and large files ---

def test_fifo_in_place_of_a_file_does_not_hang(tmp_path):
  root = _build(tmp_path / "s")
  (root / "v1_transform.npy").unlink()
  os.mkfifo(root / "v1_transform.npy")
  store = EmbeddingStore.open(root)
  with pytest.raises(StoreError, match="store file v1_transform.npy in .* is "
                     "not a regular file"):
    store.embeddings(0)
  with pytest.raises(io.FileFormatError, match="not a regular file"):
    io.load_npy(root / "v1_transform.npy")
  (root / "manifest.json").unlink()
  os.mkfifo(root / "manifest.json")
  with pytest.raises(StoreError, match="manifest.json is not a regular file"):
    EmbeddingStore.open(root)


def test_over_large_manifest_is_refused_unread(tmp_path):
  root = _build(tmp_path / "s")
  with open(root / "manifest.json", "r+b") as f:
    f.truncate(store_lib.MAX_MANIFEST_BYTES + 1)  # Sparse: nothing written.
  with pytest.raises(StoreError, match="manifest.json is larger than"):
    EmbeddingStore.open(root)


def test_deeply_nested_manifest_is_invalid_json(tmp_path):
  root = _build(tmp_path / "s")
  (root / "manifest.json").write_text("[" * 200_000)
  with pytest.raises(StoreError, match="manifest.json is not valid JSON"):
    EmbeddingStore.open(root)


# ---------------------------------------------- Missing and altered files ---

@pytest.mark.parametrize("name", ["v1_transform.npy", "v2_users.npy",
                                  "v2_item_ids.npy"])
def test_missing_file_is_named(tmp_path, name):
  root = _build(tmp_path / "s")
  (root / name).unlink()
  with pytest.raises(StoreError, match=f"store file {name} is missing from "
                     f"{root}"):
    _read_all(root)


def test_missing_manifest(tmp_path):
  root = _build(tmp_path / "s")
  (root / "manifest.json").unlink()
  with pytest.raises(StoreError, match=f"no embedding store at {root}"):
    EmbeddingStore.open(root)


FILES = ["v1_transform.npy", "v2_transform.npy", "v2_users.npy",
         "v2_items.npy", "v2_user_ids.npy", "v2_item_ids.npy"]


@FUZZ
@given(st.sampled_from(FILES), st.floats(0, 1, exclude_max=True),
       st.integers(1, 255))
def test_any_altered_byte_is_detected(tmp_path_factory, name, where, flip):
  """One byte changed anywhere in any file, header included: StoreError
  naming that file, whichever check catches it."""
  root = _build(tmp_path_factory.mktemp("s") / "s")
  path = root / name
  data = bytearray(path.read_bytes())
  data[int(where * len(data))] ^= flip
  path.write_bytes(bytes(data))
  with pytest.raises(StoreError, match=f"store file {name}"):
    _read_all(root)


@settings(FUZZ, max_examples=40)
@given(st.floats(0, 1, exclude_max=True))
def test_truncated_manifest(tmp_path_factory, fraction):
  root = _build(tmp_path_factory.mktemp("s") / "s", num_versions=2)
  raw = (root / "manifest.json").read_bytes().rstrip()
  (root / "manifest.json").write_bytes(raw[:int(fraction * len(raw))])
  with pytest.raises(StoreError, match=f"{root / 'manifest.json'} is not "
                     "valid JSON"):
    EmbeddingStore.open(root)


# ------------------------------------------------- Manifest of wrong types ---

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
    | st.text(max_size=12) | st.sampled_from(["../x.npy", "/etc/passwd", ".",
                                             "v0_users.npy", "<U2", "|O"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=5)


def _paths(value, prefix=()):
  """Every path (a tuple of keys) to a value inside a JSON document."""
  yield prefix
  if isinstance(value, dict):
    for key, child in value.items():
      yield from _paths(child, prefix + (key,))
  elif isinstance(value, list):
    for i, child in enumerate(value):
      yield from _paths(child, prefix + (i,))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
  root = _build(tmp_path_factory.mktemp("pristine") / "s")
  return root, _manifest(root)


@FUZZ
@given(st.data(), json_values)
def test_manifest_values_of_the_wrong_type(tmp_path_factory, pristine, data,
                                           value):
  """Any value of the manifest replaced (or a key deleted): StoreError naming
  the manifest or a file, never another exception; what opens reads right."""
  root, manifest = pristine
  paths = sorted(_paths(manifest), key=repr)
  path = data.draw(st.sampled_from(paths))
  delete = bool(path) and data.draw(st.booleans())
  edited = json.loads(json.dumps(manifest))
  if not path:
    edited = value
  else:
    parent = edited
    for key in path[:-1]:
      parent = parent[key]
    if delete and isinstance(parent, dict):
      del parent[path[-1]]
    else:
      parent[path[-1]] = value
  copy = tmp_path_factory.mktemp("s") / "s"
  copy.mkdir()
  for p in root.iterdir():
    (copy / p.name).write_bytes(p.read_bytes())
  _set_manifest(copy, edited)
  try:
    _read_all(copy)
  except StoreError as error:
    assert "manifest.json" in str(error) or "store file" in str(error), error
    return
  # Accepted: the edit changed nothing that matters (e.g. the dataset name).
  with EmbeddingStore.open(copy) as store:
    assert store.latest_version == 2
    users, items = store.embeddings(0)
    np.testing.assert_array_equal(users, _version(2)[0])


# ----------------------------------------------------------- Concurrency ---

_WRITER = """
import glob, sys, time
import numpy as np
from bcjax.store import EmbeddingStore
root, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ready, num_readers = sys.argv[4], int(sys.argv[5])
deadline = time.monotonic() + 30
while len(glob.glob(ready + "*")) < num_readers:  # readers are reading
  assert time.monotonic() < deadline, "readers did not start"
  time.sleep(0.01)
store = EmbeddingStore.open(root)
for k in range(first, last + 1):
  users = np.full((3 + k, 4), k, np.float32)
  items = np.full((2 + k, 4), k, np.float32)
  store.append_version(users, items, np.eye(4, dtype=np.float32),
                       [f"u{i}" for i in range(3 + k)],
                       [f"i{i}" for i in range(2 + k)])
"""

_READER = """
import json, os, sys, time
import numpy as np
from bcjax.store import EmbeddingStore
root, stop, ready, last = *sys.argv[1:4], int(sys.argv[4])
seen, reads, previous = set(), 0, -1
while True:
  done = os.path.exists(stop)
  with EmbeddingStore.open(root) as store:
    k = store.latest_version
    assert k >= previous, (k, previous)  # never back in time
    assert store.versions == list(range(k + 1)) and store.dims == [4] * (k + 1)
    for j in (k, 0):
      users, items = store.embeddings(j)
      assert users.shape == (3 + k, 4) and items.shape == (2 + k, 4)
      assert (users == k).all() and (items == k).all(), (j, k)
    assert list(store.user_ids) == [f"u{i}" for i in range(3 + k)]
    assert list(store.item_ids) == [f"i{i}" for i in range(2 + k)]
  seen.add(k)
  previous, reads = k, reads + 1
  if reads == 1:
    open(ready, "w").close()
  if done:
    break
assert previous == last, (previous, last)
print(json.dumps({"reads": reads, "versions": len(seen)}))
"""


def test_readers_see_complete_versions_while_a_writer_appends(tmp_path):
  """Each read is one complete version (ids, rows, values, checksums and the
  chain to version 0 agree), never an error, never older than the last."""
  root = _build(tmp_path / "s", num_versions=1)
  stop, ready = tmp_path / "stop", tmp_path / "ready"
  last, num_readers = 30, 3
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  run = lambda code, *args: subprocess.Popen(
      [sys.executable, "-c", textwrap.dedent(code), str(root), *map(str, args)],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  readers = [run(_READER, stop, f"{ready}{i}", last)
             for i in range(num_readers)]
  writer = run(_WRITER, 1, last, ready, num_readers)
  try:
    _, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
  finally:
    stop.touch()
  results = []
  for reader in readers:
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    results.append(json.loads(out))
  print("concurrent reads:", results)
  assert all(r["reads"] >= 1 for r in results)
  assert sum(r["versions"] for r in results) > 3  # Readers overlapped appends.
  _read_all(root)


def test_a_reader_keeps_its_version_across_an_append(tmp_path):
  """An open store keeps reading the version it opened, although the append
  removes those latest files."""
  root = _build(tmp_path / "s", num_versions=2)
  reader = EmbeddingStore.open(root)
  writer = EmbeddingStore.open(root)
  writer.append_version(*_version(2))
  assert not (root / "v1_users.npy").exists()
  users, items = reader.embeddings(0)
  assert reader.latest_version == 1
  assert (users == 1).all() and (items == 1).all()
  assert list(reader.user_ids) == [f"u{i}" for i in range(4)]
  reader.close()
  writer.close()
  assert EmbeddingStore.open(root).latest_version == 2
