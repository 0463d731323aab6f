"""Crafted checkpoints: a real checkpoint of a small trainer, mutated field by field (shapes, dtypes, names, JSON
types of model, optimizer, schedule, callbacks, RNG, position, history). Each must be refused by one
CheckpointError naming the field, before anything reaches torch (a wrong-shaped Adam moment would crash torch's
fused kernel with a segmentation fault), and the command line must exit with code 2 and one line."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
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
    "newton": ("newton", dict(lr=0.5)),  # needs a closure, keeps no state
}


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 3, generator=g)
    return (x, (x[:, 0] > 0).long()), (x[:8], (x[:8, 0] > 0).long())


def trainer(directory: Path, optimizer: str = "adam", hidden: int = 8, every: int = 1) -> ds.Trainer:
    """MLP + optimizer + reduce-on-plateau + early stopping, a checkpoint every step."""
    return ds.Trainer(
        ds.models.mlp([hidden]), optimizer=ds.optim.create(OPTIMIZERS[optimizer][0], **OPTIMIZERS[optimizer][1]),
        schedule=ds.schedules.plateau(patience=0), callbacks=[EarlyStopping(patience=5)],
        device="cpu", seed=1, checkpoints=Checkpoints(directory, every=every, unit="step"),
    )  # fmt: skip


def fit(t: ds.Trainer, epochs: int, resume: Path | None = None):
    train, val = data()
    return t.fit(train, val, epochs=epochs, batch_size=16, resume=resume)


@pytest.fixture(scope="module", params=["adam", "momentum", "composed"])
def written(request, tmp_path_factory) -> tuple[str, dict]:
    """(optimizer, the state of a checkpoint written in the middle of the second epoch)."""
    directory = tmp_path_factory.mktemp(request.param)
    t = trainer(directory, request.param, every=3)
    fit(t, 2)  # two steps per epoch: step 3 is the first of the second epoch, after early stopping kept weights
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
    "negative learning rate": (_set(("optimizer", "param_groups", 0, "lr"), -1.0), "optimizer.param_groups[0].lr",
                               "must be a number >= 0"),
    "learning rate not finite": (_set(("optimizer", "param_groups", 0, "lr"), float("inf")),
                                 "optimizer.param_groups[0].lr", "must be a number >= 0"),
    "negative weight decay": (_set(("optimizer", "param_groups", 0, "weight_decay"), -0.5),
                              "optimizer.param_groups[0].weight_decay", "must be a number >= 0"),
    "group key missing": (_delete(("optimizer", "param_groups", 0, "weight_decay")), "optimizer.param_groups[0]",
                          "lacks weight_decay"),
    "schedule type": (_set(("schedule", "bad_epochs"), 1.5), "schedule.bad_epochs", "an integer"),
    "schedule count negative": (_set(("schedule", "reductions"), -1000), "schedule.reductions",
                                "must be an integer in [0, 1e+06]"),
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
    "epoch beyond the history": (_set(("position", "epoch"), 100), "position.global_step", "make it"),
    "batch past the epoch": (_set(("position", "batch_index"), 100), "position.batch_index", "past the 2 batches"),
    "step off the count": (_set(("position", "global_step"), lambda step: step + 1), "position.global_step",
                           "make it 3"),
    "step beyond 64 bits": (_set(("position", "global_step"), 10**30), "position.global_step", "make it 3"),
    "fit start after the position": (_set(("position", "fit_start"), [50, 999]), "position.fit_start",
                                     "after the position"),
    "other batches per epoch": (_set(("position", "steps_per_epoch"), 5), "position.steps_per_epoch",
                                "this run has 2 batches"),
    "history longer than the epochs": (_set(("history",), lambda rows: rows * 3), "history", "3 epoch rows"),
    "base rate not finite": (_set(("base_lrs",), [float("nan")]), "base_lrs[0]", "finite number >= 0"),
    "base rate negative": (_set(("base_lrs",), [-0.1]), "base_lrs[0]", "finite number >= 0"),
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


# ------------------------------------------------------------------------------------------ generated mutations


def _paths(node, prefix=()):
    """Every place in the state: (path, value); tensors and tuples are leaves."""
    if prefix:
        yield prefix, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


def _wrong(value, choice: int):
    """A value of another kind than ``value``: another shape or dtype for a tensor, another JSON type else."""
    if isinstance(value, torch.Tensor):
        other = torch.int64 if value.dtype.is_floating_point else torch.float32
        return [value.reshape(-1)[1:] if value.numel() else torch.zeros(1), value.to(other), "text"][choice % 3]
    return 3 if isinstance(value, str) else "text"


def _free(path: tuple, how: str) -> bool:
    """Changes the format allows: history rows are free-form, a callback may be added or removed on resume, and
    the Checkpoints policy's entry and the speed record and gradient scaler (absent from checkpoints written before
    the automatic speed settings) are optional."""
    if how == "retype":
        return False
    optional = path in (("checkpoints",), ("speed",), ("scaler",)) and how == "delete"
    return (path[0], len(path)) in (("history", 3), ("callbacks", 2)) or optional


EXAMPLES = [pytest.param(60, id="fast"), pytest.param(2000, id="long", marks=pytest.mark.slow)]


@pytest.mark.parametrize("examples", EXAMPLES)
def test_generated_mutations_are_refused_or_resume(tmp_path_factory, written, examples):
    """Any retyped field, tensor of another shape or dtype, deleted or added entry: a CheckpointError naming its
    section, or (where the format allows the change) a resumed run that trains to the end."""
    optimizer, state = written

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.sampled_from(list(_paths(state))), st.sampled_from(["retype", "delete", "add"]), st.integers(0, 2))
    def run(place, how, choice):
        path, value = place
        mutated = copy.deepcopy(state)
        parent = mutated
        for key in path[:-1]:
            parent = parent[key]
        how = how if isinstance(parent, dict) else "retype"
        if how == "retype":
            parent[path[-1]] = _wrong(value, choice)
        elif how == "delete":
            del parent[path[-1]]
        else:
            parent["zz_extra"] = 1
        tmp = tmp_path_factory.mktemp("mutation")
        if _free(path, how):
            resume_from(tmp, optimizer, mutated)
            return
        with pytest.raises(CheckpointError) as info:
            resume_from(tmp, optimizer, mutated)
        named = "zz_extra" if how == "add" and len(path) == 1 else str(path[0])
        assert named in str(info.value), (path, how, str(info.value))

    run()


# ------------------------------------------------------------------------------------------ command line

RECIPE = """
name = "crafted"
seed = 1
[data]
name = "iris"
[model]
name = "mlp"
hidden = [8]
[train]
epochs = 2
batch_size = 32
device = "cpu"
checkpoint_every = 3
checkpoint_unit = "step"
[optimizer]
name = "adamw"
lr = 0.01
[early_stopping]
patience = 5
"""


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("model", "1.weight"), torch.zeros(2, 2), "model['1.weight'] has shape (2, 2)"),
        (("optimizer", "state", 0, "exp_avg"), torch.zeros(3), "optimizer.state[0].exp_avg has shape (3,)"),
        (("optimizer", "state", 1, "step"), "one", "optimizer.state[1].step must be a tensor"),
        (("callbacks", "EarlyStopping", "wait"), [1], "callbacks.EarlyStopping.wait must be an integer"),
        (("position", "batch_index"), None, "position.batch_index must be an integer"),
        (("rng", "streams", "numpy", "pos"), 10**6, "rng.streams 'numpy' pos"),
        (("history",), "none", "history must be a list"),
    ],
)
def test_the_command_line_refuses_a_crafted_checkpoint_in_one_line(tmp_path, capsys, path, value, field):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    run = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(run), "--quiet"]) == 0
    (run / "summary.json").unlink()  # as if killed after its last checkpoint: resume reads the checkpoint
    last = run / "checkpoints" / "last.safetensors"
    state = checkpoint.load(last)
    parent = state
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    write_crafted(last, state)
    capsys.readouterr()
    assert main(["run", str(recipe), "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("descend: error: the checkpoint does not fit this run: ") and field in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


# ------------------------------------------------------------------------------------------ divergence


def test_a_step_that_makes_the_weights_infinite_writes_no_checkpoint(tmp_path):
    """SGD at lr 1e38: the first loss is finite, the step makes the weights infinite; no checkpoint holds them."""
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    t = ds.Trainer(ds.models.mlp([4]), loss="mse", optimizer=ds.optim.create("sgd", lr=1e38), device="cpu",
                   checkpoints=Checkpoints(tmp_path, every=1, unit="step"))  # fmt: skip
    with pytest.raises(DivergenceError, match=r"refusing to write checkpoint .*last.safetensors: model/") as info:
        t.fit((x, x.sum(1, keepdim=True)), epochs=3, batch_size=16)  # full batch: one step per epoch
    assert "non-finite" in str(info.value)
    assert not (tmp_path / "last.safetensors").exists()
    assert info.value.exit_code == 3


def test_non_finite_names_each_bad_tensor_of_every_float_dtype():
    big = torch.full((3,), 3e38)  # finite, though its norm would overflow float32
    tensors = {"big": big, "half": torch.tensor([1.0, float("inf")], dtype=torch.float16),
               "bf16": torch.tensor([float("nan")], dtype=torch.bfloat16), "ints": torch.arange(3),
               "empty": torch.empty(0), "f64": torch.tensor([-float("inf")], dtype=torch.float64)}  # fmt: skip
    assert codec.non_finite(tensors) == ["half", "bf16", "f64"]
    assert codec.non_finite({"big": big, "bf16": torch.ones(2, dtype=torch.bfloat16)}) == []


def test_an_optimizer_that_needs_a_closure_is_checked_by_shape(tmp_path):
    """Newton cannot be stepped by the probe (it needs a closure): its state tensors must be shaped like their
    parameters."""
    fit(trainer(tmp_path, "newton"), 1)
    state = checkpoint.load(tmp_path / "last.safetensors")
    state["optimizer"]["state"] = {i: {"curvature": torch.zeros(1)} for i in range(4)}
    with pytest.raises(CheckpointError, match=r"optimizer.state\[0\].curvature has shape \(1,\), this run's has "):
        resume_from(tmp_path, "newton", state)


# ------------------------------------------------------------------------------------------ crafted files


def test_a_tensor_named_twice_in_the_header_is_refused(tmp_path):
    """The library lets the last of two equal names win; descend refuses the ambiguity."""
    entry = '{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'
    header = f'{{"w":{entry},"w":{entry}}}'.encode()
    path = tmp_path / "twice.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    with pytest.raises(CheckpointError, match=r"twice.safetensors is corrupt: the header .*duplicate key 'w'"):
        checkpoint.load_weights(torch.nn.Linear(1, 1), path)


def test_loaded_tensors_do_not_keep_the_file_mapped(tmp_path):
    """The library memory-maps the file; a tensor still backed by the map would crash the process (SIGBUS) once
    the file is truncated in place. Run in a child process, so that a regression cannot kill the test runner."""
    script = (
        "import sys, torch\n"
        "from descend.train.checkpoint import load, save\n"
        "save(sys.argv[1], {'w': torch.ones(1 << 20)})\n"
        "w = load(sys.argv[1])['w']\n"
        "open(sys.argv[1], 'r+b').truncate(64)\n"
        "print(float(w.sum()))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "m.safetensors")], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == str(float(1 << 20)), done.stderr
