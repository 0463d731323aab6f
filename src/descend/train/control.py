"""Babysitting a run: change it while it trains, without restarting.

The oldest tuning strategy is to watch the curves and act (Bengio 2012, "Practical recommendations for
gradient-based training"; the "babysitting" or "panda" approach): halve the learning rate when the loss plateaus or
oscillates, double it when it crawls, train longer when it still improves, stop when it is done. :class:`Control`
takes such commands at the end of every epoch from two places:

* ``control.toml`` in the run directory (works headless, over ssh, from a script)::

      lr = 0.5            # multiply the learning rate by 0.5 ("halve" and "double" work too)
      add_epochs = 10     # train 10 epochs more than the recipe says
      stop = true         # stop after this epoch; the last checkpoint holds it

  The file is read when it changed (one ``stat`` per epoch), applied once, and renamed to
  ``control.applied.toml``.
* keys, while the progress bar runs on a terminal: ``-`` halves and ``+`` doubles the learning rate, ``e`` adds
  5 epochs, ``s`` stops after the epoch.

Every change is logged with the epoch's values (``control_lr_factor``, ``control_add_epochs``, ``control_stop``
in ``metrics.jsonl`` and TensorBoard). The learning-rate factor lives in the trainer's state and the added epochs in
this callback's state, so both survive a resume.
"""

from __future__ import annotations

import atexit
import os
import queue
import select
import sys
import threading
import warnings
from pathlib import Path

import tomllib

from ..errors import UserError
from ..options import Boolean, Either, OneOf, Option, Optional, integer, number, validate
from . import lr
from .callbacks import Callback
from .epochs import MAX_EPOCHS  # a run's epochs, those added included: more is a typo (10**30, 2**63 - 1)

KEYS = {"-": ("lr", 0.5), "+": ("lr", 2.0), "e": ("add_epochs", 5), "s": ("stop", True)}
NAMED = {"halve": 0.5, "double": 2.0}
#: A control file's commands, checked like a recipe's options (:mod:`descend.options`).
COMMANDS = (
    Option("lr", Optional(Either(OneOf(*NAMED), number(1e-4, 1e4))), None,
           "multiply the learning rate by this factor (\"halve\", \"double\")"),
    Option("add_epochs", Optional(integer(1, MAX_EPOCHS)), None, "train this many epochs more"),
    Option("stop", Boolean(), False, "stop after this epoch (the last checkpoint holds it)"),
)
#: What a checkpoint keeps of the babysitting (a file from elsewhere: checked with the same bounds).
STATE = (Option("added", integer(0, MAX_EPOCHS), 0, "epochs added so far"),
         Option("stopped", Boolean(), False, "stopped by a command, to be resumed"))


def parse(text: str, where: str = "control.toml") -> list[tuple[str, object]]:
    """The commands in a control file, in a fixed order (learning rate, epochs, stop); a file with any
    mistake is refused whole (:class:`UserError`), like a recipe."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{where} is not valid TOML: {e}") from None
    given = validate(where, COMMANDS, raw)
    commands = []
    if given["lr"] is not None:
        commands.append(("lr", float(NAMED.get(given["lr"], given["lr"]))))
    if given["add_epochs"] is not None:
        commands.append(("add_epochs", given["add_epochs"]))
    if given["stop"]:
        commands.append(("stop", True))
    return commands


class Control(Callback):
    """Apply babysitting commands from ``path`` (a ``control.toml``) and, with ``keys``, from the terminal.

    ``share``: in a data-parallel run, a function that hands the process of rank 0's commands to every process
    (:func:`descend.distributed.share_commands`); the other processes read no file (``path=None``) and no keys, and
    apply what they are handed, so every process trains the same epochs at the same rate."""

    order = 10  # before the loggers (order 90), which then log what was changed

    def __init__(self, path: str | Path | None, *, keys: bool = False, stream=None, share=None) -> None:
        self.path = Path(path) if path is not None else None
        self.share = share
        self.keys = keys
        self.stream = stream  # None: sys.stderr as it is when a message is printed (a live progress bar's proxy)
        self.added = 0
        self.stopped = False
        self._seen: float | None = None
        self._pending: queue.Queue = queue.Queue()
        self._reader: _KeyReader | None = None

    def on_fit_start(self, trainer) -> None:
        if self.added:
            trainer.add_epochs(self.added)  # a resumed run keeps the epochs added before it stopped
        if self.stopped:  # stopped here to be resumed: the resumed run trains on
            trainer.stop_training, self.stopped = False, False
        if self.keys and _KeyReader.possible():
            self._reader = _KeyReader(self._pending)
            self._reader.start()
            self._say("keys: - halve lr, + double lr, e 5 more epochs, s stop after this epoch")

    def on_epoch_end(self, trainer, logs: dict[str, float]) -> None:
        commands = self._from_file(trainer.epoch + 1) if self.path is not None else []
        while not self._pending.empty():
            commands.append(self._pending.get_nowait())
        if self.share is not None:
            commands = self.share(commands)
        for name, value in commands:
            done = trainer.epoch + 1
            if name == "lr":
                trainer.scale_lr(value)
                logs["control_lr_factor"] = logs.get("control_lr_factor", 1.0) * value
                self._say(f"control: learning rate x{value:g} after epoch {done}")
            elif name == "add_epochs":
                if trainer.end_epoch + value > MAX_EPOCHS:
                    warnings.warn(f"control, after epoch {done}: add_epochs = {value} refused: the run would reach "
                                  f"{trainer.end_epoch + value} epochs, more than {MAX_EPOCHS:,}", stacklevel=2)
                    continue
                trainer.add_epochs(value)
                self.added += value
                logs["control_add_epochs"] = logs.get("control_add_epochs", 0) + value
                self._say(f"control: {value} epochs added after epoch {done}: the run now ends at epoch "
                          f"{trainer.end_epoch}")
                _warn_if_decayed(trainer, value)
            else:
                trainer.stop_training, self.stopped = True, True
                logs["control_stop"] = 1
                self._say(f"control: stop after epoch {done}")

    def on_fit_end(self, trainer) -> None:
        if self._reader is not None:
            self._reader.stop()
            self._reader = None

    def _say(self, message: str) -> None:
        """One line of its own: printed through sys.stderr as it is now, which a live progress bar redirects
        above itself (the bar's line is never written into)."""
        print(message, file=self.stream or sys.stderr, flush=True)

    def _from_file(self, epoch: int) -> list[tuple[str, object]]:
        """The file's commands, read after epoch ``epoch`` (named in a refusal, so a mistake made twice is said
        twice: Python shows a repeated warning once)."""
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return []
        if mtime == self._seen:
            return []
        self._seen = mtime
        try:
            commands = parse(self.path.read_text(encoding="utf-8"), str(self.path))
        except (OSError, UnicodeDecodeError) as e:  # a directory, a binary file: reported like a typo
            why = getattr(e, "strerror", None) or e
            warnings.warn(f"control, after epoch {epoch}: cannot read {self.path} ({why}); nothing was changed, "
                          "training goes on", stacklevel=2)
            return []
        except UserError as e:  # a typo must not kill a long run: the file is left for the user to fix
            warnings.warn(f"control, after epoch {epoch}: {e} Nothing was changed; fix the file to apply it, "
                          "training goes on", stacklevel=2)
            return []
        os.replace(self.path, self.path.with_name("control.applied.toml"))
        return commands

    def state_dict(self) -> dict:
        return {"added": self.added, "stopped": self.stopped}

    def load_state_dict(self, state: dict) -> None:
        """The babysitting state of a checkpoint, checked with the control file's own bounds."""
        if not isinstance(state, dict):
            raise UserError(f"checkpoint: the babysitting state must be a table, got {type(state).__name__}")
        checked = validate("checkpoint: babysitting state", STATE, state)
        self.added, self.stopped = checked["added"], checked["stopped"]


def _warn_if_decayed(trainer, added: int) -> None:
    """Epochs added past a schedule's end train at its last rate; if that is (nearly) 0 they change nothing."""
    end = lr.rate_after_end(trainer)
    if end is None or end[0] > 1e-3 * end[1]:
        return
    warnings.warn(f"control: the {added} added epochs train at learning rate {end[0]:.3g}, where the schedule ended "
                  f"(it keeps its length and had decayed from {end[1]:.3g}), so they change almost nothing. To train "
                  "on, stop and resume with a longer run (descend resume RUN --set train.epochs=N stretches the "
                  "schedule) or give the schedule a floor (min_lr)", stacklevel=3)


class _KeyReader:
    """Single keys from a terminal in cbreak mode, read by a daemon thread; the terminal is restored at the end."""

    def __init__(self, commands: queue.Queue, fd: int | None = None) -> None:
        self.commands, self._stop, self._fd = commands, threading.Event(), fd
        self._thread = threading.Thread(target=self._run, daemon=True, name="descend-keys")

    @staticmethod
    def possible() -> bool:
        try:
            import termios  # noqa: F401  (POSIX terminals only)
        except ImportError:
            return False
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            return False
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()  # a background job must not touch the terminal

    def start(self) -> None:
        import termios
        import tty

        self._fd = sys.stdin.fileno() if self._fd is None else self._fd
        self._saved = termios.tcgetattr(self._fd)
        tty.setcbreak(self._fd)
        atexit.register(self.stop)  # the terminal comes back even when the run dies
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.2)
            if ready:
                key = os.read(self._fd, 1).decode(errors="ignore")
                if key in KEYS:
                    self.commands.put(KEYS[key])

    def stop(self) -> None:
        import termios

        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=1.0)
        termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
