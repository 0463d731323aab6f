"""The errors a user can cause, each with the exit code the command line gives it.

Everything the user can get wrong (a config field, a data file, a label, an option) raises
:class:`UserError` with one message that names the problem and the fix; ``descend`` prints it and exits with
code 2, no traceback.
From Python it is a ``ValueError``, so ``except ValueError`` keeps working.
"""

import signal
from pathlib import Path
from typing import Any


def short(value: Any, limit: int = 80) -> str:
    """repr of a value a user or a file gave, cut short: a hostile recipe or file must not produce a message
    thousands of characters long."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class UserError(ValueError):
    """A mistake in the user's input: a config field, a data file, a name, an option. Exit code 2."""

    exit_code = 2


class CheckpointError(UserError):
    """A checkpoint or weights file could not be written or read; the message names the file and problem."""


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or gradient. Exit code 3."""

    exit_code = 3


class Interrupted(KeyboardInterrupt):
    """Training stopped on SIGINT or SIGTERM after finishing its step (and writing a checkpoint, if on).

    Exit code 128 + the signal number: 130 for Ctrl-C, 143 for SIGTERM. It is a ``KeyboardInterrupt``, so code
    (and notebooks) that handle Ctrl-C keep working, and ``except Exception`` does not swallow it.
    """

    def __init__(self, signum: int, checkpoint_path: Path | None = None):
        self.signum, self.checkpoint_path = signum, checkpoint_path
        self.exit_code = 128 + signum
        where = f"; checkpoint written to {checkpoint_path}" if checkpoint_path else ""
        super().__init__(f"stopped by {signal.Signals(signum).name} at a step boundary{where}")
