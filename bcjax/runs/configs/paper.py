"""The paper's settings, exactly as method §4-§6 state them (for an accelerator)."""

import ml_collections

from bcjax.data import PAPER_TIMES
from bcjax.runs.strategies import BC_ALIGNER_NAME, STRATEGIES


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.preset = "paper"
  config.dataset = "ml100k"
  config.model = "pinsage"       # embedding model family: pinsage, lightgcn
  config.times = PAPER_TIMES
  config.dims = (256, 320, 384, 448, 512)
  config.layers = (2, 2, 3, 3, 3)
  config.epochs = 500            # from-scratch training of every version
  config.finetune_epochs = 250   # finetune-m0, versions >= 1
  config.posthoc_epochs = 200    # post-hoc B_k training
  config.eval_every = 10
  config.min_select_epoch = 50   # joint and post-hoc select strictly after
  config.batch_size = 2048
  config.lr = 1e-3
  config.weight_decay = 0.01     # the BPR regularisation coefficient
  config.lam = 16.0              # weight of the alignment term
  config.seed = 0
  config.seeds = 1               # training seeds: seed, seed + 1, ... (a run
                                 # directory each, the report over them)
  config.workers = 1             # training processes (bcjax.paper.workers); a
                                 # small CPU trains faster with 2 pinned
  config.versions = "all"        # or e.g. "0" / "0,1,2"
  config.layout = ""             # aggregation layout; "" chooses by size
  config.fanout = 0              # neighbour sampling: neighbours per node and
                                 # layer (0: full-graph steps, the paper's)
  config.chunk_batches = 8       # sampled batches per jitted call
  config.recall_batch_users = 256
  config.checkpoint_every = 10   # epochs between checkpoints (0: never)
  config.devices = 1             # devices to train on (0: all; bcjax.core.sharding)
  # Consumers of the unintended tasks (method §7): configs.ConsumerConfig.
  config.consumer = ml_collections.ConfigDict(dict(
      epochs=300, hidden=(128, 256, 512, 1024), dropout=(0.0, 0.25, 0.5),
      seeds=10, batch_size=2048, lr=1e-3))
  # Beyond the paper: the compatibility matrix (configs.CompatConfig):
  # consumers trained at every version of these strategies, scored at every
  # later one; h and dropout those the main consumers chose on validation.
  config.compat = ml_collections.ConfigDict(dict(
      strategies=tuple(STRATEGIES), epochs=300, seeds=10))
  # Beyond the paper: partial backfill of the legacy index at the last
  # version (configs.BackfillConfig, method §11): the old items re-embedded
  # in each policy's order, Recall@K (and the item consumers) per budget.
  config.backfill = ml_collections.ConfigDict(dict(
      strategies=(BC_ALIGNER_NAME, "posthoc-lstsq"),
      policies=("random", "residual", "popularity", "score-error"),
      budgets=(0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0), ks=(10, 50)))
  return config
