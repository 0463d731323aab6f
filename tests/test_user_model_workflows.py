"""The user project (tests/userproject: a residual CNN factory and a data loader in mynets.py) through every
workflow from the command line: run, resume, show, doctor and --fix, tune searching the factory's arguments, cv,
compare, ensembles, averaging, transfer, data-parallel; predicted and evaluated from its run directories with and
without --allow-code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tomllib

import descend as ds
from descend import usercode
from descend.cli import main

PROJECT = Path(__file__).parent / "userproject"
ROW = "sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)\n5.1,3.5,1.4,0.2\n"


@pytest.fixture
def project(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    shutil.copytree(PROJECT, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "new.csv").write_text(ROW)
    monkeypatch.chdir(folder)
    return folder


def refused(capsys, argv, code: str) -> None:
    """``argv`` is refused for want of consent, naming the code it would import."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "names code" in err and code in err and "--allow-code" in err, err


def test_own_data_and_model_run_and_the_run_needs_consent_for_each(project, capsys):
    assert main(["run", "waves.toml", "--out", "w", "--quiet"]) == 0
    recorded = tomllib.loads((project / "w" / "config.toml").read_text())
    assert recorded["data"]["name"] == f"{project / 'mynets.py'}:waves"
    refused(capsys, ["evaluate", "w"], str(project / "mynets.py"))
    factory = usercode.load(f"{project / 'mynets.py'}:resnet1d")
    run = ds.load_run(project / "w", model=factory)  # the model needs no consent: its factory is given
    with pytest.raises(ds.UserError, match="data loader"):
        run.evaluate()  # the factory was given, but the run's own data would import the loader
    assert main(["evaluate", "w", "--allow-code"]) == 0
    assert capsys.readouterr().out.startswith("test_loss")


@pytest.mark.slow
def test_doctor_and_fix_keep_the_factory_and_write_a_recipe_that_runs(project, capsys):
    out = ["--budget", "15", "--out", "doc", "--set", "optimizer.lr=30.0"]
    assert main(["doctor", "recipe.toml", "--fix", *out]) == 0
    said = capsys.readouterr().out
    fixed = tomllib.loads((project / "doc" / "recipe.fixed.toml").read_text())
    assert fixed["model"] == {"name": f"{project / 'mynets.py'}:resnet1d", "channels": 8, "blocks": 1}
    assert fixed["optimizer"]["lr"] < 30.0
    assert all("not applied" in line for line in said.splitlines() if line.strip().startswith("model."))
    assert main(["run", "doc/recipe.fixed.toml", "--out", "fx", "--quiet"]) == 0


@pytest.mark.slow
def test_tune_searches_the_factory_arguments_and_cv_and_compare_train_it(project, capsys):
    (project / "space.toml").write_text("[model]\nblocks = { categorical = [1, 2] }\n")
    assert main(["tune", "recipe.toml", "--space", "space.toml", "--sampler", "grid", "--out", "t", "--no-runs"]) == 0
    trials = json.loads((project / "t" / "tune.json").read_text())["trials"]
    assert sorted(t["params"]["model.blocks"] for t in trials) == [1, 2]
    assert main(["cv", "recipe.toml", "--folds", "2", "--out", "cv", "--ensemble"]) == 0
    refused(capsys, ["predict", "cv/ensemble", "new.csv"], str(project / "mynets.py"))
    assert main(["predict", "cv/ensemble", "new.csv", "--allow-code"]) == 0
    assert main(["compare", "recipe.toml", "--vary", "model.channels=4,8", "--seeds", "2", "--out", "c"]) == 0
    runs = json.loads((project / "c" / "compare.json").read_text())["runs"]
    assert [r["status"] for r in runs] == ["finished"] * 4


def test_ensembles_averaging_and_transfer_build_the_factory(project, capsys):
    assert main(["ensemble", "recipe.toml", "--members", "2", "--out", "e", "--quiet"]) == 0
    refused(capsys, ["predict", "e", "new.csv"], str(project / "mynets.py"))
    assert main(["predict", "e", "new.csv", "--allow-code"]) == 0
    assert main(["run", "recipe.toml", "--set", 'averaging.name="swa"', "--out", "a", "--quiet"]) == 0
    assert main(["run", "recipe.toml", "--set", 'transfer.from="a"', "--out", "tr", "--quiet"]) == 0
    assert ds.load_run(project / "tr", allow_code=True).summary["final"]["train_loss"] > 0


@pytest.mark.slow
def test_data_parallel_workers_import_the_factory(project, capsys):
    assert main(["run", "waves.toml", "--nproc", "2", "--out", "np", "--quiet"]) == 0
    assert ds.load_run(project / "np", allow_code=True).summary["status"] == "finished"
