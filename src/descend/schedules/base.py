"""The schedule base class: what the trainer calls, and the unit of progress (steps or epochs).

A schedule answers one question, ``lr(base_lr, step)``: the learning rate for optimizer step ``step``
(0-based, global) of a parameter group whose configured rate is ``base_lr`` (η₀). The trainer calls
``bind(steps_per_epoch, total_steps)`` at fit start, sets ``group["lr"] = schedule.lr(base_lr, step)`` before
every optimizer step and ``observe(epoch_logs)`` after every epoch's validation.

Progress ``t`` is counted in the schedule's granularity ``per``: optimizer steps (``per="step"``, a smooth
curve) or whole epochs (``per="epoch"``, the rate is constant within an epoch). ``T`` is the length of
training in the same unit. Options measured in epochs (``step_size``, ``milestones``, ``period``,
``half_period``, warmup ``epochs``) are converted with ``steps_per_epoch``.
"""

from __future__ import annotations

from typing import Any

from descend.options import OneOf, Option, integer

PERS = ("step", "epoch")
#: The option every schedule but plateau and warmup has; its default is the schedule factory's.
PER = Option("per", OneOf(*PERS), doc="unit of progress t: optimizer steps (smooth) or whole epochs")
_STEPS_PER_EPOCH = Option("steps_per_epoch", integer(1))
_TOTAL_STEPS = Option("total_steps", integer(1))


class Schedule:
    """Base class. Subclasses implement ``_at(base_lr, t)``, ``t`` in units of ``per`` (steps or epochs).

    Schedules are built by their factories (:func:`descend.schedules.cosine`, …), which check the options.
    """

    name = "schedule"
    per: str = "step"
    #: What the values of ``state_dict()`` may be (an option table): a checkpoint's are checked against it before
    #: they are loaded, as a recipe's options are.
    state_options: tuple = ()

    def __init__(self, per: str, **options: Any) -> None:
        self.per = per
        self.options = {**options, "per": self.per}
        self.steps_per_epoch: int | None = None
        self.total_steps: int | None = None

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.options.items())})"

    def bind(self, steps_per_epoch: int, total_steps: int) -> None:
        """Record the sizes of the run; the trainer calls this at fit start (again on resume)."""
        self.steps_per_epoch = _STEPS_PER_EPOCH.check(self.name, steps_per_epoch)
        self.total_steps = _TOTAL_STEPS.check(self.name, total_steps)

    def _sizes(self) -> tuple[int, int]:
        if self.steps_per_epoch is None or self.total_steps is None:
            raise RuntimeError(f"{self.name}: call bind(steps_per_epoch, total_steps) before lr()")
        return self.steps_per_epoch, self.total_steps

    def _units(self, epochs: float) -> float:
        """An option measured in epochs, in the unit of progress ``t``."""
        return epochs * self._sizes()[0] if self.per == "step" else epochs

    def _horizon(self) -> int:
        """T: the length of training in the unit of progress (steps, or epochs rounded up)."""
        spe, total = self._sizes()
        return total if self.per == "step" else -(-total // spe)

    def lr(self, base_lr: float, step: int) -> float:
        """The learning rate for 0-based optimizer step ``step`` of a group configured with ``base_lr``."""
        spe, _ = self._sizes()
        return float(self._at(base_lr, step if self.per == "step" else step // spe))

    def _at(self, base_lr: float, t: int) -> float:
        raise NotImplementedError

    def observe(self, logs: dict[str, float]) -> None:
        """Called after each epoch's validation with its logged values; only the plateau controller acts."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
