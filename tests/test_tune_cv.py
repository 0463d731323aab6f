"""Cross-validation: folds partition train+val, the test split is untouched, a fresh model and a scaler fitted on
the fold's training part for every fold, per-fold and mean ± std results, the fold models kept as an ensemble."""

import json

import pytest
import torch

from descend import config as cfg
from descend import experiment, load_run
from descend.cli import main
from descend.data import Split
from descend.train.callbacks import Callback
from descend.train.checkpoint import load_weights
from descend.tune import Folds, cross_validate
from descend.tune.cv import pooled, unscaled

RAW = {"name": "wine", "seed": 0, "data": {"name": "wine", "val_fraction": 0.2, "scale": "standardize"},
       "model": {"name": "mlp", "hidden": [8]}, "train": {"epochs": 2, "batch_size": 32},
       "optimizer": {"name": "adam", "lr": 1e-2}}


@pytest.fixture(scope="module")
def folds():
    return Folds(RAW, 3)


def test_folds_partition_train_and_val_and_leave_test_apart(folds):
    data = unscaled(RAW)
    assert len(folds.pool) == len(data.train) + len(data.val)
    held = torch.cat([torch.as_tensor(val) for _, val in folds.index])
    assert sorted(held.tolist()) == list(range(len(folds.pool)))
    test_rows = {tuple(row.tolist()) for row in data.test.x}
    assert not test_rows & {tuple(row.tolist()) for row in folds.pool.x}
    for k in range(3):
        assert folds.bundle(k).test is None


def test_folds_are_stratified(folds):
    counts = torch.bincount(folds.pool.y)
    for _, val in folds.index:
        fold_counts = torch.bincount(folds.pool.y[torch.as_tensor(val)], minlength=len(counts))
        assert ((fold_counts - counts / 3).abs() <= 1).all()


def test_scaler_is_fitted_on_each_folds_training_part_only(folds):
    for k, (train_idx, val_idx) in enumerate(folds.index):
        bundle = folds.bundle(k)
        raw_train = folds.pool.x[torch.as_tensor(train_idx)]
        assert torch.allclose(bundle.info.scaler.shift.flatten(), raw_train.double().mean(0).float(), atol=1e-4)
        assert bundle.train.x.mean(0).abs().max() < 1e-4  # standardized on its own statistics ...
        assert bundle.val.x.mean(0).abs().max() > 1e-3    # ... which the held-out part does not share exactly
        expected = (folds.pool.x[torch.as_tensor(val_idx)] - bundle.info.scaler.shift) / bundle.info.scaler.scale
        assert torch.allclose(bundle.val.x, expected)


class Snapshot(Callback):
    """The model object and its weights when each fold starts training, and when it ends."""

    def __init__(self):
        self.start, self.end, self.models = [], [], []

    def on_fit_start(self, trainer):
        self.models.append(trainer.model)
        self.start.append({k: v.clone() for k, v in trainer.model.state_dict().items()})

    def on_fit_end(self, trainer):
        self.end.append({k: v.clone() for k, v in trainer.model.state_dict().items()})


def test_every_fold_trains_a_fresh_model(folds):
    config = cfg.validate(RAW)
    seen = Snapshot()
    results = list(folds.fit(config, callbacks=[seen]))
    assert len(results) == 3 and len({id(m) for m in seen.models}) == 3
    fresh = experiment.build(config, folds.bundle(0)).trainer.model.state_dict()
    for k in range(3):
        for name, value in fresh.items():
            assert torch.equal(seen.start[k][name], value)  # as initialised, not as the previous fold left it
        if k:
            assert any(not torch.equal(seen.start[k][n], seen.end[k - 1][n]) for n in fresh)


def test_cross_validate_reports_folds_mean_std_and_keeps_an_ensemble(tmp_path):
    report = cross_validate(cfg.validate(RAW), 3, tmp_path, ensemble=True)
    accuracies = [row["val_accuracy"] for row in report["per_fold"]]
    assert len(accuracies) == 3 and report["summary"]["val_accuracy"]["mean"] == pytest.approx(sum(accuracies) / 3)
    assert report["summary"]["val_accuracy"]["std"] == pytest.approx(torch.tensor(accuracies).std().item())
    assert not [key for row in report["per_fold"] for key in row if key.startswith("test")]
    assert json.loads((tmp_path / "cv.json").read_text())["summary"] == report["summary"]
    assert (tmp_path / "cv.png").stat().st_size > 1000
    manifest = json.loads((tmp_path / "ensemble" / "ensemble.json").read_text())
    assert manifest["format"] == "descend-ensemble" and manifest["kind"] == "folds"
    assert [m["fold"] for m in manifest["members"]] == [0, 1, 2] and "scaler" in manifest["members"][1]
    assert manifest["members"][1]["val_accuracy"] == accuracies[1]
    # member k reads raw inputs scaled with fold k's scaler, as it was trained: the loaded run averages those
    folds, x = Folds(RAW, 3), pooled(unscaled(RAW)).x[:7]
    expected = []
    for k in range(3):
        model = experiment.build(cfg.validate(RAW), unscaled(RAW)).trainer.model.eval()
        load_weights(model, tmp_path / "ensemble" / manifest["members"][k]["weights"])
        with torch.no_grad():
            expected.append(model(folds.bundle(k).info.scaler.transform(x)).softmax(1))
    run = load_run(tmp_path / "ensemble")
    torch.testing.assert_close(torch.as_tensor(run.predict_proba(x)), torch.stack(expected).mean(0))


def test_cli_cv(tmp_path, capsys):
    recipe = tmp_path / "wine.toml"
    recipe.write_text('name = "wine"\n[data]\nname = "wine"\n[model]\nname = "mlp"\nhidden = [8]\n'
                      '[train]\nepochs = 2\n')
    assert main(["cv", str(recipe), "--folds", "3", "--out", str(tmp_path / "cv")]) == 0
    out = capsys.readouterr().out
    assert "mean" in out and "±" in out and (tmp_path / "cv" / "fold-2" / "metrics.jsonl").is_file()
    assert main(["cv", str(recipe), "--folds", "1", "--out", str(tmp_path / "cv1")]) == 2


def test_pooled_without_validation_is_the_training_split():
    split = Split(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), "classification", 2)
    bundle = experiment.load_data(cfg.validate(RAW))
    assert pooled(type(bundle)(split, None, None, bundle.info)) is split
