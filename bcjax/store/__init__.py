"""The versioned embedding store that consumer teams read from (method §1).

Three modules: `layout` (the on-disk format: manifest, files and their
checks), `embedding_store` (`EmbeddingStore`: create, open, read, append) and
`export` (a training run's strategy into a store).
"""

from bcjax.store.embedding_store import EmbeddingStore
from bcjax.store.export import export_run
from bcjax.store.layout import MANIFEST, MAX_MANIFEST_BYTES, StoreError

__all__ = ["EmbeddingStore", "MANIFEST", "MAX_MANIFEST_BYTES", "StoreError",
           "export_run"]
