"""bcjax: backward compatible embeddings (Hu et al., KDD 2022) in JAX."""

__version__ = "0.1.0"
