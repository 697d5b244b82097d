"""bcjax: backward compatible embeddings (Hu et al., KDD 2022) in JAX.

The model-agnostic surface (see the README's "Bring your own model"):

  EmbeddingModel, FlaxModel, FunctionalModel   what a model provides
  Task, BPRTask, TripleSampler, epoch_batches  what a model is trained for
  Lineage                                      a sequence of versions: the
                                               previous model, the chain,
                                               publishing to the store
  fit, Objective, BC_ALIGNER, Result, Schedule train one version compatibly
  keys                                         named PRNG key streams
  transforms, losses                           backward maps and alignment
  metrics, data                                Recall@K, ROC-AUC; datasets
  EmbeddingStore                               the versioned store consumers read
"""

from bcjax import data, keys, losses, metrics, transforms
from bcjax.data import TripleSampler
from bcjax.lineage import Lineage
from bcjax.models.interface import EmbeddingModel, FlaxModel, FunctionalModel
from bcjax.store import EmbeddingStore, StoreError
from bcjax.tasks import BPRTask, Task, epoch_batches
from bcjax.training import (BC_ALIGNER, Checkpointing, Objective, Result,
                            Schedule, embed, fit)

__version__ = "0.1.0"

__all__ = [
    "BC_ALIGNER", "BPRTask", "Checkpointing", "EmbeddingModel",
    "EmbeddingStore", "FlaxModel", "FunctionalModel", "Lineage", "Objective",
    "Result", "Schedule", "StoreError", "Task", "TripleSampler", "data",
    "embed", "epoch_batches", "fit", "keys", "losses", "metrics",
    "transforms",
]
