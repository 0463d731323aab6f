"""Reproduce the classic training experiments as reports, and compare training variants fairly over seeds.

- :func:`bias_variance` / :func:`decompose` — the bias-variance(-noise) decomposition for squared, 0-1 and
  cross-entropy loss, with the variance split into initialisation and data parts and bootstrap intervals.
- :func:`run` — one lab by name (:data:`LABS`), returning a :class:`LabResult` (measured numbers + figures);
  ``result.write(out)`` writes ``report.html`` and ``lab.json``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from descend.errors import UserError
from descend.lab.base import LabResult, timed
from descend.lab.decomposition import Decomposition, bias_variance, decompose

#: name -> (module, function, what it shows)
LABS: dict[str, tuple[str, str, str]] = {
    "bias-variance": ("complexity", "bias_variance_lab",
                      "bias², variance and noise over polynomial degree, MLP width, epochs and weight decay"),
    "regularization": ("penalties", "regularization_lab",
                       "L1 sparsity vs L2 grouping on correlated features; ridge closed form = gradient descent"),
    "weight-decay": ("penalties", "weight_decay_lab",
                     "train/test loss vs weight decay (d = 200, n = 20); L2 vs decoupled decay for SGD and Adam"),
    "optimizer-paths": ("surfaces", "run", "every optimizer on a ravine, a saddle, Rosenbrock and a local minimum"),
    "learning-rates": ("rates", "learning_rates_lab", "learning rates too small, good, too large and divergent"),
    "schedules": ("rates", "schedules_lab", "every learning-rate schedule's curve over one run"),
    "search": ("rates", "search_lab", "grid vs random search when only one of two hyper-parameters matters"),
    "batchnorm": ("training", "batchnorm_lab", "a deep sigmoid network with and without batch normalization"),
    "early-stopping": ("training", "early_stopping_lab", "validation curve, best epoch and restored weights"),
    "double-descent": ("complexity", "double_descent_lab", "test error vs width with label noise on a small set"),
    "optimizers": ("optimizers", "optimizers_lab",
                   "every optimizer tuned alike (AlgoPerf-style): final accuracy, time to a target, P(beats AdamW)"),
}


def names() -> list[str]:
    return list(LABS)


def run(name: str, *, quick: bool = False, out: str | Path | None = None) -> LabResult:
    """Run lab ``name`` (``quick``: fewer repetitions, for tests); with ``out``, write its report there."""
    if name not in LABS:
        raise UserError(f"unknown lab {name!r}; choose one of: {', '.join(LABS)}")
    module, function, _ = LABS[name]
    fn = getattr(importlib.import_module(f"descend.lab.{module}"), function)
    result = timed(fn, quick)
    if out is not None:
        result.write(out)
    return result


__all__ = ["Decomposition", "LABS", "LabResult", "bias_variance", "decompose", "names", "run"]
