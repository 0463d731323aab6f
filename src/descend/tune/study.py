"""The Optuna study behind a search: samplers, pruners, the trial queue, the worker loop (storage: :mod:`.storage`).

Reproducible parallel search. Optuna draws a random or quasi-random point from the sampler's state when a worker
asks, so with several workers the point a trial number gets depends on timing (Optuna issues #4412, #3056). Here
the grid, random and qmc searches compute every point from ``(seed, trial number)`` alone and put them in the
study's queue when it is created: trial ``i`` gets point ``i`` whatever the number of workers, each queued point is
claimed by exactly one worker (Optuna's atomic WAITING → RUNNING switch in the database), and the grid is never
visited twice (#1547, #4714). TPE and the Gaussian-process sampler adapt to finished trials, so they are
reproducible with one worker only; with several, which trials have finished when a worker asks depends on timing.

Crash recovery. Every trial beats a heartbeat into the storage; a worker that dies mid-trial (SIGKILL, a lost
machine) stops beating, and the next worker that looks marks its trial FAIL and queues the same parameters again
(Optuna's ``RetryFailedTrialCallback``). Workers wait for trials still running elsewhere before they stop, so a
trial killed last is still retried (#6283, #4234).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from ..errors import DivergenceError, UserError
from .space import Space
from .storage import exclusive, safe

SAMPLERS = ("grid", "random", "qmc", "tpe", "gp")
QUEUED = ("grid", "random", "qmc")
PRUNERS = ("none", "median", "hyperband", "wilcoxon")
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
WILCOXON_P = 0.1  # the Wilcoxon pruner prunes when the signed-rank test against the best trial gives p below this
# before the last of K folds it has K − 1 paired scores, and a one-sided signed-rank test on n pairs cannot give p
# below 2^−n: the fewest folds with which it can prune at all
WILCOXON_MIN_FOLDS = 2 + int(math.log2(1 / WILCOXON_P))


@dataclass(frozen=True)
class Plan:
    """What a study runs; stored in the study so every worker, and every later run, runs the same search."""

    sampler: str
    seed: int
    trials: int
    pruner: str = "none"
    patience: int | None = None
    metric: str = "val_loss"
    direction: str = "minimize"
    folds: int | None = None
    epochs: int = 1
    space: str = ""           # the space's canonical JSON, to refuse continuing with a different one
    recipe: str = ""          # a digest of the recipe (its name aside), for the same reason

    def fixed(self) -> dict:
        """The fields a continued study must keep (trials and patience may change)."""
        return {k: v for k, v in asdict(self).items() if k not in ("trials", "patience")}


def sampler(plan: Plan) -> optuna.samplers.BaseSampler:
    """TPE (Bergstra et al. 2011, multivariate with conditional groups) and the GP sampler adapt to results; the
    queued searches only need a sampler for parameters outside the queue, which the worker loop never asks for."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if plan.sampler == "tpe":
            return optuna.samplers.TPESampler(seed=plan.seed, multivariate=True, group=True, constant_liar=True)
        if plan.sampler == "gp":
            return optuna.samplers.GPSampler(seed=plan.seed)
    return optuna.samplers.RandomSampler(seed=plan.seed)


def pruner(plan: Plan) -> optuna.pruners.BasePruner:
    """Median stopping (Golovin et al. 2017), Hyperband (Li et al. 2018) over epochs, or Wilcoxon's signed-rank
    test on per-fold scores (Optuna's WilcoxonPruner), which needs cross-validation."""
    if plan.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if plan.pruner == "hyperband":
        top = plan.folds or plan.epochs
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(top, 2), reduction_factor=3)
    if plan.pruner == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=WILCOXON_P, n_startup_steps=2)
    return optuna.pruners.NopPruner()


def points(space: Space, plan: Plan, start: int, stop: int) -> list[dict[str, Any]]:
    """Queued points ``start .. stop-1``: each a function of ``(seed, index)`` only.

    grid: the grid in an order shuffled by the seed (a cut-short grid still spreads over the space); random: the
    unit cube drawn from a generator seeded with ``(seed, index)``; qmc: the scrambled Halton sequence (Halton 1964,
    Owen's scrambling), the quasi-random search the Deep Learning Tuning Playbook (Godbole et al. 2023) prefers for
    exploration, index ``i`` being its ``i``-th point.
    """
    if stop <= start:
        return []
    if plan.sampler == "grid":
        grid = space.grid()
        order = np.random.default_rng(plan.seed).permutation(len(grid))
        return [grid[i] for i in order[start:stop]]
    if plan.sampler == "random":
        return [space.point(np.random.default_rng([plan.seed, i]).random(len(space))) for i in range(start, stop)]
    from scipy.stats import qmc

    engine = qmc.Halton(d=len(space), scramble=True, seed=plan.seed)
    engine.fast_forward(start)
    return [space.point(u) for u in engine.random(stop - start)]


# ---------------------------------------------------------------------------------------------- the study
def open_study(name: str, store: optuna.storages.BaseStorage, plan: Plan, space: Space,
               *, wait: float = 60.0) -> tuple[optuna.Study, bool]:
    """Create the study (queueing its points) or continue it; returns ``(study, created)``.

    A continued study must have been created with the same sampler, seed, space, metric and folds; a larger
    ``trials`` queues the next points. The process that creates the study queues the points; others wait for it.
    """
    url = getattr(store, "url", "")
    try:
        with exclusive(url):  # workers that start together: one creates and queues, the others then continue
            return _open(name, store, plan, space, wait)
    except optuna.exceptions.StorageInternalError as e:
        raise UserError(f"the study storage {safe(url)} failed while opening study {name!r} ({e}); if it is an "
                        f"SQLite file, it may be damaged: move it away and start the study again") from None


def _open(name: str, store: optuna.storages.BaseStorage, plan: Plan, space: Space,
          wait: float) -> tuple[optuna.Study, bool]:
    try:
        study = optuna.create_study(study_name=name, storage=store, sampler=sampler(plan), pruner=pruner(plan),
                                    direction=plan.direction)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=store, sampler=sampler(plan), pruner=pruner(plan))
        created = False
    if created:
        _extend(study, space, plan, 0)
        study.set_user_attr("descend", asdict(plan))
        return study, True
    recorded = _recorded(study, wait)
    before = {k: recorded.get(k) for k in plan.fixed()}
    if before != plan.fixed():
        changed = [k if k in ("space", "recipe") else f"{k} ({before[k]!r} -> {v!r})"
                   for k, v in plan.fixed().items() if before[k] != v]
        raise UserError(f"study {name!r} was created with a different {'; '.join(changed)[:300]}; continue it with "
                        f"the same options, or start another with --study NEW_NAME")
    if plan.sampler in QUEUED:
        _extend(study, space, plan, recorded["trials"])
    _requeue_interrupted(study)
    if (recorded["trials"], recorded.get("patience")) != (plan.trials, plan.patience):
        study.set_user_attr("stopped", "")  # a longer or more patient search starts where the last one stopped
    study.set_user_attr("descend", asdict(plan) | {"trials": max(plan.trials, recorded["trials"])})
    return study, False


def _recorded(study: optuna.Study, wait: float) -> dict:
    deadline = time.monotonic() + wait
    while "descend" not in study.user_attrs:
        if time.monotonic() > deadline:
            raise UserError(f"study {study.study_name!r} exists but was not made by descend tune (or its creator "
                            f"died while queueing); start another with --study NEW_NAME")
        time.sleep(0.5)
    return study.user_attrs["descend"]


def _extend(study: optuna.Study, space: Space, plan: Plan, queued: int) -> None:
    if plan.sampler in QUEUED:
        for params in points(space, plan, queued, plan.trials):
            study.enqueue_trial(params, user_attrs={"queued": True})


def _requeue_interrupted(study: optuna.Study) -> None:
    """Trials stopped by Ctrl-C or SIGTERM are FAIL in Optuna; queue their parameters once more."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials} | {t.system_attrs.get("failed_trial") for t in trials}
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get("interrupted") and t.number not in retried:
            study.enqueue_trial(t.params, user_attrs={"queued": True, "retry_of": t.number})


# ---------------------------------------------------------------------------------------------- workers
def next_step(study: optuna.Study, plan: Plan) -> str:
    """``"run"`` a trial, ``"wait"`` for trials running elsewhere (they may die and be retried), or ``"done"``."""
    trials = study.get_trials(deepcopy=False)
    if study.user_attrs.get("stopped"):
        return "done"
    states = [t.state for t in trials]
    running = TrialState.RUNNING in states
    if plan.sampler in QUEUED:
        todo = TrialState.WAITING in states
    else:
        counted = sum(s in (*DONE, TrialState.RUNNING, TrialState.WAITING) for s in states)
        todo = counted < plan.trials or TrialState.WAITING in states
    return "run" if todo else "wait" if running else "done"


def without_improvement(study: optuna.Study) -> int:
    """Finished trials after the best one (in trial order): the count the study's patience is held against."""
    trials = [t for t in study.get_trials(deepcopy=False, states=DONE)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        return 0
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    best = pick(complete, key=lambda t: (t.value, -t.number))
    return sum(t.number > best.number for t in trials)


def work(study: optuna.Study, objective, plan: Plan, *, timeout: float | None = None, poll: float = 1.0,
         on_trial=None) -> None:
    """Run trials until the plan is done, the study stopped (patience), or ``timeout`` seconds have passed."""
    deadline = None if timeout is None else time.monotonic() + timeout

    def finished(study_: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if plan.patience is not None and without_improvement(study_) >= plan.patience:
            study_.set_user_attr("stopped", f"no improvement in the last {plan.patience} finished trials")
        if on_trial is not None:
            on_trial(study_, trial)

    while deadline is None or time.monotonic() < deadline:
        step = next_step(study, plan)
        if step == "done":
            return
        if step == "wait":
            with warnings.catch_warnings():  # Optuna marks the function experimental; users see descend's lines only
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            time.sleep(poll)
            continue
        study.optimize(objective, n_trials=1, catch=(DivergenceError,), callbacks=[finished])


def digest(raw: dict) -> str:
    """A short digest of the recipe's fields, its name aside."""
    fields = {k: v for k, v in raw.items() if k != "name"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def canonical(space: Space) -> str:
    return json.dumps([[d.path, d.kind, d.low, d.high, d.log, d.step, list(d.labels), d.grid,
                        {k: list(v) for k, v in d.when.items()}] for d in space.dims])
