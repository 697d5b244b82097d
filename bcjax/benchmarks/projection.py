"""The wall time of a whole preset, projected from the measured figures.

`launch.benchmark --suite=accelerator` times one epoch and one evaluation of
every version at the preset's sizes (`training_epoch`) and each objective's
epoch at one version (`strategy_overheads`); `paper_wall_time` adds up what
`launch.reproduce` would train with them: version 0 once (every strategy's
v0 is nobc's), then every strategy's versions k >= 1, each as its
`bcjax.runs.strategies` description says, so one can tell before starting
whether the paper preset (500 epochs) fits in the time at hand.
"""

from __future__ import annotations

import math

from bcjax.runs import strategies

# What the projection leaves out, stated with its figure.
EXCLUDED = ("the consumers of the unintended tasks and the compatibility "
            "stage (not timed by this suite), and sampling overlap: epochs "
            "are counted as measured, host sampling included")


def paper_wall_time(config, versions: dict, overheads: dict,
                    names=tuple(strategies.STRATEGIES)) -> dict:
  """Seconds `launch.reproduce` would spend training `names` under `config`.

  Per training: epochs x the measured epoch (scaled by the objective's
  measured cost relative to the plain epoch), plus one evaluation every
  `config.eval_every` epochs and the last, plus one compilation (an upper
  bound: programs of equal shapes compile once). Fine-tuning keeps version
  0's model size: its epoch is version 0's, scaled by version k's step
  count. Post-hoc B_k training counts its epochs (its evaluation is an MSE,
  not counted); closed-form fits count one solve; M_0 applied to later
  versions (fix-m0) counts nothing.

  Args:
    config: the preset (`epochs`, `finetune_epochs`, `posthoc_epochs`,
      `eval_every`, `times`).
    versions: `training_epoch`'s figures by version ("0", "1", ...); every
      version of the preset is needed.
    overheads: `strategy_overheads`' figures (`epochs_s` by objective,
      `posthoc_<fit>_s` of every closed-form or adapter fit).
    names: the strategies to count (default all).

  Returns:
    ``{"total_s", "total_h", "by_strategy": {name: seconds}, "version0_s",``
    ``"trainings", "excluded"}``; version 0 is counted once, in `version0_s`.

  Raises:
    ValueError: a version of the preset without figures.
  """
  num_versions = len(config.times) - 1
  missing = [k for k in range(num_versions) if str(k) not in versions]
  if missing:
    raise ValueError(f"projection: no epoch figures for versions {missing}; "
                     f"the preset has {num_versions} (time them all)")
  epochs_s = {name: e["median"] for name, e in overheads["epochs_s"].items()}
  relative = {name: t / epochs_s["plain"] for name, t in epochs_s.items()}

  def training(k: int, epochs: int, epoch_s: float, evaluates: bool) -> float:
    figures = versions[str(k)]
    evaluations = math.ceil(epochs / config.eval_every) if evaluates else 0
    return (epochs * epoch_s + evaluations * figures["eval_s"]
            + figures["compile_s"])

  v0 = versions["0"]
  version0_s = training(0, config.epochs, v0["epoch_s"], True)
  by_strategy, trainings = {}, 1
  for name in names:
    strategy = strategies.get(name)
    total = 0.0
    for k in range(1, num_versions):
      figures = versions[str(k)]
      epochs = int(config[strategy.epochs])
      objective = strategy.objective
      if strategy.model == "scratch":
        kind = ("plain" if not objective.aligns else
                "mloss" if objective.multi_step else "sloss")
        total += training(k, epochs, figures["epoch_s"] * relative[kind], True)
      elif strategy.model == "finetune":
        epoch_s = v0["epoch_s"] * figures["steps"] / v0["steps"]
        total += training(0, epochs, epoch_s, True)
      elif strategy.model == "posthoc":
        total += training(k, epochs, figures["epoch_s"] * relative["posthoc"],
                          False)
      elif strategy.model == "closed":
        total += overheads[f"posthoc_{strategy.fit}_s"]
      trainings += strategy.model in ("scratch", "finetune", "posthoc")
    by_strategy[name] = total
  total_s = version0_s + sum(by_strategy.values())
  return {"total_s": total_s, "total_h": total_s / 3600,
          "version0_s": version0_s, "by_strategy": by_strategy,
          "trainings": trainings, "excluded": EXCLUDED}
