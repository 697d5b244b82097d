"""The paper's eight strategies, two closed-form baselines and two post-hoc
adapters, as descriptions.

A strategy says, for versions k >= 1, how the model M_k is obtained and how
B_k is learned; version 0 is the same for all (trained from scratch on the
intended task). Everything a strategy does is read from its `Strategy`:
`bcjax.paper.experiment` runs one function per kind of `model`, and nothing here
runs a loop.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from bcjax.core.epoch import Objective
from bcjax.util import names

# How M_k (k >= 1) is obtained:
#   fixed     - M_0 itself, applied to graph k (fix-m0);
#   finetune  - the previous best model trained further (same d, L);
#   scratch   - a fresh model trained on version k (with `objective`);
#   posthoc   - nobc's M_k; B_k trained alone afterwards (with `objective`);
#   closed    - nobc's M_k; B_k fitted post hoc on the paired vectors (`fit`:
#               a closed-form matrix or an adapter).
Model = Literal["fixed", "finetune", "scratch", "posthoc", "closed"]


@dataclasses.dataclass(frozen=True)
class Strategy:
  """How one strategy trains versions k >= 1.

  Attributes:
    name: the method §6 name.
    model: how M_k is obtained (see `Model`).
    objective: what version k's training optimises.
    backward: the backward transformation each version records, "linear"
      (learned), "notrans" (the first d_{k-1} dims), "identity", or a
      post-hoc fit's kind ("affine", "residual-mlp"; `bcjax.backward.maps`).
    fit: for `closed`, the `bcjax.backward.fits.fit` name: "lstsq",
      "procrustes", "lowrank-affine" or "residual-mlp".
    selects_late: the model (or B_k) is selected only among evaluations
      strictly after `config.min_select_epoch`.
    epochs: the config field that sets the epochs of versions k >= 1.
    keeps_first_size: every version keeps version 0's (d, L) (the model is
      M_0, or M_0 trained further).
    paper_name: how the paper's tables name it (`display_name`).
  """
  name: str
  model: Model
  objective: Objective = Objective()
  backward: Literal["linear", "notrans", "identity", "affine",
                    "residual-mlp"] = "notrans"
  fit: str | None = None
  selects_late: bool = False
  epochs: str = "epochs"
  keeps_first_size: bool = False
  paper_name: str = ""

  @property
  def base(self) -> str | None:
    """The strategy whose models this one reuses (post-hoc methods)."""
    return NOBC if self.model in ("posthoc", "closed") else None


# The strategies the pipeline reads by role: No-BC (every strategy's version
# 0, the post-hoc strategies' models, the intended-task reference), Fix-M0
# (the consumers' and the frozen index's embeddings) and BC-Aligner.
NOBC, FIX_M0, BC_ALIGNER_NAME = "nobc", "fix-m0", "joint-lin-mloss"


def _posthoc(name, paper_name, multi_step):
  # Without the task loss the alignment term stands alone: weight 1.
  return Strategy(name, "posthoc",
                  Objective(train_model=False, transform="linear",
                            multi_step=multi_step, lam=1.0),
                  backward="linear", selects_late=True,
                  epochs="posthoc_epochs", paper_name=paper_name)


def _joint(name, paper_name, transform, multi_step):
  return Strategy(name, "scratch",
                  Objective(transform=transform, multi_step=multi_step),
                  backward="linear" if transform == "linear" else "notrans",
                  selects_late=True, paper_name=paper_name)


def _closed(name, paper_name, backward, fit):
  return Strategy(name, "closed", backward=backward, fit=fit,
                  paper_name=paper_name)


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy(FIX_M0, "fixed", backward="identity", keeps_first_size=True,
             paper_name="Fix-M0"),
    Strategy("finetune-m0", "finetune", backward="identity",
             epochs="finetune_epochs", keeps_first_size=True,
             paper_name="Finetune-M0"),
    Strategy(NOBC, "scratch", paper_name="No-BC"),
    _posthoc("posthoc-lin-sloss", "Post-hoc-Lin-SLoss", multi_step=False),
    _posthoc("posthoc-lin-mloss", "Post-hoc-Lin-MLoss", multi_step=True),
    _joint("joint-notrans-sloss", "Joint-NoTrans-SLoss", "notrans",
           multi_step=False),
    _joint("joint-lin-sloss", "Joint-Lin-SLoss", "linear", multi_step=False),
    _joint(BC_ALIGNER_NAME, "Joint-Lin-MLoss (BC-Aligner)", "linear",
           multi_step=True),
    _closed("posthoc-lstsq", "Post-hoc-Lstsq (ours)", "linear", "lstsq"),
    _closed("posthoc-procrustes", "Post-hoc-Procrustes (ours)", "linear",
            "procrustes"),
    _closed("posthoc-lowrank-affine", "Post-hoc-LowRank-Affine (adapter)",
            "affine", "lowrank-affine"),
    _closed("posthoc-residual-mlp", "Post-hoc-Residual-MLP (adapter)",
            "residual-mlp", "residual-mlp"),
)}
# How tables and plots name the strategies (the paper's names).
PAPER_NAMES = {s.name: s.paper_name for s in STRATEGIES.values()}


def display_name(name: str, markdown: bool = False) -> str:
  """How tables and plots name a strategy: its paper name (`PAPER_NAMES`),
  in bold in a markdown table when it is BC-Aligner, the paper's method
  (`epoch.BC_ALIGNER` is its objective)."""
  shown = PAPER_NAMES.get(name, name)
  return f"**{shown}**" if markdown and name == BC_ALIGNER_NAME else shown


def get(name: str) -> Strategy:
  """Looks a strategy up by its method §6 name.

  Args:
    name: e.g. "nobc", "joint-lin-mloss" (`STRATEGIES`).

  Returns:
    The `Strategy`.

  Raises:
    ValueError: an unknown name (the message lists the known ones).
  """
  return names.lookup(STRATEGIES, name, "strategy")
