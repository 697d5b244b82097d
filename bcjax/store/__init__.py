"""The versioned embedding store that consumer teams read from (method §1).

Its modules: `layout` (the on-disk format: manifest, files and their
checks), `guard` (the writer lock and the check of a command's output
path), `maps` (a version's stored backward map), `embedding_store`
(`EmbeddingStore`: create, open, read, append) and `search` (a version's
nearest-neighbour index and the top items of a user through it). A paper
run is exported into a store by `bcjax.runs.export`.
"""

from bcjax.store.embedding_store import EmbeddingStore
from bcjax.store.guard import check_output
from bcjax.store.layout import MANIFEST, MAX_MANIFEST_BYTES, StoreError
from bcjax.store.search import VersionIndex, neighbours, version_index

__all__ = ["EmbeddingStore", "MANIFEST", "MAX_MANIFEST_BYTES", "StoreError",
           "VersionIndex", "check_output", "neighbours",
           "version_index"]
