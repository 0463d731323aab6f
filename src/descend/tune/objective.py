"""One trial: the recipe with the trial's parameters, trained on the training split and scored on validation.

The score is the validation metric after training (the restored best epoch when the recipe stops early), or with
``folds`` the mean over a stratified k-fold cross-validation of train+val. The test split is never given to a
trial. A trial whose loss diverges fails on its own (its error is kept); the study goes on.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace
from pathlib import Path

import optuna

from .. import config as cfg
from .. import tracking
from ..errors import DivergenceError
from ..runs import experiment
from ..train.callbacks import Callback
from .cv import Folds
from .space import Space
from .study import DONE, QUEUED, Plan


class Pruning(Callback):
    """Report the metric to the trial after every epoch; stop training when the pruner says so.

    After the last epoch the pruner is not asked: the trial has spent its whole budget, and its value counts.
    """

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial, self.metric, self.pruned = trial, metric, False

    def on_epoch_end(self, trainer, logs: dict[str, float]) -> None:
        value = logs.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        self.trial.report(float(value), trainer.epoch)
        if trainer.epoch + 1 < trainer.end_epoch and self.trial.should_prune():
            self.pruned, trainer.stop_training = True, True


def score(result, metric: str) -> float:
    """The metric after training (what the trained model gives), else its last logged value."""
    if metric in result.final:
        return float(result.final[metric])
    return float(result.history[-1][metric])


class Objective:
    """``objective(trial) -> score`` over data loaded once per process (the test split removed)."""

    def __init__(self, raw: dict, space: Space, data, plan: Plan, runs: Path | None = None) -> None:
        self.raw, self.space, self.plan, self.runs = raw, space, plan, runs
        self.data = replace(data, test=None)
        self.pools = None
        if plan.folds:
            self.pools = Folds(self.raw, plan.folds)

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("pid", os.getpid())
        if self._surplus(trial):
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned("the plan's trials were all taken by other workers")
        config = cfg.validate(self.space.apply(self.raw, self.space.suggest(trial)), source="trial")
        out = self.runs / f"trial-{trial.number:04d}" if self.runs is not None else None
        started, epochs = time.perf_counter(), 0
        try:
            with tracking.tagged(trial=trial.number):  # [tracking] mlflow: nested under the study's run
                value, epochs, pruned = self._folds(trial, config, out) if self.pools else self._one(trial, config, out)
        except DivergenceError as e:
            trial.set_user_attr("error", str(e))
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 3))
            trial.set_user_attr("epochs", epochs)
        if pruned:
            raise optuna.TrialPruned()
        return value

    def _one(self, trial: optuna.Trial, config: cfg.Config, out: Path | None) -> tuple[float, int, bool]:
        pruning = Pruning(trial, self.plan.metric)
        result = experiment.build(config, self.data).fit(callbacks=[pruning], out=out)
        return score(result, self.plan.metric), len(result.history), pruning.pruned

    def _folds(self, trial: optuna.Trial, config: cfg.Config, out: Path | None) -> tuple[float, int, bool]:
        """Each fold's score is reported as one step, so the median, Hyperband and Wilcoxon pruners compare
        trials fold by fold."""
        scores, epochs = [], 0
        for k, result in enumerate(self.pools.fit(config, out=out)):
            scores.append(score(result, self.plan.metric))
            epochs += len(result.history)
            trial.report(scores[-1], k)
            if k + 1 < self.plan.folds and trial.should_prune():
                trial.set_user_attr("fold_scores", scores)
                return sum(scores) / len(scores), epochs, True
        trial.set_user_attr("fold_scores", scores)
        return sum(scores) / len(scores), epochs, False

    def _surplus(self, trial: optuna.Trial) -> bool:
        """A trial the plan has no room for: made fresh by Optuna after another worker took the last queued point,
        or beyond ``trials`` for the adaptive samplers (two workers asked at once)."""
        frozen = trial.study._storage.get_trial(trial._trial_id)
        if self.plan.sampler in QUEUED:
            return not frozen.user_attrs.get("queued")
        others = [t for t in trial.study.get_trials(deepcopy=False)
                  if t.number < trial.number and (t.state in DONE or t.state == optuna.trial.TrialState.RUNNING)]
        return "failed_trial" not in frozen.system_attrs and len(others) >= self.plan.trials
