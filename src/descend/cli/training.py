"""``descend run``, ``resume``, ``ensemble``, ``show`` and ``datasets``: train recipes and look at them."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError


def add_parsers(sub) -> None:
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
    resume = sub.add_parser("resume", help="continue a stopped run from its last checkpoint, with its own recipe")
    resume.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (runs/<name>)")
    resume.add_argument("--quiet", action="store_true", help="print only the final summary")
    ens = sub.add_parser("ensemble", help="train an ensemble of a recipe's model and write its directory")
    ens.add_argument("recipe", help="a TOML recipe (its [ensemble] section, or one of the options below)")
    kind = ens.add_mutually_exclusive_group()
    kind.add_argument("--members", type=int, metavar="K", help="K networks from different seeds")
    kind.add_argument("--snapshots", type=int, metavar="K", help="K snapshots of one run with cosine restarts")
    kind.add_argument("--mc-dropout", type=int, metavar="N", help="N dropout passes of one network")
    ens.add_argument("--out", help="the ensemble directory (default runs/<name>-<timestamp>)")
    ens.add_argument("--quiet", action="store_true", help="print only the final summary")
    show = sub.add_parser("show", help="print the fully resolved recipe (every default filled in) without training")
    show.add_argument("recipe", help="a TOML recipe")
    for command in (resume, ens, show):
        command.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                             help="override a recipe field (repeatable)")
    sub.add_parser("datasets", help="list the built-in datasets and where their data comes from")


def _run(args) -> int:
    from .. import atomic, config
    from ..distributed import is_worker
    from ..runs import execute, launch
    from ..runs.directory import default_run_dir
    from ..train.control import Control

    if getattr(args, "nproc", None) is not None and not is_worker():
        return launch.launch(args)  # data-parallel: the same command in N processes through torchrun
    if args.command == "resume":  # the run's recorded recipe (with the --set it was run with), and new --set
        recorded = atomic.inside(args.run_dir, Path(args.run_dir) / "config.toml", what="recorded recipe")
        if not recorded.is_file():
            raise UserError(f"cannot resume: {args.run_dir} holds no run (no config.toml)")
        args.recipe, args.resume, args.out = recorded, args.run_dir, None
    kinds = {k: getattr(args, k, None) for k in ("members", "snapshots", "mc_dropout")}
    kinds = [f"ensemble.{k}={v}" for k, v in kinds.items() if v is not None]
    with launch.quiet_unless_rank_0():  # data-parallel: the recipe's warnings are said once, by rank 0
        recipe = config.load(args.recipe, args.overrides + kinds)
    if args.command == "ensemble" and recipe.ensemble is None:
        raise UserError("descend ensemble needs --members K, --snapshots K, --mc-dropout N or an [ensemble] section")
    resume = getattr(args, "resume", None)
    if resume and args.out and Path(args.out) != Path(resume):
        raise UserError("--resume continues the run in its own directory; leave out --out")
    out = Path(resume or args.out or default_run_dir(recipe))
    if is_worker():
        summary = launch.run_worker(recipe, out, resume=bool(resume), quiet=args.quiet)
        if summary is None:  # ranks other than 0 print nothing
            return 0
    else:
        control = Control(out / "control.toml", keys=not args.quiet)  # babysitting: keys, or control.toml in out
        summary = execute.run(recipe, out, resume=bool(resume), quiet=args.quiet, callbacks=[control])
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


def _show(args) -> int:
    from .. import config
    from ..data.load import resolved_fields
    from ..runs import experiment
    from ..runs.directory import resolved_recipe

    recipe = config.load(args.recipe, args.overrides)
    exp = experiment.build(recipe)  # the data and the model: what the automatic speed settings decide from
    resolved = resolved_recipe(recipe)
    fields, note = resolved_fields(recipe.data, exp.data.info)   # what loading the data decided
    print(config.dump(resolved.model_copy(update={"data": resolved.data.model_validate(
        {**fields, **resolved.data.model_dump(exclude_none=True)})})), end="")
    if note:
        print(f"# {note}")
    c = recipe.train
    exp.trainer.prepare(exp.data.train, exp.data.val, epochs=c.epochs, batch_size=c.batch_size, shuffle=c.shuffle,
                        drop_last=c.drop_last)
    print(f"# {exp.trainer.decide_speed().line()}")
    return 0


def _datasets() -> int:
    from rich.console import Console
    from rich.table import Table

    from ..data import datasets

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



COMMANDS = {"run": _run, "resume": _run, "ensemble": _run, "show": _show, "datasets": lambda args: _datasets()}
