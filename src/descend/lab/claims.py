"""Sentences a lab may write: each one generated from its own numbers and only as strong as their intervals.

A lab states a change between two points of a sweep ("bias² falls from … at degree 0 to … at degree 7") only when
the two 95% intervals do not overlap; otherwise it says that no change was measured. Points whose estimates are
unresolved (see :meth:`descend.lab.decomposition.Decomposition.unresolved`) are never compared, and the text names
them as unresolved. A :class:`Claim` keeps what a sentence rests on, so that tests check every sentence of a
report against the report's own numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

FALLS, RISES, NO_CHANGE = "falls", "rises", "no measurable change"


@dataclass(frozen=True)
class Estimate:
    """A measured value and its interval (``low`` ≤ ``high``)."""

    value: float
    low: float
    high: float

    def text(self, clip_at_zero: bool = False) -> str:
        """``value [low, high]`` to 3 significant digits; ``clip_at_zero`` for quantities that cannot be negative
        (bias²: its unbiased estimate can come out below zero, the quantity cannot)."""
        v, lo, hi = (max(x, 0.0) if clip_at_zero else x for x in (self.value, self.low, self.high))
        return f"{v:.3g} [{lo:.3g}, {hi:.3g}]"


def direction(a: Estimate, b: Estimate) -> str:
    """How the quantity changes from ``a`` to ``b``: falls or rises when the intervals are disjoint."""
    if b.high < a.low:
        return FALLS
    if b.low > a.high:
        return RISES
    return NO_CHANGE


@dataclass(frozen=True)
class Claim:
    """One compared pair: ``quantity`` along ``axis`` from ``start`` to ``end`` (keys of the sweep)."""

    axis: str
    quantity: str
    start: object
    end: object
    before: Estimate
    after: Estimate

    @property
    def direction(self) -> str:
        return direction(self.before, self.after)

    def sentence(self, label: str, axis_label: str, clip_at_zero: bool = False) -> str:
        a, b = self.before.text(clip_at_zero), self.after.text(clip_at_zero)
        start, end = key_text(self.start), key_text(self.end)
        if self.direction == NO_CHANGE:
            return (f"{label} shows no measurable change from {axis_label} {start} to {end} "
                    f"({a} and {b}: the 95% intervals overlap)")
        return f"{label} {self.direction} from {a} at {axis_label} {start} to {b} at {axis_label} {end}"

    def as_dict(self) -> dict:
        return {**asdict(self), "direction": self.direction}


def key_text(key) -> str:
    """A sweep's key as the text shows it (0.0 as 0, 0.03 as 0.03)."""
    return f"{key:g}" if isinstance(key, float) else str(key)


def lowest(points: dict, keys) -> tuple[object, list]:
    """The key of the lowest value among ``keys`` of ``points`` (key -> Estimate) and the other keys whose
    intervals overlap its own (the minimum is not distinguished from them)."""
    best = min(keys, key=lambda k: points[k].value)
    tied = [k for k in keys if k != best and points[k].low <= points[best].high]
    return best, tied


def highest(points: dict, keys) -> tuple[object, list]:
    """The key of the highest value among ``keys`` of ``points`` (key -> Estimate) and the other keys whose
    intervals overlap its own (the best is not distinguished from them)."""
    best = max(keys, key=lambda k: points[k].value)
    tied = [k for k in keys if k != best and points[k].high >= points[best].low]
    return best, tied
