"""The ``descend`` command. Thin: parse the arguments, call the library, turn user errors into one message.

Commands: run, resume, show, predict, evaluate, datasets (``descend COMMAND --help``).
Exit codes: 0 done, 2 a user error (bad recipe, data, option), 3 training diverged, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from .errors import DivergenceError, Interrupted, UserError


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="descend", description="Train deep neural networks from TOML recipes.")
    parser.add_argument("--version", action="version", version=f"descend {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="train a recipe and write its run directory")
    run.add_argument("recipe", help="a TOML recipe, e.g. examples/quickstart.toml")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                     help="override a recipe field, e.g. --set optimizer.lr=3e-3 (repeatable)")
    run.add_argument("--out", help="the run directory (default runs/<name>-<timestamp>)")
    run.add_argument("--quiet", action="store_true", help="print only the final summary")
    run.add_argument("--resume", metavar="RUN_DIR",
                     help="continue the run in RUN_DIR from its last checkpoint (as if it had never stopped)")
    resume = sub.add_parser("resume", help="continue a stopped run from its last checkpoint, with its own recipe")
    resume.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (runs/<name>)")
    show = sub.add_parser("show", help="print the fully resolved recipe (every default filled in) without training")
    show.add_argument("recipe", help="a TOML recipe")
    for command in (run, resume, show):
        if command is not run:
            command.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                                 help="override a recipe field (repeatable)")
    resume.add_argument("--quiet", action="store_true", help="print only the final summary")
    sub.add_parser("datasets", help="list the built-in datasets and where their data comes from")
    predict = sub.add_parser("predict", help="predict with a trained run on new raw inputs")
    predict.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (runs/<name>)")
    predict.add_argument("input", metavar="INPUT", help="a .csv (the label column may be absent) or .npz file")
    predict.add_argument("--out", help="write the predictions to this CSV file (default: print them)")
    predict.add_argument("--proba", action="store_true", help="add one probability column per class")
    evaluate = sub.add_parser("evaluate", help="loss and metrics of a trained run on labelled data")
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (runs/<name>)")
    evaluate.add_argument("--data", metavar="NAME_OR_PATH",
                          help="a labelled .csv/.npz file or a dataset name (default: the run's own test split)")
    for command in (predict, evaluate):
        command.add_argument("--which", choices=("final", "best", "last"), default="final",
                             help="which weights: final (default), the best epoch's checkpoint, or the last one")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # argparse itself exits with code 2 on bad arguments
    warnings.showwarning = _one_line_warning
    try:
        if args.command in ("run", "resume"):
            return _run(args)
        if args.command == "show":
            from . import config
            from .rundir import resolved_recipe

            print(config.dump(resolved_recipe(config.load(args.recipe, args.overrides))), end="")
            return 0
        if args.command == "predict":
            return _predict(args)
        if args.command == "evaluate":
            return _evaluate(args)
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
            run_dir = e.checkpoint_path.parent.parent  # its config.toml is the recipe as run, --set included
            print(f"resume with: descend resume {run_dir}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("descend: interrupted", file=sys.stderr)
        return 130


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"descend: warning: {message}", file=sys.stderr)


def _run(args) -> int:
    from pathlib import Path

    from . import config, experiment

    if args.command == "resume":  # the run's recorded recipe (with the --set it was run with), and new --set
        recorded = Path(args.run_dir) / "config.toml"
        if not recorded.is_file():
            raise UserError(f"cannot resume: {args.run_dir} holds no run (no config.toml)")
        args.recipe, args.resume, args.out = recorded, args.run_dir, None
    recipe = config.load(args.recipe, args.overrides)
    if args.resume and args.out and args.out != args.resume:
        raise UserError("--resume continues the run in its own directory; leave out --out")
    summary = experiment.run(recipe, args.resume or args.out, resume=bool(args.resume), quiet=args.quiet)
    for key, (old, new) in summary["changed"].items():
        print(f"resumed with {key} = {new!r} (was {old!r})")
    final = summary["final"]
    shown = "  ".join(f"{k} {v:.4g}" for k, v in final.items() if k.startswith("test_"))
    print(f"done in {summary['train_seconds']:.1f}s: {shown or final}  ->  {summary['run_dir']}")
    return 0


def _predict(args) -> int:
    from . import atomic
    from .inference import load_run, predictions_csv

    text = predictions_csv(load_run(args.run_dir, args.which), args.input, proba=args.proba)
    if args.out:
        atomic.write_text(args.out, text, what="predictions")
        print(f"{text.count(chr(10)) - 1} predictions -> {args.out}")
    else:
        print(text, end="")
    return 0


def _evaluate(args) -> int:
    from .inference import load_run

    for key, value in load_run(args.run_dir, args.which).evaluate(args.data).items():
        print(f"{key} {value:.6g}")
    return 0


def _datasets() -> int:
    from rich.console import Console
    from rich.table import Table

    from .data import datasets

    console = Console()
    if not console.is_terminal:  # piped: as wide as the rows need, never cut
        console = Console(width=1000)
    table = Table("name", "task", "input shape", "train / val / test", "source", title="descend datasets")
    table.columns[0].no_wrap = True  # names stay whole on a narrow terminal; the source column wraps instead
    table.columns[0].min_width = max(len(row["name"]) for row in datasets())
    for row in datasets():
        sizes = " / ".join(str(row["sizes"].get(k, "-")) for k in ("train", "val", "test"))
        table.add_row(row["name"], row["task"], str(tuple(row["input_shape"])), sizes, row["source"])
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
