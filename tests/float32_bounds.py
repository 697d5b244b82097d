"""Float32 rounding bounds for tests that compare two different computations.

Two paths to the same value (a kernel and a numpy reference, one layout and
another) sum in different orders, so they agree only up to rounding. For a
dot product of length n evaluated in float32 in any order, the error against
exact arithmetic is at most gamma_n * sum_i |a_i b_i|, with gamma_n =
n u / (1 - n u) and u = 2^-24 the unit roundoff (Higham, "Accuracy and
Stability of Numerical Algorithms", section 3.1). The helpers here turn that
into an elementwise tolerance, with two more roundings for float32 inputs
rounded from float64 and for the stored result.
"""

import numpy as np

UNIT_ROUNDOFF = 2.0**-24


def gamma(n: int) -> float:
  """gamma_n = n u / (1 - n u), the relative bound of an n-term float32 sum."""
  return n * UNIT_ROUNDOFF / (1 - n * UNIT_ROUNDOFF)


def product_bound(a, b) -> np.ndarray:
  """Elementwise bound on |float32(a @ b) - a @ b| for any summation order."""
  a, b = np.abs(np.asarray(a, np.float64)), np.abs(np.asarray(b, np.float64))
  return gamma(a.shape[-1] + 2) * (a @ b)


def assert_matches_product(actual, a, b) -> None:
  """`actual` is `a @ b` up to float32 rounding of an `a.shape[-1]`-term sum."""
  exact = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
  error = np.abs(np.asarray(actual, np.float64) - exact)
  bound = product_bound(a, b)
  worst = np.unravel_index(np.argmax(error - bound), error.shape)
  assert np.all(error <= bound), (
      f"|actual - a @ b| = {error[worst]:.3g} at {worst} exceeds the float32 "
      f"bound {bound[worst]:.3g} of a {np.shape(a)[-1]}-term sum")


def tolerance(terms: int, scale: float = 1.0, depth: int = 1) -> dict:
  """`rtol` and `atol` for two float32 computations of the same value.

  Each side is `depth` chained reductions (sums, dot products, means) of at
  most `terms` terms, plus a few elementwise roundings; `scale` is the size of
  the result had nothing cancelled (for a sum, the sum of the terms' absolute
  values; for a mean, their mean). Each side is then within
  depth * gamma(terms + 2) * scale of the exact value, so the two within
  twice that: the `atol` part, which covers results near zero, where an
  `rtol` alone demands more than float32 can give. Use as
  `np.testing.assert_allclose(a, b, **tolerance(...))` or
  `pytest.approx(b, rel=t["rtol"], abs=t["atol"])`.
  """
  bound = 2 * depth * gamma(terms + 2)
  return dict(rtol=bound, atol=bound * scale)
