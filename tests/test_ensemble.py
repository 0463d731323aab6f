"""Ensembles: averaging of members, snapshot timing, MC-dropout as a kind, the directory and its manifest."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import descend as ds
from descend import config, ensemble
from descend.cli import main
from descend.runs import ensemble as ensemble_fit

RAW = {"name": "ens", "seed": 0, "data": {"name": "iris"},
       "model": {"name": "mlp", "hidden": [16], "dropout": 0.2},
       "train": {"epochs": 4, "batch_size": 16, "device": "cpu", "deterministic": True},
       "optimizer": {"name": "adam", "lr": 0.02}}


def recipe(**ensemble_options) -> config.Config:
    return config.validate({**json.loads(json.dumps(RAW)), "ensemble": ensemble_options})


def test_classifiers_average_probabilities_and_report_disagreement():
    torch.manual_seed(0)
    members = [nn.Linear(3, 4) for _ in range(3)]
    x, y = torch.randn(50, 3), torch.randint(0, 4, (50,))
    ens = ensemble.Ensemble(members, "classification")
    probs = torch.stack([m(x).softmax(1) for m in members])
    torch.testing.assert_close(ens.predict_proba(x), probs.mean(0))
    assert torch.equal(ens.predict(x), probs.mean(0).argmax(1))
    metrics = ens.evaluate(x, y)
    labels = probs.argmax(2)
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = sum((labels[i] != labels[j]).float().mean().item() for i, j in pairs) / 3
    assert metrics["test_disagreement"] == pytest.approx(expected)
    assert metrics["test_accuracy"] == pytest.approx((probs.mean(0).argmax(1) == y).float().mean().item())
    assert metrics["test_loss"] == pytest.approx(-probs.mean(0)[torch.arange(50), y].log().mean().item(), rel=1e-5)
    assert [m["test_accuracy"] for m in metrics["members"]] == \
           pytest.approx([(p.argmax(1) == y).float().mean().item() for p in probs])


def test_regressors_average_outputs():
    torch.manual_seed(0)
    members = [nn.Linear(3, 1) for _ in range(4)]
    x = torch.randn(20, 3)
    ens = ensemble.Ensemble(members, "regression")
    outs = torch.stack([m(x) for m in members])
    torch.testing.assert_close(ens.predict(x), outs.mean(0))
    metrics = ens.evaluate(x, torch.zeros(20, 1))
    assert metrics["test_disagreement"] == pytest.approx(outs.std(0, unbiased=False).mean().item(), rel=1e-5)
    with pytest.raises(ds.UserError, match="predict_proba is for classifiers"):
        ens.predict_proba(x)


def test_snapshots_are_taken_at_the_learning_rate_minima():
    result = ensemble_fit.fit(recipe(snapshots=2))
    trainer = result.runs[0].trainer
    collector_steps = [m["step"] for m in result.members]
    total = trainer.global_step
    assert len(result.ensemble) == 2 and collector_steps == [total // 2, total]
    lrs = [trainer.schedule.lr(0.02, step) for step in range(total)]
    for k, entry in enumerate(result.members):
        cycle = lrs[k * total // 2:(k + 1) * total // 2]
        assert entry["lr"] == min(cycle) == cycle[-1]          # the last step of a cycle has its smallest rate
    assert lrs[total // 2] == 0.02                             # and the next cycle restarts from the top
    first, second = (m.state_dict()["1.weight"] for m in result.ensemble.models)
    assert not torch.equal(first, second)
    torch.testing.assert_close(second, trainer.model.state_dict()["1.weight"], rtol=0, atol=0)


def test_snapshot_recipe_errors():
    with pytest.raises(ds.UserError, match="multiple of snapshots"):
        ensemble_fit.fit(recipe(snapshots=3))
    raw = {**json.loads(json.dumps(RAW)), "ensemble": {"snapshots": 2}, "schedule": {"name": "cosine"}}
    with pytest.raises(ds.UserError, match="remove the \\[schedule\\] section"):
        ensemble_fit.fit(config.validate(raw))


def test_members_train_from_different_seeds_and_mc_dropout_is_a_kind():
    members = ensemble_fit.fit(recipe(members=2))
    assert [m["seed"] for m in members.members] == [0, 1]
    a, b = (m.state_dict()["1.weight"] for m in members.ensemble.models)
    assert not torch.equal(a, b)
    assert {"test_accuracy", "test_loss", "test_disagreement"} <= set(members.metrics)
    mc = ensemble_fit.fit(recipe(mc_dropout=8))
    assert len(mc.ensemble) == 8 and len(mc.ensemble.models) == 1
    assert mc.metrics["test_disagreement"] > 0   # dropout masks differ between passes


def test_descend_ensemble_writes_a_directory_that_loads_back(tmp_path, capsys):
    path = tmp_path / "recipe.toml"
    path.write_text(config.dump(config.validate(RAW)))
    assert main(["ensemble", str(path), "--members", "2", "--out", str(tmp_path / "ens"), "--quiet"]) == 0
    manifest = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert manifest["format"] == "descend-ensemble" and manifest["kind"] == "members" and manifest["size"] == 2
    assert [m["weights"] for m in manifest["members"]] == ["members/member-0.safetensors",
                                                          "members/member-1.safetensors"]
    summary = json.loads((tmp_path / "ens" / "summary.json").read_text())
    assert len(summary["members"]) == 2 and "test_accuracy" in summary["ensemble"]
    loaded = ensemble.load(tmp_path / "ens")
    data = ds.data.load("iris", seed=0)
    metrics = loaded.evaluate(data.test.x, data.test.y)
    assert metrics["test_accuracy"] == pytest.approx(summary["ensemble"]["test_accuracy"])
    assert loaded.predict_proba(data.test.x).shape == (len(data.test), 3)


def test_ensemble_errors(tmp_path):
    for bad, words in [({}, "exactly one of"), ({"members": 2, "snapshots": 2}, "got members, snapshots"),
                       ({"members": 1}, "option 'members' must be"), ({"bagging": 3}, "unknown option")]:
        with pytest.raises(ds.UserError, match=words):
            recipe(**bad)
    with pytest.raises(ds.UserError, match="has no ensemble.json"):
        ensemble.load(tmp_path)


def _saved_ensemble(directory):
    arch = {"name": "mlp", "input_shape": [4], "num_outputs": 3, "options": {"hidden": [8]}}
    members = [ds.models.build("mlp", (4,), 3, hidden=[8]) for _ in range(2)]
    ensemble.Ensemble(members, "classification", architecture=arch).save(directory)
    return json.loads((directory / "ensemble.json").read_text())


@pytest.mark.parametrize("edit, words", [
    (lambda m: m.pop("architecture"), "architecture must be an object, got None"),
    (lambda m: m["architecture"].update(input_shape=[0]), "architecture.input_shape must be a non-empty list"),
    (lambda m: m["architecture"].update(num_outputs="3"), "architecture.num_outputs must be an integer >= 1"),
    (lambda m: m.update(task="ranking"), "task must be one of classification, regression"),
    (lambda m: m.update(kind="bagging"), "kind must be one of members, snapshots, mc_dropout, folds"),
    (lambda m: m.update(samples=0), r"samples must be an integer in \[1, 10000\]"),
    (lambda m: m.update(samples=10**12), r"samples must be an integer in \[1, 10000\]"),
    (lambda m: m.update(members=[]), "members must be a list of 1 to 1000"),
    (lambda m: m["members"][1].update(weights="../../model.safetensors"), "a path inside the ensemble"),
    (lambda m: m["members"][1].update(weights="/etc/passwd"), "a path inside the ensemble"),
    (lambda m: m["members"][0].update(weights="members/gone.safetensors"), "gone.safetensors, which are missing"),
])
def test_an_edited_manifest_is_one_error_naming_the_field(tmp_path, edit, words):
    manifest = _saved_ensemble(tmp_path)
    assert len(ensemble.load(tmp_path)) == 2
    edit(manifest)
    (tmp_path / "ensemble.json").write_text(json.dumps(manifest))
    with pytest.raises(ds.UserError, match=words):
        ensemble.load(tmp_path)


def test_combined_outputs_read_back_as_the_ensembles_prediction():
    torch.manual_seed(0)
    x = torch.randn(30, 3)
    many = ensemble.Ensemble([nn.Linear(3, 4) for _ in range(3)], "classification")
    torch.testing.assert_close(many.as_module()(x).softmax(1), many.predict_proba(x))
    binary = ensemble.Ensemble([nn.Linear(3, 1) for _ in range(3)], "classification",
                               architecture={"num_outputs": 1})
    torch.testing.assert_close(binary.as_module()(x).sigmoid(), binary.predict_proba(x)[:, 1:])
    regressors = ensemble.Ensemble([nn.Linear(3, 2) for _ in range(3)], "regression")
    torch.testing.assert_close(regressors.as_module()(x), regressors.predict(x))


def test_load_run_and_descend_predict_take_an_ensemble_directory(tmp_path, capsys):
    import numpy as np

    path = tmp_path / "recipe.toml"
    path.write_text(config.dump(config.validate(RAW)))
    assert main(["ensemble", str(path), "--members", "2", "--out", str(tmp_path / "ens"), "--quiet"]) == 0
    capsys.readouterr()
    run = ds.load_run(tmp_path / "ens")
    raw, scaled = ds.data.load("iris", seed=0, scale="none"), ds.data.load("iris", seed=0)
    direct = ensemble.load(tmp_path / "ens").predict_proba(scaled.test.x)   # inputs as the members trained on them
    torch.testing.assert_close(torch.as_tensor(run.predict_proba(raw.test.x)), direct)  # raw ones, scaled on load
    summary = json.loads((tmp_path / "ens" / "summary.json").read_text())["ensemble"]
    metrics = run.evaluate()                                                # the recipe's test split
    assert metrics["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert metrics["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-5)
    np.savez(tmp_path / "new.npz", x=raw.test.x.numpy())
    assert main(["predict", str(tmp_path / "ens"), str(tmp_path / "new.npz"), "--proba"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "prediction,p_0,p_1,p_2" and len(lines) == len(raw.test) + 1
    assert [line.split(",")[0] for line in lines[1:]] == [str(c) for c in direct.argmax(1).tolist()]
    with pytest.raises(ds.UserError, match="is an ensemble: .* which='final'"):
        ds.load_run(tmp_path / "ens", which="best")


@pytest.mark.parametrize(("options", "what"), [({"members": 1000}, "members"), ({"snapshots": 1000}, "snapshots")])
def test_an_ensemble_larger_than_memory_is_refused_before_the_first_member_trains(monkeypatch, options, what):
    trained = []
    monkeypatch.setattr(ensemble_fit.experiment, "build", lambda *a, **k: trained.append(a))
    monkeypatch.setenv("DESCEND_MEMORY_LIMIT", "256K")  # 1000 snapshots of 131 parameters take 512 KiB
    raw = {**json.loads(json.dumps(RAW)), "ensemble": options}
    raw["train"]["epochs"] = 1000  # a whole number of cosine cycles for the snapshots
    with pytest.raises(ds.UserError, match=rf"an ensemble of 1,000 {what} of .* more than the memory limit"):
        ensemble_fit.fit(config.validate(raw))
    assert trained == []


@pytest.mark.parametrize("dropout", [None, 0.0])
def test_mc_dropout_without_dropout_is_refused_before_anything_trains_or_is_written(monkeypatch, tmp_path, capsys,
                                                                                      dropout):
    trained = []
    monkeypatch.setattr(ensemble_fit.experiment, "build", lambda *a, **k: trained.append(a))
    raw = json.loads(json.dumps(RAW))
    del raw["model"]["dropout"]
    if dropout is not None:
        raw["model"]["dropout"] = dropout
    path = tmp_path / "r.toml"
    path.write_text(config.dump(config.validate(raw)))
    assert main(["ensemble", str(path), "--mc-dropout", "10", "--out", str(tmp_path / "ens"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "mc_dropout needs a model with dropout layers (nn.Dropout with p > 0)" in err
    assert trained == [] and not (tmp_path / "ens").exists()
    with pytest.raises(ds.UserError, match="mc_dropout needs a model with dropout layers"):
        ensemble.Ensemble([nn.Linear(3, 2)], "classification", "mc_dropout", samples=4)
