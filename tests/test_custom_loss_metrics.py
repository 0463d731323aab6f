"""Your own loss and metrics: any callable or nn.Module as the loss, label smoothing and class weights from a
recipe, named and callable metrics logged and monitorable, and DataLoaders as training data."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import descend as ds
from descend import config
from descend.runs import experiment
from descend.train.state import Checkpoints


@pytest.fixture(scope="module")
def iris():
    return ds.data.load("iris", val_fraction=0.3, seed=0)


def mlp(outputs=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, outputs))


def test_an_nn_module_loss_is_used_for_training_and_evaluation(iris):
    loss = nn.CrossEntropyLoss(label_smoothing=0.1)
    trainer = ds.Trainer(mlp(), loss=loss, device="cpu")
    trainer.fit(iris.train, iris.val, epochs=2, batch_size=16)
    logits = trainer.predict(iris.val.x)
    expected = F.cross_entropy(logits, iris.val.y, label_smoothing=0.1).item()
    assert trainer.history[-1]["val_loss"] == pytest.approx(expected, rel=1e-5)
    assert trainer.history[-1]["val_accuracy"] == pytest.approx((logits.argmax(1) == iris.val.y).float().mean())


def test_a_plain_function_loss_works(iris):
    def squared_hinge(out, y):
        margin = out.gather(1, y[:, None]) - out + 1.0
        return margin.clamp(min=0).square().mean()

    trainer = ds.Trainer(mlp(), loss=squared_hinge, device="cpu")
    history = trainer.fit(iris.train, iris.val, epochs=2, batch_size=16)
    assert math.isfinite(history[-1]["train_loss"]) and "val_accuracy" in history[-1]
    with pytest.raises(ds.UserError, match="or pass a callable"):
        ds.Trainer(mlp(), loss="hinge")


def test_recipe_label_smoothing_and_class_weights():
    raw = {"data": {"name": "iris"}, "model": {"hidden": [8]},
           "train": {"epochs": 1, "device": "cpu", "label_smoothing": 0.2, "class_weights": [1.0, 2.0, 0.5]}}
    exp = experiment.build(config.validate(raw))
    exp.fit()
    assert isinstance(exp.trainer.loss, nn.CrossEntropyLoss) and exp.trainer.loss.label_smoothing == 0.2
    val = exp.data.val
    logits = exp.trainer.predict(val.x)
    expected = F.cross_entropy(logits, val.y, weight=torch.tensor([1.0, 2.0, 0.5]), label_smoothing=0.2).item()
    assert exp.evaluate("val")["val_loss"] == pytest.approx(expected, rel=1e-5)
    raw["train"]["class_weights"] = [1.0, 2.0]
    with pytest.raises(ds.UserError, match=r"\[train\] class_weights has 2 weights, but the data has 3 classes"):
        experiment.build(config.validate(raw))
    raw["train"].update(loss="binary_cross_entropy", class_weights=None)
    with pytest.raises(ds.UserError, match="label_smoothing and class_weights apply to the cross_entropy loss"):
        experiment.build(config.validate(raw))


def test_named_and_callable_metrics_match_scikit_learn(iris):
    def worst_margin(out, y):
        return (out.gather(1, y[:, None])[:, 0] - out.max(1).values).mean()

    trainer = ds.Trainer(mlp(), device="cpu",
                         metrics=["f1", "precision", "recall", "auroc", "top2_accuracy", worst_margin])
    history = trainer.fit(iris.train, iris.val, epochs=2, batch_size=16)
    row, logits, y = history[-1], trainer.predict(iris.val.x), iris.val.y.numpy()
    pred = logits.argmax(1).numpy()
    assert row["val_f1"] == pytest.approx(f1_score(y, pred, average="macro", labels=sorted(set(y) | set(pred))))
    assert row["val_precision"] == pytest.approx(precision_score(y, pred, average="macro", zero_division=0,
                                                                 labels=sorted(set(y) | set(pred))))
    assert row["val_recall"] == pytest.approx(recall_score(y, pred, average="macro",
                                                           labels=sorted(set(y) | set(pred))))
    assert row["val_auroc"] == pytest.approx(roc_auc_score(y, logits.softmax(1).numpy(), multi_class="ovr"))
    top2 = (logits.topk(2, dim=1).indices == iris.val.y[:, None]).any(1).float().mean().item()
    assert row["val_top2_accuracy"] == pytest.approx(top2)
    assert row["val_worst_margin"] == pytest.approx(worst_margin(logits, iris.val.y).item(), rel=1e-5)
    assert {"train_f1", "train_auroc", "train_worst_margin"} <= set(row)


def test_rmse_for_regression_and_metrics_checked_against_the_task(iris):
    x = torch.linspace(-1, 1, 64)[:, None]
    trainer = ds.Trainer(nn.Linear(1, 1), device="cpu", metrics=["rmse"])
    row = trainer.fit((x, 2 * x), epochs=2, batch_size=16)[-1]
    assert row["train_rmse"] == pytest.approx(math.sqrt(row["train_mse"]), rel=1e-6)
    with pytest.raises(ds.UserError, match="metric 'f1' is for classification, but the data is a regression"):
        ds.Trainer(nn.Linear(1, 1), device="cpu", metrics=["f1"]).fit((x, x), epochs=1)
    with pytest.raises(ds.UserError, match="unknown metric 'kappa'"):
        ds.Trainer(mlp(), device="cpu", metrics=["kappa"]).fit(iris.train, epochs=1)


def test_early_stopping_checkpoints_and_plateau_monitor_a_named_metric(iris, tmp_path):
    stopper = ds.callbacks.EarlyStopping(monitor="val_f1", patience=1)
    plateau = ds.schedules.plateau(monitor="val_auroc", patience=1)
    keeper = Checkpoints(tmp_path, monitor="val_f1")
    assert stopper.mode == "max" and plateau.mode == "max"
    trainer = ds.Trainer(mlp(), device="cpu", metrics=["f1", "auroc"], schedule=plateau,
                         callbacks=[stopper], checkpoints=keeper, optimizer=ds.optim.create("adam", lr=0.05))
    history = trainer.fit(iris.train, iris.val, epochs=4, batch_size=16)
    assert stopper.best_value == max(history["val_f1"]) and keeper.best_value == max(history["val_f1"])


def test_recipe_metrics_are_logged_to_the_run(tmp_path):
    raw = {"data": {"name": "iris"}, "model": {"hidden": [8]},
           "train": {"epochs": 2, "device": "cpu", "metrics": ["f1", "auroc"]},
           "early_stopping": {"monitor": "val_f1", "patience": 5}}
    result = experiment.build(config.validate(raw)).fit(out=tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"train_f1", "val_f1", "val_auroc"} <= set(rows[-1]) and result.best["mode"] == "max"
    assert {"test_f1", "test_auroc"} <= set(result.final)


def test_a_dataloader_trains_like_the_same_batches_in_memory(iris):
    train, val = iris.train, iris.val
    in_memory = ds.Trainer(mlp(), device="cpu", seed=0)
    expected = in_memory.fit(train, val, epochs=2, batch_size=16, shuffle=False)
    loader = DataLoader(TensorDataset(train.x, train.y), batch_size=16, shuffle=False)
    streamed = ds.Trainer(mlp(), device="cpu", seed=0)
    history = streamed.fit(loader, DataLoader(TensorDataset(val.x, val.y), batch_size=7), epochs=2)
    for got, want in zip(history, expected):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "step"):
            assert got[key] == pytest.approx(want[key], rel=1e-5), key
    assert streamed.steps_per_epoch == len(loader)
    batches = [(train.x[i:i + 32], train.y[i:i + 32]) for i in range(0, len(train), 32)]
    assert ds.Trainer(mlp(), device="cpu").fit(batches, epochs=1)[-1]["step"] == len(batches)  # any re-iterable
    with pytest.raises(ds.UserError, match="one-shot iterator"):
        ds.Trainer(mlp(), device="cpu").fit(iter(batches), epochs=1)
    with pytest.raises(ds.UserError, match="must be a ready torch.nn.Module"):
        ds.Trainer(ds.models.mlp(hidden=[8]), device="cpu").fit(loader, epochs=1)
