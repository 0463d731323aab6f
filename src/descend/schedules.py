"""Learning-rate schedules: pure functions of training progress, plus warmup and the plateau controller.

A schedule answers one question, ``lr(base_lr, step)``: the learning rate for optimizer step ``step``
(0-based, global) of a parameter group whose configured rate is ``base_lr`` (η₀ in the lectures). The trainer
calls ``bind(steps_per_epoch, total_steps)`` at fit start, sets ``group["lr"] = schedule.lr(base_lr, step)``
before every optimizer step and ``observe(epoch_logs)`` after every epoch's validation.

Progress ``t`` is counted in the schedule's granularity ``per``: optimizer steps (``per="step"``, a smooth
curve) or whole epochs (``per="epoch"``, the rate is constant within an epoch). ``T`` is the length of
training in the same unit. Options measured in epochs (``step_size``, ``milestones``, ``period``,
``half_period``, warmup ``epochs``) are converted with ``steps_per_epoch``. Every schedule except ``plateau``
is a pure function of ``(base_lr, step, bound sizes, options)``, so a resumed run continues the same curve;
``plateau`` keeps a small JSON state (best value, bad epochs, cooldown, number of reductions) in
``state_dict``.

Lecture 02 names three approaches (step decay every few epochs, exponential / cosine decay, reduce when the
validation loss stops improving) and warmup; lecture 05 gives the formulas of step, cosine, linear,
exponential and constant; lecture 04 gives the 1/√(t+1) decay.
"""

from __future__ import annotations

import bisect
import copy
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

from descend.errors import UserError

PERS = ("step", "epoch")


# ----------------------------------------------------------------------------------------------- validation


def check_number(where: str, option: str, value: Any, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False, integer: bool = False) -> float:
    """Return ``value`` if it is a number in the given range, else raise one UserError naming all three."""
    if integer:
        kind = "an integer"
    else:
        kind = "a number"
    if low is not None and high is not None:
        allowed = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        allowed = f"{'>' if low_open else '>='} {low:g}"
    elif high is not None:
        allowed = f"{'<' if high_open else '<='} {high:g}"
    else:
        allowed = ""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise UserError(f"{where}: {option} must be {kind} {allowed}".rstrip() + f", got {value!r}")
    return int(value) if integer else float(value)


def _per(where: str, per: Any) -> str:
    if per not in PERS:
        raise UserError(f"{where}: per must be one of {', '.join(map(repr, PERS))}, got {per!r}")
    return per


def resolve_mode(where: str, monitor: str, mode: str) -> str:
    """``"min"`` or ``"max"`` for a monitored metric; ``"auto"``: loss/error → min, accuracy → max."""
    if mode in ("min", "max"):
        return mode
    if mode != "auto":
        raise UserError(f"{where}: mode must be one of 'auto', 'min', 'max', got {mode!r}")
    name = str(monitor).lower()
    if any(word in name for word in ("loss", "error", "mse", "mae", "perplexity")):
        return "min"
    if any(word in name for word in ("acc", "auc", "auroc", "f1", "precision", "recall", "r2", "score")):
        return "max"
    raise UserError(f"{where}: cannot infer whether {monitor!r} should go down or up; "
                    "set mode='min' or mode='max'")


def improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta``; any number beats None, NaN never wins."""
    if best is None:
        return not math.isnan(value)
    return value < best - min_delta if mode == "min" else value > best + min_delta


def read_metric(where: str, logs: dict[str, float], monitor: str) -> float:
    """The monitored value from an epoch's logs, or a UserError listing the names that were logged."""
    if monitor not in logs:
        raise UserError(f"{where}: monitor {monitor!r} is not a logged metric; "
                        f"logged: {', '.join(sorted(logs))}")
    return float(logs[monitor])


# ----------------------------------------------------------------------------------------------- base class


class Schedule:
    """Base class. Subclasses implement ``_at(base_lr, t)``, ``t`` in units of ``per`` (steps or epochs)."""

    name = "schedule"
    per: str = "step"

    def __init__(self, per: str, **options: Any) -> None:
        self.per = _per(self.name, per)
        self.options = {**options, "per": self.per}
        self.steps_per_epoch: int | None = None
        self.total_steps: int | None = None

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.options.items())})"

    def bind(self, steps_per_epoch: int, total_steps: int) -> None:
        """Record the sizes of the run; the trainer calls this at fit start (again on resume)."""
        self.steps_per_epoch = check_number(self.name, "steps_per_epoch", steps_per_epoch, low=1,
                                            integer=True)
        self.total_steps = check_number(self.name, "total_steps", total_steps, low=1, integer=True)

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


# ----------------------------------------------------------------------------------------------- decays


class Constant(Schedule):
    """η_t = η₀ (lecture 05: good for prototyping ideas)."""

    name = "constant"

    def _at(self, base_lr: float, t: int) -> float:
        return base_lr


class Step(Schedule):
    """Step decay, η_t = η₀ · γ^⌊t / s⌋: multiply by γ every ``step_size`` epochs.

    Lecture 05: "after every 30 epochs, η = 0.1·η" (the defaults); lecture 02: halve every 5 or divide by 10
    every 20 epochs. Equals ``torch.optim.lr_scheduler.StepLR``.
    """

    name = "step"

    def __init__(self, step_size: float = 30, gamma: float = 0.1, per: str = "epoch") -> None:
        self.step_size = check_number(self.name, "step_size", step_size, low=0, low_open=True)
        self.gamma = check_number(self.name, "gamma", gamma, low=0, high=1, low_open=True)
        super().__init__(per, step_size=step_size, gamma=gamma)

    def _at(self, base_lr: float, t: int) -> float:
        return base_lr * self.gamma ** math.floor(t / self._units(self.step_size))


class MultiStep(Schedule):
    """η_t = η₀ · γ^(number of milestones ≤ t); ``milestones`` are epochs. Equals torch's ``MultiStepLR``."""

    name = "multistep"

    def __init__(self, milestones: Sequence[float], gamma: float = 0.1, per: str = "epoch") -> None:
        if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence) or not milestones:
            raise UserError(f"{self.name}: milestones must be a non-empty list of epochs, got {milestones!r}")
        values = [check_number(self.name, "milestones", m, low=0, low_open=True) for m in milestones]
        if any(b <= a for a, b in zip(values, values[1:], strict=False)):
            raise UserError(f"{self.name}: milestones must be strictly increasing, got {list(milestones)!r}")
        self.milestones = values
        self.gamma = check_number(self.name, "gamma", gamma, low=0, high=1, low_open=True)
        super().__init__(per, milestones=list(milestones), gamma=gamma)

    def _at(self, base_lr: float, t: int) -> float:
        passed = bisect.bisect_right([self._units(m) for m in self.milestones], t)
        return base_lr * self.gamma**passed


class Exponential(Schedule):
    """η_t = η₀ · γ^t; lecture 05 writes it η₀ · (1 − α/100)^t, so ``alpha`` (percent) sets γ = 1 − α/100.

    Give ``gamma`` or ``alpha`` (default γ = 0.95 per epoch). Equals torch's ``ExponentialLR``.
    """

    name = "exponential"

    def __init__(self, gamma: float | None = None, alpha: float | None = None, per: str = "epoch") -> None:
        if gamma is not None and alpha is not None:
            raise UserError(f"{self.name}: give gamma or alpha (gamma = 1 - alpha/100), not both")
        if alpha is not None:
            gamma = 1 - check_number(self.name, "alpha", alpha, low=0, high=100, high_open=True) / 100
        gamma = 0.95 if gamma is None else gamma
        self.gamma = check_number(self.name, "gamma", gamma, low=0, high=1, low_open=True)
        super().__init__(per, gamma=self.gamma)

    def _at(self, base_lr: float, t: int) -> float:
        return base_lr * self.gamma**t


class Cosine(Schedule):
    """Cosine decay with a floor: η_t = η_min + ½(η₀ − η_min)(1 + cos(πt/T)); t ≥ T gives η_min.

    Lecture 05: η_t = ½η₀(1 + cos(tπ/T)) (``min_lr=0``). Equals torch's ``CosineAnnealingLR(T_max=T)``.
    """

    name = "cosine"

    def __init__(self, min_lr: float = 0.0, per: str = "step") -> None:
        self.min_lr = check_number(self.name, "min_lr", min_lr, low=0)
        super().__init__(per, min_lr=min_lr)

    def _at(self, base_lr: float, t: int) -> float:
        T = self._horizon()
        return self.min_lr + 0.5 * (base_lr - self.min_lr) * (1 + math.cos(math.pi * min(t, T) / T))


class Polynomial(Schedule):
    """η_t = η_min + (η₀ − η_min)(1 − t/T)^p; t ≥ T gives η_min.

    Equals torch's ``PolynomialLR(total_iters=T, power=p)``; ``linear`` is the case p = 1.
    """

    name = "polynomial"

    def __init__(self, power: float = 1.0, min_lr: float = 0.0, per: str = "step") -> None:
        self.power = check_number(self.name, "power", power, low=0, low_open=True)
        self.min_lr = check_number(self.name, "min_lr", min_lr, low=0)
        super().__init__(per, power=power, min_lr=min_lr)

    def _at(self, base_lr: float, t: int) -> float:
        T = self._horizon()
        return self.min_lr + (base_lr - self.min_lr) * (1 - min(t, T) / T) ** self.power


class Linear(Polynomial):
    """Linear decay, lecture 05: η_t = η₀(1 − t/T), here with a floor: η_min + (η₀ − η_min)(1 − t/T).

    Equals torch's ``LinearLR(start_factor=1, end_factor=0, total_iters=T)`` when ``min_lr=0``.
    """

    name = "linear"

    def __init__(self, min_lr: float = 0.0, per: str = "step") -> None:
        super().__init__(1.0, min_lr, per)
        del self.options["power"]


class InverseTime(Schedule):
    """η_t = η₀ / (1 + k·t), the classic 1/t decay; ``decay_rate`` is k (per epoch by default)."""

    name = "inverse_time"

    def __init__(self, decay_rate: float = 1.0, per: str = "epoch") -> None:
        self.decay_rate = check_number(self.name, "decay_rate", decay_rate, low=0, low_open=True)
        super().__init__(per, decay_rate=decay_rate)

    def _at(self, base_lr: float, t: int) -> float:
        return base_lr / (1 + self.decay_rate * t)


class InverseSqrt(Schedule):
    """η_t = η₀ / √(t + 1), lecture 04's decay ("1/t decay: η^t = η/√(t+1)")."""

    name = "inverse_sqrt"

    def __init__(self, per: str = "epoch") -> None:
        super().__init__(per)

    def _at(self, base_lr: float, t: int) -> float:
        return base_lr / math.sqrt(t + 1)


# ----------------------------------------------------------------------------------------------- cycles


class CosineRestarts(Schedule):
    """SGDR (Loshchilov & Hutter 2017): cosine decay restarted every cycle, cycles growing by ``mult``.

    Cycle i lasts T_i = T₀·mult^i (T₀ = ``period`` epochs); with t_cur the progress inside the cycle,
    η_t = η_min + ½(η₀ − η_min)(1 + cos(π·t_cur/T_i)). Equals torch's ``CosineAnnealingWarmRestarts``.
    """

    name = "cosine_restarts"

    def __init__(self, period: float = 10, mult: float = 2, min_lr: float = 0.0, per: str = "step") -> None:
        self.period = check_number(self.name, "period", period, low=0, low_open=True)
        self.mult = check_number(self.name, "mult", mult, low=1)
        self.min_lr = check_number(self.name, "min_lr", min_lr, low=0)
        super().__init__(per, period=period, mult=mult, min_lr=min_lr)

    def _at(self, base_lr: float, t: int) -> float:
        length = self._units(self.period)
        if self.mult == 1:
            t_cur = t - length * math.floor(t / length)
        else:  # O(log t) walk over the cycles; exact for integer lengths, unlike a closed-form logarithm
            t_cur = t
            while t_cur >= length:
                t_cur -= length
                length *= self.mult
        return self.min_lr + 0.5 * (base_lr - self.min_lr) * (1 + math.cos(math.pi * t_cur / length))


class Cyclic(Schedule):
    """Triangular cyclical learning rate (Smith 2017): linear up from η₀/d to η₀ in ``half_period`` epochs,
    linear down in the next ``half_period``, repeat. With s the half period and p = t mod 2s,
    η_t = η₀/d + (η₀ − η₀/d)·(1 − |p/s − 1|), d = ``div_factor``. Equals torch's
    ``CyclicLR(mode="triangular")`` with base_lr = η₀/d and max_lr = η₀.
    """

    name = "cyclic"

    def __init__(self, half_period: float = 2.0, div_factor: float = 4.0, per: str = "step") -> None:
        self.half_period = check_number(self.name, "half_period", half_period, low=0, low_open=True)
        self.div_factor = check_number(self.name, "div_factor", div_factor, low=1)
        super().__init__(per, half_period=half_period, div_factor=div_factor)

    def _at(self, base_lr: float, t: int) -> float:
        s = self._units(self.half_period)
        low = base_lr / self.div_factor
        x = t / (2 * s)
        x -= math.floor(x)  # position inside the cycle, in [0, 1)
        rise = x / 0.5 if x <= 0.5 else (x - 1) / (0.5 - 1)
        return low + (base_lr - low) * rise


class OneCycle(Schedule):
    """1cycle (Smith & Topin 2019): from η₀/d up to the peak η₀ during the first ``pct_start`` of training,
    then down to η₀/(d·d_final), annealing by cosine (``anneal="cos"``) or linearly.

    With phase ends a = pct_start·T − 1 and b = T − 1, the cosine anneal between η_s and η_e over fraction
    f of a phase is η = η_e + ½(η_s − η_e)(1 + cos(πf)). Equals torch's ``OneCycleLR`` (two phases) for the
    learning rate; momentum is not cycled here.
    """

    name = "one_cycle"

    def __init__(self, pct_start: float = 0.3, div_factor: float = 25.0, final_div_factor: float = 1e4,
                 anneal: str = "cos", per: str = "step") -> None:
        self.pct_start = check_number(self.name, "pct_start", pct_start, low=0, high=1, low_open=True,
                                 high_open=True)
        self.div_factor = check_number(self.name, "div_factor", div_factor, low=1)
        self.final_div_factor = check_number(self.name, "final_div_factor", final_div_factor, low=1)
        if anneal not in ("cos", "linear"):
            raise UserError(f"{self.name}: anneal must be one of 'cos', 'linear', got {anneal!r}")
        self.anneal = anneal
        super().__init__(per, pct_start=pct_start, div_factor=div_factor, final_div_factor=final_div_factor,
                         anneal=anneal)

    def _interpolate(self, start: float, end: float, fraction: float) -> float:
        if self.anneal == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * fraction) + 1)
        return (end - start) * fraction + start

    def _at(self, base_lr: float, t: int) -> float:
        T = self._horizon()
        initial = base_lr / self.div_factor
        final = initial / self.final_div_factor
        peak_at = float(self.pct_start * T) - 1
        end_at = float(T) - 1
        t = min(t, end_at)
        if t <= peak_at:
            return self._interpolate(initial, base_lr, t / peak_at if peak_at > 0 else 1.0)
        return self._interpolate(base_lr, final, (t - peak_at) / (end_at - peak_at))


# ----------------------------------------------------------------------------------------------- controller


class Plateau(Schedule):
    """Reduce on plateau (lecture 02, approach 3): η ← max(η·factor, η_min) when the monitored metric has
    not improved by more than ``min_delta`` for more than ``patience`` epochs; then wait ``cooldown`` epochs
    before counting again. The rate is η₀·factor^n (floored at ``min_lr``) after n reductions.

    Follows torch's ``ReduceLROnPlateau(threshold_mode="abs", threshold=min_delta)``: ``patience`` is the
    number of bad epochs tolerated, so the (patience+1)-th bad epoch in a row reduces the rate. Its state
    (best value, bad epochs, cooldown left, reductions) is in ``state_dict``, so a resumed run reduces at the
    same epochs.
    """

    name = "plateau"

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", factor: float = 0.1, patience: int = 10,
                 cooldown: int = 0, min_lr: float = 0.0, min_delta: float = 0.0) -> None:
        self.monitor = monitor
        self.mode = resolve_mode(self.name, monitor, mode)
        self.factor = check_number(self.name, "factor", factor, low=0, high=1, low_open=True, high_open=True)
        self.patience = check_number(self.name, "patience", patience, low=0, integer=True)
        self.cooldown = check_number(self.name, "cooldown", cooldown, low=0, integer=True)
        self.min_lr = check_number(self.name, "min_lr", min_lr, low=0)
        self.min_delta = check_number(self.name, "min_delta", min_delta, low=0)
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
        self.best = None if state["best"] is None else float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
        self.cooldown_left = int(state["cooldown_left"])
        self.reductions = int(state["reductions"])


# ----------------------------------------------------------------------------------------------- warmup


class Warmup(Schedule):
    """Linear warmup in front of any schedule (lecture 02: "gradually increasing the learning rate").

    For the first w steps η_t = η_target·(s + (1 − s)·t/w), s = ``start``, η_target the inner schedule's
    first rate; from step w on the inner schedule runs as if training began there (it is bound to total − w
    steps), so a decay still ends at the end of training. Equals torch's
    ``SequentialLR([LinearLR(start_factor=s, total_iters=w), inner], milestones=[w])``.
    """

    name = "warmup"

    def __init__(self, inner: Schedule, epochs: float = 0, steps: int = 0, start: float = 0.1,
                 fraction: float = 0) -> None:
        if not isinstance(inner, Schedule):
            raise UserError(f"warmup: schedule must be a descend schedule, got {inner!r}")
        self.epochs = check_number(self.name, "epochs", epochs, low=0)
        self.steps = check_number(self.name, "steps", steps, low=0, integer=True)
        self.fraction = check_number(self.name, "fraction", fraction, low=0, high=1, high_open=True)
        if sum(v > 0 for v in (self.epochs, self.steps, self.fraction)) != 1:
            raise UserError(f"warmup: give exactly one of epochs > 0, steps > 0 or fraction > 0, got "
                            f"epochs={epochs!r}, steps={steps!r}, fraction={fraction!r}")
        self.start = check_number(self.name, "start", start, low=0, high=1)
        self.inner = inner
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

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)


# ----------------------------------------------------------------------------------------------- factories


def constant(*, per: str = "step") -> Schedule:
    return Constant(per)


def step(*, step_size: float = 30, gamma: float = 0.1, per: str = "epoch") -> Schedule:
    return Step(step_size, gamma, per)


def multistep(*, milestones: Sequence[float], gamma: float = 0.1, per: str = "epoch") -> Schedule:
    return MultiStep(milestones, gamma, per)


def exponential(*, gamma: float | None = None, alpha: float | None = None, per: str = "epoch") -> Schedule:
    return Exponential(gamma, alpha, per)


def cosine(*, min_lr: float = 0.0, per: str = "step") -> Schedule:
    return Cosine(min_lr, per)


def linear(*, min_lr: float = 0.0, per: str = "step") -> Schedule:
    return Linear(min_lr, per)


def polynomial(*, power: float = 1.0, min_lr: float = 0.0, per: str = "step") -> Schedule:
    return Polynomial(power, min_lr, per)


def inverse_time(*, decay_rate: float = 1.0, per: str = "epoch") -> Schedule:
    return InverseTime(decay_rate, per)


def inverse_sqrt(*, per: str = "epoch") -> Schedule:
    return InverseSqrt(per)


def cosine_restarts(*, period: float = 10, mult: float = 2, min_lr: float = 0.0,
                    per: str = "step") -> Schedule:
    return CosineRestarts(period, mult, min_lr, per)


def cyclic(*, half_period: float = 2.0, div_factor: float = 4.0, per: str = "step") -> Schedule:
    return Cyclic(half_period, div_factor, per)


def one_cycle(*, pct_start: float = 0.3, div_factor: float = 25.0, final_div_factor: float = 1e4,
              anneal: str = "cos", per: str = "step") -> Schedule:
    return OneCycle(pct_start, div_factor, final_div_factor, anneal, per)


def plateau(*, monitor: str = "val_loss", mode: str = "auto", factor: float = 0.1, patience: int = 10,
            cooldown: int = 0, min_lr: float = 0.0, min_delta: float = 0.0) -> Schedule:
    return Plateau(monitor, mode, factor, patience, cooldown, min_lr, min_delta)


def warmup(schedule: Schedule, *, epochs: float = 0, steps: int = 0, start: float = 0.1,
           fraction: float = 0) -> Schedule:
    """Put a linear warmup of ``epochs``, ``steps`` or a ``fraction`` of training (e.g. 0.1) in front of
    ``schedule``, starting at ``start``·η₀."""
    return Warmup(schedule, epochs, steps, start, fraction)


_FACTORIES: dict[str, Callable[..., Schedule]] = {
    f.__name__: f
    for f in (constant, step, multistep, exponential, cosine, linear, polynomial, inverse_time, inverse_sqrt,
              cosine_restarts, cyclic, one_cycle, plateau)
}
NAMES: tuple[str, ...] = tuple(_FACTORIES)
WARMUP_OPTIONS = ("warmup_epochs", "warmup_steps", "warmup_fraction", "warmup_start")


def create(name: str, **options: Any) -> Schedule:
    """Build a schedule by name from config options; ``warmup_epochs`` / ``warmup_steps`` / ``warmup_start``
    put a warmup in front. An option given as ``None`` means its default.
    """
    if name not in _FACTORIES:
        raise UserError(f"unknown schedule {name!r}; choose one of: {', '.join(NAMES)}")
    parameters = inspect.signature(_FACTORIES[name]).parameters
    allowed = [*parameters, *WARMUP_OPTIONS]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UserError(f"schedule {name!r} has no option {unknown[0]!r}; "
                        f"valid options: {', '.join(allowed)}")
    options = {k: v for k, v in options.items() if v is not None}
    required = [p for p, spec in parameters.items() if spec.default is inspect.Parameter.empty]
    missing = [p for p in required if p not in options]
    if missing:
        raise UserError(f"schedule {name!r} needs option {missing[0]!r}")
    warm = {k.removeprefix("warmup_"): options.pop(k) for k in WARMUP_OPTIONS if k in options}
    schedule = _FACTORIES[name](**options)
    if warm.get("epochs", 0) or warm.get("steps", 0) or warm.get("fraction", 0):
        return warmup(schedule, **warm)
    if "start" in warm:
        raise UserError(f"schedule {name!r}: warmup_start needs warmup_epochs, warmup_steps or warmup_fraction > 0")
    return schedule


# ----------------------------------------------------------------------------------------------- plot


def plot(schedule: Schedule, *, steps_per_epoch: int, total_steps: int, base_lr: float = 1.0, path=None):
    """Draw the learning rate against epochs for a run of ``total_steps`` steps; returns a matplotlib Figure
    (Agg, no pyplot state), also saved to ``path`` if given. The schedule itself is left untouched; a plateau
    controller is drawn from its current state (it cannot know future metrics).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    schedule = copy.deepcopy(schedule)
    schedule.bind(steps_per_epoch, total_steps)
    epochs = [s / steps_per_epoch for s in range(total_steps)]
    rates = [schedule.lr(base_lr, s) for s in range(total_steps)]
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(epochs, rates, drawstyle="steps-post")
    ax.set(xlabel="epoch", ylabel="learning rate", title=repr(schedule))
    ax.title.set_fontsize(8)
    ax.grid(alpha=0.3)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
