"""Tiny settings for smoke tests: seconds per strategy."""

from launch.configs import paper


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
  config.consumer_epochs = 3
  config.consumer_hidden = (16,)
  config.consumer_dropout = (0.0,)
  config.consumer_seeds = 2
  config.consumer_batch_size = 512
  config.compat_strategies = ("joint-lin-mloss",)
  config.compat_epochs = 2
  config.compat_seeds = 1
  return config
