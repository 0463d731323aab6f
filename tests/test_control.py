"""Babysitting: control.toml and keys change a running fit (learning rate, epochs, stop), logged, kept on resume."""

import io
import json
import os
import pty
import queue
import time

import pytest
import torch

from descend import config as cfg
from descend.errors import UserError
from descend.runs import experiment
from descend.train import Trainer
from descend.train.callbacks import Callback
from descend.train.control import Control, _KeyReader, parse

RAW = {"name": "c", "seed": 0, "data": {"name": "iris"}, "model": {"name": "mlp", "hidden": [8]},
       "train": {"epochs": 4, "batch_size": 32}, "optimizer": {"name": "sgd", "lr": 0.1}}


class WriteAt(Callback):
    """Write ``text`` to the control file at the end of epoch ``epoch`` (as a user would, mid-run)."""

    order = 5

    def __init__(self, path, epoch, text):
        self.path, self.epoch, self.text = path, epoch, text

    def on_epoch_end(self, trainer, logs):
        if trainer.epoch == self.epoch:
            self.path.write_text(self.text)


def fit(tmp_path, text, at=0, epochs=4):
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    path = tmp_path / "control.toml"
    trainer = Trainer(torch.nn.Linear(4, 3), loss="cross_entropy", device="cpu",
                      callbacks=[WriteAt(path, at, text), Control(path, stream=open(os.devnull, "w"))])
    return trainer, trainer.fit((x, y), (x, y), epochs=epochs, batch_size=16)


def test_parse_commands_and_errors():
    assert parse('lr = "halve"\nadd_epochs = 3\nstop = true') == [("lr", 0.5), ("add_epochs", 3), ("stop", True)]
    assert parse('lr = "double"') == [("lr", 2.0)] and parse("lr = 0.1") == [("lr", 0.1)]
    for text, message in (("lr = -1", "option 'lr' must be"), ("add_epochs = 0", "option 'add_epochs' must be"),
                          ("speed = 2", "unknown option 'speed'"), ("lr =", "not valid TOML")):
        with pytest.raises(UserError, match=message):
            parse(text)


def test_halving_the_learning_rate_takes_effect_next_epoch_and_is_logged(tmp_path):
    trainer, history = fit(tmp_path, 'lr = "halve"', at=1)
    lrs = [row["lr"] for row in history]
    assert lrs[:2] == [pytest.approx(1e-3)] * 2 and lrs[2:] == [pytest.approx(5e-4)] * 2  # Adam's default 1e-3
    assert history[1]["control_lr_factor"] == 0.5 and "control_lr_factor" not in history[2]
    assert (tmp_path / "control.applied.toml").read_text() == 'lr = "halve"'
    assert not (tmp_path / "control.toml").exists()


def test_add_epochs_and_stop(tmp_path):
    _, history = fit(tmp_path, "add_epochs = 2", at=0)
    assert len(history) == 6 and history[0]["control_add_epochs"] == 2
    _, history = fit(tmp_path, "stop = true", at=1)
    assert len(history) == 2 and history[1]["control_stop"] == 1


def test_a_broken_control_file_is_reported_not_fatal(tmp_path):
    with pytest.warns(UserWarning, match="option 'lr' must be"):
        _, history = fit(tmp_path, "lr = -3", at=0)
    assert len(history) == 4 and all("control_lr_factor" not in row for row in history)


class MakeAt(Callback):
    """Make the control file something no editor writes (a directory, binary bytes) at the end of an epoch."""

    order = 5

    def __init__(self, path, make):
        self.path, self.make = path, make

    def on_epoch_end(self, trainer, logs):
        if trainer.epoch == 0:
            self.make(self.path)


@pytest.mark.parametrize("make", [lambda p: p.mkdir(), lambda p: p.write_bytes(b"lr = 0.5\n\xff\xfe\x00")],
                         ids=["directory", "binary"])
def test_an_unreadable_control_file_is_reported_not_fatal(tmp_path, make):
    path, said = tmp_path / "control.toml", io.StringIO()
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    trainer = Trainer(torch.nn.Linear(4, 3), loss="cross_entropy", device="cpu",
                      callbacks=[MakeAt(path, make), Control(path, stream=said)])
    with pytest.warns(UserWarning, match=f"control, after epoch 1: cannot read {path}") as warned:
        history = trainer.fit((x, y), (x, y), epochs=3, batch_size=16)
    assert len(history) == 3 and all("control_lr_factor" not in row for row in history)
    assert len(warned) == 1 and said.getvalue() == ""


def test_changes_survive_resume(tmp_path):
    """Halve the lr and add 2 epochs, stop at epoch 2; the resumed run keeps the lr and trains 4 + 2 epochs."""
    out = tmp_path / "run"
    config = cfg.validate(RAW)
    control = Control(out / "control.toml", stream=open(os.devnull, "w"))
    exp = experiment.build(config)
    exp.fit([WriteAt(out / "control.toml", 1, 'lr = 0.5\nadd_epochs = 2\nstop = true'), control], out=out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[1]["control_lr_factor"] == 0.5 and rows[1]["control_add_epochs"] == 2
    resumed = experiment.build(config).fit([Control(out / "control.toml")], out=out, resume=True)
    assert len(resumed.history) == 6
    assert [row["lr"] for row in resumed.history][2:] == [pytest.approx(0.05)] * 4


def test_keys_from_a_terminal():
    parent, child = pty.openpty()
    commands = queue.Queue()
    reader = _KeyReader(commands, fd=child)
    reader.start()
    try:
        os.write(parent, b"-x+se")
        deadline = time.monotonic() + 5
        got = []
        while len(got) < 4 and time.monotonic() < deadline:
            try:
                got.append(commands.get(timeout=0.2))
            except queue.Empty:
                pass
    finally:
        reader.stop()
        os.close(parent)
        os.close(child)
    assert got == [("lr", 0.5), ("lr", 2.0), ("stop", True), ("add_epochs", 5)]


def test_descend_run_reads_control_toml_in_its_run_directory(tmp_path, capsys):
    from descend.cli import main

    recipe, out = tmp_path / "c.toml", tmp_path / "run"
    recipe.write_text(cfg.dump(cfg.validate(RAW)))
    out.mkdir()
    (out / "control.toml").write_text('lr = "halve"\nstop = true')   # headless: written before the first epoch ends
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["control_lr_factor"] == 0.5 and rows[0]["control_stop"] == 1
    assert (out / "control.applied.toml").is_file() and (out / "checkpoints" / "last.safetensors").is_file()
