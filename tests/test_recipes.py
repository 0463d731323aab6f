"""Recipes: every example validates, every schedule and regularizer runs from a config, augmentation is train-only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import descend as ds
from descend import config, schedules
from descend.cli import main
from descend.runs import execute, experiment

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.toml"))

BASE = {
    "name": "t", "seed": 0,
    "data": {"name": "iris"},
    "model": {"name": "mlp", "hidden": [16]},
    "train": {"epochs": 4, "batch_size": 16, "device": "cpu"},
    "optimizer": {"name": "momentum", "lr": 0.05, "momentum": 0.9},
}


def run(tmp_path: Path, **sections) -> dict:
    raw = json.loads(json.dumps(BASE))
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return execute.run(config.validate(raw), tmp_path / "run", quiet=True)


def test_examples_are_valid_recipes():
    assert {p.stem for p in EXAMPLES} >= {"quickstart", "digits_mlp", "sine_regression", "fashion_mnist"}
    for path in EXAMPLES:
        recipe = config.load(path)
        assert recipe.name == path.stem


def test_fashion_mnist_example_uses_the_regularizers(fashion_mnist_dir):
    recipe = config.load(EXAMPLES[[p.stem for p in EXAMPLES].index("fashion_mnist")])
    assert recipe.schedule.name == "cosine" and recipe.schedule.options["warmup_epochs"] > 0
    assert recipe.optimizer.options["weight_decay"] > 0 and recipe.augment and recipe.early_stopping
    built = experiment.build(recipe)
    assert built.data.info.input_shape == (1, 28, 28) and built.trainer.augment is not None


OPTIONS = {"step": {"step_size": 1}, "multistep": {"milestones": [1, 3]}, "plateau": {"patience": 0},
           "cosine_restarts": {"period": 1}}


@pytest.mark.parametrize("name", schedules.NAMES)
def test_every_schedule_runs_from_a_recipe_and_its_lr_is_logged(name, tmp_path):
    summary = run(tmp_path, schedule={"name": name, **OPTIONS.get(name, {})})
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["lr"] >= 0 for r in rows)
    if name not in ("constant", "plateau"):
        assert len({r["lr"] for r in rows}) > 1, "a decaying or cyclic schedule must move the learning rate"
    assert (tmp_path / "run" / "schedule.png").is_file()
    assert summary["epochs_run"] == 4


def test_warmup_from_a_recipe_starts_low(tmp_path):
    run(tmp_path, schedule={"name": "constant", "warmup_epochs": 2, "warmup_start": 0.1, "per": "epoch"})
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # the lr logged for an epoch is the one of its last step; iris trains on 7 batches of 16 per epoch, so warmup
    # spans 14 steps rising linearly from 0.1·η₀, and epoch 0 ends at step 6
    assert lrs[0] == pytest.approx(0.05 * (0.1 + 0.9 * 6 / 14)) and lrs[-1] == pytest.approx(0.05)


@pytest.mark.parametrize("kind, options", [("l1", {"strength": 1e-3}), ("l2", {"strength": 1e-3}),
                                           ("elastic_net", {"l1_strength": 1e-3, "l2_strength": 1e-3}),
                                           ("lp", {"strength": 1e-3, "p": 1.5}), ("proximal_l1", {"strength": 0.05})])
def test_every_regularizer_runs_and_logs_its_penalty_apart(kind, options, tmp_path):
    summary = run(tmp_path, regularization={"name": kind, **options})
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "train_penalty" in row and "train_loss" in row
    if kind == "proximal_l1":
        assert row["train_penalty"] == 0.0 and max(summary["sparsity"].values()) > 0
    else:
        assert row["train_penalty"] > 0
    assert set(summary["sparsity"]) == {"1", "3"}   # the two Linear layers of mlp([16]) (0 is its Flatten)


def test_l2_penalty_logged_matches_its_formula():
    model = nn.Linear(4, 3)
    reg = ds.regularization.create("l2", strength=0.1)
    trainer = ds.Trainer(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.0), regularizer=reg,
                         device="cpu")
    data = ds.data.load("iris", seed=0)
    trainer.fit(data.train, epochs=1, batch_size="full")
    assert trainer.history[0]["train_penalty"] == pytest.approx(0.05 * model.weight.detach().square().sum().item(),
                                                                rel=1e-6)   # λ/2·Σw² over weights only


class Spy:
    """An augmentation that counts the samples it sees and changes nothing."""

    def __init__(self):
        self.samples = 0

    def __call__(self, x, generator):
        self.samples += x.shape[0]
        return x


def test_augmentation_touches_training_batches_only():
    data = ds.data.load("iris", seed=0)
    spy = Spy()
    trainer = ds.Trainer(nn.Linear(4, 3), augment=spy, device="cpu")
    trainer.fit(data.train, data.val, epochs=3, batch_size=16)
    assert spy.samples == 3 * len(data.train)
    trainer.evaluate(data.test)
    trainer.predict(data.test.x)
    assert spy.samples == 3 * len(data.train)


def test_augmentation_from_a_recipe_changes_training(tmp_path):
    plain = run(tmp_path / "a")
    noisy = run(tmp_path / "b", augment={"noise_std": 0.5})
    assert plain["final"]["train_loss"] != noisy["final"]["train_loss"]


def test_early_stopping_from_a_recipe_restores_best_and_reports_it(tmp_path):
    summary = run(tmp_path, train={"epochs": 30}, optimizer={"name": "momentum", "lr": 0.5, "momentum": 0.9},
                  early_stopping={"monitor": "val_loss", "patience": 2})
    best = summary["best"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert best["best_value"] == min(r["val_loss"] for r in rows)
    assert best["best_epoch"] == min(rows, key=lambda r: r["val_loss"])["epoch"]
    assert summary["final"]["val_loss"] == pytest.approx(best["best_value"], rel=1e-6)   # best weights restored


def test_clipping_from_a_recipe_logs_the_pre_clip_norm(tmp_path):
    run(tmp_path, train={"clip_grad_norm": 0.1})
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["grad_norm"] > 0.1


def test_bad_part_options_name_the_section(tmp_path, capsys):
    path = tmp_path / "r.toml"
    path.write_text('[data]\nname = "iris"\n[schedule]\nname = "cosine"\ngamma = 0.5\n')
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "schedule" in err and "gamma" in err and "min_lr" in err
    assert not (tmp_path / "o").exists()
