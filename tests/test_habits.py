"""The habits users bring from Keras: fit(X, y, validation_split=...) with arrays, optimizer / loss / schedule as
names, the history as a list of dicts and a DataFrame, and one clear message for each misuse."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import descend as ds
from descend.errors import UserError
from descend.train.checkpoint import load_weights


def data(n=50):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def trainer(**kwargs):
    torch.manual_seed(0)
    return ds.Trainer(nn.Linear(3, 2), loss="cross_entropy", device="cpu", **kwargs)


def test_fit_x_y_with_validation_split_holds_out_the_last_rows_as_keras_does():
    x, y = data()
    t = trainer()
    history = t.fit(x, y, validation_split=0.2, epochs=2, batch_size=8, progress=False)
    # keras.Model.fit: "the validation data is selected from the last samples in the x and y data provided,
    # before shuffling": int(50 * 0.8) = 40 training rows, the last 10 for validation
    assert torch.equal(t.val_data.x.cpu(), torch.from_numpy(x[40:]))
    assert torch.equal(t.val_data.y.cpu(), torch.from_numpy(y[40:]))
    assert len(history) == 2 and "val_loss" in history[-1]
    same = trainer()
    again = same.fit((x[:40], y[:40]), (x[40:], y[40:]), epochs=2, batch_size=8, progress=False)
    assert again["val_loss"] == history["val_loss"]  # exactly the fit of the two pairs


def test_fit_takes_pandas_frames_as_x_and_y():
    x, y = data()
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    history = trainer().fit(frame, pd.Series(y), epochs=1, batch_size=16, progress=False)
    assert "train_loss" in history[0]


def test_names_where_objects_are_accepted_build_the_same_parts():
    x, y = data()
    by_name = trainer(optimizer="adam", schedule="cosine").fit(x, y, epochs=3, progress=False)
    by_object = trainer(optimizer=ds.optim.create("adam"), schedule=ds.schedules.create("cosine")).fit(
        x, y, epochs=3, progress=False
    )
    assert by_name["train_loss"] == by_object["train_loss"] and by_name["lr"] == by_object["lr"]
    torch.manual_seed(0)
    mse = ds.Trainer(nn.Linear(3, 1), loss="mse", optimizer="sgd", device="cpu")
    assert "train_mse" in mse.fit(x, x[:, :1], epochs=1, progress=False)[0]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: trainer(optimizer="adamm"), "adamm"),
        (lambda: trainer(optimizer=3), "optimizer must be a name ('adam'), descend.optim.create"),
        (lambda: trainer(schedule="cosin"), "cosin"),
        (lambda: trainer().fit(data()[0], epochs=1), "pass the targets as the second argument"),
        (lambda: trainer().fit(*data(), validation_split=1.5), "validation_split must be a fraction"),
        (lambda: trainer().fit(*data(), validation_split=1e-17), "leaves an empty training or validation part"),
        (lambda: trainer().fit(data(), data(), validation_split=0.2), "pass one of them"),
    ],
)
def test_each_misuse_is_one_message(make, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_history_is_a_list_of_dicts_and_a_dataframe():
    x, y = data()
    history = trainer().fit(x, y, validation_split=0.2, epochs=3, progress=False)
    assert isinstance(history, list) and all(isinstance(row, dict) for row in history)
    frame = history.to_pandas()
    assert frame.equals(pd.DataFrame(history)) and list(frame["epoch"]) == [1, 2, 3]
    assert list(frame["val_loss"]) == history["val_loss"]


def test_model_checkpoint_writes_each_epoch_or_only_improvements(tmp_path):
    x, y = data()
    every = ds.callbacks.ModelCheckpoint(tmp_path / "e{epoch:02d}-{val_loss:.3f}.safetensors", save_best_only=False)
    best = ds.callbacks.ModelCheckpoint(tmp_path / "best.safetensors", monitor="val_accuracy", save_best_only=True)
    t = trainer(optimizer=ds.optim.create("sgd", lr=0.5), callbacks=[every, best])
    history = t.fit(x, y, validation_split=0.2, epochs=4, batch_size=8, progress=False)
    assert [p.name for p in every.saved] == [f"e{r['epoch']:02d}-{r['val_loss']:.3f}.safetensors" for r in history]
    accuracies = history["val_accuracy"]
    improving = [i for i, a in enumerate(accuracies) if a > max(accuracies[:i], default=-1.0)]
    assert len(best.saved) == len(improving) and best.best_value == max(accuracies)
    kept = nn.Linear(3, 2)
    load_weights(kept, every.saved[-1], strict=True)
    assert torch.equal(kept.weight, t.model.weight.detach())


def test_model_checkpoint_names_what_its_filepath_cannot_fill(tmp_path):
    x, y = data()
    with pytest.raises(UserError, match="'val_f1' that is not logged"):
        trainer(callbacks=[ds.callbacks.ModelCheckpoint(tmp_path / "{val_f1}.safetensors")]).fit(x, y, epochs=1)


class GradientNorms(ds.callbacks.Callback):
    """Log the global gradient norm of the last step of each epoch (a callback of one's own)."""

    def on_after_backward(self, trainer):
        self.norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in trainer.model.parameters()]))

    def on_epoch_end(self, trainer, logs):
        logs["grad_norm"] = float(self.norm)


class StopAtAccuracy(ds.callbacks.Callback):
    """Stop as soon as validation accuracy reaches a target (a custom stop rule)."""

    def __init__(self, target):
        self.target = target

    def on_epoch_end(self, trainer, logs):
        if logs["val_accuracy"] >= self.target:
            trainer.stop_training = True


def test_callbacks_of_ones_own_log_values_and_stop_training():
    x, y = data(200)
    t = trainer(optimizer=ds.optim.create("sgd", lr=0.5), callbacks=[GradientNorms(), StopAtAccuracy(0.9)])
    history = t.fit(x, y, validation_split=0.2, epochs=50, batch_size=16, progress=False)
    assert all(row["grad_norm"] > 0 for row in history)
    assert history[-1]["val_accuracy"] >= 0.9 and all(a < 0.9 for a in history["val_accuracy"][:-1])
    assert len(history) < 50


def test_evaluate_takes_x_and_y_as_keras_does():
    x, y = data()
    t = trainer()
    t.fit(x, y, epochs=1, progress=False)
    assert t.evaluate(x, y) == t.evaluate((x, y))
    with pytest.raises(UserError, match="evaluate\\(x, y\\)"):
        t.evaluate(x)
