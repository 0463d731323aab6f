"""The state of a fit, with one owner: what the training loop reads and writes between its steps.

A :class:`~descend.train.Trainer` holds one :class:`FitState` as ``trainer.fit_state`` for its whole life (a
second ``fit`` continues it). The modules that take part in a fit read and write the fit's state there, and only
there: :mod:`descend.train.lr` the base learning rates, :mod:`descend.train.state` what a checkpoint captures and
restores, :mod:`descend.train.divergence` the loss watch and the training data it diagnoses. The trainer's
position attributes (``trainer.epoch``, ``trainer.global_step``, ``trainer.history``, … :data:`SHOWN`) are the
same values, read and written through :func:`shown`.

What a checkpoint holds of it: the position (epoch, batches done, global step, where the fit began, whether it was
asked to stop), the base learning rates, the rollback count, the history, the running epoch's sums, the
augmentation generator's state and fp16's gradient scale (:mod:`descend.train.state`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from operator import attrgetter

import torch

from ..data import Batches, Split
from .dataloaders import Stream
from .divergence import Watch
from .history import History
from .metric_fns import OneProcess
from .metrics import MetricSums

#: FitState fields a Trainer shows as attributes of its own (``trainer.epoch`` is ``trainer.fit_state.epoch``).
SHOWN = ("epoch", "global_step", "batch_index", "steps_per_epoch", "total_steps", "fit_start_epoch",
         "fit_start_step", "end_epoch", "stop_training", "stop_signal", "rollbacks", "last_loss", "step_loss",
         "history", "val_data")


@dataclass(eq=False)
class Plan:
    """What :meth:`~descend.train.Trainer.prepare` made of a fit's arguments; reused for the very same data.

    The data objects are kept and compared by identity, so an ``(x, y)`` pair made afresh for a later call can
    never pass for an earlier one that happened to have the same ``id``."""

    train: object                  # the training data as the user gave it
    val: object                    # the validation data as the user gave it (or None)
    arguments: tuple               # (epochs, batch_size, shuffle, drop_last)
    split: Split                   # the checked training split, on the device (a DataLoader's: its first batch)
    held: Split | Stream | None    # the checked validation data
    batches: Batches | Stream      # what the training epochs iterate

    def matches(self, train, val, arguments: tuple) -> bool:
        return self.train is train and self.val is val and self.arguments == arguments


@dataclass(eq=False)
class EpochSums:
    """The running epoch's training sums, kept on the device and read once per epoch: the loss and metrics,
    ``(Σ penalty·n, n)`` and ``(Σ pre-clip gradient norm, steps)``."""

    metrics: MetricSums
    penalty: torch.Tensor
    grad_norm: torch.Tensor

    @classmethod
    def zeros(cls, metrics: MetricSums, device: torch.device) -> EpochSums:
        return cls(metrics, torch.zeros(2, device=device), torch.zeros(2, device=device))

    def state_dict(self) -> dict:
        return {"metrics": self.metrics.state_dict(), "penalty": self.penalty, "grad_norm": self.grad_norm}

    def load_state_dict(self, saved: dict) -> None:
        self.metrics.load_state_dict(saved["metrics"])
        self.penalty.copy_(saved["penalty"])
        self.grad_norm.copy_(saved["grad_norm"])


@dataclass(eq=False)
class FitState:
    """Everything a fit keeps between its steps, apart from the model, optimizer, schedule and callbacks."""

    # where the fit is; epochs and steps count from 0 here (from 1 in the logs)
    epoch: int = 0                 # the epoch running (in on_epoch_end: the one just finished)
    global_step: int = 0           # optimizer steps taken, over every fit of this trainer
    batch_index: int = 0           # batches done in the running epoch
    steps_per_epoch: int = 0
    total_steps: int = 0           # the global step at which the running fit ends
    fit_start_epoch: int = 0       # where the running fit began ...
    fit_start_step: int = 0
    end_epoch: int = 0             # ... and the epoch it ends before
    epoch_done: bool = False       # the running epoch is complete (its on_epoch_end events are under way)
    stop_training: bool = False    # set by a callback: the fit ends after this epoch
    stop_signal: int | None = None  # set by SIGINT/SIGTERM; the loop stops at the next step boundary
    rollbacks: int = 0             # divergence rollbacks in this fit
    last_loss: float = math.nan    # training loss, refreshed every log_every steps and at epoch ends
    step_loss: torch.Tensor | None = None  # the step's loss (detached, on the device) while per-step events run
    history: History = field(default_factory=History)  # one dict of logged values per epoch
    # learning rates (descend.train.lr)
    base_lrs: list[float] = field(default_factory=list)         # each group's rate a descend schedule scales
    lr_written: list[float | None] = field(default_factory=list)  # the rate it wrote last, to notice user changes
    # the running epoch
    sums: EpochSums | None = None
    processes: OneProcess = field(default_factory=OneProcess)  # how the sums combine (data parallelism: over ranks)
    watch: Watch = field(default_factory=Watch)                # the step losses not yet checked for divergence
    augment_rng: torch.Generator | None = None                 # the augmentation's random stream
    scaler: torch.amp.GradScaler | None = None                 # fp16's gradient scaling
    # what prepare() builds from (descend.train.preparation), and what it made of the data
    model_spec: object = None      # a descend.models spec, built once the data tells the sizes (None: a torch model)
    optimizer_spec: object = None  # a descend.optim spec, bound to the model once built (None: a torch optimizer)
    loss_fn: object = None         # the loss as a callable ``loss(outputs, targets)``, once the task is known
    plan: Plan | None = None
    train: Split | Stream | None = None  # the training split (a DataLoader's stream), for train_batches()
    val_data: Split | Stream | None = None  # the validation data (for callbacks)
    batch_size: int | str = 128

    def start(self, epochs: int, continuing: bool) -> None:
        """Count a new fit of ``epochs`` epochs on from where the last one left off (or from 0)."""
        if not continuing:
            self.epoch, self.global_step, self.history = 0, 0, History()
        self.fit_start_epoch, self.fit_start_step = self.epoch, self.global_step
        self.lasts(epochs)
        self.batch_index, self.stop_training, self.stop_signal, self.rollbacks = 0, False, None, 0
        self.epoch_done, self.watch = False, Watch(self.global_step)

    def lasts(self, epochs: int) -> None:
        """The fit that began at ``fit_start_epoch`` ends after ``epochs`` epochs."""
        self.end_epoch = self.fit_start_epoch + epochs
        self.total_steps = self.fit_start_step + self.steps_per_epoch * epochs

    def position(self) -> dict:
        """Where a run continues from (a checkpoint written at an epoch's end resumes at the next epoch)."""
        done = self.epoch_done
        return {"epoch": self.epoch + 1 if done else self.epoch, "batch_index": 0 if done else self.batch_index,
                "global_step": self.global_step, "steps_per_epoch": self.steps_per_epoch,
                "stopped": bool(self.stop_training), "fit_start": [self.fit_start_epoch, self.fit_start_step]}

    def resume_at(self, position: dict) -> None:
        """Take the position of :meth:`position` back."""
        self.epoch, self.batch_index = position["epoch"], position["batch_index"]
        self.global_step, self.stop_training = position["global_step"], bool(position.get("stopped", False))
        self.fit_start_epoch, self.fit_start_step = position.get("fit_start", (0, 0))
        self.epoch_done, self.watch = False, Watch(self.global_step)


def shown(name: str) -> property:
    """The FitState field ``name`` as a property of the object holding ``fit_state`` (read and written through)."""

    def write(self, value) -> None:
        setattr(self.fit_state, name, value)

    return property(attrgetter(f"fit_state.{name}"), write, doc=f"``fit_state.{name}`` (see FitState)")
