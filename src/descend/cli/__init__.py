"""The ``descend`` command. Thin: parse the arguments, call the library, turn user errors into one message.

``descend COMMAND --help`` for each: run, resume, ensemble, show, datasets (:mod:`.training`); predict, evaluate, export
(:mod:`.using`); doctor, report, compare, lab, tune, cv (:mod:`.studies`).
Exit codes: 0 done, 2 a user error (bad recipe, data, option), 3 training diverged, 130/143 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings

from ..errors import DivergenceError, Interrupted, UserError
from . import studies, training, using

COMMANDS = {**training.COMMANDS, **using.COMMANDS, **studies.COMMANDS}


def _parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="descend", description="Train deep neural networks from TOML recipes.")
    parser.add_argument("--version", action="version", version=f"descend {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (training, using, studies):
        group.add_parsers(sub)
    for command in ("run", "resume", "compare", "tune", "cv"):  # the same as --set tracking.mlflow="URI"
        sub.choices[command].add_argument("--mlflow", metavar="URI", help="log to MLflow: sqlite:///mlruns.db, "
                                          "file:./mlruns or http://host:5000 (descend.tracking)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # argparse itself exits with code 2 on bad arguments
    if getattr(args, "mlflow", None):
        args.overrides.append(f"tracking.mlflow={json.dumps(args.mlflow)}")  # a JSON string is a TOML string
    with _one_line_warnings():
        try:
            return _main(args)
        except BrokenPipeError:
            # the reader went away (`descend show … | head`): stop quietly, as Unix tools do, and point stdout at
            # /dev/null so Python's flush at exit does not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 128 + 13  # SIGPIPE, what a shell reports for a writer whose pipe closed


@contextlib.contextmanager
def _one_line_warnings():
    """Warnings as ``descend: warning: <message>`` lines, not Python's file:line and source excerpt, each said
    once per command (a part built twice, say once to check the recipe and once to train, warns twice; and
    Python's own once-per-place rule forgets what it showed whenever any code enters ``catch_warnings``)."""

    def one_line(message, category, filename, lineno, line=None) -> str:
        return f"descend: warning: {_one_line(message)}\n"

    said: set[str] = set()
    show = warnings.showwarning

    def once(message, category, filename, lineno, file=None, line=None) -> None:
        text = _one_line(message)
        if text not in said:
            said.add(text)
            show(message, category, filename, lineno, file, line)  # Python's display, or a recorder's

    # the format, not the display: recording warnings (warnings.catch_warnings(record=True)) keeps working, as
    # `once` hands each warning to the showwarning it found. catch_warnings puts showwarning back, not
    # formatwarning: that is put back here, so a program that calls main() keeps its own format afterwards
    previous = warnings.formatwarning
    with warnings.catch_warnings():
        warnings.formatwarning, warnings.showwarning = one_line, once
        try:
            yield
        finally:
            warnings.formatwarning = previous


def _one_line(message) -> str:
    """A message on one line (a value quoted from a file may hold line breaks), spaces collapsed."""
    return " ".join(str(message).split())


def _main(args) -> int:
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"descend: error: {_one_line(e)}", file=sys.stderr)
        return e.exit_code
    except DivergenceError as e:
        print(f"descend: {_one_line(e)}", file=sys.stderr)
        return e.exit_code
    except Interrupted as e:
        print(f"descend: {e}", file=sys.stderr)
        if args.command in ("tune", "cv"):
            print("the same command continues: a tune study re-runs its interrupted trials", file=sys.stderr)
        elif e.checkpoint_path is not None:
            run_dir = e.checkpoint_path.parent.parent  # its config.toml is the recipe as run, --set included
            print(f"resume with: descend resume {run_dir}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("descend: interrupted", file=sys.stderr)
        return 130
