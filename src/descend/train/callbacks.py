"""Callbacks: small objects that hang off the trainer's named events.

The trainer calls, in order::

    on_fit_start
    per epoch:   on_epoch_start
                 per step:  forward, loss, backward -> on_after_backward -> clip, optimizer step -> on_batch_end
                 on_validation_start -> validation pass -> on_validation_end(logs)   (when there is validation data)
                 on_epoch_end(logs)
    on_fit_end   (also when a callback stopped training early)

``on_after_backward`` sees the gradients (``p.grad``) before clipping and the step. ``on_validation_end`` gets that
pass's ``val_*`` values; a callback may add its own (``logs["val_avg_loss"] = ...``), and they join the epoch's
logs. ``on_epoch_end`` gets the epoch's values; a callback may add values there too, and they are logged to
``metrics.jsonl``, TensorBoard and the history like any other, because the logging callbacks run after the others.

Callbacks run by ascending ``order`` (ties keep list order): user callbacks 0, logs 90, checkpoints 100, so a
checkpoint holds what every other callback did in that epoch. A callback reads the trainer's public attributes
(``model``, ``optimizer``, ``epoch``, ``global_step``, ``history``, ``step_loss``, ``train_batches()``) and may
set ``trainer.stop_training = True``; it never reaches into the loop's locals. ``state_dict``/``load_state_dict``
hold everything a resumed run needs (tensors and JSON values only). Events a callback does not override cost
nothing per step.
"""

from __future__ import annotations

from pathlib import Path

from descend.errors import UserError
from descend.monitor import MIN_DELTA, MODE, MONITOR, improved, read_metric, require_logged, resolve_mode
from descend.options import Boolean, Option, declare, integer
from descend.train import epochs
from descend.train.checkpoint import save_weights

EVENTS = ("on_fit_start", "on_epoch_start", "on_after_backward", "on_batch_end", "on_validation_start",
          "on_validation_end", "on_epoch_end", "on_fit_end")


class Callback:
    """Base class: every event is a no-op, every callback is stateless unless it says otherwise.

    ``model_state_keys`` names the ``state_dict`` entries that hold a copy of the model's tensors (or ``{}``);
    a resumed run checks them against the model (:mod:`descend.train.checkpoint.validate`).
    """

    model_state_keys: tuple[str, ...] = ()

    order = 0  # callbacks run by ascending order: user callbacks 0, logs 90, checkpoints 100

    def setup(self, trainer, logged: set[str]) -> None:
        """Once per fit, before the first step and before anything is written: raise a UserError if this
        callback cannot work with this run (e.g. it monitors a value that is never logged), and add to ``logged``
        the names of the values it will add to the epoch logs."""

    def on_fit_start(self, trainer) -> None:
        pass

    def on_epoch_start(self, trainer) -> None:
        pass

    def on_after_backward(self, trainer) -> None:
        pass

    def on_batch_end(self, trainer) -> None:
        pass

    def on_validation_start(self, trainer) -> None:
        pass

    def on_validation_end(self, trainer, logs: dict[str, float]) -> None:
        pass

    def on_epoch_end(self, trainer, logs: dict[str, float]) -> None:
        pass

    def on_fit_end(self, trainer) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class EarlyStopping(Callback):
    """Stop when the monitored metric has not improved for ``patience`` epochs; keep the best weights.

    Usually the metric is the validation loss or accuracy, and the weights kept are those of the epoch with the
    best validation performance. An epoch improves on the best value b when ``value < b - min_delta`` (mode
    ``min``) or ``value > b + min_delta`` (mode ``max``); ``mode="auto"`` infers min for losses and max for
    accuracies. Epochs before ``first_epoch`` (a warmup; epochs count from 1, so ``first_epoch = 4`` ignores epochs
    1-3) are ignored entirely; the deprecated ``start_from_epoch`` (Keras's number of epochs to ignore) keeps its
    meaning (:mod:`descend.train.epochs`). After ``patience`` epochs in a row without improvement,
    ``trainer.stop_training`` is set. ``best_epoch`` and ``stopped_epoch`` count from 1, as logged.

    With ``restore_best`` (default) the model's state (parameters and buffers, cloned on their device) is kept
    at every improvement and loaded back at the end of training whether or not stopping fired. The best
    value, best epoch, wait counter and best weights are in ``state_dict``, so a resumed run keeps
    counting where it was. One instance serves one training run.
    """

    model_state_keys = ("best_weights",)

    @declare("EarlyStopping", MONITOR, MODE,
             Option("patience", integer(0), doc="epochs in a row without improvement before stopping"),
             MIN_DELTA,
             epochs.first_epoch_option("the first epoch watched (from 1); those before are a warmup",
                                       "from the first epoch"),
             epochs.deprecated_option("start_from_epoch", "the number of epochs ignored (Keras)"),
             Option("restore_best", Boolean(), doc="load the best weights back at the end of training"))
    def __init__(self, monitor: str = "val_loss", mode: str = "auto", patience: int = 10,
                 min_delta: float = 0.0, first_epoch: int | None = None, start_from_epoch: int | None = None,
                 restore_best: bool = True) -> None:
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.mode = resolve_mode("EarlyStopping", monitor, mode)
        self.first_epoch = epochs.first_epoch("EarlyStopping", first_epoch, "start_from_epoch", start_from_epoch,
                                              meaning="watches from") or 1
        self.restore_best = restore_best
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None
        self.best_weights: dict | None = None

    def setup(self, trainer, logged: set[str]) -> None:
        require_logged("EarlyStopping", self.monitor, logged)

    def on_fit_start(self, trainer) -> None:
        epochs.warn_if_after_last("EarlyStopping", self.first_epoch, trainer.total_steps // trainer.steps_per_epoch,
                                  "no epoch is watched and the run never stops early")

    def on_epoch_end(self, trainer, logs: dict[str, float]) -> None:
        value = read_metric("EarlyStopping", logs, self.monitor)
        epoch = int(trainer.epoch) + 1  # the epoch's number as printed and logged (from 1)
        if epoch < self.first_epoch:
            return
        if improved(value, self.best_value, self.mode, self.min_delta):
            self.best_value, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self._keep(trainer.model.state_dict())
            return
        self.wait += 1
        if self.wait >= self.patience:
            trainer.stop_training = True
            self.stopped_epoch = epoch

    def _keep(self, state: dict) -> None:
        """Copy the model's state into the kept buffers (allocated once; same device, no host sync)."""
        kept = self.best_weights
        if kept is None or kept.keys() != state.keys() or any(
                kept[name].device != t.device or kept[name].shape != t.shape for name, t in state.items()):
            self.best_weights = {name: t.detach().clone() for name, t in state.items()}
            return
        for name, t in state.items():
            self.best_weights[name].copy_(t.detach())

    def on_fit_end(self, trainer) -> None:
        if self.restore_best and self.best_weights is not None:
            trainer.model.load_state_dict(self.best_weights)

    def summary(self) -> dict:
        """What a run's summary reports: monitor, best value and epoch, the epoch stopping fired (or None)."""
        return {"monitor": self.monitor, "mode": self.mode, "best_value": self.best_value,
                "best_epoch": self.best_epoch, "stopped_epoch": self.stopped_epoch}

    def state_dict(self) -> dict:
        return {"monitor": self.monitor, "best_value": self.best_value, "best_epoch": self.best_epoch,
                "wait": self.wait, "stopped_epoch": self.stopped_epoch,
                "best_weights": self.best_weights or {}}

    def load_state_dict(self, state: dict) -> None:
        if state["monitor"] != self.monitor:
            raise UserError(f"EarlyStopping: the saved state monitors {state['monitor']!r}, this run "
                            f"monitors {self.monitor!r}; resume with the same monitor")
        self.best_value = None if state["best_value"] is None else float(state["best_value"])
        self.best_epoch = None if state["best_epoch"] is None else int(state["best_epoch"])
        self.wait = int(state["wait"])
        self.stopped_epoch = None if state["stopped_epoch"] is None else int(state["stopped_epoch"])
        weights = state["best_weights"]
        self.best_weights = {name: t.detach().clone() for name, t in weights.items()} or None


class ModelCheckpoint(Callback):
    """Save the model's weights to ``filepath`` (a safetensors file) at the end of every epoch, or only when the
    monitored value improves (``save_best_only``), as Keras' ``ModelCheckpoint`` does.

    ``filepath`` may name the epoch and any logged value: ``"ckpt/epoch{epoch:03d}-{val_loss:.3f}.safetensors"``
    keeps one file per epoch, a plain name is overwritten. Improvement is judged as in :class:`EarlyStopping`
    (``mode``, ``min_delta``; :mod:`descend.monitor`). The file holds the weights only (no pickle): load them with
    :func:`descend.train.checkpoint.load_weights` into the same architecture. Resuming a run from its checkpoints
    (``Trainer.fit(resume=...)``) is :class:`~descend.train.checkpointing.Checkpoints`' job; this callback is for
    keeping weights to use.
    """

    @declare("ModelCheckpoint", MONITOR, MODE, MIN_DELTA,
             Option("save_best_only", Boolean(), doc="write only when the monitored value improves"))
    def __init__(self, filepath: str | Path, monitor: str = "val_loss", mode: str = "auto",
                 min_delta: float = 0.0, save_best_only: bool = False) -> None:
        self.filepath, self.monitor, self.min_delta = str(filepath), monitor, min_delta
        self.mode = resolve_mode("ModelCheckpoint", monitor, mode)
        self.save_best_only = save_best_only
        self.best_value: float | None = None
        self.saved: list[Path] = []  # the files written, in order

    def setup(self, trainer, logged: set[str]) -> None:
        if self.save_best_only:
            require_logged("ModelCheckpoint", self.monitor, logged)
        try:
            self.filepath.format(**{**dict.fromkeys(logged, 0.0), "epoch": 1})
        except (KeyError, IndexError, ValueError) as e:
            raise UserError(f"ModelCheckpoint: filepath {self.filepath!r} names {e} that is not logged; it may use "
                            f"{{epoch}} and {', '.join(sorted(logged))}") from None

    def on_epoch_end(self, trainer, logs: dict[str, float]) -> None:
        if self.save_best_only:
            value = read_metric("ModelCheckpoint", logs, self.monitor)
            if not improved(value, self.best_value, self.mode, self.min_delta):
                return
            self.best_value = value
        path = Path(self.filepath.format(**{**logs, "epoch": int(trainer.epoch) + 1}))  # the epoch as logged
        save_weights(trainer.model, path)
        self.saved.append(path)

    def state_dict(self) -> dict:
        return {"monitor": self.monitor, "best_value": self.best_value}

    def load_state_dict(self, state: dict) -> None:
        self.best_value = None if state["best_value"] is None else float(state["best_value"])
