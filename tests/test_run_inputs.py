"""What a run takes from its data and gives back: the class count comes from the run (a validation or evaluation split
that lacks the highest class is fine, a label past the run's classes is not), predict keeps the input dtype the
model trained on and puts the model's mode back when a batch fails, and the command line's one-line warning format
lasts only while it runs."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
from torch import nn

import descend as ds
from descend import cli
from descend.data import Split
from descend.errors import UserError
from descend.train import Trainer


def pairs(n, classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.arange(n) % classes


@pytest.mark.parametrize("as_split", [False, True], ids=["pairs", "splits"])
def test_a_validation_or_test_split_without_the_highest_class_is_checked_against_the_run(as_split):
    train, val = pairs(40, 4), pairs(12, 3, seed=1)  # validation holds classes 0-2 of 0-3
    if as_split:
        train = Split(train[0], train[1], "classification", 4)
        val = Split(val[0], val[1], "classification", 3)
    trainer = Trainer(ds.models.mlp(hidden=[8]), device="cpu")
    history = trainer.fit(train, val, epochs=1, batch_size=10, progress=False)
    assert "val_accuracy" in history[0] and trainer.model(torch.zeros(1, 5)).shape == (1, 4)
    assert set(trainer.evaluate(pairs(6, 2, seed=2))) == {"loss", "accuracy"}  # classes 0-1 only
    with pytest.raises(UserError, match=r"class labels must be integers in \[0, 3\], found labels from 0 to 5"):
        trainer.evaluate(pairs(6, 6, seed=3))


class Tokens(nn.Module):
    """An embedding of integer token ids, averaged: its inputs must stay integers."""

    def __init__(self):
        super().__init__()
        self.embed, self.out = nn.Embedding(10, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.embed(x).mean(dim=1))


def test_predict_keeps_integer_inputs_for_an_embedding_and_casts_what_the_fit_cast():
    x = torch.randint(0, 10, (30, 6))
    trainer = Trainer(Tokens(), device="cpu")
    trainer.fit(Split(x, (x[:, 0] > 4).long(), "classification", 2), epochs=1, batch_size=10, progress=False)
    assert trainer.predict(x).shape == (30, 2)
    fresh = Trainer(Tokens(), device="cpu")  # no fit: integers stay integers
    assert fresh.predict(x).shape == (30, 2)
    pixels = torch.randint(0, 255, (30, 5), dtype=torch.uint8)  # a fit on (x, y) pairs reads them as float32
    mlp = Trainer(nn.Linear(5, 2), device="cpu")
    mlp.fit((pixels, torch.arange(30) % 2), epochs=1, batch_size=10, progress=False)
    torch.testing.assert_close(mlp.predict(pixels), mlp.predict(pixels.float().numpy()))


def _ids_and_labels(n=40):
    x = torch.randint(0, 10, (n, 6), generator=torch.Generator().manual_seed(0))
    return x, (x[:, 0] > 4).long()


@pytest.mark.parametrize("form", ["tensors", "numpy", "dataloader", "validation_split"])
def test_an_embedding_model_trains_on_integer_ids_in_every_input_form(form):
    """Integer inputs reach a model that takes them as integers, whatever form the data comes in; a model that
    does not (linear layers on integer pixels) gets float32, as before."""
    from torch.utils.data import DataLoader, TensorDataset

    x, y = _ids_and_labels()
    data = {"tensors": (x, y), "numpy": (x.numpy(), y.numpy()), "validation_split": (x, y),
            "dataloader": DataLoader(TensorDataset(x, y), batch_size=10)}[form]
    trainer = Trainer(Tokens(), device="cpu")
    extra = {"validation_split": 0.25} if form == "validation_split" else {}
    history = trainer.fit(data, epochs=2, batch_size=10, progress=False, **extra)
    assert len(history) == 2 and torch.isfinite(torch.tensor(history["train_loss"])).all()
    assert trainer.predict(x).shape == (40, 2)
    assert set(trainer.evaluate((x, y))) >= {"loss", "accuracy"}
    counts = torch.randint(0, 255, (40, 6), dtype=torch.int64)
    mlp = Trainer(nn.Linear(6, 2), device="cpu")
    counts_data = DataLoader(TensorDataset(counts, y), batch_size=10) if form == "dataloader" else (counts, y)
    mlp.fit(counts_data, epochs=1, batch_size=10, progress=False)
    torch.testing.assert_close(mlp.predict(counts), mlp.predict(counts.float()))


def test_ids_out_of_an_embedding_and_a_wrong_input_width_are_named():
    x, y = _ids_and_labels()
    with pytest.raises(UserError, match="each id must be below its embedding's size"):
        Trainer(Tokens(), device="cpu").fit((x + 10, y), epochs=1, progress=False)
    with pytest.raises(UserError, match=r"shapes cannot be multiplied .*make the model's input size match"):
        Trainer(nn.Linear(7, 2), device="cpu").fit((x, y), epochs=1, progress=False)


class FailsOnSecondBatch(nn.Linear):
    def __init__(self):
        super().__init__(5, 2)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("a batch that fails")
        return super().forward(x)


def test_predict_puts_the_model_s_mode_back_when_a_batch_fails():
    model = FailsOnSecondBatch()
    trainer = Trainer(model, device="cpu")
    with pytest.raises(RuntimeError, match="a batch that fails"):
        trainer.predict(torch.randn(8, 5), batch_size=4)
    assert model.training


def test_the_command_line_s_warnings_are_one_line_each_said_once_and_its_format_lasts_only_while_it_runs(
    monkeypatch, capsys
):
    before = warnings.formatwarning

    def warns(args):
        for _ in range(2):  # a part built twice warns twice
            warnings.warn("a word from a command", UserWarning, stacklevel=1)
            with warnings.catch_warnings():  # which makes Python forget what it showed
                pass
        warnings.warn("a word  from a command", FutureWarning, stacklevel=1)  # the same line
        return 0

    def warns_and_fails(args):
        warnings.warn("another word", UserWarning, stacklevel=1)
        raise UserError("and a mistake")

    def show(message, category, filename, lineno, file=None, line=None):  # Python's display (pytest records)
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        monkeypatch.setitem(cli.COMMANDS, "datasets", warns)
        assert cli.main(["datasets"]) == 0
        monkeypatch.setitem(cli.COMMANDS, "datasets", warns_and_fails)
        assert cli.main(["datasets"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "descend: warning: a word from a command",
        "descend: warning: another word",
        "descend: error: and a mistake",
    ]
    assert warnings.formatwarning is before
    assert "UserWarning" in warnings.formatwarning("after", UserWarning, "f.py", 1)
