"""EarlyStopping: patience, min_delta, mode, start_from_epoch, restoring the best weights whether or not
stopping fired, and a state that survives a checkpoint round trip so a resumed run keeps counting."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from descend.errors import UserError
from descend.train.callbacks import Callback, EarlyStopping


class FakeTrainer:
    """The trainer's public face a callback may use: model, epoch, stop_training."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        nn = torch.nn
        self.model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
        self.epoch = 0
        self.stop_training = False


def mark(model: torch.nn.Module, epoch: int) -> None:
    """Give every parameter and float buffer a value that identifies the epoch it was written in."""
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.fill_(float(epoch))


def marked_epoch(model: torch.nn.Module) -> float:
    values = {t.flatten()[0].item() for t in model.state_dict().values() if t.is_floating_point()}
    assert len(values) == 1
    return values.pop()


def drive(cb: EarlyStopping, trainer: FakeTrainer, values, key: str = "val_loss",
          first_epoch: int = 0) -> int:
    """Run epochs with the given monitored values until the callback stops training; return epochs run."""
    ran = 0
    for epoch, v in enumerate(values, start=first_epoch):
        trainer.epoch = epoch
        mark(trainer.model, epoch)  # the weights "after training epoch `epoch`"
        cb.on_epoch_end(trainer, {"train_loss": 0.0, key: v})
        ran += 1
        if trainer.stop_training:
            break
    return ran


def test_is_a_callback_with_the_documented_defaults():
    cb = EarlyStopping()
    assert isinstance(cb, Callback)
    assert (cb.monitor, cb.mode, cb.patience, cb.min_delta, cb.first_epoch, cb.restore_best) == (
        "val_loss", "min", 10, 0.0, 1, True)


def test_stops_after_exactly_patience_epochs_without_improvement():
    t, cb = FakeTrainer(), EarlyStopping(patience=3)
    ran = drive(cb, t, [1.0, 0.8, 0.7, 0.9, 0.75, 0.71, 0.5, 0.4])
    assert t.stop_training
    assert ran == 6 and cb.stopped_epoch == 6  # epochs 4, 5, 6 (numbered from 1) did not beat 0.7
    assert (cb.best_epoch, cb.best_value, cb.wait) == (3, 0.7, 3)


def test_an_improvement_resets_the_wait():
    t, cb = FakeTrainer(), EarlyStopping(patience=2)
    drive(cb, t, [1.0, 1.1, 0.9, 1.0, 0.8, 0.85])
    assert not t.stop_training and cb.stopped_epoch is None
    assert (cb.best_epoch, cb.wait) == (5, 1)


def test_patience_zero_stops_at_the_first_epoch_without_improvement():
    t, cb = FakeTrainer(), EarlyStopping(patience=0)
    assert drive(cb, t, [1.0, 0.9, 0.95, 0.1]) == 3


def test_min_delta_requires_a_larger_improvement():
    values = [1.0, 0.97, 0.94, 0.92, 0.905]  # each step improves by more than 0.01, all together by < 0.1
    t, cb = FakeTrainer(), EarlyStopping(patience=3, min_delta=0.1)
    assert drive(cb, t, values) == 4 and cb.best_epoch == 1
    t2, cb2 = FakeTrainer(), EarlyStopping(patience=3, min_delta=0.01)
    assert drive(cb2, t2, values) == 5 and cb2.best_epoch == 5


def test_mode_is_inferred_from_the_metric_name():
    assert EarlyStopping(monitor="val_accuracy").mode == "max"
    assert EarlyStopping(monitor="train_loss").mode == "min"
    t, cb = FakeTrainer(), EarlyStopping(monitor="val_accuracy", patience=2)
    drive(cb, t, [0.5, 0.7, 0.6, 0.65, 0.9], key="val_accuracy")
    assert t.stop_training and cb.best_value == 0.7 and cb.stopped_epoch == 4
    with pytest.raises(UserError, match="mode='min'"):
        EarlyStopping(monitor="throughput")
    assert EarlyStopping(monitor="throughput", mode="max").mode == "max"


@pytest.mark.parametrize("options", [{"first_epoch": 4}, {"start_from_epoch": 3}], ids=["first_epoch", "deprecated"])
def test_epochs_before_first_epoch_neither_count_nor_set_the_best(options):
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        t, cb = FakeTrainer(), EarlyStopping(patience=2, **options)
    # Keras's start_from_epoch = 3 (epochs to ignore) is first_epoch = 4, and says so
    assert [str(w.message) for w in said] == ([] if "first_epoch" in options else [
        "EarlyStopping: start_from_epoch is deprecated: start_from_epoch = 3 watches from epoch 4 on, and keeps that "
        "meaning; write first_epoch = 4 instead (epochs count from 1 everywhere in descend)"])
    # epoch 1 is the best value of all, and epochs 2-3 do not improve: both would matter without the warmup
    ran = drive(cb, t, [0.1, 0.5, 0.6, 0.9, 0.8, 0.85, 0.86])
    assert ran == 7 and cb.stopped_epoch == 7 and cb.best_epoch == 5
    cb.on_fit_end(t)
    assert marked_epoch(t.model) == 4


def test_restores_best_weights_when_stopping_fired():
    t, cb = FakeTrainer(), EarlyStopping(patience=2)
    drive(cb, t, [1.0, 0.6, 0.7, 0.8, 0.1])
    assert t.stop_training and marked_epoch(t.model) == 3
    cb.on_fit_end(t)
    assert marked_epoch(t.model) == 1


def test_restores_best_weights_also_when_training_ran_to_the_end():
    t, cb = FakeTrainer(), EarlyStopping(patience=10)
    drive(cb, t, [1.0, 0.5, 0.7, 0.8])
    assert not t.stop_training
    cb.on_fit_end(t)
    assert marked_epoch(t.model) == 1


def test_restore_best_false_leaves_the_last_weights_and_keeps_no_copy():
    t, cb = FakeTrainer(), EarlyStopping(patience=1, restore_best=False)
    drive(cb, t, [1.0, 0.5, 0.7])
    cb.on_fit_end(t)
    assert marked_epoch(t.model) == 2 and cb.best_weights is None and cb.best_epoch == 2


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_kept_weights_are_a_copy_on_the_model_device(device):
    t, cb = FakeTrainer(), EarlyStopping()
    t.model.to(device)
    drive(cb, t, [1.0])
    mark(t.model, 7)  # later training changes the model in place
    for name, kept in cb.best_weights.items():
        live = t.model.state_dict()[name]
        assert kept.device == live.device and kept.dtype == live.dtype
        assert kept.data_ptr() != live.data_ptr()
    assert all(k.flatten()[0].item() == 0.0 for k in cb.best_weights.values() if k.is_floating_point())


def test_a_kept_copy_that_does_not_match_the_model_is_rebuilt():
    t, cb = FakeTrainer(), EarlyStopping()
    cb.load_state_dict({**EarlyStopping().state_dict(), "best_weights": {"x": torch.zeros(2)}})
    drive(cb, t, [1.0])  # the model's state has other keys: the kept copy is rebuilt from the model
    assert cb.best_weights.keys() == t.model.state_dict().keys()


def test_nan_never_counts_as_an_improvement():
    t, cb = FakeTrainer(), EarlyStopping(patience=2)
    assert drive(cb, t, [float("nan"), 1.0, float("nan"), float("nan")]) == 4
    assert cb.best_epoch == 2 and t.stop_training


def test_missing_metric_is_a_user_error_listing_the_logged_names():
    t, cb = FakeTrainer(), EarlyStopping(monitor="val_loss")
    with pytest.raises(UserError, match="'val_loss'.*train_accuracy, train_loss"):
        cb.on_epoch_end(t, {"train_loss": 1.0, "train_accuracy": 0.3})


@pytest.mark.parametrize(
    "options, words",
    [
        ({"patience": -1}, ["patience", "-1", ">= 0"]),
        ({"patience": 2.5}, ["patience", "2.5", "integer"]),
        ({"min_delta": -0.1}, ["min_delta", "-0.1"]),
        ({"start_from_epoch": -2}, ["start_from_epoch", "-2"]),
        ({"first_epoch": 0}, ["first_epoch", "0"]),
        ({"mode": "down"}, ["mode", "'down'", "'min'", "'max'"]),
        ({"restore_best": "yes"}, ["restore_best", "'yes'"]),
    ],
)
def test_bad_arguments_are_user_errors(options, words):
    with pytest.raises(UserError) as err:
        EarlyStopping(**options)
    for word in words:
        assert word in str(err.value)


def checkpoint(state: dict) -> dict:
    """A checkpoint round trip without pickle: tensors through safetensors, everything else through JSON."""
    tensors = st_load(st_save(state["best_weights"])) if state["best_weights"] else {}
    meta = json.loads(json.dumps({k: v for k, v in state.items() if k != "best_weights"}))
    return {**meta, "best_weights": tensors}


def test_state_survives_a_checkpoint_and_a_resumed_run_decides_exactly_like_an_uninterrupted_one():
    values = [1.0, 0.6, 0.7, 0.8, 0.9, 0.65, 0.95, 0.3]
    straight_t, straight = FakeTrainer(), EarlyStopping(patience=4)
    drive(straight, straight_t, values)
    straight.on_fit_end(straight_t)

    first_t, first = FakeTrainer(), EarlyStopping(patience=4)
    drive(first, first_t, values[:4])  # crash after epoch 3, with 2 epochs already waited
    saved = checkpoint(first.state_dict())
    assert saved["wait"] == 2 and saved["best_epoch"] == 2

    resumed_t, resumed = FakeTrainer(), EarlyStopping(patience=4)
    resumed.load_state_dict(saved)
    drive(resumed, resumed_t, values[4:], first_epoch=4)
    resumed.on_fit_end(resumed_t)

    assert resumed_t.stop_training and straight_t.stop_training
    assert (resumed.stopped_epoch, resumed.best_epoch, resumed.best_value, resumed.wait) == (
        straight.stopped_epoch, straight.best_epoch, straight.best_value, straight.wait) == (6, 2, 0.6, 4)
    # the weights kept before the crash are the ones restored at the end of the resumed run
    assert marked_epoch(resumed_t.model) == marked_epoch(straight_t.model) == 1


def test_a_fresh_state_round_trips_and_a_different_monitor_is_refused():
    fresh = EarlyStopping().state_dict()
    assert fresh == {"monitor": "val_loss", "best_value": None, "best_epoch": None, "wait": 0,
                     "stopped_epoch": None, "best_weights": {}}
    other = EarlyStopping()
    other.load_state_dict(checkpoint(fresh))
    assert other.best_weights is None and other.best_value is None
    with pytest.raises(UserError, match="saved state monitors 'val_loss', this run monitors 'val_accuracy'"):
        EarlyStopping(monitor="val_accuracy").load_state_dict(fresh)


def test_summary_reports_best_epoch_and_value():
    t, cb = FakeTrainer(), EarlyStopping(patience=1)
    drive(cb, t, [0.9, 0.4, 0.5])
    assert cb.summary() == {"monitor": "val_loss", "mode": "min", "best_value": 0.4, "best_epoch": 2,
                            "stopped_epoch": 3}
