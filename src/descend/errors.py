"""The errors a user can cause, each with the exit code the command line gives it.

Everything the user can get wrong (a config field, a data file, a label, an option) raises
:class:`UserError` with one message that names the problem and the fix; ``descend`` prints it and exits with
code 2, no traceback.
From Python it is a ``ValueError``, so ``except ValueError`` keeps working.
"""


class UserError(ValueError):
    """A mistake in the user's input: a config field, a data file, a name, an option. Exit code 2."""

    exit_code = 2


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or gradient. Exit code 3."""

    exit_code = 3
