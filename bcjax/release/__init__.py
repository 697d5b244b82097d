"""What an embedding team does around a release, for any model.

`lineage.Lineage` trains a sequence of versions through the public API and
publishes them to an `EmbeddingStore`.
"""
