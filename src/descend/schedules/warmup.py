"""Linear warmup in front of any schedule: the rate rises gradually over the first steps (Goyal et al. 2017)."""

from __future__ import annotations

from descend.errors import UserError
from descend.options import Option, declare, integer, number
from descend.schedules.base import Schedule


class Warmup(Schedule):
    """Linear warmup in front of any schedule.

    For the first w steps η_t = η_target·(s + (1 − s)·t/w), s = ``start``, η_target the inner schedule's
    first rate; from step w on the inner schedule runs as if training began there (it is bound to total − w
    steps), so a decay still ends at the end of training. Equals torch's
    ``SequentialLR([LinearLR(start_factor=s, total_iters=w), inner], milestones=[w])``.
    """

    name = "warmup"

    def __init__(self, inner: Schedule, *, epochs: float, steps: int, start: float, fraction: float = 0) -> None:
        if not isinstance(inner, Schedule):
            raise UserError(f"warmup: schedule must be a descend schedule, got {inner!r}.")
        if sum(v > 0 for v in (epochs, steps, fraction)) != 1:
            raise UserError(f"warmup: give exactly one of epochs > 0, steps > 0 or fraction > 0; got "
                            f"epochs={epochs!r}, steps={steps!r}, fraction={fraction!r}.")
        self.inner, self.epochs, self.steps, self.start, self.fraction = inner, epochs, steps, start, fraction
        super().__init__("step", epochs=epochs, steps=steps, start=start, fraction=fraction)
        self.warmup_steps = 0

    def __repr__(self) -> str:
        length = f"fraction={self.fraction:g}" if self.fraction else f"epochs={self.epochs:g}, steps={self.steps}"
        return f"warmup({self.inner!r}, {length}, start={self.start:g})"

    def bind(self, steps_per_epoch: int, total_steps: int) -> None:
        super().bind(steps_per_epoch, total_steps)
        w = self.steps if self.steps > 0 else max(1, round(
            self.epochs * self.steps_per_epoch if self.epochs else self.fraction * self.total_steps))
        if w >= self.total_steps:
            raise UserError(f"warmup: {w} warmup steps must be fewer than the {self.total_steps} steps of "
                            "training")
        self.warmup_steps = w
        self.inner.bind(steps_per_epoch, total_steps - w)

    def lr(self, base_lr: float, step: int) -> float:
        self._sizes()
        w = self.warmup_steps
        if step >= w:
            return self.inner.lr(base_lr, step - w)
        return self.inner.lr(base_lr, 0) * (self.start + (1 - self.start) * step / w)

    def observe(self, logs: dict[str, float]) -> None:
        self.inner.observe(logs)

    @property
    def state_options(self) -> tuple:
        return self.inner.state_options

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)


@declare("warmup",
         Option("epochs", number(0), doc="length of the warmup in epochs (this or steps)"),
         Option("steps", integer(0), doc="length of the warmup in optimizer steps (this or epochs)"),
         Option("start", number(0, 1), doc="the warmup starts at start·η"),
         Option("fraction", number(0, 1, closed="left"),
                doc="length of the warmup as a fraction of training, e.g. 0.1 (this, epochs or steps)"))
def warmup(schedule: Schedule, *, epochs: float = 0, steps: int = 0, start: float = 0.1,
           fraction: float = 0) -> Schedule:
    """Put a linear warmup of ``epochs``, ``steps`` or a ``fraction`` of training (e.g. 0.1) in front of
    ``schedule``, starting at ``start``·η₀."""
    return Warmup(schedule, epochs=epochs, steps=steps, start=start, fraction=fraction)
