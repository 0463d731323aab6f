"""Optimizers: composable parts, named recipes, torch's kernels where exact.

- :func:`create` — ``create("adamw", model, lr=3e-3, weight_decay=0.05)``; without params an
  :class:`OptimizerSpec` to bind later.
- :mod:`descend.optim.parts` — first moment, second moment, bias correction, weight decay, learning-rate
  scaling; :class:`ComposedOptimizer` runs a chain of them as a ``torch.optim.Optimizer``.
- :class:`Newton` — damped Newton's method for small models (needs a closure).
- :func:`table` — which optimizer tracks momentum, second moments, bias correction, generated from the code;
  :func:`describe` — every option.
"""

from __future__ import annotations

from descend.optim import parts
from descend.optim.composed import ComposedOptimizer
from descend.optim.create import OptimizerSpec, create, names
from descend.optim.newton import Newton
from descend.optim.options import OPTIONS, Option, describe
from descend.optim.table import properties, rows, table

__all__ = ["ComposedOptimizer", "Newton", "OPTIONS", "Option", "OptimizerSpec", "create", "describe", "names",
           "parts", "properties", "rows", "table"]
