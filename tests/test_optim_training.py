"""The newer optimizers in the Trainer: SAM's two passes through the closure (batch norm updated once, the second
gradient clipped), schedule-free train/eval weights around validation and the end of a fit (and the schedules and
weight averaging they refuse), and the learning-rate-free methods' estimated step size in the logs."""

from __future__ import annotations

import json
import math

import pytest
import schedulefree
import torch
from torch import nn

import descend as ds
from descend.train.logs import MetricsFile


@pytest.fixture(scope="module")
def iris():
    return ds.data.load("iris", seed=0)


def bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


class Record(ds.callbacks.Callback):
    """Every training-mode batch-norm call's input mean, and the running mean after each step."""

    def __init__(self, bn):
        self.inputs, self.after, self.before = [], [], []
        bn.register_forward_pre_hook(
            lambda m, args: self.inputs.append(args[0].detach().mean(0)) if m.training else None
        )
        self.bn = bn

    def on_fit_start(self, trainer):
        self.before.append(self.bn.running_mean.clone())

    def on_batch_end(self, trainer):
        self.after.append(self.bn.running_mean.clone())


def test_sam_runs_two_passes_per_step_and_updates_batch_norm_once(iris):
    model = bn_model()
    record = Record(model[1])
    trainer = ds.Trainer(
        model, optimizer=ds.optim.create("sam", lr=0.05, sam_rho=0.05), callbacks=[record], device="cpu", seed=0
    )
    trainer.fit(iris.train, epochs=2, batch_size=20)
    steps = trainer.global_step
    assert len(record.inputs) == 2 * steps  # exactly two forward passes per step, no more
    assert model[1].num_batches_tracked.item() == steps
    running = record.before[0]
    for i in range(steps):  # each step moves the running mean once, towards the *first* pass's batch mean
        running = 0.9 * running + 0.1 * record.inputs[2 * i]
        torch.testing.assert_close(record.after[i], running, rtol=1e-5, atol=1e-6)


def test_sam_clips_the_gradient_of_its_second_pass(iris):
    model = bn_model()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = ds.Trainer(
        model, optimizer=ds.optim.create("gd", lr=1.0, sam_rho=0.05), clip_grad_norm=1e-3, device="cpu", seed=0
    )
    trainer.fit(iris.train, epochs=1, batch_size=200)  # one step: w ← w − 1.0·clip(∇L(w + ε))
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before, strict=True)))
    assert trainer.global_step == 1 and 0 < moved.item() <= 1e-3 * (1 + 1e-5)


def sf_trainer(optimizer, **kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    if callable(optimizer):
        optimizer = optimizer(model)
    return ds.Trainer(model, optimizer=optimizer, device="cpu", seed=0, **kwargs)


def test_schedule_free_validates_and_ends_with_the_averaged_weights(iris):
    trainer = sf_trainer(ds.optim.create("schedule_free_adamw", lr=0.01))
    history = trainer.fit(iris.train, iris.val, epochs=4, batch_size=20)
    opt = trainer.optimizer
    assert opt.param_groups[0]["train_mode"] is False  # the fit ends with x in the model
    assert [r["scheduled_lr"] for r in history] == [0.01] * 4  # η after its warm-up (none here), logged
    assert trainer.evaluate(iris.val)["loss"] == history[-1]["val_loss"]  # validation saw x too
    x = [p.detach().clone() for p in trainer.model.parameters()]
    opt.train()
    assert any(not torch.equal(a, p) for a, p in zip(x, trainer.model.parameters(), strict=True))  # y differs
    opt.eval()
    for a, p in zip(x, trainer.model.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), a, rtol=1e-5, atol=1e-6)


def test_schedule_free_in_the_trainer_equals_the_package_in_the_trainer(iris):
    """The authors' optimizer, given ready-made, gets the same switches: the two runs match epoch for epoch."""
    ours = sf_trainer(ds.optim.create("schedule_free_sgd", lr=0.1, weight_decay=0.0))
    theirs = sf_trainer(lambda m: schedulefree.SGDScheduleFree(m.parameters(), lr=0.1, foreach=True))
    a = ours.fit(iris.train, iris.val, epochs=3, batch_size=20)
    b = theirs.fit(iris.train, iris.val, epochs=3, batch_size=20)
    for ra, rb in zip(a, b, strict=True):
        for key in ("train_loss", "val_loss", "val_accuracy"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-6, abs=1e-7)


@pytest.mark.parametrize(
    "schedule", [ds.schedules.create("cosine"), ds.schedules.plateau(monitor="val_loss", patience=1)]
)
def test_schedule_free_refuses_a_schedule(iris, schedule):
    trainer = sf_trainer(ds.optim.create("schedule_free_adamw"), schedule=schedule)
    with pytest.raises(ds.UserError, match="schedule-free: it needs no learning-rate schedule"):
        trainer.fit(iris.train, iris.val, epochs=1)


def test_schedule_free_refuses_weight_averaging(iris):
    trainer = sf_trainer(ds.optim.create("schedule_free_sgd"), callbacks=[ds.callbacks.EMA(0.9)])
    with pytest.raises(ds.UserError, match="already evaluates an average"):
        trainer.fit(iris.train, iris.val, epochs=1)


@pytest.mark.parametrize("name", ["prodigy", "dadapt_sgd"])
def test_estimated_step_size_is_logged_like_lr(iris, name, tmp_path):
    trainer = sf_trainer(ds.optim.create(name), callbacks=[MetricsFile(tmp_path / "metrics.jsonl")])
    history = trainer.fit(iris.train, iris.val, epochs=3, batch_size=20)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["d_lr"] for r in rows] == [r["d_lr"] for r in history]
    assert rows[-1]["d_lr"] == trainer.optimizer.logs()["d_lr"] and rows[-1]["d_lr"] > 1e-6
    assert all(r["lr"] == 1.0 for r in rows)  # lr is the multiplier; d_lr the step size it estimated


@pytest.mark.parametrize("optimizer", [ds.optim.create("newton", lr=0.5), ds.optim.create("adam", sam_rho=0.05)])
def test_every_closure_pass_leaves_batch_norm_statistics_alone(iris, optimizer):
    """Newton's closure is a second forward pass too: batch norm counts each step once."""
    model = bn_model()
    trainer = ds.Trainer(model, optimizer=optimizer, device="cpu", seed=0)
    trainer.fit(iris.train, epochs=1, batch_size=40)
    assert model[1].num_batches_tracked.item() == trainer.global_step == 3


def test_data_parallel_training_refuses_an_optimizer_with_a_closure(iris, monkeypatch):
    """SAM's (and Newton's) second pass runs on the unwrapped model: under DDP its gradient would be one
    process's, so the distributed trainer refuses such an optimizer (one process here, gloo)."""
    import socket

    import torch.distributed as dist

    from descend.distributed.trainer import DistributedTrainer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
    }.items():
        monkeypatch.setenv(key, value)
    trainer = DistributedTrainer(bn_model(), optimizer=ds.optim.create("sam"), device="cpu")
    try:
        with pytest.raises(ds.UserError, match="data-parallel training does not share"):
            trainer.fit(iris.train, epochs=1)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", ["lion", "muon", "adafactor", "prodigy", "dadapt_sgd", "sam", "lookahead"])
def test_the_newer_optimizers_compose_with_a_schedule_a_penalty_and_weight_averaging(iris, name):
    model = bn_model()
    ema = ds.callbacks.EMA(0.9)
    trainer = ds.Trainer(
        model,
        optimizer=ds.optim.create(name),
        schedule=ds.schedules.create("cosine"),
        regularizer=ds.regularization.create("l2", strength=1e-3),
        callbacks=[ema],
        device="cpu",
        seed=0,
    )
    history = trainer.fit(iris.train, iris.val, epochs=3, batch_size=20)
    base = ds.optim.create(name).options["lr"]
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in history)
    assert history[0]["lr"] < base and history[-1]["lr"] < history[0]["lr"]  # the cosine schedule drives lr
    assert "train_penalty" in history[-1] and "val_avg_loss" in history[-1]


def test_a_schedule_free_run_directory_saves_the_averaged_weights(tmp_path):
    """`descend run`: model.safetensors and the epoch-end checkpoint hold the average x (eval mode), not y."""
    from safetensors.torch import load_file

    from descend import config as cfg
    from descend.runs import execute
    from descend.train.checkpoint import load

    recipe = cfg.validate(
        {
            "name": "sf",
            "seed": 0,
            "data": {"name": "iris"},
            "model": {"name": "mlp", "hidden": [8]},
            "train": {"epochs": 3, "batch_size": 16, "device": "cpu"},
            "optimizer": {"name": "schedule_free_adamw", "lr": 0.01},
        },
        source="test",
    )
    execute.run(recipe, tmp_path / "run", quiet=True)
    final = load_file(tmp_path / "run" / "model.safetensors")
    last = load(tmp_path / "run" / "checkpoints" / "last.safetensors")
    assert last["optimizer"]["param_groups"][0]["train_mode"] is False
    assert final.keys() == last["model"].keys()
    assert all(torch.equal(final[k], last["model"][k]) for k in final)
