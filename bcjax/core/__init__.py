"""The model-agnostic core: training one embedding version compatibly.

What a model is trained for (`tasks`), the losses (`losses`), one compiled
epoch (`epoch`), the one training loop with best-keeping, NaN guard and
checkpoints (`loop`, `checkpointing`), `training.fit`, seeds under vmap
(`sweep`), the node layout across versions (`nodes`), Recall@K and ROC-AUC
(`metrics`), input checks (`checks`) and device sharding (`sharding`). It
knows nothing of the paper's experiment, its strategies or its run folders.
"""
