"""The ``descend`` command. Thin: parse the arguments, call the library, turn user errors into one message.

Exit codes: 0 done, 2 a user error (bad recipe, data, option), 3 training diverged, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings

from .errors import DivergenceError, Interrupted, UserError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="descend", description="Train deep neural networks from TOML recipes.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="train a recipe and write its run directory")
    run.add_argument("recipe", help="a TOML recipe, e.g. examples/quickstart.toml")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                     help="override a recipe field, e.g. --set optimizer.lr=3e-3 (repeatable)")
    run.add_argument("--out", help="the run directory (default runs/<name>-<timestamp>)")
    run.add_argument("--quiet", action="store_true", help="print only the final summary")
    run.add_argument("--resume", metavar="RUN_DIR",
                     help="continue the run in RUN_DIR from its last checkpoint (as if it had never stopped)")
    sub.add_parser("datasets", help="list the built-in datasets and where their data comes from")
    return parser


@contextlib.contextmanager
def _one_line_warnings():
    """Warnings as ``descend: warning: <message>`` lines, not Python's file:line and source excerpt."""

    def one_line(message, category, filename, lineno, line=None) -> str:
        return "descend: warning: " + " ".join(str(message).split()) + "\n"

    with warnings.catch_warnings():
        warnings.formatwarning = one_line  # the format, not the display: recording warnings keeps working
        yield


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # argparse itself exits with code 2 on bad arguments
    with _one_line_warnings():
        return _main(args)


def _main(args) -> int:
    try:
        if args.command == "run":
            return _run(args)
        return _datasets()
    except UserError as e:
        print(f"descend: error: {e}", file=sys.stderr)
        return e.exit_code
    except DivergenceError as e:
        print(f"descend: {e}", file=sys.stderr)
        return e.exit_code
    except Interrupted as e:
        print(f"descend: {e}", file=sys.stderr)
        if e.checkpoint_path is not None:
            run_dir = e.checkpoint_path.parent.parent
            print(f"resume with: descend run {args.recipe} --resume {run_dir}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("descend: interrupted", file=sys.stderr)
        return 130


def _run(args) -> int:
    from . import config, experiment

    recipe = config.load(args.recipe, args.overrides)
    if args.resume and args.out and args.out != args.resume:
        raise UserError("--resume continues the run in its own directory; leave out --out")
    summary = experiment.run(recipe, args.resume or args.out, resume=bool(args.resume), quiet=args.quiet)
    if summary.get("already"):
        state = "stopped early" if summary["already"] == "stopped_early" else "finished"
        print(f"the run in {summary['run_dir']} had already {state}: nothing to resume, nothing changed")
        return 0
    for key, (old, new) in summary["changed"].items():
        print(f"resumed with {key} = {new!r} (was {old!r})")
    final = summary["final"]
    shown = "  ".join(f"{k} {v:.4g}" for k, v in final.items() if k.startswith("test_"))
    print(f"done in {summary['train_seconds']:.1f}s: {shown or final}  ->  {summary['run_dir']}")
    return 0


def _datasets() -> int:
    from rich.console import Console
    from rich.table import Table

    from .data import datasets

    table = Table("name", "task", "input shape", "train / val / test", "source", title="descend datasets")
    for row in datasets():
        sizes = " / ".join(str(row["sizes"].get(k, "-")) for k in ("train", "val", "test"))
        table.add_row(row["name"], row["task"], str(tuple(row["input_shape"])), sizes, row["source"])
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
