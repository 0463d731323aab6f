"""The learning-rate range test (Smith, "Cyclical Learning Rates for Training Neural Networks", 2017), run over
several seeds so its suggestion comes with its spread.

Each run raises the learning rate exponentially from ``start`` to ``end`` over ``steps`` optimizer steps of the
recipe's optimizer and records the loss. The curve is smoothed with a centred running median (a non-causal
filter: no lag that shifts the minimum to larger rates, and one early spike does not move it — the complaint
about exponential-average finders), then read off: ``lr_min``, the rate at the lowest smoothed loss, and
``lr_diverge``, the first rate beyond it where the smoothed loss exceeds 4x its minimum (fastai's stop rule).
The suggestion is ``lr_min / 10`` (the "minimum / 10" rule of fastai's ``lr_find``); over seeds the report gives
the geometric mean and the range.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ..schedules import Schedule
from .findings import Finding, Fix
from .subject import Subject, probe

DIVERGE_FACTOR = 4.0
SUGGESTION_DIVISOR = 10.0
MIN_FALL = 0.1


class ExponentialRamp(Schedule):
    """η_t = start · (end / start)^(t / (n − 1)): the range test's sweep (the configured rate is ignored)."""

    name = "lr_range"

    def __init__(self, start: float, end: float, steps: int) -> None:
        super().__init__("step", start=start, end=end, steps=steps)
        self.start, self.end, self.steps = start, end, max(2, steps)

    def _at(self, base_lr: float, t: int) -> float:
        return self.start * (self.end / self.start) ** (min(t, self.steps - 1) / (self.steps - 1))


def smooth(losses: np.ndarray, window: int = 7) -> np.ndarray:
    """Centred running median of ``window`` points (shrinking at the ends); NaN/inf stay non-finite."""
    n, half = len(losses), window // 2
    out = np.empty(n)
    for i in range(n):
        piece = losses[max(0, i - half):i + half + 1]
        out[i] = np.median(piece) if np.isfinite(piece).all() else np.inf
    return out


@dataclass
class Sweep:
    """One seed's range test read off: the rates, smoothed losses, lr at the minimum, lr where it diverged."""

    lrs: list[float]
    losses: list[float]
    lr_min: float
    lr_diverge: float | None
    fall: float  # how far the smoothed loss fell below its start, as a fraction of the start

    @property
    def responsive(self) -> bool:
        """Whether the loss responded to the rate at all (a flat sweep has no minimum worth reading)."""
        return self.fall >= MIN_FALL

    @property
    def suggestion(self) -> float:
        return self.lr_min / SUGGESTION_DIVISOR


def analyse(lrs: np.ndarray, losses: np.ndarray, window: int = 7) -> Sweep | None:
    """Read one sweep; None when it has too few finite points to say anything."""
    lrs, losses = np.asarray(lrs, float), np.asarray(losses, float)
    smoothed = smooth(losses, window)
    finite = np.isfinite(smoothed)
    if finite.sum() < 5:
        return None
    best = int(np.argmin(np.where(finite, smoothed, np.inf)))
    floor = smoothed[best]
    diverge = None
    for i in range(best + 1, len(smoothed)):
        if not np.isfinite(smoothed[i]) or smoothed[i] > DIVERGE_FACTOR * max(floor, 1e-8):
            diverge = float(lrs[i])
            break
    start = smoothed[0] if np.isfinite(smoothed[0]) else floor
    fall = float((start - floor) / start) if start > 0 else 0.0
    return Sweep(lrs.tolist(), smoothed.tolist(), float(lrs[best]), diverge, fall)


def combine(sweeps: list[Sweep]) -> dict:
    """The suggestion over seeds: geometric mean, range, and the std of log10 (the uncertainty in decades)."""
    logs = np.log10([s.suggestion for s in sweeps])
    diverges = [s.lr_diverge for s in sweeps if s.lr_diverge is not None]
    return {"suggestion": float(10 ** logs.mean()), "suggestion_low": float(10 ** logs.min()),
            "suggestion_high": float(10 ** logs.max()), "log10_std": float(logs.std()),
            "lr_min_low": float(min(s.lr_min for s in sweeps)), "lr_min_high": float(max(s.lr_min for s in sweeps)),
            "lr_diverge_low": float(min(diverges)) if diverges else None, "seeds": len(sweeps)}


def judge(lr: float | None, summary: dict, plot: dict | None = None) -> list[Finding]:
    """Compare the configured (peak) learning rate with the range test's verdict.

    Too high: above the rate where the loss was lowest in every seed (an error when also within 4x of the rate
    where the loss blew up, or 3x past the minimum). Too low: 100x below the lowest minimum (an error at 1000x).
    """
    if lr is None:
        return []
    evidence = {"configured_lr": lr, **summary}
    hint = (f"suggested {summary['suggestion']:.2g} (over {summary['seeds']} seeds: {summary['suggestion_low']:.2g} "
            f"to {summary['suggestion_high']:.2g})")
    fix = Fix(f"set optimizer.lr = {summary['suggestion']:.2g}, the range test's suggestion (Smith's LR range "
              f"test, minimum/10 rule)", {"optimizer.lr": float(f"{summary['suggestion']:.2g}")})
    diverge = summary["lr_diverge_low"]
    if lr > summary["lr_min_high"] or (diverge is not None and lr >= diverge):
        severe = lr > 3 * summary["lr_min_high"] or (diverge is not None and lr >= diverge / DIVERGE_FACTOR)
        return [Finding("lr_too_high", "error" if severe else "warning",
                        f"learning rate {lr:.3g} is past the rate where the loss stops falling in the range test "
                        f"({summary['lr_min_low']:.2g}-{summary['lr_min_high']:.2g}); {hint}", evidence, fix, plot)]
    if lr < summary["lr_min_low"] / 100:
        severe = lr < summary["lr_min_low"] / 1000
        return [Finding("lr_too_low", "error" if severe else "warning",
                        f"learning rate {lr:.3g} is {summary['lr_min_low'] / lr:.0f}x below the rate where the loss "
                        f"falls fastest-to-lowest in the range test; training will crawl; {hint}", evidence, fix,
                        plot)]
    return []


def range_test(subject: Subject, deadline: float, seeds: int = 3, steps: int = 100, start: float = 1e-6,
               end: float = 10.0) -> tuple[list[Sweep], bool]:
    """Run the test for ``seeds`` seeds; returns the sweeps and whether the deadline cut it short.

    The sweep length adapts to the time: a 5-step probe measures a step (between step ends, start-up left out),
    and each seed gets an equal part of what is left (at least 20 steps; fewer seeds when even that does not fit).
    """
    lo, hi = min(start, (subject.lr or start) / 100), max(end, (subject.lr or end) * 100)
    step_seconds = _step_time(subject, deadline, lo, hi)
    per_seed = (deadline - time.perf_counter()) / seeds
    steps = int(min(steps, per_seed / max(step_seconds, 1e-4)))
    cut = steps < 100
    if steps < 20:
        seeds, steps = max(1, int((deadline - time.perf_counter()) / max(step_seconds, 1e-4) / 20)), 20
    sweeps = []
    for seed in range(seeds):
        trainer = _ramped(subject, seed, lo, hi, steps)
        result = probe(trainer, subject.data.train, deadline=deadline, steps=steps, batch_size=subject.batch_size,
                       stop_if=_diverged)
        cut = cut or result.cut_short
        n = len(result.losses)
        lrs = [trainer.schedule.lr(1.0, t) for t in range(n)]
        sweep = analyse(np.array(lrs), np.array(result.losses))
        if sweep is not None:
            sweeps.append(sweep)
        if time.perf_counter() > deadline:
            break
    return sweeps, cut


def _diverged(losses: list[float]) -> bool:
    """End a sweep once the loss is far above its best so far (fastai stops at 4x the smoothed minimum)."""
    if len(losses) < 10:
        return False
    recent = float(np.median(losses[-5:]))
    return recent > DIVERGE_FACTOR * 2 * max(min(losses), 1e-8) or not math.isfinite(recent)


def _ramped(subject: Subject, seed: int | None, lo: float, hi: float, steps: int):
    """A fresh trainer whose rate follows the sweep: the recipe's own schedule (a warmup longer than the short
    sweep, say) takes no part in a range test."""
    trainer = subject.make(seed)
    trainer.schedule = ExponentialRamp(lo, hi, steps)
    return trainer


def _step_time(subject: Subject, deadline: float, lo: float, hi: float) -> float:
    trainer = _ramped(subject, None, lo, hi, 100)
    result = probe(trainer, subject.data.train, deadline=deadline, steps=5, batch_size=subject.batch_size)
    return result.step_seconds


def plot(sweeps: list[Sweep], lr: float | None) -> dict:
    series = {f"seed {i}": (s.lrs, s.losses) for i, s in enumerate(sweeps)}
    return {"title": "LR range test (smoothed loss)", "xlabel": "learning rate", "ylabel": "training loss",
            "xlog": True, "series": series, "vlines": {"configured": lr} if lr else {}}
