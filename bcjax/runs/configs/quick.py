"""CPU-sized settings: the full pipeline on MovieLens-100k on a small CPU.

Three training seeds (the report's intervals need several), trained by two
worker processes pinned to one core each (`bcjax.paper.workers`).

Paper layers and batch size; dims a quarter of the paper's; 60 epochs with
evaluation every 5 and joint/post-hoc selection after epoch 20 (80 epochs
gave the same picture at more cost). Consumers: one hidden size, two dropout
rates, 5 seeds, 40 epochs. Compatibility matrix: No-BC and the two joint
linear strategies (single- vs multi-step loss), 8 epochs, 1 seed: most of
its time is compiling one consumer per task shape and version (docs/records.md
has the timings).
"""

from bcjax.runs.configs import paper


def get_config():
  config = paper.get_config()
  config.preset = "quick"
  config.dims = (64, 80, 96, 112, 128)
  config.seeds = 3
  config.workers = 2
  config.epochs = 60
  config.finetune_epochs = 30
  config.posthoc_epochs = 60
  config.eval_every = 5
  config.min_select_epoch = 20
  config.consumer.epochs = 40
  config.consumer.hidden = (128,)
  config.consumer.dropout = (0.0, 0.5)
  config.consumer.seeds = 5
  config.compat.strategies = ("nobc", "joint-lin-sloss", "joint-lin-mloss")
  config.compat.epochs = 8
  config.compat.seeds = 1
  return config
