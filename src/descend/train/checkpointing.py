"""The checkpoint policy: when the trainer's state is written, where, and where a run resumes from.

``<dir>/last.safetensors`` every ``every`` steps or epochs, and ``<dir>/best.safetensors`` whenever the monitored
value improves at an epoch end. The state itself is :func:`descend.train.state.capture`; the file format is
:mod:`descend.train.checkpoint` (no pickle, written atomically, never with non-finite values).
"""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import UserError
from ..monitor import MODE, improved, read_metric, require_logged, resolve_mode
from ..options import OneOf, Option, declare, integer
from .callbacks import Callback
from .checkpoint.codec import save

UNITS = ("epoch", "step")


class Checkpoints(Callback):
    """Write ``last`` every ``every`` steps or epochs (``unit``), and ``best`` when ``monitor`` improves.

    A callback that runs after every other one (``order = 100``), so a checkpoint holds what they did in the epoch.
    ``monitor`` defaults to ``val_loss`` (``train_loss`` without validation data); ``mode`` is inferred as for
    early stopping (:func:`descend.monitor.resolve_mode`). Its own state (the best value) travels in the
    checkpoint itself, not among the callbacks' states.
    """

    order = 100

    @declare("Checkpoints",
             Option("every", integer(1), doc="steps or epochs between writes of the last checkpoint"),
             Option("unit", OneOf(*UNITS), doc="what every counts: epochs or optimizer steps"),
             MODE)
    def __init__(self, directory: str | Path, *, every: int = 1, unit: str = "epoch", monitor: str | None = None,
                 mode: str = "auto"):
        self.directory, self.every, self.unit, self.monitor, self.mode = Path(directory), every, unit, monitor, mode
        self.best_value: float | None = None

    @property
    def last(self) -> Path:
        return self.directory / "last.safetensors"

    @property
    def best(self) -> Path:
        return self.directory / "best.safetensors"

    def setup(self, trainer, logged: set[str]) -> None:
        require_logged("checkpoint", self.monitor or ("val_loss" if "val_loss" in logged else "train_loss"), logged)

    def on_batch_end(self, trainer) -> None:
        if self.unit == "step" and trainer.global_step % self.every == 0:
            self.write(trainer, self.last)

    def on_epoch_end(self, trainer, logs: dict[str, float]) -> None:
        monitor = self.monitor or ("val_loss" if "val_loss" in logs else "train_loss")
        value = read_metric("Checkpoints", logs, monitor)
        mode = resolve_mode("Checkpoints", monitor, self.mode)
        paths = []
        if math.isfinite(value) and improved(value, self.best_value, mode):
            self.best_value = value
            paths.append(self.best)
        if self.unit == "epoch" and (trainer.epoch + 1) % self.every == 0:
            paths.append(self.last)
        self.write(trainer, *paths)

    def write(self, trainer, *paths: Path) -> None:
        """Write the trainer's state (built once) to each of ``paths``."""
        if not paths:
            return
        trainer.check_finite()  # a diverged state is never written over a good one
        state = {**trainer.state_dict(), "checkpoints": {"best_value": self.best_value}}
        for path in paths:
            save(path, state)

    def restore(self, state: dict) -> None:
        self.best_value = state.get("checkpoints", {}).get("best_value")


class _NoCheckpoint(UserError):
    """Nothing at all where a checkpoint would be (as opposed to something there that is not a file)."""


def find(path: str | Path) -> Path:
    """The checkpoint to resume from: a file, a checkpoints directory, or a run directory holding one."""
    path = Path(path)
    for candidate in (path, path / "last.safetensors", path / "checkpoints" / "last.safetensors"):
        if candidate.is_file():
            return candidate
        if candidate.name == "last.safetensors" and candidate.exists():  # a directory, a device: never "no checkpoint"
            raise UserError(f"{candidate} is where the last checkpoint belongs, but it is not a file; move it away")
    raise _NoCheckpoint(f"no checkpoint to resume from at {path}: expected a .safetensors file, or a run directory "
                        "with checkpoints/last.safetensors (was checkpointing on?)")


def has_checkpoint(path: str | Path) -> bool:
    """Whether :func:`find` would find a checkpoint to resume from at ``path``; something in a checkpoint's place
    that is not a file is a UserError, so a run is not started afresh over it."""
    try:
        find(path)
    except _NoCheckpoint:
        return False
    return True
