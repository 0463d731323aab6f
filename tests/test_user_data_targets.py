"""Regression targets are standardised on the training split by default; every metric, prediction, export and
evaluation applies the inverse, so values come back in the targets' own units. The loss stays the training
objective (on standardised targets); mse, mae and R² are in the targets' units."""

import json

import numpy as np
import pytest
import torch

from descend import config as cfg
from descend import data as datasets
from descend.errors import UserError
from descend.runs import execute, experiment
from descend.runs.loaded import load_run


def _table(n=240, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = 100.0 + x @ np.array([3.0, -2.0, 1.0]) + 0.3 * rng.normal(size=n)
    return x, y


def test_targets_are_standardised_on_the_training_split():
    x, y = _table()
    bundle = datasets.from_user((x, y), seed=0)
    ts = bundle.info.target_scaler
    assert ts is not None and bundle.train.target_scaler is ts and bundle.test.target_scaler is ts
    assert abs(float(bundle.train.y.mean())) < 1e-5
    assert float(bundle.train.y.std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)
    raw = datasets.from_user((x, y), seed=0, target_scale="none")
    assert raw.info.target_scaler is None
    assert torch.allclose(ts.inverse_transform(bundle.test.y), raw.test.y, atol=1e-4)
    # classification labels are never scaled
    assert datasets.from_user((x, (y > 100).astype(np.int64))).info.target_scaler is None


def test_metrics_are_in_the_targets_units():
    x, y = _table()
    bundle = datasets.from_user((x, y), seed=0)
    config = cfg.validate({"data": {"name": "iris"}, "train": {"epochs": 3}})
    result = experiment.build(config, bundle).fit()
    trainer = result.trainer
    got = trainer.evaluate(bundle.test, prefix="")
    pred = bundle.info.target_scaler.inverse_transform(trainer.predict(bundle.test.x).double().cpu())
    true = datasets.from_user((x, y), seed=0, target_scale="none").test.y.double()
    err = (pred - true).reshape(-1)
    assert got["mse"] == pytest.approx(float(err.square().mean()), rel=1e-5)
    assert got["mae"] == pytest.approx(float(err.abs().mean()), rel=1e-5)
    assert got["r2"] == pytest.approx(1 - float(err.square().sum() / (true - true.mean()).square().sum()), rel=1e-5)
    # the loss is the objective on standardised targets: the mse divided by the training split's variance
    assert got["loss"] == pytest.approx(got["mse"] / float(bundle.info.target_scaler.scale) ** 2, rel=1e-4)


@pytest.fixture
def regression_run(tmp_path):
    x, y = _table()
    path = tmp_path / "table.csv"
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header="a,b,c,y", comments="", fmt="%.6f")
    config = cfg.validate({"data": {"name": str(path)}, "train": {"epochs": 2}, "name": "reg"})
    execute.run(config, tmp_path / "run", quiet=True)
    return tmp_path / "run", path, x


def test_a_run_predicts_and_evaluates_in_the_targets_units(regression_run):
    run_dir, csv, x = regression_run
    run = load_run(run_dir)
    record = json.loads((run_dir / "inference.json").read_text())
    assert record["target_scaler"]["kind"] == "standardize"
    ts = run.target_scaler
    scaled = run.model(run.inputs(x[:7])).detach()
    assert np.allclose(run.predict(x[:7]), ts.inverse_transform(scaled)[:, 0].numpy(), atol=1e-4)
    assert abs(float(np.mean(run.predict(x))) - 100.0) < 10  # raw units, not standardised ones
    summary = json.loads((run_dir / "summary.json").read_text())
    again = run.evaluate()  # the recipe's own test split, scored again from raw targets
    assert again["test_mse"] == pytest.approx(summary["final"]["test_mse"], rel=1e-5)
    scored = run.evaluate(csv)
    data = np.loadtxt(csv, delimiter=",", skiprows=1)
    assert scored["test_mae"] == pytest.approx(float(np.abs(run.predict(data[:, :3]) - data[:, 3]).mean()), rel=1e-4)


def test_an_edited_target_scaling_is_refused(regression_run):
    run_dir = regression_run[0]
    record = json.loads((run_dir / "inference.json").read_text())
    record["target_scaler"]["scale"] = [0.0]
    (run_dir / "inference.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="target_scaler"):
        load_run(run_dir)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_an_exported_regressor_gives_values_in_the_targets_units(regression_run, tmp_path):
    run_dir, _, x = regression_run
    run = load_run(run_dir)
    done = run.export(tmp_path / "reg.pt", "torchscript")
    loaded = torch.jit.load(str(done.path))  # the test trusts its own file; descend itself never loads one
    rows = torch.as_tensor(x[:9], dtype=torch.float32)
    torch.testing.assert_close(loaded(rows)[:, 0], torch.as_tensor(run.predict(x[:9])), rtol=0, atol=1e-4)


def test_the_scikit_learn_regressor_standardises_targets_too():
    from descend.sklearn import DescendRegressor

    x, y = _table(400)
    model = DescendRegressor(train={"epochs": 30}, random_state=0).fit(x[:300], y[:300])
    assert float(model.target_scaler_.shift) == pytest.approx(float(y[:300].mean()), rel=1e-5)
    assert model.score(x[300:], y[300:]) > 0.9  # R² on predictions in the targets' own units
