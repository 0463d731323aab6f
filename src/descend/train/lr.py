"""Who owns ``group["lr"]``: the trainer's learning-rate rules, and torch's LR schedulers as schedules.

- **No schedule**: you do. The trainer never writes ``group["lr"]``; a callback or your code may set it at any
  time and the next step uses it.
- **A torch scheduler** (``torch.optim.lr_scheduler.StepLR(optimizer, ...)``, any ``LRScheduler`` or
  ``ReduceLROnPlateau``): the scheduler does. The trainer only calls its ``step()``: once per epoch after
  validation (``ReduceLROnPlateau`` gets the monitored value), or after every optimizer step with
  ``TorchSchedule(scheduler, per="step")``. Its state is saved in checkpoints.
- **A descend schedule** (:mod:`descend.schedules`): the trainer writes ``group["lr"] = schedule.lr(base, t)``
  before every step, ``base`` being the group's rate when the fit started and ``t`` the step within this fit.
  A change your code makes between two steps is kept, not overwritten: it rescales ``base`` by the ratio of your
  value to the scheduled one, so the schedule continues from your level with the same shape. At the end of the
  fit ``group["lr"]`` is set back to ``base``, so the optimizer leaves a fit with its base rate intact (a second
  ``fit`` or another Trainer starts from it, not from the decayed end of the schedule).

A divergence rollback halves ``base`` (and, without a descend schedule, ``group["lr"]`` itself).

The base rates and the rates last written are the fit's state (``trainer.fit_state.base_lrs`` and ``lr_written``,
:class:`~descend.train.fit_state.FitState`); a checkpoint keeps the base rates.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from ..errors import UserError
from ..monitor import read_metric
from ..schedules import PERS, create


class TorchSchedule:
    """A torch LR scheduler, stepped per ``"epoch"`` (default) or per optimizer ``"step"``.

    ``ReduceLROnPlateau`` is stepped once per epoch with the logged value ``monitor`` (default ``val_loss``,
    ``train_loss`` without validation data). A bare torch scheduler given as ``schedule=`` is wrapped with the
    defaults.
    """

    def __init__(self, scheduler, per: str = "epoch", monitor: str | None = None):
        if not isinstance(scheduler, (LRScheduler, ReduceLROnPlateau)):
            raise UserError(f"TorchSchedule needs a torch.optim.lr_scheduler scheduler, got {type(scheduler).__name__}")
        if per not in PERS:
            raise UserError(f"TorchSchedule: per must be one of {', '.join(map(repr, PERS))}, got {per!r}")
        if per == "step" and isinstance(scheduler, ReduceLROnPlateau):
            raise UserError("TorchSchedule: ReduceLROnPlateau reads a metric once per epoch; use per='epoch'")
        self.scheduler, self.per, self.monitor = scheduler, per, monitor

    def __repr__(self) -> str:
        return f"TorchSchedule({type(self.scheduler).__name__}, per={self.per!r})"

    def check(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scheduler.optimizer is not optimizer:
            raise UserError("the torch scheduler was made for another optimizer; build it on the optimizer you "
                            "pass to the Trainer")

    def step(self, logs: dict[str, float] | None = None) -> None:
        if isinstance(self.scheduler, ReduceLROnPlateau):
            monitor = self.monitor or ("val_loss" if "val_loss" in logs else "train_loss")
            self.scheduler.step(read_metric("ReduceLROnPlateau", logs, monitor))
        else:
            self.scheduler.step()

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


def as_schedule(schedule):
    """A descend schedule, a :class:`TorchSchedule`, or None, from what the user gave as ``schedule=`` (a name,
    ``"cosine"``, is descend's schedule of that name with its defaults)."""
    if isinstance(schedule, str):
        return create(schedule)
    if isinstance(schedule, (LRScheduler, ReduceLROnPlateau)):
        return TorchSchedule(schedule)
    if schedule is not None and not isinstance(schedule, TorchSchedule) and not hasattr(schedule, "lr"):
        raise UserError(f"schedule must be a descend schedule (descend.schedules) or a torch LR scheduler, "
                        f"got {type(schedule).__name__}")
    return schedule


def start(trainer, continuing: bool) -> None:
    """At fit start: the base rates (kept from the previous fit when continuing) and the schedule's length."""
    groups, schedule, fit = trainer.optimizer.param_groups, trainer.schedule, trainer.fit_state
    if not continuing or len(fit.base_lrs) != len(groups):
        fit.base_lrs = [group["lr"] for group in groups]
    fit.lr_written = [None] * len(groups)
    if isinstance(schedule, TorchSchedule):
        schedule.check(trainer.optimizer)
    elif schedule is not None:
        schedule.bind(fit.steps_per_epoch, fit.total_steps - fit.fit_start_step)


def before_step(trainer) -> float:
    """Set each group's rate for the coming step (descend schedules only); returns the first group's rate."""
    groups, schedule = trainer.optimizer.param_groups, trainer.schedule
    if schedule is None or isinstance(schedule, TorchSchedule):
        return groups[0]["lr"]
    fit = trainer.fit_state
    bases, written, t = fit.base_lrs, fit.lr_written, fit.global_step - fit.fit_start_step
    for i, group in enumerate(groups):
        if written[i] is not None and group["lr"] != written[i]:  # user code changed it: keep its level
            bases[i] = bases[i] * group["lr"] / written[i] if written[i] else group["lr"]
        group["lr"] = written[i] = schedule.lr(bases[i], t)
    return groups[0]["lr"]


def after_step(trainer) -> None:
    """After an optimizer step: step a torch scheduler that runs per step (the trainer calls it only then)."""
    trainer.schedule.step()


def after_epoch(trainer, logs: dict[str, float]) -> None:
    schedule = trainer.schedule
    if isinstance(schedule, TorchSchedule):
        if schedule.per == "epoch":
            schedule.step(logs)
    elif schedule is not None:
        schedule.observe(logs)


def finish(trainer) -> None:
    """Leave the optimizer at its base rates (descend schedules; torch schedulers keep theirs)."""
    if trainer.schedule is not None and not isinstance(trainer.schedule, TorchSchedule):
        for group, base in zip(trainer.optimizer.param_groups, trainer.fit_state.base_lrs):
            group["lr"] = base


def scale(trainer, factor: float) -> None:
    """Multiply the base rates by ``factor`` (a divergence rollback), and the live rates where no descend schedule
    rewrites them."""
    fit = trainer.fit_state
    fit.base_lrs = [lr * factor for lr in fit.base_lrs]
    fit.lr_written = [None] * len(fit.base_lrs)
    if trainer.schedule is None or isinstance(trainer.schedule, TorchSchedule):
        for group in trainer.optimizer.param_groups:
            group["lr"] *= factor


def rate_after_end(trainer) -> tuple[float, float] | None:
    """``(rate, base)``: the first group's rate a descend schedule gives past the end of its fit (where epochs added
    by babysitting train: the schedule keeps its length) and its base rate; None without a descend schedule."""
    schedule, bases = trainer.schedule, trainer.fit_state.base_lrs
    if schedule is None or isinstance(schedule, TorchSchedule) or not bases:
        return None
    return schedule.lr(bases[0], schedule.total_steps), bases[0]

