"""One mode inference for every watcher of a metric: early stopping, plateau, checkpoints, History.best."""

import pytest

from descend import monitor, schedules
from descend.errors import UserError
from descend.train.callbacks import EarlyStopping
from descend.train.history import History
from descend.train.state import Checkpoints

MODES = {"val_loss": "min", "val_f1": "max", "val_auroc": "max", "val_rmse": "min", "val_r2": "max",
         "train_mae": "min", "val_top5_accuracy": "max", "val_precision": "max", "val_recall": "max",
         "val_error": "min", "val_mse": "min", "train_accuracy": "max"}


class _Trainer:
    epoch = 1


def _checkpoints_mode(tmp_path, metric: str) -> str:
    """The mode the best checkpoint follows: does 2.0 after 1.0 count as better?"""
    checkpoints = Checkpoints(tmp_path, monitor=metric, every=1000)
    written = []
    checkpoints.write = lambda trainer, *paths: written.append(paths)
    checkpoints.on_epoch_end(_Trainer(), {metric: 1.0})
    checkpoints.on_epoch_end(_Trainer(), {metric: 2.0})
    return "max" if written[1] == (checkpoints.best,) else "min"


@pytest.mark.parametrize("metric", list(MODES))
def test_every_watcher_infers_the_same_mode(metric, tmp_path):
    expected = MODES[metric]
    assert monitor.resolve_mode("x", metric) == expected
    assert EarlyStopping(monitor=metric).mode == expected
    assert schedules.plateau(monitor=metric).mode == expected
    assert _checkpoints_mode(tmp_path, metric) == expected
    best = History([{metric: 1.0}, {metric: 2.0}]).best(metric)[metric]
    assert best == (2.0 if expected == "max" else 1.0)


def test_an_explicit_mode_wins_and_unknown_names_ask_for_one():
    assert monitor.resolve_mode("x", "val_loss", "max") == "max"
    assert History([{"lr": 1.0}, {"lr": 2.0}]).best("lr", mode="max")["lr"] == 2.0
    with pytest.raises(UserError, match="x: cannot infer whether 'throughput' should go down or up"):
        monitor.resolve_mode("x", "throughput")
    with pytest.raises(UserError, match="x: option 'mode' must be one of 'auto', 'min', 'max'; got 'up'."):
        monitor.resolve_mode("x", "val_loss", "up")


def test_improved_and_read_metric():
    assert monitor.improved(1.0, None, "min") and not monitor.improved(float("nan"), None, "min")
    assert monitor.improved(0.5, 1.0, "min", 0.4) and not monitor.improved(0.7, 1.0, "min", 0.4)
    assert monitor.improved(1.5, 1.0, "max") and not monitor.improved(float("nan"), 1.0, "max")
    assert monitor.read_metric("x", {"a": 2}, "a") == 2.0
    with pytest.raises(UserError, match="x: monitor 'b' is not a logged metric; logged: a, c"):
        monitor.read_metric("x", {"c": 1, "a": 2}, "b")
