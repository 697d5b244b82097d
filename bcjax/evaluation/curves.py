"""Training curves as TensorBoard event files.

Every trained version's history (`metrics.json`: the mean loss and its
terms, the task loss and the alignment term, Recall@K and,
for the strategies with a backward transformation, the alignment MSE at
every evaluation; post-hoc strategies also their B_k training's MSE) is
written as scalars by the epoch, one event file per strategy and version:

  <run>/tensorboard/<strategy>/v<k>/events.out.tfevents...

`tensorboard --logdir <run>` shows them (a multi-seed run's seed
directories side by side with `--logdir <run>`). They are rebuilt from the
histories at every report, into a staging directory renamed into place, so
a resumed run never holds duplicated or half-written curves.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

from bcjax.runs.rundir import RunDir
from bcjax.util import io

# History keys written under another tag: the post-hoc B_k training.
PREFIXES = {"history": "", "alignment_history": "posthoc/"}


def write_curves(workdir: RunDir | str | os.PathLike,
                 strategies: Sequence[str], num_versions: int) -> Path:
  """Rewrites the run's `tensorboard/` directory from its histories.

  Args:
    workdir: the run directory.
    strategies: the strategies to write (every version complete).
    num_versions: versions per strategy.

  Returns:
    The `tensorboard/` directory.
  """
  from tensorboardX import SummaryWriter  # Only the report needs it.

  run_dir = RunDir.of(workdir)
  target = run_dir.tensorboard_dir

  def build(staging):
    for s in strategies:
      for k in range(num_versions):
        record = run_dir.metrics(s, k)
        writer = SummaryWriter(str(RunDir.curves_dir(staging, s, k)))
        for key, prefix in PREFIXES.items():
          for entry in record.get(key, []):
            for name, value in entry.items():
              if (name != "epoch" and isinstance(value, (int, float))
                  and math.isfinite(value)):
                # TensorBoard tags allow no "@": recall@50 -> recall_at_50.
                writer.add_scalar(prefix + name.replace("@", "_at_"), value,
                                  entry["epoch"])
        writer.close()
  io.build_dir(target, build)
  return target
