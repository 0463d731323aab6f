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
from pathlib import Path

import tomllib

from ..errors import UserError
from .callbacks import Callback

KEYS = {"-": ("lr", 0.5), "+": ("lr", 2.0), "e": ("add_epochs", 5), "s": ("stop", True)}
NAMED = {"halve": 0.5, "double": 2.0}


def parse(text: str, where: str = "control.toml") -> list[tuple[str, object]]:
    """The commands in a control file, in a fixed order (learning rate, epochs, stop)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{where} is not valid TOML: {e}") from None
    unknown = sorted(set(raw) - {"lr", "add_epochs", "stop"})
    if unknown:
        raise UserError(f"{where}: unknown command {unknown[0]!r}; allowed: lr, add_epochs, stop")
    commands = []
    if "lr" in raw:
        factor = NAMED.get(raw["lr"], raw["lr"])
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
            raise UserError(f"{where}: lr = {raw['lr']!r}: give a factor > 0, \"halve\" or \"double\"")
        commands.append(("lr", float(factor)))
    if "add_epochs" in raw:
        n = raw["add_epochs"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise UserError(f"{where}: add_epochs = {n!r}: give a positive integer")
        commands.append(("add_epochs", n))
    if raw.get("stop") is True:
        commands.append(("stop", True))
    return commands


class Control(Callback):
    """Apply babysitting commands from ``path`` (a ``control.toml``) and, with ``keys``, from the terminal."""

    order = 10  # before the loggers (order 90), which then log what was changed

    def __init__(self, path: str | Path, *, keys: bool = False, stream=None) -> None:
        self.path = Path(path)
        self.keys = keys
        self.stream = stream if stream is not None else sys.stderr
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
            print("keys: - halve lr, + double lr, e 5 more epochs, s stop after this epoch", file=self.stream)

    def on_epoch_end(self, trainer, logs: dict[str, float]) -> None:
        commands = self._from_file()
        while not self._pending.empty():
            commands.append(self._pending.get_nowait())
        for name, value in commands:
            if name == "lr":
                trainer.scale_lr(value)
                logs["control_lr_factor"] = logs.get("control_lr_factor", 1.0) * value
            elif name == "add_epochs":
                trainer.add_epochs(value)
                self.added += value
                logs["control_add_epochs"] = logs.get("control_add_epochs", 0) + value
            else:
                trainer.stop_training, self.stopped = True, True
                logs["control_stop"] = 1
            print(f"control: {name} {value} after epoch {trainer.epoch + 1}", file=self.stream)

    def on_fit_end(self, trainer) -> None:
        if self._reader is not None:
            self._reader.stop()
            self._reader = None

    def _from_file(self) -> list[tuple[str, object]]:
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
            print(f"control: ignored: cannot read {self.path}: {getattr(e, 'strerror', None) or e}", file=self.stream)
            return []
        except UserError as e:
            print(f"control: ignored: {e}", file=self.stream)  # a typo must not kill a long run
            return []
        os.replace(self.path, self.path.with_name("control.applied.toml"))
        return commands

    def state_dict(self) -> dict:
        return {"added": self.added, "stopped": self.stopped}

    def load_state_dict(self, state: dict) -> None:
        self.added, self.stopped = int(state.get("added", 0)), bool(state.get("stopped", False))


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
