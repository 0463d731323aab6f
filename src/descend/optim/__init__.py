"""Optimizers: composable parts, named recipes, torch's kernels where exact.

- :func:`create` — ``create("adamw", model, lr=3e-3, weight_decay=0.05)``; without params an
  :class:`OptimizerSpec` to bind later.
- :mod:`descend.optim.parts` — momentum, Adam's and RMSProp's scaling (bias correction a flag of each), weight
  decay, learning-rate scaling; :class:`ComposedOptimizer` runs a chain of them as a ``torch.optim.Optimizer``,
  and :mod:`descend.optim.named` has one function per named optimizer returning its chain.
- :class:`Newton` — damped Newton's method for small models (needs a closure).
- The newer methods, each equal to its authors' code: Lion (:mod:`~descend.optim.lion`, a part), :class:`Muon`,
  Adafactor (torch's), :class:`ScheduleFreeSGD` / :class:`ScheduleFreeAdamW`, :class:`Prodigy`,
  :class:`DAdaptSGD`; SAM and Lookahead around any of them (:mod:`~descend.optim.wrappers`).
- :func:`table` — which optimizer tracks momentum, second moments, bias correction, generated from the code;
  :func:`describe` — every option.
"""

from __future__ import annotations

from descend.optim import parts
from descend.optim.composed import ComposedOptimizer
from descend.optim.create import OptimizerSpec, create, names
from descend.optim.dadaptation import DAdaptSGD
from descend.optim.muon import Muon
from descend.optim.newton import Newton
from descend.optim.options import OPTIONS, Option, describe
from descend.optim.prodigy import Prodigy
from descend.optim.schedule_free import ScheduleFreeAdamW, ScheduleFreeSGD
from descend.optim.table import markdown, properties, rows, table
from descend.optim.wrappers import lookahead, sam

__all__ = ["ComposedOptimizer", "DAdaptSGD", "Muon", "Newton", "OPTIONS", "Option", "OptimizerSpec", "Prodigy",
           "ScheduleFreeAdamW", "ScheduleFreeSGD", "create", "describe", "lookahead", "markdown", "names", "parts",
           "properties", "rows", "sam", "table"]
