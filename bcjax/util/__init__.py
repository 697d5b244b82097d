"""Floor 0: helpers every layer uses, importing nothing else from bcjax.

Atomic and checked files (`io`), named PRNG key streams (`keys`), finite
means and number formatting (`numbers`), progress lines (`progress`),
confidence intervals (`intervals`), host memory figures (`memory`) and the
padding of ragged batches to fixed shapes (`padding`).
"""
