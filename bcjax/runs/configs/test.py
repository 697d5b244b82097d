"""Tiny settings for smoke tests: seconds per strategy."""

from bcjax.runs.configs import paper


def get_config():
  config = paper.get_config()
  config.preset = "test"
  config.dims = (8, 8, 12, 12, 16)
  config.layers = (1, 1, 2, 2, 2)
  config.epochs = 4
  config.finetune_epochs = 2
  config.posthoc_epochs = 4
  config.eval_every = 2
  config.min_select_epoch = 2
  config.batch_size = 512
  config.consumer.epochs = 3
  config.consumer.hidden = (16,)
  config.consumer.dropout = (0.0,)
  config.consumer.seeds = 2
  config.consumer.batch_size = 512
  config.compat.strategies = ("joint-lin-mloss",)
  config.compat.epochs = 2
  config.compat.seeds = 1
  config.backfill.strategies = ("joint-lin-mloss",)
  config.backfill.budgets = (0.0, 0.1, 0.5, 1.0)
  return config
