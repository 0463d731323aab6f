"""descend in IPython and Jupyter: a user's mistake shows as one line, as on the command line.

:func:`install` (called when descend is imported inside an IPython shell: Jupyter, JupyterLab, ``ipython``) makes
a :class:`~descend.errors.UserError` raised in a cell show as ``descend: error: <message>``, one line, not a
traceback through descend's internals; the cell still counts as failed, and every other exception keeps IPython's
usual traceback. Fits show a live progress bar in Jupyter (rich draws it with ipywidgets: ``pip install
'descend[notebook]'``), and a fit's ``Result`` or a ``LoadedRun`` displays its curves and summary
(:mod:`descend.report.inline`).
"""

from __future__ import annotations

import sys

from .errors import UserError


def install() -> bool:
    """Show UserErrors in the running IPython shell as one line; returns whether it did (not outside IPython, nor
    where the shell has a custom exception handler of its own already)."""
    ipython = sys.modules.get("IPython")  # never imported here: outside IPython there is nothing to do
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or shell.custom_exceptions not in ((), (UserError,)):
        return False  # IPython keeps one custom handler: one the user set stays
    shell.set_custom_exc((UserError,), _one_line)
    return True


def _one_line(shell, etype, value, tb, tb_offset=None) -> list[str]:
    line = f"descend: error: {' '.join(str(value).split())}"
    shell._showtraceback(etype, value, [line])  # the kernel's error output (Jupyter) or stderr (a terminal)
    return [line]
