"""bcjax: backward compatible embeddings (Hu et al., KDD 2022) in JAX.

The model-agnostic surface (see the README's "Bring your own model"):

  EmbeddingModel, FlaxModel, FunctionalModel   what a model provides
  Task, BPRTask                                what a model is trained for
  fit, Objective, BC_ALIGNER, Result           train version k compatibly
  transforms, losses                           backward maps and alignment
  EmbeddingStore                               the versioned store consumers read
"""

from bcjax import losses, transforms
from bcjax.models.interface import EmbeddingModel, FlaxModel, FunctionalModel
from bcjax.store import EmbeddingStore, StoreError
from bcjax.tasks import BPRTask, Task
from bcjax.training import (BC_ALIGNER, Checkpointing, Objective, Result,
                            embed, fit)

__version__ = "0.1.0"

__all__ = [
    "BC_ALIGNER", "BPRTask", "Checkpointing", "EmbeddingModel",
    "EmbeddingStore", "FlaxModel", "FunctionalModel", "Objective", "Result",
    "StoreError", "Task", "embed", "fit", "losses", "transforms",
]
