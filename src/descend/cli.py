"""The ``descend`` command. Thin: parse the arguments, call the library, turn user errors into one message.

Exit codes: 0 done, 2 a user error (bad recipe, data, option), 3 training diverged, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from pathlib import Path

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
    ens = sub.add_parser("ensemble", help="train an ensemble of a recipe's model and write its directory")
    ens.add_argument("recipe", help="a TOML recipe (its [ensemble] section, or one of the options below)")
    kind = ens.add_mutually_exclusive_group()
    kind.add_argument("--members", type=int, metavar="K", help="K networks from different seeds")
    kind.add_argument("--snapshots", type=int, metavar="K", help="K snapshots of one run with cosine restarts")
    kind.add_argument("--mc-dropout", type=int, metavar="N", help="N dropout passes of one network")
    ens.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    ens.add_argument("--out", help="the ensemble directory (default runs/<name>-<timestamp>)")
    ens.add_argument("--quiet", action="store_true", help="print only the final summary")
    sub.add_parser("datasets", help="list the built-in datasets and where their data comes from")
    doctor = sub.add_parser("doctor", help="run the debugging flowchart on a recipe: ranked findings with fixes")
    doctor.add_argument("recipe", help="a TOML recipe")
    doctor.add_argument("--budget", type=float, default=120.0, metavar="SECONDS", help="wall time (default 120)")
    doctor.add_argument("--fix", action="store_true", help="write RECIPE.fixed.toml with the fixes applied")
    doctor.add_argument("--out", default=".", help="folder for doctor.json and doctor.html (default: here)")
    doctor.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a recipe field (repeatable)")
    _reports_parsers(sub)
    _search_commands(sub)
    return parser


@contextlib.contextmanager
def _one_line_warnings():
    """Warnings as ``descend: warning: <message>`` lines, not Python's file:line and source excerpt."""

    def one_line(message, category, filename, lineno, line=None) -> str:
        return "descend: warning: " + " ".join(str(message).split()) + "\n"

    with warnings.catch_warnings():
        warnings.formatwarning = one_line  # the format, not the display: recording warnings keeps working
        yield


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


def _search_commands(sub) -> None:
    """``descend tune`` (hyper-parameter search) and ``descend cv`` (k-fold cross-validation)."""
    tune = sub.add_parser("tune", help="search hyper-parameters of a recipe (Optuna: grid, random, qmc, tpe, gp)")
    tune.add_argument("recipe")
    tune.add_argument("--space", required=True, help="TOML search space keyed by recipe path (optimizer.lr, ...)")
    tune.add_argument("--sampler", default="tpe", help="grid | random | qmc | tpe | gp (default tpe)")
    tune.add_argument("--trials", type=int, help="trials in the study (default: the whole grid, else 20)")
    tune.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    tune.add_argument("--seed", type=int, help="seed of the sampler: the same trials whatever the worker count")
    tune.add_argument("--pruner", default="none", help="none | median | hyperband | wilcoxon (with --cv)")
    tune.add_argument("--patience", type=int, help="stop after this many finished trials without improvement")
    tune.add_argument("--cv", type=int, metavar="K", help="score each trial by the mean over K folds of train+val")
    tune.add_argument("--metric", help="validation metric (default val_accuracy, or val_loss for regression)")
    tune.add_argument("--storage", help="database URL (postgresql://...) shared by workers; default SQLite in --out")
    tune.add_argument("--study", help="study name (default: the recipe name); the same name continues it")
    tune.add_argument("--workers", type=int, default=1, help="local worker processes on the study")
    tune.add_argument("--out", help="output directory (default runs/tune-<study>-<timestamp>)")
    tune.add_argument("--refit", action="store_true", help="train the best recipe on train+val, evaluate test once")
    tune.add_argument("--no-runs", action="store_true", help="do not write each trial's run directory")
    tune.add_argument("--heartbeat", type=int, default=10, help="seconds between a trial's heartbeats")
    tune.add_argument("--retries", type=int, default=2, help="times a trial whose worker died is run again")
    tune.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    cv = sub.add_parser("cv", help="stratified k-fold cross-validation of a recipe on train+val")
    cv.add_argument("recipe")
    cv.add_argument("--folds", type=int, default=5, help="number of folds K (default 5)")
    cv.add_argument("--out", help="output directory (default runs/cv-<name>-<timestamp>)")
    cv.add_argument("--ensemble", action="store_true", help="keep the fold models as an ensemble in <out>/ensemble")
    cv.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")


def _tune(args) -> int:
    from .tune import search

    search(args.recipe, args.space, sampler=args.sampler, trials=args.trials, timeout=args.timeout, seed=args.seed,
           pruner=args.pruner, patience=args.patience, folds=args.cv, metric=args.metric, storage_url=args.storage,
           study=args.study, workers=args.workers, out=args.out, refit=args.refit, keep_runs=not args.no_runs,
           heartbeat=args.heartbeat, retries=args.retries, overrides=args.overrides)
    return 0


def _cv(args) -> int:
    from datetime import datetime

    from . import config
    from .tune import cross_validate
    from .tune.cv import describe

    recipe = config.load(args.recipe, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / f"cv-{recipe.name}-{datetime.now():%Y%m%d-%H%M%S}"
    print(describe(cross_validate(recipe, args.folds, out, ensemble=args.ensemble)))
    print(f"per-fold curves: {out / 'cv.png'}; results: {out / 'cv.json'}"
          + (f"; fold models: {out / 'ensemble'}" if args.ensemble else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # argparse itself exits with code 2 on bad arguments
    with _one_line_warnings():
        return _main(args)


def _main(args) -> int:
    try:
        if args.command in ("run", "ensemble"):
            return _run(args)
        if args.command == "doctor":
            return _doctor(args)
        if args.command in ("report", "compare", "lab"):
            return _reports(args)
        if args.command in ("tune", "cv"):
            return _tune(args) if args.command == "tune" else _cv(args)
        return _datasets()
    except UserError as e:
        print(f"descend: error: {e}", file=sys.stderr)
        return e.exit_code
    except DivergenceError as e:
        print(f"descend: {e}", file=sys.stderr)
        return e.exit_code
    except Interrupted as e:
        print(f"descend: {e}", file=sys.stderr)
        if args.command in ("tune", "cv"):
            print("the same command continues: a tune study re-runs its interrupted trials", file=sys.stderr)
        elif e.checkpoint_path is not None:
            run_dir = e.checkpoint_path.parent.parent
            print(f"resume with: descend run {args.recipe} --resume {run_dir}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("descend: interrupted", file=sys.stderr)
        return 130


def _run(args) -> int:
    from . import config, experiment
    from .rundir import default_run_dir
    from .train.control import Control

    kinds = {k: getattr(args, k, None) for k in ("members", "snapshots", "mc_dropout")}
    kinds = [f"ensemble.{k}={v}" for k, v in kinds.items() if v is not None]
    recipe = config.load(args.recipe, args.overrides + kinds)
    if args.command == "ensemble" and recipe.ensemble is None:
        raise UserError("descend ensemble needs --members K, --snapshots K, --mc-dropout N or an [ensemble] section")
    resume = getattr(args, "resume", None)
    if resume and args.out and args.out != resume:
        raise UserError("--resume continues the run in its own directory; leave out --out")
    out = Path(resume or args.out or default_run_dir(recipe))
    control = Control(out / "control.toml", keys=not args.quiet)  # babysitting: keys, or a control.toml in out
    summary = experiment.run(recipe, out, resume=bool(resume), quiet=args.quiet, callbacks=[control])
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
