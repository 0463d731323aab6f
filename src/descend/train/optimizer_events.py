"""What an optimizer needs from the training loop's events: the weights schedule-free optimizers evaluate, and the
values some optimizers log.

- **Train and eval weights.** A schedule-free optimizer (Defazio et al. 2024; :mod:`descend.optim.schedule_free`,
  or any optimizer with ``train()`` and ``eval()`` methods such as the ``schedulefree`` package's) trains at one
  point y and evaluates another, the average x. The trainer keeps it in train mode during the training batches
  and in eval mode from the end of the batches on: validation, the checkpoints written at an epoch's end, early
  stopping's best weights and the weights a fit ends with all hold x. A checkpoint written mid-epoch (``unit =
  "step"``) holds y with the optimizer in train mode, so every checkpoint resumes bit-identically. A descend
  schedule (the plateau schedule included) is refused with such an optimizer: it makes its own schedule
  (``warmup_steps`` is its warm-up).
- **Logged values.** An optimizer with a ``logs()`` method (Prodigy's and D-Adaptation's estimated step size
  ``d_lr``) has its values added to every epoch's logs, next to ``lr``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from .callbacks import Callback


def switches(optimizer) -> bool:
    """Whether ``optimizer`` keeps separate train and eval weights (``train()`` and ``eval()`` methods)."""
    return callable(getattr(optimizer, "train", None)) and callable(getattr(optimizer, "eval", None))


class OptimizerEvents(Callback):
    """Added by the trainer for an optimizer that switches weights or logs values (see the module docstring).
    Runs before every other callback (``order = -100``), so they see the eval weights at an epoch's end."""

    order = -100

    def setup(self, trainer, logged: set[str]) -> None:
        optimizer = trainer.optimizer
        if switches(optimizer) and trainer.schedule is not None:
            raise UserError(
                f"{type(optimizer).__name__} is schedule-free: it needs no learning-rate schedule and "
                "takes none (remove the schedule; its warmup_steps option is its warm-up)"
            )
        if callable(getattr(optimizer, "logs", None)):
            logged.update(optimizer.logs())

    def on_epoch_start(self, trainer) -> None:
        if switches(trainer.optimizer):
            trainer.optimizer.train()

    def on_validation_start(self, trainer) -> None:
        if switches(trainer.optimizer):
            trainer.optimizer.eval()

    def on_epoch_end(self, trainer, logs: dict[str, float]) -> None:
        if switches(trainer.optimizer):
            trainer.optimizer.eval()  # without validation data: the switch at the end of the batches
        if callable(getattr(trainer.optimizer, "logs", None)):
            logs.update(trainer.optimizer.logs())

    def on_fit_end(self, trainer) -> None:
        if switches(trainer.optimizer):
            trainer.optimizer.eval()


def attach(trainer) -> None:
    """Add :class:`OptimizerEvents` to the trainer's callbacks when its optimizer needs it (once)."""
    optimizer = trainer.optimizer
    needed = switches(optimizer) or callable(getattr(optimizer, "logs", None))
    if needed and not any(isinstance(cb, OptimizerEvents) for cb in trainer.callbacks):
        trainer.callbacks.append(OptimizerEvents())


def forward_keeping_buffers(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` on copies of the model's buffers: a step's second forward pass (an optimizer's closure: SAM,
    Newton) must not update batch norm's running statistics a second time. The copies (not the buffers put back
    afterwards) keep what autograd saved intact for the backward pass that follows."""
    copies = {name: b.clone() for name, b in model.named_buffers()}
    return torch.func.functional_call(model, copies, (x,)) if copies else model(x)
