"""``descend tune``: hyper-parameter search over a recipe, on one machine or many, through Optuna.

Strategies (Bergstra & Bengio 2012 for random over grid search; Bergstra et al. 2011 for TPE; Snoek et al. 2012
for Gaussian-process Bayesian optimisation): ``grid``, ``random``, ``qmc`` (scrambled Halton), ``tpe``, ``gp``.
Hyper-parameters are chosen on the validation split (or the k-fold mean with ``folds``); the test split is read
once, by ``refit``, after the search. The study lives in an SQLite file in the output directory, or in the
PostgreSQL database ``storage`` names, which workers on many machines can share.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import warnings
from datetime import datetime
from pathlib import Path

import optuna
import torch

from .. import config as cfg
from .. import tracking
from ..errors import UserError
from ..monitor import resolve_mode
from ..options import OneOf, Option, Optional, integer, number, validate
from ..runs import experiment, workflow
from . import report
from . import space as spaces
from . import study as studies
from .cv import pooled, refuse_folds, scaled, unscaled, warn_small_folds
from .objective import Objective
from .storage import storage
from .study import PRUNERS, SAMPLERS, WILCOXON_MIN_FOLDS, WILCOXON_P, Plan, canonical, digest, open_study, work

DEFAULT_TRIALS = 20
MAX_WORKERS = 256  # local processes: the same bound on every machine (a recipe's command means what it says anywhere)
MAX_TRIALS = spaces.MAX_GRID  # the queued samplers put every trial in the database when the study is created
# (options as data: None is "not given"; the upper bounds keep a typo from queueing, spawning or waiting for ever)
OPTIONS = (
    Option("--sampler", OneOf(*SAMPLERS), "tpe", "the search strategy"),
    Option("--pruner", OneOf(*PRUNERS), "none", "stops unpromising trials early"),
    Option("--trials", Optional(integer(1, MAX_TRIALS)), None),
    Option("--workers", integer(1, MAX_WORKERS), 1, "local processes; more than the CPUs share cores (a warning)"),
    Option("--patience", Optional(integer(1, MAX_TRIALS)), None),
    Option("--cv", Optional(integer(2, None)), None, "folds; the data's own bound is checked with the data"),
    Option("--timeout", Optional(number(0, None)), None, "seconds; 0 creates and queues the study, runs nothing"),
    Option("--heartbeat", integer(1, 3600), 10, "seconds between a trial's heartbeats"),
    Option("--retries", integer(0, 100), 2, "times a trial whose worker died is run again"),
)


def search(recipe, space, *, sampler: str = "tpe", trials: int | None = None, timeout: float | None = None,
           seed: int | None = None, pruner: str = "none", patience: int | None = None, folds: int | None = None,
           metric: str | None = None, storage_url: str | None = None, study: str | None = None, workers: int = 1,
           out: str | Path | None = None, refit: bool = False, keep_runs: bool = True, heartbeat: int = 10,
           retries: int = 2, overrides: list[str] = (), model=None, data=None, echo=print) -> dict:
    """Search ``space`` (a path or a :class:`~descend.tune.space.Space`) over ``recipe`` (a path or a Config).

    Returns what ``tune.json`` holds: every trial (number, state, params, value, epochs, seconds), the best one, and
    the paths written (``best.toml``, ``tune.html``, ``refit`` with its test metrics when asked for). ``model`` and
    ``data`` replace the recipe's sections (:func:`descend.runs.workflow.recipe`): a space may search the model
    factory's arguments (``model.hidden``). Factories and data that only this process can load (a notebook's
    function, arrays) need ``workers=1``.
    """
    if model is not None or data is not None or isinstance(recipe, dict):
        config = workflow.recipe(recipe, model=model, data=data, overrides=overrides)
    else:
        config = recipe if isinstance(recipe, cfg.Config) else cfg.load(recipe, list(overrides))
    space = space if isinstance(space, spaces.Space) else spaces.load(space)
    raw = config.model_dump(exclude_none=True)
    _check_options(space, sampler, pruner, folds, trials, workers, patience, timeout, heartbeat, retries)
    if sampler == "grid" and len(space) > 4:
        warnings.warn(f"a grid over {len(space)} dimensions has {len(space.grid())} points and spends most of them "
                      f"on dimensions that do not matter (Bergstra & Bengio 2012); random or qmc cover the same "
                      f"space with far fewer trials", UserWarning, stacklevel=2)
    if pruner == "wilcoxon" and folds < WILCOXON_MIN_FOLDS:
        warnings.warn(f"with --cv {folds} the Wilcoxon pruner never prunes: before the last fold it has {folds - 1} "
                      f"paired scores, and a signed-rank test on {folds - 1} pairs cannot reach p < {WILCOXON_P}; "
                      f"use --cv {WILCOXON_MIN_FOLDS} or more", UserWarning, stacklevel=2)
    data = experiment.load_data(config)
    if folds:  # as descend cv does: folds the data cannot make are refused, folds too small to score on warned
        labels = pooled(data).y.cpu().numpy()
        refuse_folds(labels, folds, stratify=data.info.task == "classification")
        warn_small_folds(labels, folds, stratify=data.info.task == "classification")
    space.check(raw, lambda probe: experiment.build(cfg.validate(probe, source="recipe"), data))
    metric = metric or _default_metric(config, data)
    direction = "minimize" if resolve_mode("--metric", metric, "auto") == "min" else "maximize"
    name = study or config.name or "study"
    out = Path(out) if out is not None else _default_out(name)
    out.mkdir(parents=True, exist_ok=True)
    url = storage_url or f"sqlite:///{(out / 'tune.db').resolve()}"
    plan = Plan(sampler, seed if seed is not None else random.randrange(2**31), _trials(sampler, trials, space),
                pruner, patience, metric, direction, folds, config.train.epochs, canonical(space), digest(raw))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    opened, created = open_study(name, storage(url, heartbeat=heartbeat, retries=retries), plan, space)
    done = len(opened.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    echo(f"{'created' if created else 'continuing'} study {name!r} ({sampler}, {plan.trials} trials, seed "
         f"{plan.seed}{f', {done} done' if done else ''}) in {out}")
    job = (raw, space, plan, url, name, out / "trials" if keep_runs else None, timeout, heartbeat, retries)
    with tracking.group(config, name, "study", sampler=sampler):  # [tracking] mlflow: each trial a nested run
        if workers == 1:
            _work(*job, data=data, echo=echo)
        else:
            _spawn(job, workers, echo)
        return report.write(opened, space, raw, plan, out, storage=url, refit=_refit if refit else None, echo=echo)


def _check_options(space, sampler, pruner, folds, trials, workers, patience, timeout, heartbeat,
                   retries) -> None:
    validate("descend tune", OPTIONS, {"--sampler": sampler, "--pruner": pruner, "--trials": trials,
                                       "--workers": workers, "--patience": patience, "--cv": folds,
                                       "--timeout": timeout, "--heartbeat": heartbeat, "--retries": retries})
    if pruner == "wilcoxon" and not folds:
        raise UserError("the Wilcoxon pruner compares per-fold scores: give --cv K (K folds) with it")
    if workers > (os.cpu_count() or 1):
        warnings.warn(f"--workers {workers} on {os.cpu_count()} CPUs: the workers share cores, so each trial runs "
                      "slower and the search takes as long as with one worker per CPU, in more memory", stacklevel=3)
    searched_data = [p for p in space.paths if p.split(".")[0] in ("data", "name")]
    if searched_data:
        raise UserError(f"{space.source}: [{searched_data[0]}] cannot be searched: the data is loaded once for all "
                        f"trials; make one recipe per dataset setting instead")


def _trials(sampler: str, trials: int | None, space: spaces.Space) -> int:
    if sampler == "grid":
        size = len(space.grid())
        return min(trials, size) if trials else size
    return trials or DEFAULT_TRIALS


def _default_metric(config: cfg.Config, data) -> str:
    if config.early_stopping is not None and config.early_stopping.monitor.startswith("val_"):
        return config.early_stopping.monitor
    return "val_accuracy" if data.info.task == "classification" else "val_loss"


def _default_out(name: str) -> Path:
    """The latest ``runs/tune-<name>-*`` holding this study (so the same command continues it), else a new one."""
    earlier = sorted(Path("runs").glob(f"tune-{name}-*/tune.db"))
    if earlier:
        return earlier[-1].parent
    return Path("runs") / f"tune-{name}-{datetime.now():%Y%m%d-%H%M%S}"


def _work(raw, space, plan, url, name, runs, timeout, heartbeat, retries, *, data=None, echo=print) -> None:
    """One worker: data loaded once, then trials until the plan is done."""
    if data is None:
        data = experiment.load_data(cfg.validate(raw, source="recipe"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = storage(url, heartbeat=heartbeat, retries=retries)
    study = optuna.load_study(study_name=name, storage=store, sampler=studies.sampler(plan),
                               pruner=studies.pruner(plan))
    work(study, Objective(raw, space, data, plan, runs), plan, timeout=timeout,
         on_trial=lambda s, t: echo(report.line(t, space, plan)))


def _worker_main(job: tuple, threads: int) -> None:
    torch.set_num_threads(threads)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _work(*job, echo=lambda text: print(f"[worker {os.getpid()}] {text}", flush=True))


def _spawn(job: tuple, workers: int, echo) -> None:
    """``workers`` local processes on the same study; one that dies is reported, its trial retried by the others."""
    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = [context.Process(target=_worker_main, args=(job, threads), daemon=False) for _ in range(workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.join(timeout=30)
        raise
    for i, p in enumerate(procs):
        if p.exitcode:
            how = f"signal {-p.exitcode}" if p.exitcode < 0 else f"exit code {p.exitcode}"
            echo(f"worker {i} (pid {p.pid}) ended with {how}; its running trial was failed and queued again")


def _refit(raw: dict, epochs: int, out: Path) -> dict:
    """Train the best recipe on train+val (scaler refitted there) for the best trial's epochs; evaluate test once."""
    raw = {**raw, "train": {**raw.get("train", {}), "epochs": max(int(epochs), 1)}}
    raw.pop("early_stopping", None)  # no validation split is left to stop on
    config = cfg.validate(raw, source="best recipe")
    data = unscaled(raw)
    bundle = scaled(config.data.scale, pooled(data), {"val": None, "test": data.test}, data.info)
    result = experiment.build(config, bundle).fit(out=out)  # the run directory's summary evaluates test, once
    return {"epochs": epochs, "run_dir": str(out), **{k: v for k, v in result.final.items() if k.startswith("test_")}}

