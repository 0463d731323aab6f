"""One epoch convention everywhere (descend.train.epochs): epochs count from 1 in the logs, and every option that
names an epoch is ``first_epoch``, 1-based and inclusive; options that count epochs are counts. Checked over the
whole option vocabulary (a new option with "epoch" in its name must say which it is) and by running each named-epoch
option and the epoch-counting schedules, with the logged epoch numbers as the reference."""

from __future__ import annotations

import warnings

import pytest
import torch

import descend as ds
from descend import averaging
from descend.options import reference
from descend.options.constraints import Interval, Optional
from descend.train import Trainer
from descend.train.callbacks import Callback, EarlyStopping
from descend.train.control import COMMANDS

NAMES_AN_EPOCH = {"first_epoch"}  # 1-based, inclusive
COUNTS_EPOCHS = {"warmup_epochs", "anneal_epochs", "add_epochs", "epochs"}  # durations
DEPRECATED = {"start_epoch": "counted from 0", "start_from_epoch": "Keras's epochs to ignore"}


def epoch_options():
    tables = [(part.where, part.table) for part in reference.parts()]
    tables += [("averaging", averaging.WeightAveraging.__init__.options), ("control.toml", COMMANDS)]
    return [(where, option) for where, table in tables for option in table if "epoch" in option.name]


@pytest.mark.parametrize(("where", "option"), epoch_options(), ids=lambda v: getattr(v, "name", v))
def test_every_option_about_epochs_names_its_convention(where, option):
    assert option.name in NAMES_AN_EPOCH | COUNTS_EPOCHS | set(DEPRECATED), (
        f"{where}: option {option.name!r}: an option naming an epoch is first_epoch (from 1, inclusive); "
        "one counting epochs belongs in COUNTS_EPOCHS"
    )
    if option.name in NAMES_AN_EPOCH:
        inner = option.constraint.inner if isinstance(option.constraint, Optional) else option.constraint
        assert isinstance(inner, Interval) and inner.kind is int and inner.low == 1  # epoch 0 does not exist
    if option.name in DEPRECATED:
        assert option.doc.startswith("deprecated:")


class Seen(Callback):
    """The logged epoch number of every epoch end, and what the averaging and early stopping did by then."""

    order = 95

    def __init__(self):
        self.epochs = []

    def on_epoch_end(self, trainer, logs):
        self.epochs.append(logs["epoch"])


def run(callbacks, epochs=6, schedule=None):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=g)
    y = (x[:, 0] > 0).long()
    seen = Seen()
    trainer = Trainer(
        torch.nn.Linear(4, 2),
        loss="cross_entropy",
        device="cpu",
        seed=0,
        schedule=schedule,
        optimizer=ds.optim.create("sgd", lr=0.1),
        callbacks=[*callbacks, seen],
    )
    history = trainer.fit((x, y), (x, y), epochs=epochs, batch_size=20, progress=False)
    assert seen.epochs == history["epoch"] == list(range(1, epochs + 1))  # the reference: logged from 1
    return trainer, history


class AveragedEpochs(Callback):
    order = 60  # after the averaging callback (50)

    def __init__(self, swa):
        self.swa, self.epochs, self.before = swa, [], 0

    def on_epoch_end(self, trainer, logs):
        if self.swa.updates > self.before:
            self.epochs.append(logs["epoch"])
        self.before = self.swa.updates


@pytest.mark.parametrize("first", [1, 3, 6])
def test_swa_first_epoch_is_the_first_averaged_epoch(first):
    swa = averaging.SWA(first_epoch=first, evaluate_with="raw")
    seen = AveragedEpochs(swa)
    run([swa, seen])
    assert seen.epochs == list(range(first, 7))


class Score(Callback):
    """Logs ``score``: lowest at epoch 1, then lowest from epoch 4 on at epoch 5."""

    order = -1  # before early stopping (0)
    VALUES = [0.1, 0.5, 0.6, 0.9, 0.8, 0.85]

    def setup(self, trainer, logged):
        logged.add("score")

    def on_epoch_end(self, trainer, logs):
        logs["score"] = self.VALUES[logs["epoch"] - 1]


@pytest.mark.parametrize(("first", "best"), [(1, 1), (2, 2), (4, 5)])
def test_early_stopping_first_epoch_is_the_first_epoch_watched(first, best):
    stopper = EarlyStopping(monitor="score", mode="min", patience=100, first_epoch=first, restore_best=False)
    run([Score(), stopper])
    assert stopper.best_epoch == best


def test_a_multistep_milestone_counts_the_epochs_before_the_drop():
    _, history = run([], schedule=ds.schedules.create("multistep", milestones=[2, 4], gamma=0.5, per="epoch"))
    assert history["lr"] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])  # lowered after epochs 2 and 4


@pytest.mark.parametrize("make", [lambda: averaging.SWA(first_epoch=9, evaluate_with="raw"),
                                  lambda: EarlyStopping(monitor="val_loss", patience=1, first_epoch=9)])
def test_a_first_epoch_after_the_last_one_is_warned_about(make):
    with pytest.warns(UserWarning, match=r"first_epoch = 9 is after the run's last epoch \(6\)"):
        run([make()])


@pytest.mark.parametrize("make", [lambda: averaging.SWA(first_epoch=6, evaluate_with="raw"),
                                  lambda: EarlyStopping(monitor="val_loss", patience=1, first_epoch=6)])
def test_a_first_epoch_within_the_run_says_nothing(make):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run([make()])
