"""Schedules by name (the ``[schedule]`` recipe section), their option reference, and the picture of a curve."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from descend import atomic
from descend.errors import UserError
from descend.options import Option, validate
from descend.options import describe as describe_table
from descend.schedules import cycles, decays
from descend.schedules.base import Schedule
from descend.schedules.plateau import plateau
from descend.schedules.warmup import warmup

FACTORIES: dict[str, Callable[..., Schedule]] = {
    f.__name__: f
    for f in (decays.constant, decays.step, decays.multistep, decays.exponential, decays.cosine, decays.linear,
              decays.polynomial, decays.inverse_time, decays.inverse_sqrt, cycles.cosine_restarts, cycles.cyclic,
              cycles.one_cycle, plateau)
}
NAMES: tuple[str, ...] = tuple(FACTORIES)
#: warmup's options as every named schedule accepts them: warmup_epochs, warmup_steps, warmup_start, warmup_fraction.
WARMUP: tuple[Option, ...] = tuple(replace(o, name=f"warmup_{o.name}") for o in warmup.options)
WARMUP_OPTIONS = tuple(o.name for o in WARMUP)


def options(name: str) -> tuple[Option, ...]:
    """The option table of schedule ``name``, the warmup options included."""
    if name not in FACTORIES:
        raise UserError(f"unknown schedule {name!r}; choose one of: {', '.join(NAMES)}")
    return (*FACTORIES[name].options, *WARMUP)


def create(name: str, **given: Any) -> Schedule:
    """Build a schedule by name from config options; ``warmup_epochs`` / ``warmup_steps`` / ``warmup_start``
    put a warmup in front. An option given as ``None`` means its default.
    """
    table = options(name)
    given = {k: v for k, v in given.items() if v is not None}
    values = validate(f"schedule {name!r}", table, given)
    warm = {k.removeprefix("warmup_"): values.pop(k) for k in WARMUP_OPTIONS}
    schedule = FACTORIES[name](**values)
    if warm["epochs"] or warm["steps"] or warm["fraction"]:
        return warmup(schedule, **warm)
    if "warmup_start" in given:
        raise UserError(f"schedule {name!r}: warmup_start needs warmup_epochs, warmup_steps or warmup_fraction > 0")
    return schedule


def describe() -> str:
    """Every schedule's options as text (the warmup options apply to each)."""
    parts = [describe_table(FACTORIES[name].options, f"schedule {name!r}") for name in NAMES]
    return "\n".join([*parts, describe_table(WARMUP, "any schedule")])


PLOT_POINTS = 4000


def plot(schedule: Schedule, *, steps_per_epoch: int, total_steps: int, base_lr: float = 1.0, path=None):
    """Draw the learning rate against epochs for a run of ``total_steps`` steps; returns a matplotlib Figure
    (Agg, no pyplot state), also saved to ``path`` if given. The schedule itself is left untouched; a plateau
    controller is drawn from its current state (it cannot know future metrics).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    schedule = copy.deepcopy(schedule)
    schedule.bind(steps_per_epoch, total_steps)
    # at most PLOT_POINTS steps, evenly spaced: a figure has no more pixels, and a run of 10^9 epochs no list
    steps = range(0, total_steps, max(1, -(-total_steps // PLOT_POINTS)))
    epochs = [s / steps_per_epoch for s in steps]
    rates = [schedule.lr(base_lr, s) for s in steps]
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(epochs, rates, drawstyle="steps-post")
    ax.set(xlabel="epoch", ylabel="learning rate", title=repr(schedule))
    ax.title.set_fontsize(8)
    ax.grid(alpha=0.3)
    if path is not None:  # atomically, as every file of a run: never through a link at ``path``
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=120)
        atomic.write_bytes(path, buffer.getvalue(), what="schedule figure")
    return fig
