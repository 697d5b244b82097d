"""The versioned embedding store that consumer teams read from (method §1).

Its modules: `layout` (the on-disk format: manifest, files and their
checks), `guard` (the writer lock and the check of a command's output
path), `maps` (a version's stored backward map), `provenance` (each
version's `Space` and fingerprint, the version that added each row),
`reader` (the read side: reads with their space, rows by id, new rows,
search), `embedding_store` (`EmbeddingStore`: create, open, append),
`search` (a version's nearest-neighbour index, which refuses queries of
another space) and `index_file` (an index exported for serving, and its
checked loader). A paper run is exported into a store by
`bcjax.runs.export`.
"""

from bcjax.store.embedding_store import EmbeddingStore
from bcjax.store.guard import check_output
from bcjax.store.index_file import load_index
from bcjax.store.layout import MANIFEST, MAX_MANIFEST_BYTES, StoreError
from bcjax.store.provenance import RowVersions, Space
from bcjax.store.reader import VersionRead
from bcjax.store.search import VersionIndex, neighbours, version_index

__all__ = ["EmbeddingStore", "MANIFEST", "MAX_MANIFEST_BYTES", "RowVersions",
           "Space", "StoreError", "VersionIndex", "VersionRead",
           "check_output", "load_index", "neighbours", "version_index"]
