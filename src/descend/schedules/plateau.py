"""Reduce on plateau: lower the rate when the validation metric stops improving, the one schedule that reads it."""

from __future__ import annotations

from descend.monitor import MIN_DELTA, MODE, MONITOR, improved, read_metric, resolve_mode
from descend.options import Option, Optional, declare, integer, number, validate
from descend.schedules.base import Schedule
from descend.schedules.decays import MIN_LR

MAX_COUNT = 1_000_000  # the state counts epochs: no run has more
_COUNT = integer(0, MAX_COUNT)


class Plateau(Schedule):
    """Reduce on plateau: η ← max(η·factor, η_min) when the monitored metric has not improved by more than
    ``min_delta`` for more than ``patience`` epochs; then wait ``cooldown`` epochs before counting again. The
    rate is η₀·factor^n (floored at ``min_lr``) after n reductions.

    Follows torch's ``ReduceLROnPlateau(threshold_mode="abs", threshold=min_delta)``: ``patience`` is the
    number of bad epochs tolerated, so the (patience+1)-th bad epoch in a row reduces the rate. Its state
    (best value, bad epochs, cooldown left, reductions) is in ``state_dict``, so a resumed run reduces at the
    same epochs. The mode of the metric is :func:`descend.monitor.resolve_mode`'s, as for early stopping.
    """

    name = "plateau"
    state_options = (Option("best", Optional(number()), None, "best monitored value so far (none yet)"),
                     Option("bad_epochs", _COUNT, 0, "bad epochs in a row"),
                     Option("cooldown_left", _COUNT, 0, "epochs of cooldown left"),
                     Option("reductions", _COUNT, 0, "reductions so far: the rate is η₀·factor^reductions"))

    def __init__(self, *, monitor: str, mode: str, factor: float, patience: int, cooldown: int, min_lr: float,
                 min_delta: float) -> None:
        self.monitor = monitor
        self.mode = resolve_mode(self.name, monitor, mode)
        self.factor, self.patience, self.cooldown = factor, patience, cooldown
        self.min_lr, self.min_delta = min_lr, min_delta
        super().__init__("epoch", monitor=monitor, mode=mode, factor=factor, patience=patience,
                         cooldown=cooldown, min_lr=min_lr, min_delta=min_delta)
        self.best: float | None = None
        self.bad_epochs = 0
        self.cooldown_left = 0
        self.reductions = 0

    def _at(self, base_lr: float, t: int) -> float:
        return max(base_lr * self.factor**self.reductions, self.min_lr)

    def observe(self, logs: dict[str, float]) -> None:
        value = read_metric(self.name, logs, self.monitor)
        if improved(value, self.best, self.mode, self.min_delta):
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_epochs = 0
        if self.bad_epochs > self.patience:
            self.reductions += 1
            self.cooldown_left = self.cooldown
            self.bad_epochs = 0

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "cooldown_left": self.cooldown_left,
                "reductions": self.reductions}

    def load_state_dict(self, state: dict) -> None:
        """Restore a saved state, checked against :attr:`state_options` (a negative count of reductions would
        multiply the rate by factor^-n)."""
        checked = validate("schedule 'plateau' state", self.state_options, state)
        self.best, self.bad_epochs = checked["best"], checked["bad_epochs"]
        self.cooldown_left, self.reductions = checked["cooldown_left"], checked["reductions"]


@declare("schedule 'plateau'", MONITOR, MODE,
         Option("factor", number(0, 1, closed="neither"), doc="η ← η·factor at each reduction"),
         Option("patience", integer(0), doc="bad epochs tolerated before a reduction"),
         Option("cooldown", integer(0), doc="epochs after a reduction before bad epochs count again"),
         MIN_LR, MIN_DELTA)
def plateau(*, monitor: str = "val_loss", mode: str = "auto", factor: float = 0.1, patience: int = 10,
            cooldown: int = 0, min_lr: float = 0.0, min_delta: float = 0.0) -> Schedule:
    """Reduce the rate by ``factor`` when ``monitor`` stops improving (:class:`Plateau`)."""
    return Plateau(monitor=monitor, mode=mode, factor=factor, patience=patience, cooldown=cooldown, min_lr=min_lr,
                   min_delta=min_delta)
