"""Learning rates the user controls: torch schedulers, LR changes made by user code, a second fit that continues,
and a warmup longer than training named by its recipe fields before anything is written."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau, StepLR

import descend as ds
from descend.cli import main
from descend.train.callbacks import Callback
from descend.train.lr import TorchSchedule


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    return x, x @ torch.tensor([[1.0], [-1.0], [0.5]])


def sgd(lr=0.1):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    return model, torch.optim.SGD(model.parameters(), lr=lr)


def test_a_torch_scheduler_is_stepped_per_epoch():
    model, opt = sgd()
    history = ds.Trainer(model, optimizer=opt, schedule=StepLR(opt, step_size=1, gamma=0.5),
                         device="cpu").fit(data(), epochs=3, batch_size=16)
    assert history["lr"] == pytest.approx([0.1, 0.05, 0.025])    # the rate each epoch trained with
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0125)      # the scheduler owns it: left as it set it


def test_a_torch_scheduler_stepped_per_step_and_plateau_with_the_monitored_value():
    model, opt = sgd()
    schedule = TorchSchedule(LambdaLR(opt, lambda step: 1 / (step + 1)), per="step")
    ds.Trainer(model, optimizer=opt, schedule=schedule, device="cpu").fit(data(), epochs=2, batch_size=16)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 / 9)     # 8 steps taken
    model, opt = sgd()
    plateau = ReduceLROnPlateau(opt, mode="max", patience=0, factor=0.5)  # a falling loss never "improves" here
    history = ds.Trainer(model, optimizer=opt, schedule=plateau, device="cpu").fit(data(), epochs=3, batch_size=16)
    assert history["lr"] == pytest.approx([0.1, 0.1, 0.05])        # epoch 1 sets the best; 2 and 3 do not beat it
    with pytest.raises(ds.UserError, match="ReduceLROnPlateau reads a metric once per epoch"):
        TorchSchedule(plateau, per="step")


class SetRate(Callback):
    """Sets every group's rate at the end of one epoch, as a user's callback (or notebook code) would."""

    def __init__(self, epoch, factor):
        self.epoch, self.factor = epoch, factor

    def on_epoch_end(self, trainer, logs):
        if trainer.epoch == self.epoch:
            for group in trainer.optimizer.param_groups:
                group["lr"] *= self.factor


def test_rate_changes_made_by_user_code_are_kept():
    model, opt = sgd()
    history = ds.Trainer(model, optimizer=opt, callbacks=[SetRate(0, 0.1)], device="cpu").fit(data(), epochs=3,
                                                                                              batch_size=16)
    assert history["lr"] == pytest.approx([0.1, 0.01, 0.01])      # no schedule: the trainer never writes it
    model, opt = sgd()
    trainer = ds.Trainer(model, optimizer=opt, schedule=ds.schedules.cosine(), callbacks=[SetRate(1, 0.5)],
                         device="cpu")
    history = trainer.fit(data(), epochs=4, batch_size=16)
    cosine = ds.schedules.cosine()
    cosine.bind(4, 16)
    assert history["lr"][:2] == pytest.approx([cosine.lr(0.1, 3), cosine.lr(0.1, 7)])
    assert history["lr"][2:] == pytest.approx([0.5 * cosine.lr(0.1, 11), 0.5 * cosine.lr(0.1, 15)])  # same curve,
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)        # at half the level; the base (halved) left


def test_a_second_fit_continues_and_the_base_rate_stays_intact():
    model, opt = sgd()
    trainer = ds.Trainer(model, optimizer=opt, schedule=ds.schedules.cosine(), device="cpu")
    first = list(trainer.fit(data(), epochs=2, batch_size=16))
    assert opt.param_groups[0]["lr"] == 0.1                          # not the decayed end of the cosine
    history = trainer.fit(data(), epochs=3, batch_size=16)             # "3 more epochs"
    assert history[:2] == first and [r["epoch"] for r in history] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in history] == [4, 8, 12, 16, 20]
    restart = ds.schedules.cosine()
    restart.bind(4, 12)                                                # the schedule runs again over the new fit
    assert history["lr"][2:] == pytest.approx([restart.lr(0.1, t) for t in (3, 7, 11)])
    assert history[-1]["train_loss"] < first[-1]["train_loss"] and opt.param_groups[0]["lr"] == 0.1
    again = ds.Trainer(model, optimizer=opt, device="cpu")             # a new Trainer on the same optimizer
    assert again.fit(data(), epochs=1, batch_size=16)["lr"] == [0.1]


def test_warmup_as_a_fraction_of_training():
    schedule = ds.schedules.create("cosine", warmup_fraction=0.25)
    schedule.bind(10, 40)
    assert schedule.warmup_steps == 10 and schedule.lr(1.0, 0) == pytest.approx(0.1)
    assert math.isclose(schedule.lr(1.0, 10), 1.0)


def test_a_warmup_longer_than_training_names_both_fields_and_writes_nothing(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\nname = "iris"\n[train]\nepochs = 3\nbatch_size = 16\ndevice = "cpu"\n'
                      '[schedule]\nname = "cosine"\nwarmup_epochs = 2\n')
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--set", "train.epochs=1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "schedule.warmup_epochs = 2" in err and "train.epochs = 1" in err and not out.exists()
    assert main(["run", str(recipe), "--set", "train.epochs=1", "--set", "schedule.warmup_epochs=0",
                 "--set", "schedule.warmup_fraction=0.5", "--out", str(out), "--quiet"]) == 0
