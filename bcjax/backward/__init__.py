"""Backward maps B_k (version k's embeddings into version k-1's space).

Three modules: `maps`, the registry of kinds (linear, notrans, affine,
residual MLP) and `BackwardMap`, one map with its parameters; `chains`,
chains B_{j+1}(... B_k(z)) under one precision rule, row-blocked; `fits`,
maps fitted post hoc on paired rows (least squares, Procrustes, low-rank
affine, residual MLP).
"""

from bcjax.backward import chains, fits, maps
from bcjax.backward.chains import apply_chain, chain_matrix
from bcjax.backward.maps import BackwardMap

__all__ = ["BackwardMap", "apply_chain", "chain_matrix", "chains", "fits",
           "maps"]
