"""The ``descend`` command. Thin: parse the arguments, call the library, turn user errors into one message.

Exit codes: 0 done, 2 a user error (bad recipe, data, option), 3 training diverged, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from .errors import DivergenceError, UserError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="descend", description="Train deep neural networks from TOML recipes.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="train a recipe and write its run directory")
    run.add_argument("recipe", help="a TOML recipe, e.g. examples/quickstart.toml")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                     help="override a recipe field, e.g. --set optimizer.lr=3e-3 (repeatable)")
    run.add_argument("--out", help="the run directory (default runs/<name>-<timestamp>)")
    run.add_argument("--quiet", action="store_true", help="print only the final summary")
    sub.add_parser("datasets", help="list the built-in datasets and where their data comes from")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # argparse itself exits with code 2 on bad arguments
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
    except KeyboardInterrupt:
        print("descend: interrupted", file=sys.stderr)
        return 130


def _run(args) -> int:
    from . import config, experiment

    recipe = config.load(args.recipe, args.overrides)
    summary = experiment.run(recipe, args.out, quiet=args.quiet)
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
