"""Learning-rate schedules: pure functions of training progress, plus warmup and the plateau controller.

Three families cover common practice: step decay every few epochs; smooth decay (exponential, cosine as in
SGDR, Loshchilov & Hutter 2017, linear, 1/t, 1/√t); and reducing the rate when the validation loss stops
improving. A linear warmup (Goyal et al. 2017) can precede any of them.

- :mod:`~descend.schedules.base` — :class:`Schedule`, what the trainer calls (``bind``, ``lr``, ``observe``);
- :mod:`~descend.schedules.decays` — constant, step, multistep, exponential, cosine, linear, polynomial,
  inverse_time, inverse_sqrt;
- :mod:`~descend.schedules.cycles` — cosine_restarts (SGDR), cyclic, one_cycle;
- :mod:`~descend.schedules.plateau` — reduce on plateau, the one schedule with state;
- :mod:`~descend.schedules.warmup` — a linear warmup in front of any of them;
- :mod:`~descend.schedules.registry` — :func:`create` by name, :func:`describe`, :func:`plot`.

Every schedule except ``plateau`` is a pure function of ``(base_lr, step, bound sizes, options)``, so a resumed
run continues the same curve; ``plateau`` keeps a small JSON state in ``state_dict``.
"""

from __future__ import annotations

from descend.schedules.base import PERS, Schedule
from descend.schedules.cycles import CosineRestarts, Cyclic, OneCycle, cosine_restarts, cyclic, one_cycle
from descend.schedules.decays import (
                                      Constant,
                                      Cosine,
                                      Exponential,
                                      InverseSqrt,
                                      InverseTime,
                                      Linear,
                                      MultiStep,
                                      Polynomial,
                                      Step,
                                      constant,
                                      cosine,
                                      exponential,
                                      inverse_sqrt,
                                      inverse_time,
                                      linear,
                                      multistep,
                                      polynomial,
                                      step,
)
from descend.schedules.plateau import Plateau, plateau
from descend.schedules.registry import FACTORIES, NAMES, WARMUP_OPTIONS, create, describe, options, plot
from descend.schedules.warmup import Warmup, warmup

__all__ = ["FACTORIES", "NAMES", "PERS", "WARMUP_OPTIONS", "Constant", "Cosine", "CosineRestarts", "Cyclic",
           "Exponential",
           "InverseSqrt", "InverseTime", "Linear", "MultiStep", "OneCycle", "Plateau", "Polynomial", "Schedule",
           "Step", "Warmup", "constant", "cosine", "cosine_restarts", "create", "cyclic", "describe",
           "exponential", "inverse_sqrt", "inverse_time", "linear", "multistep", "one_cycle", "options",
           "plateau", "plot", "polynomial", "step", "warmup"]
