"""The ``descend`` command. Thin: parse the arguments, call the library, turn user errors into one message.

Exit codes: 0 done, 2 a user error (bad recipe, data, option), 3 training diverged, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

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
    run.add_argument("--nproc", type=int, metavar="N",
                     help="data-parallel: train in N processes per machine through torchrun (DDP; batch_size is "
                          "the global batch)")
    run.add_argument("--nnodes", type=int, default=1, metavar="M", help="with --nproc: the number of machines")
    run.add_argument("--rdzv-endpoint", metavar="HOST:PORT",
                     help="with --nproc on several machines: where they meet (the same on every machine)")
    run.add_argument("--max-restarts", type=int, default=0, metavar="R",
                     help="with --nproc: restart all processes up to R times after a failure; they resume from "
                          "the last checkpoint")
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
    from . import config, dist, experiment

    if args.resume and args.out and args.out != args.resume:
        raise UserError("--resume continues the run in its own directory; leave out --out")
    if args.nproc and not dist.is_worker():
        return dist.launch(args)
    recipe = config.load(args.recipe, args.overrides)
    if dist.is_worker():
        summary = dist.run_worker(recipe, args.out, resume=bool(args.resume), quiet=args.quiet)
        if summary is None:  # ranks other than 0 print nothing
            return 0
    else:
        summary = experiment.run(recipe, args.resume or args.out, resume=bool(args.resume), quiet=args.quiet)
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
