"""Cross-validation: folds partition train+val, the test split is untouched, a fresh model and a scaler fitted on
the fold's training part for every fold, per-fold and mean ± std results, the fold models kept as an ensemble."""

import json

import numpy as np
import pytest
import torch

from descend import config as cfg
from descend import load_run
from descend.cli import main
from descend.data import Split
from descend.errors import UserError
from descend.runs import experiment
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


def test_folds_the_data_cannot_make_are_refused_before_anything_is_written(tmp_path, capsys):
    """``descend cv --folds 100`` on wine (142 train+val rows, classes of about 47, 57 and 38 rows)."""
    recipe = tmp_path / "wine.toml"
    recipe.write_text('name = "wine"\n[data]\nname = "wine"\n[model]\nname = "mlp"\nhidden = [8]\n')
    assert main(["cv", str(recipe), "--folds", "100", "--out", str(tmp_path / "cv")]) == 2
    err = capsys.readouterr().err
    assert err.count("descend: error:") == 1 and "--folds 100 is more than the rows of every class" in err, err
    assert "use --folds 14 or fewer" in err  # 142 rows // 10 rows per fold
    assert not (tmp_path / "cv").exists()
    for k in (143, 0, 1):
        assert main(["cv", str(recipe), "--folds", str(k), "--out", str(tmp_path / "cv")]) == 2
    assert "must be an integer in [2, 142]" in capsys.readouterr().err


@pytest.mark.parametrize("labels, k, stratify, expected", [
    ([0] * 50 + [1] * 50, 10, True, None),                          # 10 rows a fold: quiet
    ([0] * 50 + [1] * 50, 11, True, "each validation fold holds 9-10 of the 100"),
    ([0] * 95 + [1] * 5, 8, True, "a class has only 5 rows, so 3 of the 8 folds lack it"),
    (list(range(40)), 5, False, "each validation fold holds 8-8 of the 40"),
    (list(range(40)), 4, False, None),
])
def test_folds_too_small_to_score_on_are_warned(labels, k, stratify, expected):
    import warnings

    from descend.tune.cv import refuse_folds, warn_small_folds

    refuse_folds(np.array(labels), k, stratify=stratify)  # each of these can be made
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_small_folds(np.array(labels), k, stratify=stratify)
    if expected is None:
        assert not caught
    else:
        assert len(caught) == 1 and expected in str(caught[0].message), [str(w.message) for w in caught]
        assert "or fewer (at least 10 rows in each validation fold)" in str(caught[0].message)


def test_refused_folds_name_the_most_the_data_allows():
    from descend.tune.cv import refuse_folds

    with pytest.raises(UserError, match=r"--folds 6 is more than the rows of every class .* use --folds 2 or fewer"):
        refuse_folds(np.array([0] * 5 + [1] * 5 + [2] * 5), 6, stratify=True)
    refuse_folds(np.array([0] * 5 + [1] * 5 + [2] * 5), 6, stratify=False)  # a regression target: 15 rows, 6 folds
