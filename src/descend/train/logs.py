"""Logs people already read: ``metrics.jsonl``, TensorBoard event files, and a progress display.

Each is a callback. They see only the per-epoch values the trainer has already brought to the host, plus
``trainer.last_loss`` (refreshed every ``log_every`` steps), so none of them adds a host sync to a step.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .. import atomic
from .callbacks import Callback


def _shown(logs: dict[str, float]) -> str:
    keys = [k for k in logs if k.endswith(("loss", "accuracy", "r2", "mae"))] + ["lr"]
    return "  ".join(f"{k} {logs[k]:.4g}" for k in keys if k in logs)


class MetricsFile(Callback):
    """One JSON object per epoch in ``path``, appended and flushed as each epoch ends.

    At the start of a fit the file is made to hold exactly the trainer's history, so a resumed run (whose history
    comes from its checkpoint) continues the file with no duplicate and no missing epoch.
    """

    order = 90  # after every callback that adds values to the logs

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_fit_start(self, trainer):  # atomic: a symbolic link at the path is replaced, never written through
        atomic.write_text(self.path, "".join(_row(logs) for logs in trainer.history), what="metrics log")

    def on_epoch_end(self, trainer, logs):
        atomic.append_text(self.path, _row(logs), what="metrics log")


def _row(logs: dict) -> str:
    finite = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in logs.items()}
    return json.dumps(finite) + "\n"


class TensorBoard(Callback):
    """Scalars per epoch under ``log_dir`` (``tensorboard --logdir runs/``): ``loss/train``, ``accuracy/val``, …
    against the epoch number (from 1); and every ``log_every`` steps ``step/train_loss`` (the latest step's loss,
    read in the trainer's finite-check, so no extra host sync) and ``step/lr`` against the step number (in
    ``log_dir/steps``), so a warmup or a per-step schedule shows."""

    order = 90

    def __init__(self, log_dir: str | Path):
        self.log_dir = Path(log_dir)
        self._writer = self._steps = None

    def on_fit_start(self, trainer):
        from torch.utils.tensorboard import SummaryWriter  # slow to import; only runs that log pay for it

        # a resumed run drops events logged after its checkpoint, so no epoch appears twice
        self._writer = SummaryWriter(str(self.log_dir), purge_step=trainer.epoch + 1 if trainer.epoch else None)
        # per-step values in their own run (tb/steps): their x-axis is the step, and a resume purges by step
        self._steps = SummaryWriter(str(self.log_dir / "steps"),
                                    purge_step=trainer.global_step + 1 if trainer.global_step else None)

    def on_batch_end(self, trainer):
        if trainer.global_step % trainer.log_every == 0:
            self._steps.add_scalar("step/train_loss", trainer.last_loss, trainer.global_step)
            self._steps.add_scalar("step/lr", trainer.optimizer.param_groups[0]["lr"], trainer.global_step)

    def on_epoch_end(self, trainer, logs):
        for key, value in logs.items():
            if key in ("epoch", "step"):
                continue
            split, _, metric = key.partition("_")
            tag = f"{metric}/{split}" if split in ("train", "val", "test") and metric else key
            self._writer.add_scalar(tag, value, trainer.epoch + 1)  # the epoch's number, from 1 as logged
        self._writer.flush()
        self._steps.flush()

    def on_fit_end(self, trainer):
        if self._writer is not None:
            self._writer.close()
            self._steps.close()


class ProgressBar(Callback):
    """A rich progress bar (epoch, step, loss, metrics, ETA) on a terminal or in a notebook; one plain line per
    epoch otherwise. ``total_epochs`` defaults to the fit's own (learned at its start, and followed when epochs are
    added while it runs: babysitting's ``add_epochs``)."""

    order = 90

    def __init__(self, total_epochs: int | None = None, *, stream=None, force_plain: bool = False):
        self.total_epochs = total_epochs
        self.console = Console(file=stream or sys.stdout)
        self.plain = force_plain or not _live(self.console)
        self._progress = None

    def on_fit_start(self, trainer):
        if self.total_epochs is None or trainer.end_epoch > self.total_epochs:
            self.total_epochs = trainer.end_epoch
        if self.plain:
            return
        self._progress = Progress(TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                                  BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                  TimeRemainingColumn(), console=self.console, transient=False)
        self._progress.start()
        self._task = self._progress.add_task("train", total=trainer.total_steps, completed=trainer.global_step,
                                             epoch=trainer.epoch + 1, epochs=self.total_epochs, info="")

    def on_batch_end(self, trainer):
        if self._progress is not None:
            info = f"loss {trainer.last_loss:.4g}" if math.isfinite(trainer.last_loss) else ""
            self._progress.update(self._task, completed=trainer.global_step, epoch=trainer.epoch + 1, info=info)

    def on_epoch_end(self, trainer, logs):
        if trainer.end_epoch > self.total_epochs:  # epochs added while training (babysitting)
            self.total_epochs = trainer.end_epoch
            if self._progress is not None:
                self._progress.update(self._task, total=trainer.total_steps, epochs=self.total_epochs)
        line = f"epoch {trainer.epoch + 1}/{self.total_epochs}  {_shown(logs)}  {logs.get('seconds', 0):.1f}s"
        if self._progress is not None:
            self._progress.update(self._task, info=f"loss {trainer.last_loss:.4g}")
            self._progress.console.print(line)
        else:
            self.console.print(line, highlight=False, soft_wrap=True)

    def on_fit_end(self, trainer):
        if self._progress is not None:
            self._progress.update(self._task, completed=trainer.global_step, refresh=True)
        self.close()

    def close(self) -> None:
        """End the bar (and its line), so what is printed next (a Ctrl-C message) starts on a line of its own."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def progress_bar(callbacks, progress: bool | None) -> ProgressBar | None:
    """The progress bar a fit adds: asked for (``progress=True``), or by default (None) on a terminal or in a
    notebook; none when one is among ``callbacks`` already or ``progress=False``."""
    if progress is False or any(isinstance(cb, ProgressBar) for cb in callbacks):
        return None
    return ProgressBar() if progress or _interactive(sys.stdout) else None


def _live(console: Console) -> bool:
    """Whether ``console`` can show a live bar: a terminal, or a notebook with ipywidgets (rich draws its bar there
    in an ipywidgets Output; without the package it warns 'install "ipywidgets" for Jupyter support' at every
    refresh, so the notebook gets the plain lines instead)."""
    if console.is_terminal:
        return True
    return console.is_jupyter and importlib.util.find_spec("ipywidgets") is not None


_last_look: tuple = (None, False)  # (stream, whether it is a terminal or notebook): asked of rich once per stream


def _interactive(stream) -> bool:
    """Whether ``stream`` shows a live bar (a terminal, or a notebook), as rich judges it; remembered per stream."""
    global _last_look
    if _last_look[0] is not stream:
        console = Console(file=stream)
        _last_look = (stream, _live(console))
    return _last_look[1]


class SpeedLine(Callback):
    """Prints the automatic speed settings' line (:meth:`descend.train.hardware.Settings.line`) when a fit starts,
    after a resume has put back the recorded settings."""

    order = 89  # before the progress bar's first line

    def __init__(self, stream=None):
        self.stream = stream

    def on_fit_start(self, trainer) -> None:
        if trainer.speed is not None:
            print(trainer.speed.line(), file=self.stream or sys.stdout, flush=True)
