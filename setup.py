"""Installs bcjax: backward compatible embeddings in JAX."""

import setuptools

setuptools.setup(
    name="bcjax",
    version="0.1.0",
    description="Backward compatible embeddings (KDD 2022) in JAX.",
    # Only the library: launch/ holds the repository's entry points, run from
    # a checkout as `python -m launch.<script>`.
    packages=setuptools.find_packages(include=["bcjax", "bcjax.*"]),
    python_requires=">=3.11",  # 3.11 to 3.13 tested
    install_requires=[
        # Both ends tested: jax 0.10.2 on Python 3.11 (`make test`) and the
        # newest release the range admits on Python 3.12+ (`make
        # test-newest`). The upper bound is the next minor release, which is
        # tested before it is admitted.
        "jax>=0.10.2,<0.13",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "chex>=0.1.92",
        "numpy>=2.0",
        "absl-py>=2.0",
        "ml_collections>=1.1",
        "matplotlib>=3.8",  # the report's plots (PNG)
        "scipy>=1.11",  # Student-t quantiles of the intervals over seeds
        "tensorboardX>=2.6",  # training curves as TensorBoard event files
        # The legacy-index consumer (bcjax.evaluation.retrieval): exact and HNSW
        # inner-product indexes, as a vector-search team would run them.
        "faiss-cpu>=1.15.1",
    ],
    extras_require={"test": [
        "pytest>=8", "hypothesis>=6.100",
        # tests/test_colabs.py executes the notebooks in colabs/.
        "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29",
        # tests/test_colabs.py builds this checkout in a pip dry run.
        "setuptools>=75",
        # tests/test_docs.py builds the documentation (make docs).
        "sphinx>=8", "myst-parser>=4",
    ],
        # The text benchmark (bcjax.text, make text-benchmark): sentence
        # encoders run offline. torch pinned: 2.13.0's CPU wheel; an open
        # range can pull a multi-GB CUDA build.
        "text": ["torch==2.13.0", "transformers>=4.45", "tokenizers>=0.20",
                 "onnxruntime>=1.18"],
    },
)
