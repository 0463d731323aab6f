"""Decays: pure functions of progress that only go down: constant, step, multi-step, exponential, cosine,
linear, polynomial, 1/t and 1/√(t + 1).

Each schedule is built by its factory (``step(step_size=30, gamma=0.1)``), whose signature holds the defaults
and whose option table the arguments are checked against. Every one is a pure function of
``(base_lr, step, bound sizes, options)``, so a resumed run continues the same curve.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from descend.errors import UserError
from descend.options import ListOf, Option, Optional, declare, number
from descend.schedules.base import PER, Schedule

MIN_LR = Option("min_lr", number(0), doc="η_min, the floor the rate decays to")
GAMMA = Option("gamma", number(0, 1, closed="right"), doc="γ, the factor of each decay")
MAX_MILESTONES = 1000  # more decays than a long run has epochs is a mistake; a list that long costs in each lr()


class Constant(Schedule):
    """η_t = η₀: good for prototyping ideas, before a decay is tuned."""

    name = "constant"

    def _at(self, base_lr: float, t: int) -> float:
        return base_lr


class Step(Schedule):
    """Step decay, η_t = η₀ · γ^⌊t / s⌋: multiply by γ every ``step_size`` epochs.

    The defaults multiply the rate by 0.1 every 30 epochs; halving it every 5 epochs or dividing it by 10 every
    20 are other common choices. Equals ``torch.optim.lr_scheduler.StepLR``.
    """

    name = "step"

    def __init__(self, *, step_size: float, gamma: float, per: str) -> None:
        self.step_size, self.gamma = step_size, gamma
        super().__init__(per, step_size=step_size, gamma=gamma)

    def _at(self, base_lr: float, t: int) -> float:
        return base_lr * self.gamma ** math.floor(t / self._units(self.step_size))


class MultiStep(Schedule):
    """η_t = η₀ · γ^(number of milestones ≤ t); ``milestones`` are epochs. Equals torch's ``MultiStepLR``."""

    name = "multistep"

    def __init__(self, *, milestones: list[float], gamma: float, per: str) -> None:
        self.milestones, self.gamma = milestones, gamma
        self._bounds: list[float] = []
        super().__init__(per, milestones=list(milestones), gamma=gamma)

    def bind(self, steps_per_epoch: int, total_steps: int) -> None:
        super().bind(steps_per_epoch, total_steps)
        self._bounds = [self._units(m) for m in self.milestones]  # once per fit, not once per step

    def _at(self, base_lr: float, t: int) -> float:
        return base_lr * self.gamma ** bisect.bisect_right(self._bounds, t)


class Exponential(Schedule):
    """η_t = η₀ · γ^t, also written η₀ · (1 − α/100)^t, so ``alpha`` (percent) sets γ = 1 − α/100.

    Give ``gamma`` or ``alpha`` (default γ = 0.95 per epoch). Equals torch's ``ExponentialLR``.
    """

    name = "exponential"

    def __init__(self, *, gamma: float, per: str) -> None:
        self.gamma = gamma
        super().__init__(per, gamma=gamma)

    def _at(self, base_lr: float, t: int) -> float:
        return base_lr * self.gamma**t


class Cosine(Schedule):
    """Cosine decay with a floor: η_t = η_min + ½(η₀ − η_min)(1 + cos(πt/T)); t ≥ T gives η_min.

    With ``min_lr=0`` this is η_t = ½η₀(1 + cos(tπ/T)), the cosine annealing of SGDR (Loshchilov & Hutter
    2017) without its restarts. Equals torch's ``CosineAnnealingLR(T_max=T)``.
    """

    name = "cosine"

    def __init__(self, *, min_lr: float, per: str) -> None:
        self.min_lr = min_lr
        super().__init__(per, min_lr=min_lr)

    def _at(self, base_lr: float, t: int) -> float:
        T = self._horizon()
        return self.min_lr + 0.5 * (base_lr - self.min_lr) * (1 + math.cos(math.pi * min(t, T) / T))


class Polynomial(Schedule):
    """η_t = η_min + (η₀ − η_min)(1 − t/T)^p; t ≥ T gives η_min.

    Equals torch's ``PolynomialLR(total_iters=T, power=p)``; ``linear`` is the case p = 1.
    """

    name = "polynomial"

    def __init__(self, *, power: float, min_lr: float, per: str) -> None:
        self.power, self.min_lr = power, min_lr
        super().__init__(per, power=power, min_lr=min_lr)

    def _at(self, base_lr: float, t: int) -> float:
        T = self._horizon()
        return self.min_lr + (base_lr - self.min_lr) * (1 - min(t, T) / T) ** self.power


class Linear(Polynomial):
    """Linear decay, η_t = η₀(1 − t/T), here with a floor: η_min + (η₀ − η_min)(1 − t/T).

    Equals torch's ``LinearLR(start_factor=1, end_factor=0, total_iters=T)`` when ``min_lr=0``.
    """

    name = "linear"

    def __init__(self, *, min_lr: float, per: str) -> None:
        super().__init__(power=1.0, min_lr=min_lr, per=per)
        del self.options["power"]


class InverseTime(Schedule):
    """η_t = η₀ / (1 + k·t), the classic 1/t decay; ``decay_rate`` is k (per epoch by default)."""

    name = "inverse_time"

    def __init__(self, *, decay_rate: float, per: str) -> None:
        self.decay_rate = decay_rate
        super().__init__(per, decay_rate=decay_rate)

    def _at(self, base_lr: float, t: int) -> float:
        return base_lr / (1 + self.decay_rate * t)


class InverseSqrt(Schedule):
    """η_t = η₀ / √(t + 1): the rate shrinks like 1/√t, more slowly than :class:`InverseTime`'s 1/t."""

    name = "inverse_sqrt"

    def _at(self, base_lr: float, t: int) -> float:
        return base_lr / math.sqrt(t + 1)


# ----------------------------------------------------------------------------------------------- factories


@declare("schedule 'constant'", PER)
def constant(*, per: str = "step") -> Schedule:
    """η_t = η₀."""
    return Constant(per)


@declare("schedule 'step'", Option("step_size", number(0, closed="right"), doc="epochs between decays"),
         GAMMA, PER)
def step(*, step_size: float = 30, gamma: float = 0.1, per: str = "epoch") -> Schedule:
    """η₀ · γ^⌊t / step_size⌋ (:class:`Step`)."""
    return Step(step_size=step_size, gamma=gamma, per=per)


@declare("schedule 'multistep'",
         Option("milestones", ListOf(number(0, closed="right"), min_length=1, increasing=True,
                                     max_length=MAX_MILESTONES),
                doc="epochs at which the rate is multiplied by γ"), GAMMA, PER)
def multistep(*, milestones: Sequence[float], gamma: float = 0.1, per: str = "epoch") -> Schedule:
    """η₀ · γ^(milestones passed) (:class:`MultiStep`)."""
    return MultiStep(milestones=milestones, gamma=gamma, per=per)


@declare("schedule 'exponential'",
         Option("gamma", Optional(number(0, 1, closed="right"), "none (0.95, or from alpha)"),
                doc="γ, the factor per unit of progress"),
         Option("alpha", Optional(number(0, 100, closed="left")), doc="percent decay per unit: γ = 1 − α/100"),
         PER)
def exponential(*, gamma: float | None = None, alpha: float | None = None, per: str = "epoch") -> Schedule:
    """η₀ · γ^t, γ given directly or as 1 − α/100 (:class:`Exponential`)."""
    if gamma is not None and alpha is not None:
        raise UserError("schedule 'exponential': give gamma or alpha (gamma = 1 - alpha/100), not both.")
    if alpha is not None:
        gamma = 1 - alpha / 100  # alpha < 100, so gamma > 0
    return Exponential(gamma=0.95 if gamma is None else gamma, per=per)


@declare("schedule 'cosine'", MIN_LR, PER)
def cosine(*, min_lr: float = 0.0, per: str = "step") -> Schedule:
    """Cosine decay to ``min_lr`` over training (:class:`Cosine`)."""
    return Cosine(min_lr=min_lr, per=per)


@declare("schedule 'linear'", MIN_LR, PER)
def linear(*, min_lr: float = 0.0, per: str = "step") -> Schedule:
    """Linear decay to ``min_lr`` over training (:class:`Linear`)."""
    return Linear(min_lr=min_lr, per=per)


@declare("schedule 'polynomial'", Option("power", number(0, closed="right"), doc="p, the exponent"), MIN_LR, PER)
def polynomial(*, power: float = 1.0, min_lr: float = 0.0, per: str = "step") -> Schedule:
    """(1 − t/T)^p decay to ``min_lr`` (:class:`Polynomial`)."""
    return Polynomial(power=power, min_lr=min_lr, per=per)


@declare("schedule 'inverse_time'", Option("decay_rate", number(0, closed="right"), doc="k in η₀/(1 + k·t)"), PER)
def inverse_time(*, decay_rate: float = 1.0, per: str = "epoch") -> Schedule:
    """η₀ / (1 + k·t) (:class:`InverseTime`)."""
    return InverseTime(decay_rate=decay_rate, per=per)


@declare("schedule 'inverse_sqrt'", PER)
def inverse_sqrt(*, per: str = "epoch") -> Schedule:
    """η₀ / √(t + 1) (:class:`InverseSqrt`)."""
    return InverseSqrt(per)
