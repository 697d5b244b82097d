"""The versioned embedding store that consumer teams read from (method §1).

Five modules: `layout` (the on-disk format: manifest, files and their
checks), `guard` (the writer lock and the check of a command's output
path), `embedding_store` (`EmbeddingStore`: create, open, read, append),
`export` (a training run's strategy into a store) and `search` (a version's
nearest-neighbour index and the top items of a user through it).
"""

from bcjax.store.embedding_store import EmbeddingStore
from bcjax.store.export import export_run
from bcjax.store.guard import check_output
from bcjax.store.layout import MANIFEST, MAX_MANIFEST_BYTES, StoreError
from bcjax.store.search import VersionIndex, neighbours, version_index

__all__ = ["EmbeddingStore", "MANIFEST", "MAX_MANIFEST_BYTES", "StoreError",
           "VersionIndex", "check_output", "export_run", "neighbours",
           "version_index"]
