"""CPU-sized settings: the full pipeline on MovieLens-100k on 2 cores."""

from launch.configs import paper


def get_config():
  config = paper.get_config()
  config.preset = "quick"
  config.dims = (64, 80, 96, 112, 128)
  config.epochs = 60
  config.finetune_epochs = 30
  config.posthoc_epochs = 60
  config.eval_every = 5
  config.min_select_epoch = 20
  config.consumer_epochs = 30
  config.consumer_hidden = (128,)
  config.consumer_dropout = (0.0, 0.5)
  config.consumer_seeds = 3
  return config
