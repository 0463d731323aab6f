"""The trainer's whole state, when it is written, and how a run continues from it.

A checkpoint holds everything the next step depends on: model, optimizer, schedule (with the plateau
controller), every callback's state, the RNG streams (python, numpy, torch CPU and CUDA, and the augmentation
generator), the data-order position (epoch and batches done; the order of an epoch is a function of the seed and
the epoch, so nothing else is needed), the base learning rates, the history, and the partial sums of the epoch
running. Restoring all of it makes a resumed run end bit-identical to one that never stopped (CPU, deterministic).

Files: ``<dir>/last.safetensors`` every ``every`` steps or epochs, and ``<dir>/best.safetensors`` whenever the
monitored value improves at an epoch end (see :mod:`descend.train.checkpoint` for the format: no pickle, atomic).
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from pathlib import Path

from ..errors import UserError
from ..schedules import resolve_mode
from . import checkpoint, rng
from .callbacks import Callback
from .divergence import Watch
from .history import History

UNITS = ("epoch", "step")


class Checkpoints(Callback):
    """Write ``last`` every ``every`` steps or epochs (``unit``), and ``best`` when ``monitor`` improves.

    A callback that runs after every other one (``order = 100``), so a checkpoint holds what they did in the epoch.
    ``monitor`` defaults to ``val_loss`` (``train_loss`` without validation data); ``mode`` is inferred like
    early stopping's (losses and errors: min; accuracy, F1, AUROC, R²: max). Its own state (the best value)
    travels in the checkpoint itself, not among the callbacks' states.
    """

    order = 100

    def __init__(self, directory: str | Path, *, every: int = 1, unit: str = "epoch", monitor: str | None = None,
                 mode: str = "auto"):
        if unit not in UNITS:
            raise UserError(f"checkpoint unit must be one of {', '.join(UNITS)}, got {unit!r}")
        if not isinstance(every, int) or every < 1:
            raise UserError(f"checkpoint_every must be a positive integer, got {every!r}")
        if mode not in ("auto", "min", "max"):
            raise UserError(f"checkpoint mode must be auto, min or max, got {mode!r}")
        self.directory, self.every, self.unit, self.monitor, self.mode = Path(directory), every, unit, monitor, mode
        self.best_value: float | None = None

    @property
    def last(self) -> Path:
        return self.directory / "last.safetensors"

    @property
    def best(self) -> Path:
        return self.directory / "best.safetensors"

    def on_batch_end(self, trainer) -> None:
        if self.unit == "step" and trainer.global_step % self.every == 0:
            self.write(trainer, self.last)

    def on_epoch_end(self, trainer, logs: dict[str, float]) -> None:
        monitor = self.monitor or ("val_loss" if "val_loss" in logs else "train_loss")
        value = logs.get(monitor)
        if value is None:
            raise UserError(f"checkpoint monitor {monitor!r} is not logged; logged values: {', '.join(logs)}")
        mode = resolve_mode("checkpoint", monitor, self.mode)
        better = self.best_value is None or (value > self.best_value if mode == "max" else value < self.best_value)
        paths = []
        if math.isfinite(value) and better:
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
            checkpoint.save(path, state)

    def restore(self, state: dict) -> None:
        self.best_value = state.get("checkpoints", {}).get("best_value")


def find(path: str | Path) -> Path:
    """The checkpoint to resume from: a file, a checkpoints directory, or a run directory holding one."""
    path = Path(path)
    for candidate in (path, path / "last.safetensors", path / "checkpoints" / "last.safetensors"):
        if candidate.is_file():
            return candidate
    raise UserError(f"no checkpoint to resume from at {path}: expected a .safetensors file, or a run directory with "
                    f"checkpoints/last.safetensors (was checkpointing on?)")


def capture_rng(trainer) -> dict:
    return {"streams": rng.capture(), "augment": trainer._augment_rng.get_state()}


def restore_rng(trainer, state: dict) -> None:
    rng.restore(state["streams"])
    trainer._augment_rng.set_state(state["augment"].cpu())


@contextlib.contextmanager
def stop_on_signals(trainer):
    """While fitting, SIGINT and SIGTERM ask the loop to stop at the next step boundary (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ask_to_stop(signum, frame):
        trainer.stop_signal = signum

    previous = {s: signal.signal(s, ask_to_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def trainer_state(trainer) -> dict:
    """The trainer's whole state (:meth:`Trainer.state_dict <descend.train.Trainer.state_dict>`)."""
    t = trainer
    epoch, batch_index = (t.epoch + 1, 0) if t._epoch_done else (t.epoch, t.batch_index)
    return {
        "model": t.model.state_dict(),
        "optimizer": t.optimizer.state_dict(),
        "schedule": t.schedule.state_dict() if t.schedule is not None else {},
        "callbacks": {key: cb.state_dict() for key, cb in callback_keys(t).items()},
        "rng": capture_rng(t),
        "position": {"epoch": epoch, "batch_index": batch_index, "global_step": t.global_step,
                     "steps_per_epoch": t.steps_per_epoch, "fit_start": [t.fit_start_epoch, t.fit_start_step]},
        "base_lrs": list(t._base_lrs),
        "rollbacks": t.rollbacks,
        "history": list(t.history),
        "epoch_sums": {"metrics": t._sums["metrics"].state_dict(), "penalty": t._sums["penalty"],
                       "grad_norm": t._sums["grad_norm"]},
    }


def restore_trainer(trainer, saved: dict) -> None:
    """Continue ``trainer`` from ``saved`` (a :func:`trainer_state`); the data and model must be the same."""
    t, position = trainer, saved["position"]
    if position["steps_per_epoch"] != t.steps_per_epoch:
        raise UserError(f"the checkpoint was written with {position['steps_per_epoch']} batches per epoch, this "
                        f"run has {t.steps_per_epoch}: the data, batch_size and drop_last must stay the same")
    report = t.model.load_state_dict(saved["model"], strict=False)
    if report.missing_keys or report.unexpected_keys:
        raise UserError(f"the checkpoint's model does not match this model: missing {report.missing_keys}, "
                        f"unexpected {report.unexpected_keys}")
    t.optimizer.load_state_dict(saved["optimizer"])
    if t.schedule is not None and saved["schedule"]:
        t.schedule.load_state_dict(saved["schedule"])
    for key, cb in callback_keys(t).items():
        if key in saved["callbacks"]:
            cb.load_state_dict(saved["callbacks"][key])
    restore_rng(t, saved["rng"])
    t.epoch, t.batch_index = position["epoch"], position["batch_index"]
    t.global_step = position["global_step"]
    t.fit_start_epoch, t.fit_start_step = position.get("fit_start", (0, 0))
    t._base_lrs, t.rollbacks = list(saved["base_lrs"]), saved["rollbacks"]
    t.history = History(saved["history"])
    t._sums = t._fresh_sums()
    t._sums["metrics"].load_state_dict(saved["epoch_sums"]["metrics"])
    t._sums["penalty"].copy_(saved["epoch_sums"]["penalty"])
    t._sums["grad_norm"].copy_(saved["epoch_sums"]["grad_norm"])
    t._watch = Watch(t.device, t.global_step)
    if t.checkpoints is not None:
        t.checkpoints.restore(saved)


def callback_keys(trainer) -> dict[str, Callback]:
    """Callbacks named by class (and position among callbacks of the same class), for their saved state.

    The checkpoint callback is left out: its state travels in the checkpoint itself."""
    keys, seen = {}, {}
    for cb in trainer.callbacks:
        if isinstance(cb, Checkpoints):
            continue
        name = type(cb).__name__
        seen[name] = seen.get(name, -1) + 1
        keys[f"{name}.{seen[name]}" if seen[name] else name] = cb
    return keys
