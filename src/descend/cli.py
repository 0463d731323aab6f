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
    sub.add_parser("datasets", help="list the built-in datasets and where their data comes from")
    doctor = sub.add_parser("doctor", help="run the debugging flowchart on a recipe: ranked findings with fixes")
    doctor.add_argument("recipe", help="a TOML recipe")
    doctor.add_argument("--budget", type=float, default=120.0, metavar="SECONDS", help="wall time (default 120)")
    doctor.add_argument("--fix", action="store_true", help="write RECIPE.fixed.toml with the fixes applied")
    doctor.add_argument("--out", default=".", help="folder for doctor.json and doctor.html (default: here)")
    doctor.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a recipe field (repeatable)")
    _reports_parsers(sub)
    return parser


# --- report, compare, lab (descend.report, descend.lab) -------------------------------------------------------
def _reports_parsers(sub) -> None:
    report = sub.add_parser("report", help="write report.html for a run directory")
    report.add_argument("run_dir", help="a run directory written by `descend run`")
    compare = sub.add_parser("compare", help="train recipe variants over several seeds and compare them fairly")
    compare.add_argument("recipe", help="the baseline TOML recipe")
    compare.add_argument("--vary", action="append", default=[], metavar="FIELD=V1,V2,...",
                         help="a recipe field and the values to try, e.g. optimizer.name=sgd,adam (repeatable: "
                              "the variants are all combinations)")
    compare.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                         help="override a recipe field in every variant (repeatable)")
    compare.add_argument("--seeds", type=int, default=3, help="seeds per variant (default 3)")
    compare.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    compare.add_argument("--out", help="output directory (default runs/compare-<name>-<timestamp>)")
    lab = sub.add_parser("lab", help="reproduce a classic training experiment as a report (no name: list them)")
    lab.add_argument("name", nargs="?", help="the lab to run")
    lab.add_argument("--out", help="output directory (default runs/lab-<name>)")
    lab.add_argument("--quick", action="store_true", help="fewer repetitions and steps (seconds, for tests)")


def _reports(args) -> int:
    if args.command == "report":
        from .report.run import write_run_report

        print(write_run_report(args.run_dir))
        return 0
    if args.command == "compare":
        from .lab.compare import compare_recipe

        outcome = compare_recipe(args.recipe, args.vary, args.overrides, seeds=args.seeds, jobs=args.jobs,
                                 out=args.out)
        for row in outcome["variants"]:
            print(f"{row['rank']:>3}  {row['name']:<40} {row['summary']}")
        print(f"-> {outcome['report']}")
        return 0
    from . import lab

    if args.name is None:
        for name, (_, _, about) in lab.LABS.items():
            print(f"{name:<16} {about}")
        return 0
    result = lab.run(args.name, quick=args.quick, out=args.out or f"runs/lab-{args.name}")
    for line in result.findings:
        print(line)
    print(f"done in {result.seconds:.1f}s -> {args.out or f'runs/lab-{args.name}'}/report.html")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # argparse itself exits with code 2 on bad arguments
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "doctor":
            return _doctor(args)
        if args.command in ("report", "compare", "lab"):
            return _reports(args)
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


def _doctor(args) -> int:
    """Exit 0 whatever the findings; only a recipe or data that cannot be read is an error (2)."""
    from . import config, doctor
    from .doctor import fix

    recipe = config.load(args.recipe, args.overrides)
    diagnosis = doctor.examine(recipe, budget=args.budget, out=args.out)
    print(diagnosis.summary())
    if args.fix:
        raw, changed = fix.apply(fix.read_raw(args.recipe, args.overrides), diagnosis.findings)
        if changed:
            path = fix.write(raw, fix.fixed_path(args.recipe, args.out if args.out != "." else None))
            print(f"fixed recipe: {path}\n  " + "\n  ".join(changed))
        else:
            print("--fix: no error-level finding has a recipe change to apply")
    print(f"report: {args.out}/doctor.html, {args.out}/doctor.json")
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
