"""Watching one logged metric: whether it should go down or up, whether it improved, reading it from the logs.

Early stopping, the plateau schedule, the best checkpoint and ``History.best`` all watch a metric; this is the
one place that decides which way it should go, so ``val_f1`` is "max" for all of them (as Keras keeps mode and
min_delta in one ``MonitorCallback``). ``mode="auto"`` reads the name: losses and errors (``loss``, ``error``,
``mse``, ``rmse``, ``mae``, ``perplexity``) go down; accuracies and scores (``acc``, ``auc``, ``auroc``,
``auprc``, ``f1``, ``precision``, ``recall``, ``r2``) go up; any other name needs ``mode="min"`` or ``mode="max"``.
"""

from __future__ import annotations

import difflib
import math

from descend.errors import UserError
from descend.options import OneOf, Option, Text, number

MODES = ("auto", "min", "max")
DECREASING = ("loss", "error", "mse", "mae", "perplexity")  # rmse contains mse
INCREASING = ("acc", "auc", "auroc", "auprc", "f1", "precision", "recall", "r2", "score")

#: The options every watcher of a metric shares.
MONITOR = Option("monitor", Text("the name of a logged metric"), "val_loss",
                 "the logged value watched, e.g. val_loss, val_accuracy, train_loss")
MODE = Option("mode", OneOf(*MODES), "auto",
              "min: lower is better; max: higher is better; auto: read from the metric's name")
MIN_DELTA = Option("min_delta", number(0), 0.0, "an improvement must beat the best value by more than this")


def resolve_mode(where: str, monitor: str, mode: str = "auto") -> str:
    """``"min"`` or ``"max"`` for metric ``monitor``; ``"auto"`` infers it from the name (module docstring)."""
    mode = MODE.check(where, mode)
    if mode != "auto":
        return mode
    name = str(monitor).lower()
    if any(word in name for word in DECREASING):
        return "min"
    if any(word in name for word in INCREASING):
        return "max"
    raise UserError(f"{where}: cannot infer whether {monitor!r} should go down or up; "
                    "set mode='min' or mode='max'.")


def improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
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


def require_logged(where: str, monitor: str, logged: set[str]) -> None:
    """Refuse, before training, a monitor this run will never log (a misspelling, or val_* without val data)."""
    if monitor in logged:
        return
    hint = difflib.get_close_matches(monitor, sorted(logged), n=1)
    if monitor.startswith("val_") and not any(name.startswith("val_") for name in logged):
        why = "this run has no validation data (set data.val_fraction > 0, or monitor a train_* value)"
    else:
        why = f"did you mean {hint[0]!r}?" if hint else "choose one of the logged values"
    shown = ", ".join(sorted(n for n in logged if n not in ("epoch", "step", "seconds")))
    raise UserError(f"{where}: monitor {monitor!r} is never logged by this run; {why} Logged: {shown}")
