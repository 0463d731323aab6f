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
