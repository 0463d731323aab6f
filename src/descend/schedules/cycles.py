"""Cycles: schedules that go up again — SGDR's warm restarts, the triangular cyclical rate and 1cycle."""

from __future__ import annotations

import math

from descend.options import OneOf, Option, declare, number
from descend.schedules.base import PER, Schedule
from descend.schedules.decays import MIN_LR

DIV_FACTOR = Option("div_factor", number(1), doc="the lowest rate is η₀ / div_factor")


class CosineRestarts(Schedule):
    """SGDR (Loshchilov & Hutter 2017): cosine decay restarted every cycle, cycles growing by ``mult``.

    Cycle i lasts T_i = T₀·mult^i (T₀ = ``period`` epochs); with t_cur the progress inside the cycle,
    η_t = η_min + ½(η₀ − η_min)(1 + cos(π·t_cur/T_i)). Equals torch's ``CosineAnnealingWarmRestarts``.
    """

    name = "cosine_restarts"

    def __init__(self, *, period: float, mult: float, min_lr: float, per: str) -> None:
        self.period, self.mult, self.min_lr = period, mult, min_lr
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

    def __init__(self, *, half_period: float, div_factor: float, per: str) -> None:
        self.half_period, self.div_factor = half_period, div_factor
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

    def __init__(self, *, pct_start: float, div_factor: float, final_div_factor: float, anneal: str,
                 per: str) -> None:
        self.pct_start, self.div_factor, self.final_div_factor = pct_start, div_factor, final_div_factor
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


@declare("schedule 'cosine_restarts'",
         Option("period", number(0, closed="right"), doc="T₀, epochs of the first cycle"),
         Option("mult", number(1), doc="each cycle is mult times longer than the one before"), MIN_LR, PER)
def cosine_restarts(*, period: float = 10, mult: float = 2, min_lr: float = 0.0, per: str = "step") -> Schedule:
    """SGDR: cosine decay restarted every cycle (:class:`CosineRestarts`)."""
    return CosineRestarts(period=period, mult=mult, min_lr=min_lr, per=per)


@declare("schedule 'cyclic'",
         Option("half_period", number(0, closed="right"), doc="epochs from the lowest rate to the peak"),
         DIV_FACTOR, PER)
def cyclic(*, half_period: float = 2.0, div_factor: float = 4.0, per: str = "step") -> Schedule:
    """Triangular cyclical learning rate (:class:`Cyclic`)."""
    return Cyclic(half_period=half_period, div_factor=div_factor, per=per)


@declare("schedule 'one_cycle'",
         Option("pct_start", number(0, 1, closed="neither"), doc="fraction of training spent going up"),
         DIV_FACTOR,
         Option("final_div_factor", number(1), doc="the last rate is η₀ / (div_factor · final_div_factor)"),
         Option("anneal", OneOf("cos", "linear"), doc="shape of both phases"), PER)
def one_cycle(*, pct_start: float = 0.3, div_factor: float = 25.0, final_div_factor: float = 1e4,
              anneal: str = "cos", per: str = "step") -> Schedule:
    """1cycle: up to η₀, then down far below the start (:class:`OneCycle`)."""
    return OneCycle(pct_start=pct_start, div_factor=div_factor, final_div_factor=final_div_factor, anneal=anneal,
                    per=per)
