"""Tests for bcjax.store and the read_store / export_store entry points."""

import json
import os
from pathlib import Path
import subprocess
import sys

import float32_bounds
import numpy as np
import pytest

from bcjax.backward import chains
from bcjax.backward.maps import BackwardMap
from bcjax.runs import export
from bcjax.store import EmbeddingStore, StoreError

# Compares floats of two computations: `make test-numerics` runs it under
# other XLA CPU kernels.
pytestmark = pytest.mark.numerics

REPO = Path(__file__).resolve().parents[1]
DIMS = (4, 6, 7, 9)  # d_0..d_3
ROWS = ((5, 3), (7, 3), (7, 4), (9, 6))  # (num_users, num_items) per version
USER_IDS = np.array([f"u{i}" for i in range(9)])
ITEM_IDS = np.array([f"i{i}" for i in range(6)])


def _version_arrays(seed=0):
  """Per version k: (users [U_k, d_k], items [I_k, d_k], W_k or None)."""
  rng = np.random.default_rng(seed)
  out = []
  for k, (d, (nu, ni)) in enumerate(zip(DIMS, ROWS)):
    w = rng.normal(size=(d, DIMS[k - 1])).astype(np.float32) if k else None
    out.append((rng.normal(size=(nu, d)).astype(np.float32),
                rng.normal(size=(ni, d)).astype(np.float32), w))
  return out


def _build(path, num_versions=len(DIMS)):
  arrays = _version_arrays()
  users, items, _ = arrays[0]
  store = EmbeddingStore.create(path, users, items, USER_IDS[:len(users)],
                                ITEM_IDS[:len(items)], "synthetic", "bc")
  for users, items, w in arrays[1:num_versions]:
    store.append_version(users, items, w, USER_IDS[:len(users)],
                         ITEM_IDS[:len(items)])
  return store, arrays


def _explicit_chain(arrays, k, j):
  m = np.eye(DIMS[k])
  for v in range(k, j, -1):
    m = m @ arrays[v][2].astype(np.float64)
  return m


def _snapshot(path):
  return {p.name: (p.read_bytes(), p.stat().st_mtime_ns)
          for p in Path(path).iterdir()}


def test_round_trip_matches_explicit_products(tmp_path):
  _, arrays = _build(tmp_path / "s")
  store = EmbeddingStore.open(tmp_path / "s")
  assert store.versions == [0, 1, 2, 3]
  assert store.latest_version == 3
  assert store.dims == list(DIMS)
  assert (store.dataset, store.strategy) == ("synthetic", "bc")
  np.testing.assert_array_equal(store.user_ids, USER_IDS[:9])
  np.testing.assert_array_equal(store.item_ids, ITEM_IDS[:6])
  latest_users, latest_items, _ = arrays[3]
  for j in range(4):
    users, items = store.embeddings(version=j)
    m = _explicit_chain(arrays, 3, j)
    assert users.shape == (9, DIMS[j]) and items.shape == (6, DIMS[j])
    # float32 products against the float64 chain: a d_3-term sum's rounding.
    float32_bounds.assert_matches_product(users, latest_users, m)
    float32_bounds.assert_matches_product(items, latest_items, m)
  users, items = store.embeddings()
  np.testing.assert_array_equal(users, latest_users)
  assert not users.flags.writeable and not items.flags.writeable


def test_transform_between_any_versions(tmp_path):
  store, arrays = _build(tmp_path / "s")
  z = np.random.default_rng(1).normal(size=(5, DIMS[2])).astype(np.float32)
  np.testing.assert_allclose(store.transform(z, 2, 0),
                             z @ _explicit_chain(arrays, 2, 0), rtol=1e-5,
                             atol=1e-5)
  assert store.transform(z, 2, 2) is z
  assert store.transform(z[0], 2, 1).shape == (DIMS[1],)


def test_chain_matrix_is_composed_once(tmp_path, monkeypatch):
  store, _ = _build(tmp_path / "s")
  calls = []
  compose = chains.chain_matrix

  def counting_compose(*args, **kwargs):
    calls.append(args)
    return compose(*args, **kwargs)

  monkeypatch.setattr(chains, "chain_matrix", counting_compose)
  store.embeddings(0)
  store.embeddings(0)
  store.transform(np.ones((2, DIMS[3])), 3, 0)
  assert len(calls) == 1
  store.embeddings(1)
  assert len(calls) == 2


def test_append_never_rewrites_older_files(tmp_path):
  store, arrays = _build(tmp_path / "s", num_versions=3)
  before = _snapshot(tmp_path / "s")
  users, items, w = arrays[3]
  assert store.append_version(users, items, w, USER_IDS, ITEM_IDS) == 3
  after = _snapshot(tmp_path / "s")
  for name in ("v1_transform.npy", "v2_transform.npy"):
    assert after[name] == before[name]
  superseded = {f"v2_{role}.npy" for role in
                ("users", "items", "user_ids", "item_ids")}
  assert superseded <= set(before) and not superseded & set(after)
  assert set(after) - set(before) == {
      "v3_transform.npy", "v3_users.npy", "v3_items.npy", "v3_user_ids.npy",
      "v3_item_ids.npy"}


@pytest.mark.parametrize("crash_at", ["v3_items.npy", "manifest.json"])
def test_crash_during_append_leaves_old_state_readable(tmp_path, monkeypatch,
                                                       crash_at):
  store, arrays = _build(tmp_path / "s", num_versions=3)
  expected = [store.embeddings(j) for j in range(3)]
  replace = os.replace

  def crashing_replace(src, dst):
    if Path(dst).name == crash_at:
      raise OSError("simulated crash")
    replace(src, dst)

  monkeypatch.setattr(os, "replace", crashing_replace)
  users, items, w = arrays[3]
  with pytest.raises(OSError, match="simulated crash"):
    store.append_version(users, items, w, USER_IDS, ITEM_IDS)
  monkeypatch.setattr(os, "replace", replace)
  assert not [p for p in (tmp_path / "s").iterdir() if p.suffix == ".tmp"]
  for reader in (store, EmbeddingStore.open(tmp_path / "s")):
    assert reader.latest_version == 2
    for j in range(3):
      for got, want in zip(reader.embeddings(j), expected[j]):
        np.testing.assert_array_equal(got, want)
  assert store.append_version(users, items, w, USER_IDS, ITEM_IDS) == 3
  assert EmbeddingStore.open(tmp_path / "s").latest_version == 3


def test_save_npz_writes_every_row(tmp_path):
  store, _ = _build(tmp_path / "s")
  store.save_npz(tmp_path / "v1.npz", version=1)
  with np.load(tmp_path / "v1.npz", allow_pickle=False) as data:
    for got, want in zip((data["users"], data["items"]), store.embeddings(1)):
      np.testing.assert_array_equal(got, want)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["s", "v1.npz"]


def test_lookup_by_raw_id(tmp_path):
  store, _ = _build(tmp_path / "s")
  users, items = store.embeddings(1)
  got_users, got_items = store.lookup(["u8", "u0"], ["i3"], version=1)
  np.testing.assert_array_equal(got_users, users[[8, 0]])
  np.testing.assert_array_equal(got_items, items[[3]])


def test_lookup_is_bitwise_the_bulk_row(tmp_path, monkeypatch):
  """One product path: a row read by id is exactly that row of the bulk read.

  Small blocks make the odd row counts straddle several block boundaries
  (a full-size block is tested the same way by the lookup test above).
  """
  monkeypatch.setattr(chains, "PRODUCT_BLOCK_ROWS", 4)
  rng = np.random.default_rng(1)
  dims, rows = (5, 7, 11, 13), ((9, 7), (13, 11), (17, 11), (23, 15))
  ids = [np.array([f"{kind}{i}" for i in range(rows[-1][t])])
         for t, kind in enumerate("ui")]
  for k, (d, counts) in enumerate(zip(dims, rows)):
    tables = [rng.normal(size=(n, d)).astype(np.float32) for n in counts]
    names = [kind_ids[:n] for kind_ids, n in zip(ids, counts)]
    if k == 0:
      store = EmbeddingStore.create(tmp_path / "s", *tables, *names,
                                    "synthetic", "bc")
    else:
      w = rng.normal(size=(d, dims[k - 1])).astype(np.float32)
      store.append_version(*tables, w, *names)
  for j in store.versions:
    bulk = store.embeddings(j)
    for t, n in enumerate(rows[-1]):
      # Every row alone, then all rows in a shuffled order with repeats.
      picks = [[i] for i in range(n)] + [rng.integers(0, n, size=2 * n)]
      for pick in picks:
        asked = {("user_ids", "item_ids")[t]: list(ids[t][pick])}
        got = store.lookup(**asked, version=j)[t]
        np.testing.assert_array_equal(got, bulk[t][pick])


def test_blocked_map_rows_equal_the_bulk_product():
  rng = np.random.default_rng(2)
  for n in (0, 1, 1023, 1025, 2 * 1024 + 37):
    table = rng.normal(size=(n, 33)).astype(np.float32)
    matrix = rng.normal(size=(33, 17)).astype(np.float32)
    product = lambda rows: rows @ matrix
    bulk = chains.blocked_map(table, product)
    assert bulk.shape == (n, 17) and bulk.dtype == np.float32
    if n:
      float32_bounds.assert_matches_product(bulk, table, matrix)
      rows = rng.integers(0, n, size=50)
      np.testing.assert_array_equal(
          chains.blocked_map(table, product, rows), bulk[rows])


BAD_REQUESTS = {
    "negative version": (lambda s, a: s.embeddings(-1),
                         r"unknown version -1; the store has versions 0\.\.3"),
    "non-int version": (lambda s, a: s.embeddings("1"),
                        "unknown version '1'"),
    "newer version": (lambda s, a: s.embeddings(4),
                      "version 4 is newer than the latest stored version 3"),
    "forward transform": (lambda s, a: s.transform(np.ones((1, 6)), 1, 2),
                          "cannot transform version 1 embeddings forward"),
    "z width": (lambda s, a: s.transform(np.ones((2, 5)), 1, 0),
                r"shape \(2, 5\), expected \[n, 6\] for version 1"),
    "transform width": (
        lambda s, a: s.append_version(np.ones((9, 3)), np.ones((6, 3)),
                                      np.ones((3, 8)), USER_IDS, ITEM_IDS),
        r"transform has shape \(3, 8\), expected \[d_4, 9\]"),
    "users vs transform": (
        lambda s, a: s.append_version(np.ones((9, 5)), np.ones((6, 5)),
                                      np.ones((3, 9)), USER_IDS, ITEM_IDS),
        r"transform has shape \(3, 9\) but users have shape \(9, 5\)"),
    "users vs items": (
        lambda s, a: s.append_version(np.ones((9, 3)), np.ones((6, 2)),
                                      np.ones((3, 9)), USER_IDS, ITEM_IDS),
        r"users have shape \(9, 3\) and items \(6, 2\)"),
    "non-prefix ids": (
        lambda s, a: s.append_version(np.ones((9, 3)), np.ones((6, 3)),
                                      np.ones((3, 9)), USER_IDS[::-1],
                                      ITEM_IDS),
        "user ids are not an extension of the stored ones: row 0 is 'u8'"),
    "fewer ids": (
        lambda s, a: s.append_version(np.ones((8, 3)), np.ones((6, 3)),
                                      np.ones((3, 9)), USER_IDS[:8], ITEM_IDS),
        "8 user ids given but the store has 9"),
    "duplicate ids": (
        lambda s, a: s.append_version(np.ones((9, 3)), np.ones((6, 3)),
                                      np.ones((3, 9)), USER_IDS,
                                      ["i0"] * 6),
        "duplicate item id 'i0'"),
    "ids per row": (
        lambda s, a: s.append_version(np.ones((9, 3)), np.ones((6, 3)),
                                      np.ones((3, 9)), USER_IDS[:4], ITEM_IDS),
        r"user ids have shape \(4,\), expected \(9,\)"),
    "non-finite": (
        lambda s, a: s.append_version(np.full((9, 3), np.nan), np.ones((6, 3)),
                                      np.ones((3, 9)), USER_IDS, ITEM_IDS),
        "users has non-finite values"),
    "unknown id": (lambda s, a: s.lookup(["u1", "nobody"]),
                   "unknown user id 'nobody'"),
    "create on non-empty": (
        lambda s, a: EmbeddingStore.create(s.path, *a[0][:2], USER_IDS[:5],
                                           ITEM_IDS[:3], "d", "s"),
        "a store exists at"),
    "open missing": (lambda s, a: EmbeddingStore.open(s.path / "nope"),
                     "no embedding store at"),
}


@pytest.mark.parametrize("name", BAD_REQUESTS)
def test_bad_requests_raise_store_error(tmp_path, name):
  store, arrays = _build(tmp_path / "s")
  call, message = BAD_REQUESTS[name]
  with pytest.raises(StoreError, match=message):
    call(store, arrays)


def test_store_changed_by_another_writer_is_refused(tmp_path):
  _build(tmp_path / "s", num_versions=2)
  first = EmbeddingStore.open(tmp_path / "s")
  second = EmbeddingStore.open(tmp_path / "s")
  users, items, w = _version_arrays()[2]
  second.append_version(users, items, w, USER_IDS[:7], ITEM_IDS[:4])
  with pytest.raises(StoreError, match="changed since it was opened"):
    first.append_version(users, items, w, USER_IDS[:7], ITEM_IDS[:4])


def test_checksum_mismatch_names_the_file_on_first_read(tmp_path):
  _build(tmp_path / "s")
  path = tmp_path / "s" / "v2_transform.npy"
  data = bytearray(path.read_bytes())
  data[-1] ^= 0xFF
  path.write_bytes(bytes(data))
  store = EmbeddingStore.open(tmp_path / "s")
  store.embeddings(3)  # needs no transform
  store.embeddings(2)
  with pytest.raises(StoreError,
                     match="checksum mismatch for store file v2_transform.npy"):
    store.embeddings(1)


def test_missing_file_is_named(tmp_path):
  _build(tmp_path / "s")
  (tmp_path / "s" / "v3_item_ids.npy").unlink()
  store = EmbeddingStore.open(tmp_path / "s")
  with pytest.raises(StoreError, match="store file v3_item_ids.npy is missing"):
    store.lookup(item_ids=["i0"])


def _edit_manifest(root, edit):
  path = Path(root) / "manifest.json"
  manifest = json.loads(path.read_text())
  edit(manifest)
  path.write_text(json.dumps(manifest))


def _rename_file(manifest, old, new):
  manifest["files"][new] = manifest["files"].pop(old)
  for entry in manifest["versions"]:
    if entry["transform"] == old:
      entry["transform"] = new
  for role, name in manifest["latest"].items():
    if name == old:
      manifest["latest"][role] = new


@pytest.mark.parametrize("bad_path", ["../v1_transform.npy", "/etc/passwd",
                                      "sub/../../x.npy", "."])
def test_manifest_path_escaping_the_store_is_rejected(tmp_path, bad_path):
  _build(tmp_path / "s")
  _edit_manifest(tmp_path / "s", lambda m: _rename_file(
      m, "v1_transform.npy", bad_path))
  with pytest.raises(StoreError, match="escapes the store directory"):
    EmbeddingStore.open(tmp_path / "s")


def test_manifest_size_disagreeing_with_the_file_is_rejected(tmp_path):
  _build(tmp_path / "s")

  def edit(manifest):
    manifest["files"]["v3_users.npy"]["size"] += 4

  _edit_manifest(tmp_path / "s", edit)
  store = EmbeddingStore.open(tmp_path / "s")
  with pytest.raises(StoreError, match=r"store file v3_users.npy has \d+ "
                     r"bytes, the manifest says \d+"):
    store.embeddings()


def test_manifest_shape_disagreeing_with_the_file_is_rejected_unloaded(
    tmp_path, monkeypatch):
  _build(tmp_path / "s")

  def edit(manifest):  # claims 18 users of 3 dims: same bytes, other shape
    manifest["versions"][3]["dim"] = 3
    manifest["versions"][3]["transform"] = "v3_transform.npy"
    manifest["files"]["v3_users.npy"]["shape"] = [18, 3]
    manifest["files"]["v3_user_ids.npy"]["shape"] = [18]
    manifest["files"]["v3_items.npy"]["shape"] = [6, 3]
    manifest["files"]["v3_transform.npy"]["shape"] = [3, 7]

  _edit_manifest(tmp_path / "s", edit)
  store = EmbeddingStore.open(tmp_path / "s")

  def no_load(*args, **kwargs):
    raise AssertionError("np.load called before the header check")

  monkeypatch.setattr(np, "load", no_load)
  with pytest.raises(StoreError, match=r"store file v3_users.npy holds <f4 "
                     r"\(9, 9\), the manifest says <f4 \(18, 3\)"):
    store.embeddings()


def test_truncated_file_is_rejected_before_loading(tmp_path):
  _build(tmp_path / "s")
  path = tmp_path / "s" / "v3_items.npy"
  path.write_bytes(path.read_bytes()[:-4])
  _edit_manifest(tmp_path / "s", lambda m: m["files"]["v3_items.npy"]
                 .update(size=path.stat().st_size))
  store = EmbeddingStore.open(tmp_path / "s")
  with pytest.raises(StoreError, match="store file v3_items.npy: its header "
                     r"does not describe its \d+ bytes"):
    store.embeddings()


def test_object_arrays_are_never_unpickled(tmp_path):
  _build(tmp_path / "s")
  path = tmp_path / "s" / "v3_user_ids.npy"
  np.save(path, np.array([object()] * 9, dtype=object), allow_pickle=True)
  size = path.stat().st_size
  _edit_manifest(tmp_path / "s", lambda m: m["files"]["v3_user_ids.npy"]
                 .update(size=size))
  store = EmbeddingStore.open(tmp_path / "s")
  with pytest.raises(StoreError, match=r"store file v3_user_ids.npy holds \|O"):
    store.user_ids


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(format="other"), "not a bcjax-embedding-store"),
    (lambda m: m.update(format_version=3), "format version 3"),
    (lambda m: m.update(store_id="abc"), "'store_id' must be a hex sha256"),
    (lambda m: m["versions"][2].pop("fingerprint"),
     "version 2's 'fingerprint' must be a hex sha256"),
    (lambda m: m["versions"][2].update(num_items=7), r"num_items \[3, 3, 7\] "
     r"must be .* at most the 6 items"),
    (lambda m: m["versions"][2].update(num_items=2), r"num_items \[3, 3, 2\] "
     r"must be .* never shrinking"),
    (lambda m: m["versions"][1].update(num_users=None), r"num_users \[5, None, "
     r"7\] must be positive ints \(null only for the first ones\)"),
    (lambda m: m["versions"][3].update(num_users=9), "the latest version has "
     "none"),
    (lambda m: m.update(latest_version=2), "latest_version 2 disagrees"),
    (lambda m: m["versions"][1].update(dim=0), r"versions\[1\]"),
    (lambda m: m["files"].pop("v2_transform.npy"),
     "file 'v2_transform.npy' is not listed"),
    (lambda m: m["files"]["v1_transform.npy"].update(shape=[6, 5]),
     r"has shape \[6, 5\], expected \[6, 4\]"),
    (lambda m: m["files"]["v3_user_ids.npy"].update(dtype="|O"),
     r"has dtype '\|O'"),
    (lambda m: m["latest"].update(items="v3_users.npy"),
     "needs its own file"),
])
def test_malformed_manifest_is_rejected_on_open(tmp_path, edit, message):
  _build(tmp_path / "s")
  _edit_manifest(tmp_path / "s", edit)
  with pytest.raises(StoreError, match=message):
    EmbeddingStore.open(tmp_path / "s")


def test_manifest_that_is_not_json_is_rejected(tmp_path):
  _build(tmp_path / "s")
  (tmp_path / "s" / "manifest.json").write_text("{")
  with pytest.raises(StoreError, match="is not valid JSON"):
    EmbeddingStore.open(tmp_path / "s")


def _fake_run(root, strategy="bc", num_versions=4, with_transform=True):
  """A training run directory as the training code writes it."""
  root.mkdir()
  (root / "config.json").write_text('{"dataset": "synthetic", "seed": 0}')
  np.save(root / "user_ids.npy", USER_IDS)
  np.save(root / "item_ids.npy", ITEM_IDS)
  arrays = _version_arrays()
  for k, (users, items, w) in enumerate(arrays[:num_versions]):
    version_dir = root / strategy / f"v{k}"
    version_dir.mkdir(parents=True)
    np.save(version_dir / "users.npy", users)
    np.save(version_dir / "items.npy", items)
    if k and with_transform:
      np.save(version_dir / "transform.npy", w)
    (version_dir / "metrics.json").write_text("{}")
  return arrays


def test_export_run_builds_the_store(tmp_path):
  arrays = _fake_run(tmp_path / "run")
  store = export.export_run(tmp_path / "run", "bc", tmp_path / "out")
  assert store.latest_version == 3 and store.dims == list(DIMS)
  assert (store.dataset, store.strategy) == ("synthetic", "bc")
  users, _ = store.embeddings(0)
  np.testing.assert_allclose(users, arrays[3][0] @ _explicit_chain(arrays, 3,
                                                                     0),
                             rtol=1e-5, atol=1e-5)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run"]


def test_export_run_skips_a_trailing_incomplete_version(tmp_path):
  _fake_run(tmp_path / "run")
  (tmp_path / "run" / "bc" / "v3" / "metrics.json").unlink()
  store = export.export_run(tmp_path / "run", "bc", tmp_path / "out",
                               dataset="ml100k")
  assert store.latest_version == 2 and store.dataset == "ml100k"


def _residual_mlp(rng, d_in, d_out, hidden=5):
  shapes = {"w": (d_in, d_out), "bias": (d_out,), "w1": (d_in, hidden),
            "b1": (hidden,), "w2": (hidden, d_out)}
  return BackwardMap("residual-mlp", {
      p: rng.normal(size=s).astype(np.float32) for p, s in shapes.items()})


def test_export_run_serves_a_non_linear_chain_map_by_map(tmp_path):
  """A post-hoc adapter's B_2 (a residual MLP, `bcjax.backward.fits`) is stored
  as its parameter files; reads apply B_3, B_2, B_1 in turn, and a row read
  by id is bit for bit the bulk row."""
  arrays = _fake_run(tmp_path / "run")
  v2 = tmp_path / "run" / "bc" / "v2"
  mlp = _residual_mlp(np.random.default_rng(5), DIMS[2], DIMS[1])
  (v2 / "transform.npy").unlink()
  for p, value in mlp.params.items():
    np.save(v2 / f"backward_{p}.npy", value)
  (v2 / "metrics.json").write_text(json.dumps(
      {"backward": "residual-mlp", "backward_params": sorted(mlp.params)}))
  store = export.export_run(tmp_path / "run", "bc", tmp_path / "out")
  chain = [BackwardMap.from_matrix(arrays[1][2]), mlp,
           BackwardMap.from_matrix(arrays[3][2])]
  users3, items3 = arrays[3][0], arrays[3][1]
  reopened = EmbeddingStore.open(tmp_path / "out")
  for j in (0, 1, 2):
    users, items = reopened.embeddings(j)
    # One chain applicator: the store's read is the library's, bit for bit.
    np.testing.assert_array_equal(users, chains.apply_chain(chain, users3, 3, j))
    np.testing.assert_array_equal(items, chains.apply_chain(chain, items3, 3, j))
    one, _ = reopened.lookup(user_ids=[USER_IDS[4]], version=j)
    np.testing.assert_array_equal(one[0], users[4])
  # A linear stretch of the chain keeps the one-matrix path (B_3 alone).
  np.testing.assert_array_equal(
      store.embeddings(2)[0], chains.blocked_map(users3, lambda rows: rows @ arrays[3][2]))
  manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
  assert manifest["versions"][2]["transform"] == {
      "kind": "residual-mlp",
      "params": {p: f"v2_backward_{p}.npy" for p in sorted(mlp.params)}}


def test_a_non_linear_map_of_the_wrong_width_is_refused(tmp_path):
  arrays = _version_arrays()
  store = EmbeddingStore.create(tmp_path / "s", arrays[0][0], arrays[0][1],
                                USER_IDS[:5], ITEM_IDS[:3], "d", "s")
  wrong = _residual_mlp(np.random.default_rng(0), DIMS[1], DIMS[0] + 1)
  with pytest.raises(StoreError, match=r"transform has shape \(6, 5\), "
                     r"expected \[d_1, 4\]"):
    store.append_version(arrays[1][0], arrays[1][1], wrong, USER_IDS[:7],
                         ITEM_IDS[:3])
  # A manifest whose map does not fit its dims is refused on open.
  good = _residual_mlp(np.random.default_rng(0), DIMS[1], DIMS[0])
  store.append_version(arrays[1][0], arrays[1][1], good, USER_IDS[:7],
                       ITEM_IDS[:3])
  path = tmp_path / "s" / "manifest.json"
  manifest = json.loads(path.read_text())
  manifest["versions"][1]["dim"] = 5
  manifest["files"]["v1_users.npy"]["shape"] = [7, 5]
  manifest["files"]["v1_items.npy"]["shape"] = [3, 5]
  path.write_text(json.dumps(manifest))
  with pytest.raises(StoreError, match="version 1's residual-mlp map goes "
                     "from 6 to 4 dims, expected 5 to 4"):
    EmbeddingStore.open(tmp_path / "s")


def test_export_run_without_config_names_the_run(tmp_path):
  _fake_run(tmp_path / "run")
  (tmp_path / "run" / "config.json").unlink()
  store = export.export_run(tmp_path / "run", "bc", tmp_path / "out")
  assert store.dataset == "run"


@pytest.mark.parametrize("setup, message", [
    (lambda run: None, "no run directory"),
    (lambda run: _fake_run(run), "has no strategy 'other'"),
])
def test_export_run_missing_inputs(tmp_path, setup, message):
  setup(tmp_path / "run")
  with pytest.raises(StoreError, match=message):
    export.export_run(tmp_path / "run", "other", tmp_path / "out")
  assert not (tmp_path / "out").exists()


def test_export_run_gap_in_complete_versions(tmp_path):
  _fake_run(tmp_path / "run")
  (tmp_path / "run" / "bc" / "v1" / "metrics.json").unlink()
  with pytest.raises(StoreError, match=r"version 1 is incomplete but later "
                     r"versions \[2, 3\] are complete"):
    export.export_run(tmp_path / "run", "bc", tmp_path / "out")


def test_export_run_failing_midway_leaves_no_store(tmp_path):
  _fake_run(tmp_path / "run")
  np.save(tmp_path / "run" / "bc" / "v2" / "transform.npy", np.ones((7, 5)))
  with pytest.raises(StoreError, match=r"transform has shape \(7, 5\)"):
    export.export_run(tmp_path / "run", "bc", tmp_path / "out")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def _cli(module, *args):
  return subprocess.run([sys.executable, "-m", f"launch.{module}", *args],
                        cwd=REPO, capture_output=True, text=True, check=False,
                        timeout=120)


def _assert_bad_request(result, message):
  assert result.returncode == 2, result.stderr
  assert "Traceback" not in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert message in result.stderr


def test_read_store_cli(tmp_path):
  store, _ = _build(tmp_path / "s")
  out = tmp_path / "v0.npz"
  result = _cli("read_store", f"--store={tmp_path / 's'}", "--version=0",
                f"--out={out}")
  assert result.returncode == 0, result.stderr
  with np.load(out, allow_pickle=False) as data:
    np.testing.assert_array_equal(data["users"], store.embeddings(0)[0])
    np.testing.assert_array_equal(data["items"], store.embeddings(0)[1])

  result = _cli("read_store", f"--store={tmp_path / 's'}", "--version=1",
                "--ids=u2,u0", "--item_ids=i5")
  assert result.returncode == 0, result.stderr
  lines = [line.split("\t") for line in result.stdout.splitlines()]
  assert [line[:2] for line in lines] == [["user", "u2"], ["user", "u0"],
                                          ["item", "i5"]]
  users, items = store.embeddings(1)
  for line, want in zip(lines, (users[2], users[0], items[5])):
    np.testing.assert_array_equal(np.array(line[2].split(), np.float32), want)


@pytest.mark.parametrize("args, message", [
    (["--store={tmp}/nope", "--out={tmp}/x.npz"], "no embedding store at"),
    (["--store={tmp}/s", "--version=7", "--out={tmp}/x.npz"],
     "version 7 is newer than the latest stored version 3"),
    (["--store={tmp}/s", "--version=-1", "--out={tmp}/x.npz"],
     "unknown version -1"),
    (["--store={tmp}/s", "--ids=u1,ghost"], "unknown user id 'ghost'"),
    (["--store={tmp}/s"], "nothing to do"),
])
def test_read_store_cli_bad_requests(tmp_path, args, message):
  _build(tmp_path / "s")
  result = _cli("read_store", *(a.format(tmp=tmp_path) for a in args))
  _assert_bad_request(result, message)
  assert not (tmp_path / "x.npz").exists()


def test_export_store_cli(tmp_path):
  _fake_run(tmp_path / "run")
  result = _cli("export_store", f"--workdir={tmp_path / 'run'}",
                "--strategy=bc", f"--out={tmp_path / 'out'}")
  assert result.returncode == 0, result.stderr
  assert EmbeddingStore.open(tmp_path / "out").latest_version == 3


@pytest.mark.parametrize("make_run, message", [
    (lambda run: None, "no run directory"),
    (lambda run: _fake_run(run, with_transform=False),
     "strategy 'bc' has no backward transformation at version 1"),
    (lambda run: (_fake_run(run), (run / "bc" / "v0" / "metrics.json")
                  .unlink()), "version 0 is not complete"),
])
def test_export_store_cli_bad_requests(tmp_path, make_run, message):
  make_run(tmp_path / "run")
  result = _cli("export_store", f"--workdir={tmp_path / 'run'}",
                "--strategy=bc", f"--out={tmp_path / 'out'}")
  _assert_bad_request(result, message)
  assert not (tmp_path / "out").exists()


def test_create_replaces_a_store_only_when_asked(tmp_path):
  """replace=True swaps a new version-0 store in for an existing store (built
  beside it, nothing left over); a directory that is not a store is never
  deleted, even when asked."""
  old, _ = _build(tmp_path / "s")
  old.close()
  users = np.ones((9, 4), np.float32)
  items = np.full((6, 4), 2.0, np.float32)
  # Version 0 again: the store is kept, and the message says how to publish
  # the next version (not how to wipe it).
  with pytest.raises(StoreError, match=r"a store exists at .* \(version 0 is "
                     r"published\); publish the next version with .*"
                     r"append_version") as error:
    EmbeddingStore.create(tmp_path / "s", users, items, USER_IDS, ITEM_IDS,
                          "d", "s")
  assert "replace=True" not in str(error.value)
  assert EmbeddingStore.open(tmp_path / "s").latest_version == 3
  new = EmbeddingStore.create(tmp_path / "s", users, items, USER_IDS,
                              ITEM_IDS, "d", "new", replace=True)
  assert new.versions == [0] and new.strategy == "new"
  np.testing.assert_array_equal(EmbeddingStore.open(tmp_path / "s").embeddings()[1],
                                items)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
  other = tmp_path / "notes"
  other.mkdir()
  (other / "keep.txt").write_text("mine")
  with pytest.raises(StoreError, match="holding a store"):
    EmbeddingStore.create(other, users, items, USER_IDS, ITEM_IDS, "d", "s",
                          replace=True)
  assert (other / "keep.txt").read_text() == "mine"
