"""Crafted checkpoints: a real checkpoint of a small trainer, mutated field by field (shapes, dtypes, names, JSON
types of model, optimizer, schedule, callbacks, RNG, position, history). Each must be refused by one
CheckpointError naming the field, before anything reaches torch (a wrong-shaped Adam moment would crash torch's
fused kernel with a segmentation fault), and the command line must exit with code 2 and one line."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import descend as ds
from descend.cli import main
from descend.errors import DivergenceError
from descend.train import checkpoint
from descend.train.callbacks import EarlyStopping
from descend.train.checkpoint import CheckpointError, codec
from descend.train.state import Checkpoints

pytestmark = pytest.mark.usefixtures("no_unpickling")  # loading must never unpickle (conftest.py)

OPTIMIZERS = {
    "adam": ("adam", dict(lr=1e-2)),  # torch's fused Adam: step + two moments per parameter
    "momentum": ("momentum", dict(lr=1e-2, momentum=0.9)),  # torch's SGD: one momentum buffer
    "composed": ("adam", dict(lr=1e-2, implementation="composed")),  # descend's parts: an int step
}


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 3, generator=g)
    return (x, (x[:, 0] > 0).long()), (x[:8], (x[:8, 0] > 0).long())


def trainer(directory: Path, optimizer: str = "adam", hidden: int = 8) -> ds.Trainer:
    return ds.Trainer(
        ds.models.mlp([hidden]), optimizer=ds.optim.create(OPTIMIZERS[optimizer][0], **OPTIMIZERS[optimizer][1]),
        schedule=ds.schedules.plateau(patience=0), callbacks=[EarlyStopping(patience=5)],
        device="cpu", seed=1, checkpoints=Checkpoints(directory, every=1, unit="step"),
    )  # fmt: skip


def fit(t: ds.Trainer, epochs: int, resume: Path | None = None):
    train, val = data()
    return t.fit(train, val, epochs=epochs, batch_size=16, resume=resume)


@pytest.fixture(scope="module", params=list(OPTIMIZERS))
def written(request, tmp_path_factory) -> tuple[str, dict]:
    """(optimizer, the state of a checkpoint written in the middle of the second epoch)."""
    directory = tmp_path_factory.mktemp(request.param)
    t = trainer(directory, request.param)
    fit(t, 1)
    t.checkpoints = Checkpoints(directory, every=3, unit="step")
    fit(t, 2)  # a fresh fit: step 3 is the first step of the second epoch
    return request.param, checkpoint.load(directory / "last.safetensors")


def write_crafted(path: Path, state: dict) -> Path:
    """Save ``state`` even with non-finite tensors: a crafted file does not come from descend's guarded writer."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codec, "non_finite", lambda tensors: [])
        checkpoint.save(path, state)
    return path


def resume_from(tmp_path: Path, optimizer: str, state: dict) -> None:
    path = write_crafted(tmp_path / "crafted.safetensors", state)
    fit(trainer(tmp_path / "out", optimizer), 3, resume=path)


def _parent(state: dict, path: tuple, moment: str) -> tuple[dict, object]:
    """The container holding ``path``'s last key, and that key; "MOMENT" stands for the first-moment buffer."""
    path = tuple(moment if key == "MOMENT" else key for key in path)
    for key in path[:-1]:
        state = state[key]
    return state, path[-1]


def _set(path: tuple, value):
    def change(state: dict, moment: str) -> None:
        parent, key = _parent(state, path, moment)
        parent[key] = value(parent[key]) if callable(value) else value

    return change


def _delete(path: tuple):
    def change(state: dict, moment: str) -> None:
        parent, key = _parent(state, path, moment)
        del parent[key]

    return change


# (mutation, the field the message must name, what it must say)
CASES = {
    "model shape": (_set(("model", "1.weight"), torch.zeros(9, 3)), "model['1.weight']", "shape (9, 3)"),
    "model dtype": (_set(("model", "1.weight"), lambda t: t.double()), "model['1.weight']", "dtype float64"),
    "model missing": (_delete(("model", "3.bias")), "model", "lacks 3.bias"),
    "model extra": (_set(("model", "9.weight"), torch.zeros(2)), "model", "9.weight"),
    "model non-finite": (_set(("model", "1.bias"), lambda t: t / 0), "model['1.bias']", "non-finite"),
    "moment shape": (_set(("optimizer", "state", 0, "MOMENT"), torch.zeros(7)), "optimizer.state[0]", "shape (7,)"),
    "moment dtype": (_set(("optimizer", "state", 2, "MOMENT"), lambda t: t.half()), "optimizer.state[2]",
                     "dtype float16"),
    "moment missing": (_delete(("optimizer", "state", 1, "MOMENT")), "optimizer.state[1]", "lacks"),
    "moment is text": (_set(("optimizer", "state", 3, "MOMENT"), "abc"), "optimizer.state[3]", "a str"),
    "state of no parameter": (_set(("optimizer", "state", 99), {}), "optimizer.state[99]", "no parameter"),
    "extra group": (_set(("optimizer", "param_groups"), lambda g: g + g), "optimizer.param_groups", "1 groups"),
    "short group": (_set(("optimizer", "param_groups", 0, "params"), lambda p: p[:-1]),
                    "optimizer.param_groups[0].params", "list of 4"),
    "lr is text": (_set(("optimizer", "param_groups", 0, "lr"), "0.1"), "optimizer.param_groups[0].lr", "a number"),
    "group key missing": (_delete(("optimizer", "param_groups", 0, "weight_decay")), "optimizer.param_groups[0]",
                          "lacks weight_decay"),
    "schedule type": (_set(("schedule", "bad_epochs"), 1.5), "schedule.bad_epochs", "an integer"),
    "schedule missing": (_delete(("schedule", "reductions")), "schedule", "lacks reductions"),
    "callback type": (_set(("callbacks", "EarlyStopping", "wait"), "2"), "callbacks.EarlyStopping.wait", "a str"),
    "callback weights": (_set(("callbacks", "EarlyStopping", "best_weights", "1.weight"), torch.zeros(8, 4)),
                         "callbacks.EarlyStopping.best_weights['1.weight']", "shape (8, 4)"),
    "callback missing key": (_delete(("callbacks", "EarlyStopping", "monitor")), "callbacks.EarlyStopping",
                             "lacks monitor"),
    "rng python": (_set(("rng", "streams", "python", "state"), [1, 2]), "rng.streams", "python"),
    "rng torch dtype": (_set(("rng", "streams", "torch"), lambda t: t.long()), "rng.streams", "uint8"),
    "rng augment": (_set(("rng", "augment"), lambda t: t[:-1]), "rng.augment", "shape"),
    "position type": (_set(("position", "epoch"), "1"), "position.epoch", "an integer"),
    "position negative": (_set(("position", "global_step"), -4), "position.global_step", ">= 0"),
    "position missing": (_delete(("position",)), "checkpoint", "lacks position"),
    "history row": (_set(("history", 0, "loss"), "low"), "history[0]", "numbers"),
    "history type": (_set(("history",), {"loss": 1.0}), "history", "list"),
    "base_lrs": (_set(("base_lrs",), [0.1, 0.1]), "base_lrs", "list of 1"),
    "epoch sums": (_set(("epoch_sums", "metrics", "sums"), torch.zeros(3)), "epoch_sums.metrics.sums", "shape"),
    "extra entry": (_set(("surprise",), 1), "checkpoint", "surprise"),
    "checkpoints field": (_set(("checkpoints", "best_value"), "x"), "checkpoints.best_value", "a number or None"),
}  # fmt: skip
MOMENT = {"adam": "exp_avg", "momentum": "momentum_buffer", "composed": "m"}


def crafted(state: dict, optimizer: str, case: str) -> dict:
    change, _, _ = CASES[case]
    state = copy.deepcopy(state)
    change(state, MOMENT[optimizer])
    return state


def test_the_unchanged_checkpoint_resumes(tmp_path, written):
    optimizer, state = written
    resume_from(tmp_path, optimizer, state)


@pytest.mark.parametrize("case", list(CASES))
def test_each_crafted_field_is_refused_by_name(tmp_path, written, case):
    optimizer, state = written
    _, field, says = CASES[case]
    with pytest.raises(CheckpointError, match="does not fit this run") as info:
        resume_from(tmp_path, optimizer, crafted(state, optimizer, case))
    message = str(info.value)
    assert field in message and says in message, message
    assert "\n" not in message


def test_the_checkpoint_of_a_different_model_is_refused(tmp_path):
    other = trainer(tmp_path / "other", hidden=5)
    fit(other, 1)
    with pytest.raises(CheckpointError, match=r"model\['1.weight'\] has shape \(5, 3\), this run's has shape \(8, 3\)"):
        fit(trainer(tmp_path / "out"), 2, resume=tmp_path / "other" / "last.safetensors")
    with pytest.raises(CheckpointError, match="not for this model: none of its 4 tensors"):
        checkpoint.load_weights(torch.nn.Linear(7, 7), tmp_path / "other" / "last.safetensors")
