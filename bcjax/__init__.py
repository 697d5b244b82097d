"""bcjax: backward compatible embeddings (Hu et al., KDD 2022) in JAX.

The model-agnostic surface (see the README's "Bring your own model")::

  EmbeddingModel, FlaxModel, FunctionalModel   what a model provides
  Task, BPRTask, TripleSampler, epoch_batches  what a model is trained for
  Lineage, fill_from_neighbours                a sequence of versions: the
                                               previous model, the chain,
                                               new nodes, publishing
  previous_ids, split_nodes                    the node layout (users, then
                                               items) across versions
  fit, Objective, BC_ALIGNER, Result, Schedule train one version compatibly
  keys                                         named PRNG key streams
  backward, losses                             backward maps and alignment
  metrics, data                                Recall@K, ROC-AUC; datasets
  EmbeddingStore                               the versioned store consumers read
  registry, gate, backfill                     a release: consumers registered
                                               with the store, the gate before
                                               publishing, partial backfill
  reproduce, print_report                      the paper's main job and its
                                               report (`bcjax.paper.pipeline`,
                                               imported on first use)
"""

from bcjax import backward, data
from bcjax.core import losses, metrics
from bcjax.core.nodes import previous_ids, split_nodes
from bcjax.core.tasks import BPRTask, Task, epoch_batches
from bcjax.core.epoch import BC_ALIGNER, Objective, embed
from bcjax.core.training import Result, fit
from bcjax.data import TripleSampler
from bcjax.models.interface import EmbeddingModel, FlaxModel, FunctionalModel
from bcjax.release import backfill, gate
from bcjax.release.lineage import Lineage, fill_from_neighbours
from bcjax.store import EmbeddingStore, StoreError, registry
from bcjax.util import keys
from bcjax.util.checkpointing import Checkpointing
from bcjax.util.loop import Schedule

__version__ = "0.1.0"

# The main job pulls in the whole experiment (consumers, faiss, plots): it is
# imported when first asked for, so `import bcjax` stays light.
_PIPELINE = ("reproduce", "print_report")


def __getattr__(name: str):
  if name in _PIPELINE:
    from bcjax.paper import pipeline  # pylint: disable=import-outside-toplevel
    return getattr(pipeline, name)
  raise AttributeError(f"module 'bcjax' has no attribute {name!r}")


__all__ = [
    "BC_ALIGNER", "BPRTask", "Checkpointing", "EmbeddingModel",
    "EmbeddingStore", "FlaxModel", "FunctionalModel", "Lineage", "Objective",
    "Result", "Schedule", "StoreError", "Task", "TripleSampler", "backfill",
    "backward", "data", "embed", "epoch_batches", "fill_from_neighbours",
    "fit", "gate", "keys", "losses", "metrics", "previous_ids", "print_report",
    "registry", "reproduce", "split_nodes",
]
