"""``descend doctor``, ``report``, ``compare``, ``lab``, ``tune`` and ``cv``: studies built on many runs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path


def add_parsers(sub) -> None:
    _doctor_parser(sub)
    _reports_parsers(sub)
    _search_commands(sub)


def _doctor_parser(sub) -> None:
    doctor = sub.add_parser("doctor", help="run the debugging flowchart on a recipe: ranked findings with fixes")
    doctor.add_argument("recipe", help="a TOML recipe")
    doctor.add_argument("--budget", type=float, default=120.0, metavar="SECONDS", help="wall time (default 120)")
    doctor.add_argument("--fix", action="store_true", help="write RECIPE.fixed.toml with the fixes applied")
    doctor.add_argument("--out", help="folder for doctor.json and doctor.html (default "
                                      "runs/doctor-<name>-<timestamp>); with --fix the fixed recipe goes there too "
                                      "(default: beside the recipe)")
    doctor.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a recipe field (repeatable)")


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
        from ..report.ensemble import write_report

        print(write_report(args.run_dir))
        return 0
    if args.command == "compare":
        from ..lab.compare import compare_recipe

        outcome = compare_recipe(args.recipe, args.vary, args.overrides, seeds=args.seeds, jobs=args.jobs,
                                 out=args.out)
        for row in outcome["variants"]:
            print(f"{row['rank']:>3}  {row['name']:<40} {row['summary']}")
        print(f"-> {outcome['report']}")
        return 0
    from .. import lab

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
    from ..tune import search

    search(args.recipe, args.space, sampler=args.sampler, trials=args.trials, timeout=args.timeout, seed=args.seed,
           pruner=args.pruner, patience=args.patience, folds=args.cv, metric=args.metric, storage_url=args.storage,
           study=args.study, workers=args.workers, out=args.out, refit=args.refit, keep_runs=not args.no_runs,
           heartbeat=args.heartbeat, retries=args.retries, overrides=args.overrides)
    return 0


def _cv(args) -> int:
    from datetime import datetime

    from .. import config
    from ..tune import cross_validate
    from ..tune.cv import describe

    recipe = config.load(args.recipe, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / f"cv-{recipe.name}-{datetime.now():%Y%m%d-%H%M%S}"
    print(describe(cross_validate(recipe, args.folds, out, ensemble=args.ensemble)))
    print(f"per-fold curves: {out / 'cv.png'}; results: {out / 'cv.json'}"
          + (f"; fold models: {out / 'ensemble'}" if args.ensemble else ""))
    return 0


def _doctor(args) -> int:
    """Exit 0 whatever the findings; only a recipe or data that cannot be read is an error (2)."""
    from .. import config, doctor
    from ..doctor import fix

    recipe = config.load(args.recipe, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / f"doctor-{recipe.name}-{datetime.now():%Y%m%d-%H%M%S}"
    diagnosis = doctor.examine(recipe, budget=args.budget, out=out)
    print(diagnosis.summary())
    if args.fix:
        raw, changed = fix.apply(fix.read_raw(args.recipe, args.overrides), diagnosis.findings)
        if changed:
            path = fix.write(raw, fix.fixed_path(args.recipe, args.out))
            print(f"fixed recipe: {path}\n  " + "\n  ".join(changed))
        else:
            print("--fix: no error-level finding has a recipe change to apply")
    print(f"report: {out / 'doctor.html'}, {out / 'doctor.json'}")
    return 0


COMMANDS = {"doctor": _doctor, "report": _reports, "compare": _reports, "lab": _reports, "tune": _tune, "cv": _cv}
