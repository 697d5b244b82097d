"""The suite's markers: `numerics` files compare floats of two different
computations, and `make test-numerics` runs them under other XLA CPU
kernels (tests/float32_bounds.py derives their tolerances)."""


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "numerics: compares floats of two computations (make "
      "test-numerics runs these under other XLA CPU kernels)")
