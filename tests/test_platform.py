"""The reusable experiment (build once, fit many times, nothing on disk without ``out``) and the trainer's events."""

from __future__ import annotations

import json
import os

import pytest
import torch

import descend as ds
from descend import config
from descend.runs import experiment
from descend.train.callbacks import Callback

RAW = {"name": "iris", "seed": 0, "data": {"name": "iris"}, "model": {"name": "mlp", "hidden": [8]},
       "train": {"epochs": 2, "batch_size": 16, "device": "cpu", "deterministic": True},
       "optimizer": {"name": "adam", "lr": 0.01}}


def recipe(**train) -> config.Config:
    raw = json.loads(json.dumps(RAW))
    raw["train"].update(train)
    return config.validate(raw)


def test_many_fits_share_one_data_load(monkeypatch, tmp_path):
    data = experiment.load_data(recipe())
    loads = []
    monkeypatch.setattr(ds.data, "load", lambda *a, **k: loads.append(a))
    monkeypatch.chdir(tmp_path)
    results = [experiment.build(recipe(epochs=1), data).fit() for _ in range(3)]
    assert loads == []                                     # the bundle was used as it is
    assert all(isinstance(r, experiment.Result) for r in results)
    assert results[0].final == results[1].final == results[2].final   # same seed, same data: same fit
    assert list(tmp_path.iterdir()) == []                  # without out, nothing touches the disk


def test_result_is_typed_and_complete():
    result = experiment.build(recipe(epochs=3)).fit()
    assert len(result.history) == 3 and result.status == "finished" and result.run_dir is None
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy"} == set(result.final)
    assert result.best["monitor"] == "val_loss" and result.best["best_epoch"] in (1, 2, 3)
    assert result.seconds > 0 and isinstance(result.trainer, ds.Trainer)
    summary = result.summary()
    assert summary["epochs_run"] == 3 and summary["name"] == "iris" and json.dumps(summary)


def test_fit_with_out_writes_the_run_directory_and_test_metrics(tmp_path):
    exp = experiment.build(recipe())
    result = exp.fit(out=tmp_path / "run")
    assert result.run_dir == tmp_path / "run" and "test_accuracy" in result.final
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"config.toml", "metrics.jsonl", "model.safetensors",
                                                               "summary.json", "tb", "checkpoints"}
    assert exp.evaluate("test") == {k: v for k, v in result.final.items() if k.startswith("test_")}
    with pytest.raises(ds.UserError, match="no 'holdout' split"):
        exp.evaluate("holdout")


class GradientNorms(Callback):
    """Records the global gradient norm of every step, on the device, in on_after_backward."""

    def __init__(self):
        self.norms = []

    def on_after_backward(self, trainer):
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        self.norms.append(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))


def test_after_backward_sees_the_gradients_before_clipping():
    norms = GradientNorms()
    exp = experiment.build(recipe(epochs=2, clip_grad_norm=1e-3))
    exp.fit(callbacks=[norms])
    trainer = exp.trainer
    assert len(norms.norms) == trainer.global_step == 2 * trainer.steps_per_epoch
    measured = torch.stack(norms.norms)
    assert bool((measured > 1e-3).all())   # pre-clip norms: clipping to 1e-3 comes after the event
    # the trainer logs the mean pre-clip norm of the epoch: the same numbers, seen from the inside
    per_epoch = measured.reshape(2, -1).mean(dim=1).tolist()
    assert per_epoch == pytest.approx(trainer.history["grad_norm"], rel=1e-5)


class SwapWeights(Callback):
    """Validates a different set of weights (here: all zeros), swapped in and out around each validation pass."""

    def __init__(self):
        self.saw, self.kept = [], None

    def on_validation_start(self, trainer):
        self.kept = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        with torch.no_grad():
            for p in trainer.model.parameters():
                p.zero_()

    def on_validation_end(self, trainer, logs):
        trainer.model.load_state_dict(self.kept)
        self.saw.append(dict(logs))
        logs["val_swapped"] = 1.0


def test_weights_swapped_around_validation(tmp_path):
    swap = SwapWeights()
    exp = experiment.build(recipe(epochs=2))
    result = exp.fit(callbacks=[swap], out=tmp_path / "run")
    # zero weights give uniform logits: the loss of a uniform guess over 3 classes, whatever was trained
    assert [row["val_loss"] for row in swap.saw] == pytest.approx([torch.log(torch.tensor(3.0)).item()] * 2)
    # the trained weights came back after each pass: training is exactly that of a run without the swap
    plain = experiment.build(recipe(epochs=2)).fit()
    assert result.final["train_loss"] == plain.final["train_loss"]
    assert result.history["val_loss"] != plain.history["val_loss"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["val_swapped"] for row in rows] == [1.0, 1.0]   # values a callback adds are logged


class AddsToEpochLogs(Callback):
    def on_epoch_end(self, trainer, logs):
        logs["weight_norm"] = float(sum(p.detach().square().sum() for p in trainer.model.parameters()) ** 0.5)


def test_values_added_at_epoch_end_reach_metrics_tensorboard_and_history(tmp_path):
    result = experiment.build(recipe(epochs=2)).fit(callbacks=[AddsToEpochLogs()], out=tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(row["weight_norm"] > 0 for row in rows)
    assert result.history["weight_norm"] == [row["weight_norm"] for row in rows]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    assert "weight_norm" in events.Tags()["scalars"]


def test_checkpoints_run_last_whatever_the_list_order(tmp_path):
    order = []

    class Note(Callback):
        def __init__(self, name, position=0):
            self.name, self.order = name, position

        def on_epoch_end(self, trainer, logs):
            order.append(self.name)

    from descend.train.state import Checkpoints

    keeper = Checkpoints(tmp_path / "ck")
    original = keeper.on_epoch_end
    keeper.on_epoch_end = lambda trainer, logs: (order.append("checkpoint"), original(trainer, logs))
    data = ds.data.load("iris", seed=0)
    trainer = ds.Trainer(ds.models.mlp([4]), callbacks=[keeper, Note("late", 50), Note("user")], device="cpu")
    trainer.fit(data.train, data.val, epochs=1, batch_size=32)
    assert order == ["user", "late", "checkpoint"]


def test_train_batches_give_the_training_split_in_order_without_augmentation():
    seen = {}

    class Reader(Callback):
        def on_fit_end(self, trainer):
            seen["batches"] = list(trainer.train_batches(batch_size=50))

    data = ds.data.load("iris", seed=0)
    trainer = ds.Trainer(ds.models.mlp([4]), callbacks=[Reader()], device="cpu",
                         augment=ds.data.augment.create(noise_std=0.5))
    trainer.fit(data.train, epochs=1, batch_size=16)
    x = torch.cat([b[0] for b in seen["batches"]])
    assert [len(b[0]) for b in seen["batches"]][0] == 50
    assert torch.equal(x, data.train.x) and torch.equal(torch.cat([b[1] for b in seen["batches"]]), data.train.y)


def test_unused_events_cost_nothing_per_step():
    trainer = ds.Trainer(ds.models.mlp([4]), callbacks=[ds.callbacks.EarlyStopping(monitor="train_loss")],
                         device="cpu")
    data = ds.data.load("iris", seed=0)
    called = []
    with pytest.MonkeyPatch.context() as patch:  # the base class's no-op events, counted if the trainer calls them
        for event in ("on_after_backward", "on_batch_end"):
            patch.setattr(ds.callbacks.EarlyStopping, event, lambda self, trainer, event=event: called.append(event),
                          raising=False)
            patch.setattr(ds.callbacks.Callback, event, getattr(ds.callbacks.EarlyStopping, event))
        trainer.fit(data.train, epochs=1, batch_size=16)
    assert called == []
    assert trainer.step_loss is None          # nothing per step asked for it


def test_environment_not_touched_by_a_fit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    experiment.build(recipe(epochs=1)).fit()
    assert os.listdir(tmp_path) == []
