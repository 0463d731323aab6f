"""Checkpoints and exact resume: a run stopped anywhere and resumed ends bit-identical to one never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import descend as ds
from descend.cli import main
from descend.train import checkpoint
from descend.train.callbacks import Callback
from descend.train.state import Checkpoints

SRC = str(Path(__file__).parents[1] / "src")

# Every source of randomness a run has: shuffled mini-batches, dropout, augmentation noise, a warmup+cosine
# schedule, early stopping's kept weights, momentum state. Iris keeps each run well under a second.
RECIPE = """
name = "resume"
seed = 3
[data]
name = "iris"
[model]
name = "mlp"
hidden = [32, 32]
dropout = 0.2
[train]
epochs = 6
batch_size = 16
deterministic = true
device = "cpu"
checkpoint_every = 3
checkpoint_unit = "step"
[optimizer]
name = "adamw"
lr = 0.01
weight_decay = 0.01
[schedule]
name = "cosine"
warmup_epochs = 1
[augment]
noise_std = 0.05
[early_stopping]
patience = 10
"""
STEPS_PER_EPOCH = 7  # iris: 150 samples, 0.2 test and 0.1 val -> 108 train, 7 batches of 16 (checked below)


def write_recipe(tmp_path: Path, text: str = RECIPE) -> str:
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return str(path)


def rows(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, in this process."""
    tmp = tmp_path_factory.mktemp("reference")
    assert main(["run", write_recipe(tmp), "--out", str(tmp / "run"), "--quiet"]) == 0
    return tmp / "run"


KILLER = """
import os, signal, sys
sys.path.insert(0, {src!r})
from descend import config
from descend.runs import execute
from descend.train.callbacks import Callback

class KillAt(Callback):
    def on_batch_end(self, trainer):
        if trainer.global_step == {step}:
            os.kill(os.getpid(), signal.SIGKILL)

execute.run(config.load({recipe!r}), {out!r}, quiet=True, callbacks=[KillAt()])
"""


# 5: mid-epoch between checkpoints; 14: the last step of epoch 1, before its validation; 30: a checkpoint step,
# killed just before that checkpoint is written (so the run goes back to step 27)
@pytest.mark.parametrize("kill_step", [5, 14, 30])
def test_sigkill_then_resume_is_bit_identical(kill_step, reference, tmp_path):
    recipe, out = write_recipe(tmp_path), tmp_path / "run"
    script = KILLER.format(src=SRC, step=kill_step, recipe=recipe, out=str(out))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    saved = checkpoint.load(out / "checkpoints" / "last.safetensors")
    assert saved["position"]["global_step"] == (kill_step - 1) // 3 * 3   # the last checkpoint before the kill
    assert main(["run", recipe, "--resume", str(out), "--quiet"]) == 0
    assert (out / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
    assert rows(out) == rows(reference)   # no duplicate, no missing epoch


def test_reference_covers_several_epochs(reference):
    history = rows(reference)
    assert [r["epoch"] for r in history] == list(range(1, 7))  # epochs count from 1, as printed
    assert history[0]["step"] == STEPS_PER_EPOCH


class CrashAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_batch_end(self, trainer):
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def make_trainer(directory, unit="step", every=2, callbacks=()):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    return ds.Trainer(model, optimizer=ds.optim.create("momentum", lr=0.05, momentum=0.9),
                      schedule=ds.schedules.create("step", step_size=2, gamma=0.5),
                      callbacks=[ds.callbacks.EarlyStopping(patience=20), *callbacks], device="cpu", seed=1,
                      deterministic=True, checkpoints=Checkpoints(directory, every=every, unit=unit))


@pytest.mark.parametrize("unit, every, crash_step", [("step", 2, 3), ("step", 5, 11), ("epoch", 1, 9)])
def test_in_process_crash_and_resume_match(unit, every, crash_step, tmp_path):
    data = ds.data.load("iris", seed=0)
    full = make_trainer(tmp_path / "full", unit, every)
    full.fit(data.train, data.val, epochs=5, batch_size=20)
    crashed = make_trainer(tmp_path / "crash", unit, every, callbacks=[CrashAt(crash_step)])
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit(data.train, data.val, epochs=5, batch_size=20)
    resumed = make_trainer(tmp_path / "crash", unit, every)
    resumed.fit(data.train, data.val, epochs=5, batch_size=20, resume=tmp_path / "crash")
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in full.history] == \
           [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history]
    assert (tmp_path / "full" / "best.safetensors").is_file()


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_writes_a_checkpoint_and_says_how_to_resume(signum, code, tmp_path):
    """Ctrl-C or SIGTERM: the step finishes, a checkpoint is written, the message says how to resume."""
    recipe, out = write_recipe(tmp_path, RECIPE.replace("epochs = 6", "epochs = 2000")), tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, "-m", "descend.cli", "run", recipe, "--out", str(out), "--quiet",
                             "--set", "optimizer.lr=0.02"], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").is_file() or not (out / "metrics.jsonl").read_text():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert signal.Signals(signum).name in err and f"resume with: descend resume {out}" in err
    position = checkpoint.load(out / "checkpoints" / "last.safetensors")["position"]
    assert position["global_step"] == position["epoch"] * STEPS_PER_EPOCH + position["batch_index"]
    epochs = position["epoch"] + 1
    # the hint's command uses the run's recorded recipe, so the --set of the first run need not be repeated
    assert main(["resume", str(out), "--quiet", "--set", f"train.epochs={epochs}"]) == 0
    assert [r["epoch"] for r in rows(out)] == list(range(1, epochs + 1))


def test_resume_rejects_fields_that_shape_training_and_reports_the_rest(reference, tmp_path, capsys):
    recipe = write_recipe(tmp_path)
    out = tmp_path / "run"
    assert main(["run", recipe, "--out", str(out), "--quiet", "--set", "train.epochs=2"]) == 0
    assert main(["run", recipe, "--resume", str(out), "--quiet", "--set", "model.hidden=[8]"]) == 2
    err = capsys.readouterr().err
    assert "model.hidden" in err and "train.epochs" in err   # names the fixed field and what may change
    assert main(["run", recipe, "--resume", str(out)]) == 0
    assert "resumed with train.epochs = 6 (was 2)" in capsys.readouterr().out
    assert [r["epoch"] for r in rows(out)] == list(range(1, 7))
    assert main(["run", recipe, "--resume", str(tmp_path / "nothing"), "--quiet"]) == 2


DIVERGING = """
name = "diverge"
seed = 0
[data]
name = "diabetes"
[model]
name = "mlp"
hidden = [16]
[train]
epochs = 30
batch_size = 32
device = "cpu"
loss = "mse"
[optimizer]
name = "gd"
lr = 0.5
"""


def test_divergence_exits_3_and_keeps_checkpoints(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", write_recipe(tmp_path, DIVERGING), "--out", str(out), "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "non-finite at step" in err and "lower learning rate" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and "non-finite" in summary["error"]
    for name in summary["checkpoints"]:
        state = checkpoint.load(out / "checkpoints" / name)
        assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_rollback_halves_the_learning_rate_and_recovers(tmp_path):
    """GD on least squares with Hessian ≈ 2I: lr 1.6 diverges, lr 0.8 contracts (|1 − 0.8·2λ| < 1 near λ = 1)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    model = nn.Linear(4, 1)
    trainer = ds.Trainer(model, optimizer=torch.optim.SGD(model.parameters(), lr=1.6), device="cpu",
                         checkpoints=Checkpoints(tmp_path, every=5, unit="step"), on_divergence="rollback",
                         max_rollbacks=2)
    with pytest.warns(RuntimeWarning, match=r"Rolled back .* learning rate halved to 0.8 \(rollback 1 of 2\)"):
        history = trainer.fit((x, y), epochs=400, batch_size="full")
    assert trainer.rollbacks == 1 and trainer.optimizer.param_groups[0]["lr"] == 0.8
    assert history[-1]["train_loss"] < 1e-8


def test_rollback_gives_up_after_max_rollbacks(tmp_path):
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0)) * 100
    model = nn.Linear(4, 1)
    trainer = ds.Trainer(model, optimizer=torch.optim.SGD(model.parameters(), lr=1e3), device="cpu",
                         checkpoints=Checkpoints(tmp_path, every=1, unit="step"), on_divergence="rollback",
                         max_rollbacks=2)
    with pytest.warns(RuntimeWarning), pytest.raises(ds.DivergenceError):
        trainer.fit((x, x.sum(1, keepdim=True)), epochs=100, batch_size=8)
    assert trainer.rollbacks == 2


def test_a_signal_in_python_stops_at_a_step_boundary_as_a_keyboard_interrupt(tmp_path):
    """From Python (a notebook, say) Ctrl-C stays a KeyboardInterrupt, raised after the step completes."""

    class CtrlCAt(Callback):
        def on_batch_end(self, trainer):
            if trainer.global_step == 4:
                signal.raise_signal(signal.SIGINT)  # delivered to this thread, before it returns

    trainer = make_trainer(tmp_path, unit="epoch", callbacks=[CtrlCAt()])
    data = ds.data.load("iris", seed=0)
    with pytest.raises(KeyboardInterrupt) as stopped:
        trainer.fit(data.train, data.val, epochs=5, batch_size=20)   # early stopping watches val_loss
    assert isinstance(stopped.value, ds.errors.Interrupted) and stopped.value.exit_code == 130
    assert trainer.global_step == 4 and stopped.value.checkpoint_path == tmp_path / "last.safetensors"
    assert checkpoint.load(tmp_path / "last.safetensors")["position"]["global_step"] == 4
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # the handler is given back


def test_each_rollback_halves_again_and_the_rate_survives_a_checkpoint_and_resume(tmp_path):
    """lr 6.4, 3.2 and 1.6 diverge on least squares with Hessian ≈ 2I; the third rollback reaches 0.8, which
    converges. Each rollback reloads a checkpoint written before or after the earlier ones: the rate still halves."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    def trainer_at(lr):
        model = nn.Linear(4, 1)
        return ds.Trainer(model, optimizer=torch.optim.SGD(model.parameters(), lr=lr), device="cpu", seed=0,
                          checkpoints=Checkpoints(tmp_path, every=5, unit="step"), on_divergence="rollback",
                          max_rollbacks=5)

    trainer = trainer_at(6.4)
    with pytest.warns(RuntimeWarning) as warned:
        history = trainer.fit((x, y), epochs=700, batch_size="full")
    halved = [float(str(w.message).split("halved to ")[1].split(" ")[0]) for w in warned]
    assert halved == [3.2, 1.6, 0.8] and trainer.rollbacks == 3
    assert trainer.optimizer.param_groups[0]["lr"] == 0.8 and history[-1]["train_loss"] < 1e-8
    saved = checkpoint.load(tmp_path / "last.safetensors")
    assert saved["base_lrs"] == [0.8] and saved["rollbacks"] == 3
    resumed = trainer_at(6.4)
    resumed.fit((x, y), epochs=701, batch_size="full", resume=tmp_path)
    assert resumed.rollbacks == 3 and resumed.optimizer.param_groups[0]["lr"] == 0.8


def test_divergence_message_says_what_became_non_finite():
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    model = nn.Linear(4, 1)
    trainer = ds.Trainer(model, optimizer=torch.optim.SGD(model.parameters(), lr=1e38), device="cpu")
    with pytest.raises(ds.DivergenceError, match="weights became non-finite"):
        trainer.fit((x, x.sum(1, keepdim=True)), epochs=50, batch_size="full")
    inflate = ds.Trainer(nn.Linear(4, 1), device="cpu", augment=lambda batch, generator: batch * float("inf"))
    with pytest.raises(ds.DivergenceError, match="no step had a finite loss.*inputs became non-finite in "
                                                 "augmentation"):
        inflate.fit((x, x.sum(1, keepdim=True)), epochs=1, batch_size=16)
