"""Tests of bcjax.backward.collapse: a linear chain collapses to its composed
matrix, a non-linear one is distilled and measured on held-out rows, error
growth hop by hop, and the latency-budget choice (no timing: costs are
given, or the clock is injected)."""

import itertools

from float32_bounds import tolerance
import numpy as np
import pytest

from bcjax.backward import chains, collapse, fits
from bcjax.backward.maps import BackwardMap
from bcjax.util import keys

# Compares floats of two computations: `make test-numerics` runs it under
# other XLA CPU kernels.
pytestmark = pytest.mark.numerics


def _linear_chain(rng, dims):
  """`[W_1, ..., W_K]`, W_v `[d_v, d_{v-1}]`, and their maps."""
  ws = [(rng.normal(size=(dims[v], dims[v - 1])) / np.sqrt(dims[v]))
        .astype(np.float32) for v in range(1, len(dims))]
  return ws, [BackwardMap.from_matrix(w) for w in ws]


def _mlp(rng, d_in, d_out, hidden=16, strength=1.0):
  n = lambda *s: rng.normal(size=s).astype(np.float32)
  return BackwardMap("residual-mlp", {
      "w": n(d_in, d_out) / np.sqrt(d_in), "bias": 0.1 * n(1, d_out),
      "w1": n(d_in, hidden) / np.sqrt(d_in), "b1": 0.1 * n(1, hidden),
      "w2": strength * n(hidden, d_out) / np.sqrt(hidden)})


def _mlp_by_hand(m, z):
  """The residual MLP in float64 numpy, independently of `maps`."""
  p = {k: np.asarray(v, np.float64) for k, v in m.params.items()}
  return (z @ p["w"] + p["bias"]
          + np.maximum(z @ p["w1"] + p["b1"], 0.0) @ p["w2"])


def test_a_collapsed_linear_chain_is_the_composed_matrix():
  rng = np.random.default_rng(0)
  dims = (5, 7, 9, 11)
  ws, maps = _linear_chain(rng, dims)
  collapsed = collapse.collapse(maps, 3, 0)
  assert [o.name for o in collapsed.options] == ["chain", "composed"]
  assert collapsed.split is None and collapsed["composed"].error is None
  composed, = collapsed["composed"].maps
  # W_3 W_2 W_1 in float64, rounded once.
  expected = (ws[2].astype(np.float64) @ ws[1] @ ws[0]).astype(np.float32)
  assert np.array_equal(composed.matrix, expected)
  assert np.array_equal(composed.matrix, chains.chain_matrix(ws, 3, 0))
  # Through apply_chain, bit for bit the chain, over several row blocks.
  z = rng.normal(size=(2 * chains.PRODUCT_BLOCK_ROWS + 7, 11)
                 ).astype(np.float32)
  assert np.array_equal(collapsed["composed"](z),
                        chains.apply_chain(maps, z, 3, 0))
  rows = np.array([2050, 3, 1024])
  assert np.array_equal(chains.apply_chain([composed], z, 1, 0, rows),
                        chains.apply_chain(maps, z, 3, 0, rows))
  # And the chain applied map by map in float32, up to rounding.
  sequential = z @ ws[2] @ ws[1] @ ws[0]
  scale = float((np.abs(z) @ np.abs(ws[2]) @ np.abs(ws[1])
                 @ np.abs(ws[0])).max())
  np.testing.assert_allclose(collapsed["composed"](z), sequential,
                             **tolerance(11, scale, depth=4))
  # A sub-chain 3 -> 1 composes W_3 W_2 only.
  sub, = collapse.collapse(maps, 3, 1)["composed"].maps
  assert np.array_equal(sub.matrix, (ws[2].astype(np.float64) @ ws[1])
                        .astype(np.float32))


@pytest.fixture(scope="module")
def distilled():
  """A planted non-linear chain 2 -> 0 (two residual MLPs, 16 -> 12 -> 8)
  distilled into linear, affine and residual-MLP maps."""
  rng = np.random.default_rng(1)
  maps = [_mlp(rng, 12, 8), _mlp(rng, 16, 12)]
  rows = rng.normal(size=(1500, 16)).astype(np.float32)
  key = keys.derive(keys.root(0), "test-collapse")
  with keys.record() as listed:
    result = collapse.collapse(maps, 2, 0, rows, key,
                               kinds=("lstsq", "affine", "residual-mlp"),
                               hidden=64,
                               steps=1500)
  return maps, rows, key, result, listed


def test_a_nonlinear_chain_is_measured_on_rows_it_was_not_fitted_on(
    distilled):
  maps, rows, key, result, _ = distilled
  train, held = result.split
  assert len(held) == 300 and len(train) == 1200
  assert np.intersect1d(train, held).size == 0
  assert np.array_equal(np.union1d(train, held), np.arange(1500))
  # The chain's outputs, by hand in float64.
  target = _mlp_by_hand(maps[0], _mlp_by_hand(maps[1], rows.astype(
      np.float64)))
  for name in ("lstsq", "residual-mlp"):
    option = result[name]
    assert len(option.maps) == 1 and option.error.rows == 300
    # The reported error is that of the held-out rows ...
    mapped = option(rows[held])
    expected = (np.linalg.norm(mapped - target[held])
                / np.linalg.norm(target[held]))
    assert option.error.relative == pytest.approx(expected, rel=1e-4)
    assert option.error.mse == pytest.approx(
        np.mean((mapped - target[held]) ** 2), rel=1e-3)
  # ... and each map was fitted on the training rows only: refitting on
  # them (the chain's float32 outputs) gives the same map.
  chain_train = chains.apply_chain(maps, rows[train], 2, 0)
  refit = fits.lstsq_matrix(rows[train], chain_train)
  np.testing.assert_allclose(result["lstsq"].maps[0].matrix, refit,
                             rtol=1e-5, atol=1e-6)
  mlp = fits.residual_mlp(rows[train], chain_train, keys.derive(
      key, "fit", collapse.DIRECT.index("residual-mlp")), hidden=64,
                          steps=1500)
  for name, value in mlp.params.items():
    np.testing.assert_allclose(result["residual-mlp"].maps[0].params[name],
                               value, rtol=1e-4, atol=1e-5)


def test_a_residual_mlp_collapse_beats_a_linear_one_on_a_nonlinear_chain(
    distilled):
  _, _, _, result, _ = distilled
  mlp = result["residual-mlp"].error
  for linear in ("lstsq", "affine"):
    assert mlp.relative < 0.5 * result[linear].error.relative, result.options
    assert mlp.cosine > result[linear].error.cosine


def test_a_distillation_never_draws_a_key_twice(distilled):
  *_, listed = distilled
  paths = list(listed.values())
  assert not [p for p in paths if " | " in p], paths
  assert any(p.endswith("/held-out") for p in paths)
  assert any("/fit/3" in p for p in paths)  # residual-mlp's fit stream.


def test_an_explicit_split_is_used_and_checked(distilled):
  maps, rows, key, *_ = distilled
  held = np.arange(0, 1500, 5)
  train = np.setdiff1d(np.arange(1500), held)
  result = collapse.collapse(maps, 2, 0, rows, key, kinds=("affine",),
                             split=(train, held))
  assert np.array_equal(result.split[1], held)
  assert result["affine"].error.rows == len(held)
  with pytest.raises(ValueError, match="disjoint"):
    collapse.collapse(maps, 2, 0, rows, key, kinds=("affine",),
                      split=(train, np.append(held, train[0])))


def test_hop_errors_vanish_for_an_exact_linear_chain():
  rng = np.random.default_rng(2)
  dims = (6, 8, 10, 12)
  ws, maps = _linear_chain(rng, dims)
  top = rng.normal(size=(400, 12))
  tables = [top]
  for w in reversed(ws):  # T_{v-1} = T_v W_v exactly (float64).
    tables.insert(0, tables[0] @ w.astype(np.float64))
  hops = collapse.hop_errors(maps, tables, 3, keys.root(0))
  assert [(h.to_version, h.hops) for h in hops] == [(2, 1), (1, 2), (0, 3)]
  for h in hops:
    assert h.chain.relative < 1e-5 and h.direct.relative < 1e-3, h
    assert h.chain.rows == 80 and h.chain.cosine > 1 - 1e-6


def test_hop_errors_grow_with_each_noisy_hop():
  """T_{v-1} = T_v W_v + noise: each hop adds its noise, so version j is
  further from anything version k predicts the more hops lie between."""
  rng = np.random.default_rng(3)
  dims, n = (8, 10, 12, 14), 3000
  ws, _ = _linear_chain(rng, dims)
  tables = [rng.normal(size=(n, 14))]
  for w in reversed(ws):
    tables.insert(0, tables[0] @ w + 0.3 * rng.normal(size=(n, w.shape[1])))
  train, held = collapse.held_out_split(n, keys.root(1))
  maps = [BackwardMap.from_matrix(fits.lstsq_matrix(
      tables[v][train], tables[v - 1][train])) for v in range(1, 4)]
  hops = collapse.hop_errors(maps, tables, 3, keys.root(1), fit="lstsq",
                             split=(train, held))
  chain = [h.chain.relative for h in hops]
  direct = [h.direct.relative for h in hops]
  assert 0.1 < chain[0] < chain[1] < chain[2], chain
  assert direct[0] < direct[2], direct
  # The chain does no better than one map fitted straight to version j.
  for h in hops:
    assert h.chain.relative > 0.97 * h.direct.relative, h


def _options(**costs):
  eye = (BackwardMap.from_matrix(np.eye(4)),)
  errors = {"chain": None, "residual-mlp": 0.05, "lstsq": 0.3}
  return [collapse.Option(
      name, eye, None if errors[name] is None else
      collapse.Error(errors[name] ** 2, errors[name], 1 - errors[name], 10),
      cost) for name, cost in costs.items()]


def test_the_budget_picks_the_chain_when_generous_and_a_collapse_when_tight():
  options = _options(chain=50.0, **{"residual-mlp": 8.0}, lstsq=2.0)
  generous = collapse.choose_within_budget(options, 100)
  assert generous.option.name == "chain" and "over budget" not in \
      generous.reason
  tight = collapse.choose_within_budget(options, 10)
  assert tight.option.name == "residual-mlp"
  assert "over budget: chain" in tight.reason
  assert collapse.choose_within_budget(options, 3).option.name == "lstsq"
  with pytest.raises(ValueError, match=r"budget of 1\.5 us per query; the "
                     "cheapest is lstsq"):
    collapse.choose_within_budget(options, 1.5)
  # Ranked by a quality the caller measured instead (higher is better).
  quality = {"chain": 0.27, "residual-mlp": 0.28, "lstsq": 0.26}
  assert collapse.choose_within_budget(options, 100, quality).option.name == \
      "residual-mlp"
  with pytest.raises(ValueError, match="without a cost or quality"):
    collapse.choose_within_budget(_options(chain=None, lstsq=2.0), 10)
  with pytest.raises(ValueError, match="must be positive"):
    collapse.choose_within_budget(options, 0)


def test_measure_records_costs_from_the_clock_it_is_given():
  rng = np.random.default_rng(4)
  _, maps = _linear_chain(rng, (3, 4, 5))
  ticks = itertools.count(step=0.5)  # Every call appears to take 0.5 s.
  measured = collapse.measure(collapse.collapse(maps, 2, 0),
                              np.ones((1000, 5)), repeats=3,
                              clock=lambda: next(ticks))
  for option in measured.options:
    assert option.cost_us == pytest.approx(500.0)
    assert option.cost_spread_us == pytest.approx((500.0, 500.0))
  assert collapse.choose_within_budget(measured, 600).option.name == "chain"


def test_bad_input_is_refused_by_name():
  rng = np.random.default_rng(5)
  _, maps = _linear_chain(rng, (3, 4, 5))
  rows = rng.normal(size=(100, 5))
  mlp = [_mlp(rng, 4, 3), _mlp(rng, 5, 4)]
  key = keys.root(0)
  with pytest.raises(ValueError, match="B_2 gives 6 dims but B_1 reads 4"):
    collapse.collapse([maps[0], BackwardMap.from_matrix(np.ones((5, 6)))],
                      2, 0)
  with pytest.raises(ValueError, match="B_1 is missing"):
    collapse.collapse([None, maps[1]], 2, 0)
  with pytest.raises(ValueError, match="name no chain"):
    collapse.collapse(maps, 1, 1)
  with pytest.raises(ValueError, match=r"expected rows \[n, 5\], got shape "
                     r"\(100, 4\)"):
    collapse.collapse(mlp, 2, 0, rows[:, :4], key)
  with pytest.raises(ValueError, match="too few rows for a held-out split: "
                     "20 rows"):
    collapse.collapse(mlp, 2, 0, rows[:20], key)
  with pytest.raises(ValueError, match="only a chain of linear maps"):
    collapse.collapse(mlp, 2, 0, rows, key, kinds=("composed",))
  with pytest.raises(ValueError, match="unknown"):
    collapse.collapse(mlp, 2, 0, rows, key, kinds=("spline",))
  with pytest.raises(ValueError, match="needs sample rows"):
    collapse.collapse(mlp, 2, 0)
  with pytest.raises(ValueError, match="same rows"):
    collapse.hop_errors(maps, [rows[:50, :3], rows[:60, :4], rows[:, :5]], 2,
                        key)
  with pytest.raises(ValueError, match="2 tables"):
    collapse.hop_errors(maps, [rows[:, :3], rows[:, :4]], 2, key)
