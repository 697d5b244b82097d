"""The release gate on a small problem whose correct backward map is known:
version 1 is version 0 times a matrix with orthonormal rows A, so W_1 = A^T
maps it back exactly; a wrong map must be caught."""

import os
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest

from bcjax.release import gate
from bcjax.store import EmbeddingStore, StoreError, registry
from bcjax.store.consumer_kinds import LinearHead

REPO = Path(__file__).resolve().parents[1]
USERS, ITEMS, D0, D1 = 60, 80, 6, 8


def _ids(prefix, n):
  return [f"{prefix}{i}" for i in range(n)]


def _problem(tmp_path):
  """A store at version 0 with a linear classifier and a frozen index, and
  version 1's tables (10 new users and items) with its correct W_1."""
  rng = np.random.default_rng(0)
  users = rng.normal(size=(USERS, D0)).astype(np.float32)
  items = rng.normal(size=(ITEMS, D0)).astype(np.float32)
  store = EmbeddingStore.create(tmp_path / "store", users, items,
                                _ids("u", USERS), _ids("i", ITEMS), "toy",
                                "toy")
  labels = items[:, 0] + 0.3 * rng.normal(size=ITEMS) > 0
  registry.register_classifier(
      store, "item-head", 0, LinearHead(np.array([1, .4, 0, -.3, 0, 0]), .1),
      ["item"], _ids("i", ITEMS), labels)
  top = np.argsort(-(users[:20] @ items.T), axis=1)
  registry.register_index(
      store, "frozen", 0, _ids("u", 20),
      [[f"i{t}" for t in row[1:4]] for row in top],
      [[f"i{row[0]}"] for row in top], k=5)
  a = np.linalg.qr(rng.normal(size=(D1, D1)))[0][:D0]  # A A^T = I
  new_users = np.concatenate([users @ a, rng.normal(size=(10, D1))])
  new_items = np.concatenate([items @ a, 0.01 * rng.normal(size=(10, D1))])
  candidate = gate.Candidate(new_users, new_items, a.T, _ids("u", USERS + 10),
                             _ids("i", ITEMS + 10))
  return store, candidate


def _with_map(candidate, backward):
  return gate.Candidate(candidate.users, candidate.items, backward,
                        candidate.user_ids, candidate.item_ids)


def test_an_identity_release_passes_with_zero_drop(tmp_path):
  store, _ = _problem(tmp_path)
  users, items = store.embeddings(0)
  report = gate.check(store, gate.Candidate(users, items, np.eye(D0),
                                            _ids("u", USERS), _ids("i", ITEMS)))
  assert report.passed and report.version == 1 and len(report.checks) == 3
  for c in report.checks:
    ratio = "ceiling" in c.measure
    assert (c.estimate, c.low, c.high) == ((1.0,) * 3 if ratio else (0.0,) * 3)


def test_the_correct_map_passes_and_planted_bad_maps_are_caught(tmp_path):
  store, candidate = _problem(tmp_path)
  good = gate.check(store, candidate)
  assert good.passed, good.table()
  w = np.asarray(candidate.backward)
  permuted = gate.check(store, gate.Candidate(
      candidate.users, candidate.items, w[:, np.roll(np.arange(D0), 1)],
      candidate.user_ids, candidate.item_ids))
  random = gate.check(store, gate.Candidate(
      candidate.users, candidate.items,
      np.random.default_rng(1).normal(size=w.shape), candidate.user_ids,
      candidate.item_ids))
  for bad in (permuted, random):
    assert not bad.passed
    assert bad.failing == ["item-head", "frozen"], bad.table()
    assert "| FAIL |" in bad.table() and "FAIL (" in bad.table()
  drop = permuted.checks[0]
  assert drop.estimate < -0.1 and drop.high < -0.01
  assert good.as_json()["passed"] and not permuted.as_json()["passed"]


def test_the_threshold_rule_and_the_bc_criterion_by_hand(tmp_path):
  np.testing.assert_allclose(gate.interval(np.arange(101.0), 0.9), (5, 95),
                             rtol=0, atol=1e-12)
  check = lambda low, high, strict=False: gate.Check(
      "c", "index", 0, "m", 0, 0, 0, low, high, -0.01, strict)
  assert check(-0.01, 0.2).verdict == "pass" and check(-0.01, 0, True).passed
  assert check(-0.02, -0.0101).verdict == "FAIL"
  assert not check(-0.02, -0.0101).passed
  assert check(-0.02, 0.1).verdict == "unsure" and check(-0.02, 0.1).passed
  assert not check(-0.02, 0.1, strict=True).passed
  assert not check(np.nan, np.nan).passed
  # Items on the axes; a query's one relevant item is item 1 = [0, 1], K=1.
  # Version 0's users 0-3 retrieve item 0 (recall 0), users 4-7 item 1.
  items = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], np.float32)
  old = np.repeat(np.array([[1, .1], [.1, 1]], np.float32), 4, axis=0)
  store = EmbeddingStore.create(tmp_path / "s", old, items, _ids("u", 8),
                                _ids("i", 4), "toy", "toy")
  registry.register_index(store, "axes", 0, _ids("u", 8), [["i1"]] * 8, k=1)
  for new, estimate in ((old[::-1], 0.0), (old[[4] * 8], 0.5),
                        (old[[0] * 8], -0.5)):
    report = gate.check(store, gate.Candidate(new, items, np.eye(2),
                                              _ids("u", 8), _ids("i", 4)))
    ceiling, bc = report.checks
    assert (ceiling.estimate, ceiling.verdict) == (1.0, "pass")
    assert (bc.old, bc.estimate) == (0.5, estimate)
    assert bc.low <= estimate <= bc.high
    # Swapped users: gains and losses cancel, the interval straddles 0.
    assert bc.verdict == {0.0: "unsure", 0.5: "pass", -0.5: "FAIL"}[estimate]
    assert report.passed == (estimate >= 0)


def test_publish_refuses_a_failing_candidate_and_force_appends(tmp_path):
  store, candidate = _problem(tmp_path)
  manifest = (tmp_path / "store" / "manifest.json").read_bytes()
  bad = gate.Candidate(candidate.users, candidate.items,
                       np.asarray(candidate.backward)[:, ::-1],
                       candidate.user_ids, candidate.item_ids)
  with pytest.raises(gate.ReleaseRefused, match="item-head, frozen"):
    gate.publish(store, bad)
  assert (tmp_path / "store" / "manifest.json").read_bytes() == manifest
  assert EmbeddingStore.open(store.path).latest_version == 0
  version, report = gate.publish(store, candidate)
  assert version == 1 and report.passed
  # Version 2 (W_2 = I) is checked through the stored chain 2 -> 1 -> 0.
  version, report = gate.publish(store, gate.Candidate(
      candidate.users, candidate.items, np.eye(D1), candidate.user_ids,
      candidate.item_ids))
  assert version == 2 and report.passed
  lines = []
  version, report = gate.publish(store, _with_map(bad, np.eye(D1)[::-1]),
                                 force=True, log=lines.append)
  assert version == 3 and not report.passed and "published anyway" in lines[0]


def test_a_bad_candidate_is_refused_by_name(tmp_path):
  store, candidate = _problem(tmp_path)
  with pytest.raises(StoreError, match=r"expected \[d_1, 6\]"):
    gate.check(store, _with_map(candidate, np.eye(D1)))
  with pytest.raises(StoreError, match="not an extension"):
    gate.check(store, gate.Candidate(candidate.users, candidate.items,
                                     candidate.backward,
                                     candidate.user_ids[::-1],
                                     candidate.item_ids))
  (tmp_path / "c.npz").write_bytes(b"not a zip")
  with pytest.raises(StoreError, match="c.npz: not a readable"):
    gate.load_candidate(tmp_path / "c.npz")


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "launch.release", *args],
                        cwd=REPO, capture_output=True, text=True,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))


def test_the_command_line_exits_1_on_failure(tmp_path):
  store, candidate = _problem(tmp_path)
  good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
  gate.save_candidate(good, candidate)
  gate.save_candidate(bad, _with_map(
      candidate, np.asarray(candidate.backward)[:, ::-1]))
  loaded = gate.load_candidate(good)
  np.testing.assert_array_equal(loaded.backward, np.asarray(
      candidate.backward, np.float32))
  flags = [f"--store={store.path}", "--resamples=50"]
  users, items = store.embeddings(0)
  np.savez(tmp_path / "head.npz", inputs=np.array(["user"]),
           ids=np.array(_ids("u", USERS)), labels=users[:, 1] > 0,
           weights=np.eye(D0)[1], bias=np.float64(0))
  registered = _cli("register", "--kind=classifier", "--name=user-head",
                    "--version=0", f"--consumer={tmp_path / 'head.npz'}",
                    *flags)
  assert registered.returncode == 0, registered.stderr
  assert "baseline 1.0000" in registered.stdout
  checked = _cli("check", f"--candidate={bad}", *flags)
  assert checked.returncode == 1, checked.stderr
  assert "FAIL" in checked.stdout and "user-head" in checked.stdout
  refused = _cli("publish", f"--candidate={bad}", *flags)
  assert refused.returncode == 1 and "refused" in refused.stdout
  assert EmbeddingStore.open(store.path).latest_version == 0
  published = _cli("publish", f"--candidate={good}",
                   f"--report={tmp_path / 'report.json'}", *flags)
  assert published.returncode == 0, published.stderr + published.stdout
  assert "published version 1" in published.stdout
  assert (tmp_path / "report.json").is_file()
