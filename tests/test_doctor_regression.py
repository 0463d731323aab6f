"""The doctor's regression references: the mean predictor (R² = 0) and a least-squares linear model, the targets'
scale, and ``--fix`` taking the LR range test's suggestion. And the end-to-end case they were made for: a CSV whose
targets sit around 100 (variance about 13) reaches R² >= 0.9 with the default recipe, and the doctor flags the same
recipe with target scaling turned off."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from descend import config as cfg
from descend import data as datasets
from descend.doctor import examine, fix, regression
from descend.runs import execute


def write_table(path, n=500, seed=0):
    """y = 100 + a linear function of 5 inputs + a small nonlinearity + noise: variance about 13."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    y = 100 + x @ np.array([2.5, -2.0, 1.5, 0.8, 0.0]) + 0.5 * np.sin(2 * x[:, 0]) + rng.normal(scale=0.4, size=n)
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header="a,b,c,d,e,y", comments="", fmt="%.6f")
    return y


@pytest.fixture
def table(tmp_path):
    y = write_table(tmp_path / "table.csv")
    assert 10 < y.var() < 16
    (tmp_path / "default.toml").write_text('[data]\nname = "table.csv"\n[train]\nepochs = 30\n')
    (tmp_path / "unscaled.toml").write_text('[data]\nname = "table.csv"\ntarget_scale = "none"\n[train]\nepochs = 30\n')
    return tmp_path


def test_the_default_recipe_reaches_r2_of_0_9_on_targets_around_100(table):
    summary = execute.run(cfg.load(table / "default.toml"), table / "run", quiet=True)
    assert summary["final"]["test_r2"] >= 0.9
    record = json.loads((table / "run" / "inference.json").read_text())
    assert record["target_scaler"]["shift"][0] == pytest.approx(100, abs=1)


def test_the_doctor_flags_unscaled_targets_and_fix_uses_the_range_test(table):
    diagnosis = examine(table / "unscaled.toml", budget=30)
    found = {f.id: f for f in diagnosis.findings}
    assert found["unscaled_targets"].severity == "error"
    assert found["worse_than_mean"].severity == "error"
    evidence = found["worse_than_mean"].evidence
    assert evidence["model_mse"] > evidence["mean_predictor_mse"]
    fixed, changes = fix.apply(fix.read_raw(table / "unscaled.toml"), diagnosis.findings)
    assert fixed["data"]["target_scale"] == "standardize"
    suggestion = diagnosis.evidence.get("lr_range", {}).get("suggestion")
    if suggestion is not None and not 1 / 3 <= 1e-3 / suggestion <= 3:  # the range test ran (it may be cut short)
        assert fixed["optimizer"]["lr"] == float(f"{suggestion:.2g}")


def _bundle(y_scale=1.0, y_shift=0.0, target_scale="none", n=200):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3))
    y = y_shift + y_scale * (x @ np.array([1.0, -1.0, 0.5]) + 0.1 * rng.normal(size=n))
    return datasets.from_user((x, y), target_scale=target_scale)


@pytest.mark.parametrize(
    "shift, scale, target_scale, severity",
    [
        (100.0, 3.0, "none", "error"),  # E[y²]/Var(y) about 500
        (15.0, 3.0, "none", "warning"),  # about 12
        (0.0, 500.0, "none", "error"),  # spread far above 1
        (0.0, 1.0, "none", None),
        (100.0, 3.0, "standardize", None),  # descend's default: nothing to flag
    ],
)
def test_target_scale(shift, scale, target_scale, severity):
    found = regression.target_scale(_bundle(scale, shift, target_scale))
    assert [f.severity for f in found] == ([severity] if severity else [])
    if found:
        assert found[0].fix.changes == {"data.target_scale": "standardize"}


class _Fixed:
    """A stand-in trainer whose predictions are given."""

    def __init__(self, predict):
        self.predict = predict


def test_references_against_the_mean_and_least_squares():
    bundle = _bundle()
    train, val = bundle.train, bundle.val
    mean = float(train.y.double().mean())
    worse = _Fixed(lambda x: torch.full((len(x), 1), mean + 2.0))
    found, evidence = regression.references(worse, bundle, lr=1e-3, lr_range={"suggestion": 0.02})
    yv = val.y.double().reshape(-1).numpy()
    assert evidence["mean_predictor_mse"] == pytest.approx(np.mean((yv - mean) ** 2), rel=1e-6)
    assert evidence["model_mse"] == pytest.approx(np.mean((yv - mean - 2.0) ** 2), rel=1e-5)
    design = np.column_stack([train.x.double().numpy(), np.ones(len(train))])
    coef = np.linalg.lstsq(design, train.y.double().numpy(), rcond=None)[0]
    linear = np.mean((np.column_stack([val.x.double().numpy(), np.ones(len(val))]) @ coef - yv[:, None]) ** 2)
    assert evidence["linear_mse"] == pytest.approx(linear, rel=1e-6)
    assert [f.id for f in found] == ["worse_than_mean"] and found[0].severity == "error"
    assert found[0].fix.changes == {"optimizer.lr": 0.02}  # 20x from the suggestion: part of the fix


def test_a_network_behind_least_squares_is_a_warning_and_a_close_rate_is_kept():
    bundle = _bundle()
    val = bundle.val
    noisy = _Fixed(lambda x: val.y + 0.5 * torch.sign(val.y - val.y.mean()))  # R² well above 0, far from linear
    found, _ = regression.references(noisy, bundle, lr=0.01, lr_range={"suggestion": 0.02})
    assert [(f.id, f.severity) for f in found] == [("linear_model_better", "warning")]
    assert found[0].fix.changes == {}  # 2x from the suggestion: the recipe's rate stays
    good = _Fixed(lambda x: val.y.clone())
    assert regression.references(good, bundle, lr=0.01, lr_range=None)[0] == []


def test_a_classifier_has_no_regression_references():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    bundle = datasets.from_user((x, (x[:, 0] > 0).astype(np.int64)))
    assert regression.references(SimpleNamespace(), bundle, 1e-3, None) == ([], {})
    assert regression.target_scale(bundle) == []
