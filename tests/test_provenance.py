"""Provenance in the store (issue 26, item 1): each version's space and
fingerprint, the version that added each row, reads and searches that carry
their space, a mixed-space search refused, and the exported index."""

import hashlib
import json
from pathlib import Path
import re

import numpy as np
import pytest

from bcjax.store import EmbeddingStore, Space, StoreError, load_index

DIMS = (4, 6, 5)
USERS = (4, 6, 7)  # users per version: 4 at v0, 2 more at v1, 1 more at v2
ITEMS = (20, 25, 30)
USER_IDS = np.array([f"u{i}" for i in range(8)])
ITEM_IDS = np.array([f"i{i}" for i in range(31)])


def _tables(seed):
  """Per version: (users, items, W or None); items 3 and 7 of every
  version are equal rows (ties for the search)."""
  rng = np.random.default_rng(seed)
  out = []
  for k, d in enumerate(DIMS):
    items = rng.normal(size=(ITEMS[k], d)).astype(np.float32)
    items[7] = items[3]
    w = rng.normal(size=(d, DIMS[k - 1])).astype(np.float32) if k else None
    out.append((rng.normal(size=(USERS[k], d)).astype(np.float32), items, w))
  return out


def _build(path, seed=0, num_versions=3):
  tables = _tables(seed)
  users, items, _ = tables[0]
  store = EmbeddingStore.create(path, users, items, USER_IDS[:len(users)],
                                ITEM_IDS[:len(items)], "synthetic", "bc")
  for users, items, w in tables[1:num_versions]:
    store.append_version(users, items, w, USER_IDS[:len(users)],
                         ITEM_IDS[:len(items)])
  return store


def _sha(path):
  return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _by_hand(parts):
  """The fingerprint definition of `bcjax.store.provenance`, re-typed."""
  raw = json.dumps(parts, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(raw.encode()).hexdigest()


# ------------------------------------------------------------ Fingerprints ---

def test_fingerprints_follow_their_definition_and_survive_appends(tmp_path):
  root = tmp_path / "s"
  store = _build(root, num_versions=1)
  store_id = _by_hand(["bcjax-store", "synthetic", "bc", [
      _sha(root / f"v0_{r}.npy")
      for r in ("users", "items", "user_ids", "item_ids")]])
  v0 = _by_hand(["bcjax-space", store_id, 0, DIMS[0]])
  assert store.store_id == store_id
  assert store.space(0) == Space("synthetic/bc", 0, DIMS[0], v0)
  users, items, w = _tables(0)[1]
  store.append_version(users, items, w, USER_IDS[:6], ITEM_IDS[:25])
  v1 = _by_hand(["bcjax-space", v0, 1, DIMS[1],
                 [["w", _sha(root / "v1_transform.npy")]],
                 [_sha(root / "v1_users.npy"), _sha(root / "v1_items.npy")]])
  assert store.space(1).fingerprint == v1
  users, items, w = _tables(0)[2]
  store.append_version(users, items, w, USER_IDS[:7], ITEM_IDS[:30])
  reopened = EmbeddingStore.open(root)
  assert [reopened.space(j).fingerprint for j in range(2)] == [v0, v1]
  assert reopened.space() == store.space(2) and reopened.space().version == 2
  assert len({reopened.space(j).fingerprint for j in range(3)}) == 3


def test_stores_of_other_tables_have_other_fingerprints(tmp_path):
  a, b = _build(tmp_path / "a", seed=0), _build(tmp_path / "b", seed=1)
  same = _build(tmp_path / "c", seed=0)  # the same tables, elsewhere
  for j in range(3):
    assert a.space(j).fingerprint != b.space(j).fingerprint
    assert a.space(j) == same.space(j)


def _as_format_1(root):
  """The manifest as the store's format 1 wrote it (no provenance)."""
  path = Path(root) / "manifest.json"
  manifest = json.loads(path.read_text())
  manifest["format_version"] = 1
  del manifest["store_id"]
  for entry in manifest["versions"]:
    for key in ("fingerprint", "num_users", "num_items"):
      entry.pop(key, None)
  path.write_text(json.dumps(manifest))


def test_a_format_1_store_opens_with_derived_fingerprints(tmp_path):
  root = tmp_path / "s"
  _build(root)
  _as_format_1(root)
  old = EmbeddingStore.open(root)
  spaces = [old.space(j) for j in range(3)]
  assert spaces == [EmbeddingStore.open(root).space(j) for j in range(3)]
  assert len({s.fingerprint for s in spaces}) == 3
  with pytest.raises(StoreError, match=r"versions 0..1 were written in format "
                     "1, which does not record how many user rows"):
    old.row_versions()
  assert [ids.tolist() for ids in old.new_since(2)] == [[], []]
  with pytest.raises(StoreError, match="version 1 was written in format 1"):
    old.new_since(1)
  # Its first append writes format 2, the derived fingerprints kept.
  rng = np.random.default_rng(5)
  old.append_version(rng.normal(size=(8, 3)).astype(np.float32),
                     rng.normal(size=(31, 3)).astype(np.float32),
                     rng.normal(size=(3, 5)).astype(np.float32), USER_IDS,
                     ITEM_IDS)
  new = EmbeddingStore.open(root)
  assert json.loads((root / "manifest.json").read_text())[
      "format_version"] == 2
  assert [new.space(j) for j in range(3)] == spaces
  assert [ids.tolist() for ids in new.new_since(2)] == [["u7"], ["i30"]]


# ------------------------------------------------------------ Row versions ---

def test_row_versions_and_new_since_against_hand_counts(tmp_path):
  store = _build(tmp_path / "s")
  rows = store.row_versions()
  np.testing.assert_array_equal(rows.users, [0, 0, 0, 0, 1, 1, 2])
  np.testing.assert_array_equal(rows.items, [0] * 20 + [1] * 5 + [2] * 5)
  users, items = store.new_since(0)
  assert users.tolist() == ["u4", "u5", "u6"]
  assert items.tolist() == [f"i{i}" for i in range(20, 30)]
  users, items = store.new_since(1)
  assert users.tolist() == ["u6"] and items.tolist() == [
      f"i{i}" for i in range(25, 30)]
  assert [ids.tolist() for ids in store.new_since(2)] == [[], []]
  with pytest.raises(StoreError, match="version 3 is newer"):
    store.new_since(3)


def test_reads_carry_their_space(tmp_path):
  store = _build(tmp_path / "s")
  for j in range(3):
    read = store.read(j)
    assert read.space == store.space(j) and read.space.dim == DIMS[j]
    users, items = store.embeddings(j)
    np.testing.assert_array_equal(read.users, users)
    np.testing.assert_array_equal(read.items, items)


# ------------------------------------------------------------------ Search ---

def test_a_query_of_another_version_is_refused_naming_both_spaces(tmp_path):
  store = _build(tmp_path / "s")
  query = store.read(2)
  with pytest.raises(StoreError, match=re.escape(str(query.space)) + ".*"
                     + re.escape(str(store.space(0)))):
    store.search(queries=query.users[:3], space=query.space, version=0)
  with pytest.raises(StoreError, match="need their Space"):
    store.search(queries=query.users[:3], version=0)
  # Through the chain: exactly the search of the mapped vectors.
  through = store.search(queries=query.users[:3], space=query.space,
                         version=0, kind="exact", through_chain=True, k=5)
  mapped = store.search(queries=store.transform(query.users[:3], 2, 0),
                        space=store.space(0), version=0, kind="exact", k=5)
  assert through == mapped
  # By user id: the same rows, read in version 0's space.
  assert store.search(["u0", "u1", "u2"], version=0, kind="exact",
                      k=5) == mapped
  with pytest.raises(StoreError, match="older than the index's"):
    store.search(queries=store.read(0).users, space=store.space(0),
                 version=2, through_chain=True)


def test_a_query_from_another_store_is_refused_even_through_the_chain(
    tmp_path):
  store, other = _build(tmp_path / "a"), _build(tmp_path / "b", seed=1)
  query = other.read(2)
  for through_chain in (False, True):
    with pytest.raises(StoreError, match=re.escape(str(query.space)) + ".*"
                       + re.escape(str(store.space(0)))):
      store.search(queries=query.users, space=query.space, version=0,
                   through_chain=through_chain)
  with pytest.raises(StoreError, match="the vectors are in"):
    store.search(queries=query.users, space=query.space, version=2)


@pytest.mark.parametrize("version", [0, 2])
def test_exclusion_matches_a_numpy_brute_force(tmp_path, version):
  """Items 3 and 7 tie; the lower id comes first. Five queries: faiss
  scores each pair by one inner-product routine, so tied rows tie."""
  store = _build(tmp_path / "s")
  users, items = store.embeddings(version)
  rng = np.random.default_rng(1)
  exclude = [[str(ITEM_IDS[i]) for i in rng.choice(30, 4, replace=False)]
             for _ in range(5)]
  exclude[0] = ["i0", "i5"]
  found = store.search(list(USER_IDS[:5]), version=version, k=8,
                       exclude=exclude, kind="exact")
  for u, (pairs, banned) in enumerate(zip(found, exclude)):
    scores = items @ users[u]
    keep = [i for i in range(30) if str(ITEM_IDS[i]) not in banned]
    top = sorted(keep, key=lambda i: (-scores[i], i))[:8]
    assert [i for i, _ in pairs] == [str(ITEM_IDS[i]) for i in top]
    np.testing.assert_allclose([s for _, s in pairs], scores[top],
                               rtol=1e-5, atol=1e-5)
  # Ties: items 3 and 7 score alike for every query, 3 first.
  ranked = [i for i, _ in store.search(
      queries=items[3], space=store.space(version), version=version, k=30,
      kind="exact")[0]]
  assert ranked.index("i3") + 1 == ranked.index("i7")
  hnsw = store.search(list(USER_IDS[:5]), version=version, k=8,
                      exclude=exclude, kind="hnsw")
  assert all(not {i for i, _ in pairs} & set(banned)
             for pairs, banned in zip(hnsw, exclude))


def test_bad_searches_are_named(tmp_path):
  store = _build(tmp_path / "s")
  with pytest.raises(StoreError, match="exclude must hold one list"):
    store.search(["u0", "u1"], exclude=[["i0"]])
  with pytest.raises(StoreError, match=r"exclude\[0\]: unknown item id 'x'"):
    store.search(["u0"], exclude=[["x"]])
  with pytest.raises(StoreError, match="one of the two"):
    store.search()
  with pytest.raises(StoreError, match=r"shape \(2, 3\), expected \[n, 5\]"):
    store.search(queries=np.zeros((2, 3)), space=store.space())
  with pytest.raises(StoreError, match="k=31"):
    store.search(["u0"], k=31)


# ------------------------------------------------------------ Index files ---

@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_an_exported_index_serves_the_same_neighbours(tmp_path, kind):
  store = _build(tmp_path / "s")
  path = tmp_path / "v1.faiss"
  store.export_index(path, version=1, kind=kind)
  served = load_index(path, store)
  assert served.space == store.space(1) and served.kind == kind
  read = store.read(1)
  assert served.search(read.users, read.space, k=6) == store.search(
      list(USER_IDS[:7]), version=1, k=6, kind=kind)
  with pytest.raises(StoreError, match=re.escape(str(store.space(2)))):
    served.search(store.read(2).users, store.space(2))
  other = _build(tmp_path / "o", seed=1)
  with pytest.raises(StoreError, match="which the store .* does not have"):
    load_index(path, other)


def test_a_tampered_index_or_sidecar_is_refused_by_name(tmp_path):
  store = _build(tmp_path / "s")
  path = tmp_path / "v0.faiss"
  store.export_index(path, version=0, kind="exact")
  sidecar = Path(f"{path}.json")
  original = sidecar.read_text()
  record = json.loads(original)
  record["space"]["version"] = 2
  sidecar.write_text(json.dumps(record))
  with pytest.raises(StoreError, match=f"index sidecar {re.escape(str(sidecar))}"
                     ": checksum mismatch"):
    load_index(path)
  sidecar.write_text(original)
  data = bytearray(path.read_bytes())
  data[-5] ^= 1
  path.write_bytes(bytes(data))
  with pytest.raises(StoreError, match=f"{re.escape(str(path))}: checksum "
                     "mismatch"):
    load_index(path)
  sidecar.unlink()
  with pytest.raises(StoreError, match="index sidecar .* is missing"):
    load_index(path)
  with pytest.raises(StoreError, match="embedding store"):
    store.export_index(tmp_path / "s" / "x.faiss")
