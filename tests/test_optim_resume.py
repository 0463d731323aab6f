"""Exact resume with the newer optimizers: a run that crashes and resumes from its last checkpoint ends
bit-identical to one that never stopped (CPU, deterministic), for each optimizer's state in the checkpoint —
Lion's momentum, Muon's buffers and AdamW's moments, Adafactor's factors, the schedule-free z (at epoch ends, in
eval mode, and mid-epoch, in train mode), Prodigy's and D-Adaptation's estimates, Lookahead's slow weights, SAM."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import descend as ds
from descend.train.callbacks import Callback
from descend.train.checkpoint import save
from descend.train.checkpoint.container import CheckpointError
from descend.train.state import Checkpoints


class CrashAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_batch_end(self, trainer):
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


OPTIMIZERS = {
    "lion": dict(lr=1e-3, weight_decay=0.1),
    "muon": dict(lr=0.02),
    "adafactor": dict(),
    "schedule_free_sgd": dict(lr=0.5),
    "schedule_free_adamw": dict(lr=0.01, weight_decay=0.01),
    "prodigy": dict(weight_decay=0.01),
    "dadapt_sgd": dict(momentum=0.9),
    "sam": dict(lr=0.05),
    "lookahead": dict(lr=0.01, lookahead_k=4),
}


def make_trainer(name, directory, unit, every, callbacks=()):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    )
    return ds.Trainer(
        model,
        optimizer=ds.optim.create(name, **OPTIMIZERS[name]),
        callbacks=list(callbacks),
        device="cpu",
        seed=1,
        deterministic=True,
        checkpoints=Checkpoints(directory, every=every, unit=unit),
    )


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("unit, every, crash_step", [("step", 4, 10), ("epoch", 1, 13)])
def test_crash_and_resume_match_a_run_that_never_stopped(name, unit, every, crash_step, iris, tmp_path):
    full = make_trainer(name, tmp_path / "full", unit, every)
    full.fit(iris.train, iris.val, epochs=3, batch_size=20)
    crashed = make_trainer(name, tmp_path / "crash", unit, every, callbacks=[CrashAt(crash_step)])
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit(iris.train, iris.val, epochs=3, batch_size=20)
    resumed = make_trainer(name, tmp_path / "crash", unit, every)
    resumed.fit(iris.train, iris.val, epochs=3, batch_size=20, resume=tmp_path / "crash")
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in full.history] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in resumed.history
    ]


@pytest.fixture(scope="module")
def iris():
    return ds.data.load("iris", seed=0)


def test_a_factored_state_of_the_wrong_shape_is_refused(iris, tmp_path):
    """Adafactor keeps (rows, 1) and (1, columns) factors: the check derives their shapes, so a wrong one is one
    clear error, not a crash inside torch."""
    trainer = make_trainer("adafactor", tmp_path, "epoch", 1)
    trainer.fit(iris.train, iris.val, epochs=1, batch_size=20)
    saved = ds.train.checkpoint.load(tmp_path / "last.safetensors")
    saved["optimizer"]["state"][0]["row_var"] = torch.zeros(16, 4)
    save(tmp_path / "bad" / "last.safetensors", saved)
    with pytest.raises(CheckpointError, match=r"row_var has shape \(16, 4\), this run's has shape \(16, 1\)"):
        make_trainer("adafactor", tmp_path / "bad", "epoch", 1).fit(
            iris.train, iris.val, epochs=1, batch_size=20, resume=tmp_path / "bad"
        )
