"""The user's model factory and data from Python: ``ds.run(recipe, model=..., data=...)`` writes the run directory
``descend run`` writes, and search, cross-validation, comparison and the doctor take the same ``model=``/``data=``."""

from __future__ import annotations

import functools
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import descend as ds
from descend import config
from descend.doctor import examine
from descend.errors import UserError
from descend.lab.compare import compare_recipe
from descend.runs import workflow

PROJECT = Path(__file__).parent / "userproject"


@pytest.fixture(scope="module")
def mynets():
    sys.path.insert(0, str(PROJECT))
    try:
        yield importlib.import_module("mynets")
    finally:
        sys.path.remove(str(PROJECT))
        sys.modules.pop("mynets", None)  # another test's folder may hold a module of that name


RECIPE = {"seed": 0, "data": {"name": "iris"}, "train": {"epochs": 2, "batch_size": 32, "device": "cpu"}}


def test_run_with_a_factory_and_arrays_writes_the_run_directory(mynets, tmp_path):
    x, y = mynets.waves(n=120)
    model = functools.partial(mynets.resnet1d, channels=4)
    summary = ds.run(RECIPE, out=tmp_path / "r", model=model, data=(x, y), quiet=True)
    assert Path(summary["run_dir"]) == tmp_path / "r" and "test_accuracy" in summary["final"]
    recorded = config.load(tmp_path / "r" / "config.toml")
    assert recorded.model.name == "mynets:resnet1d" and recorded.model.options == {"channels": 4}
    assert re.fullmatch(r"__main__:data(_\d+)?", recorded.data.name)  # arrays given here: recorded, not reloadable
    run = ds.load_run(tmp_path / "r")  # this process passed the factory and data: nothing would be imported
    assert run.predict(x[:5]).shape == (5,) and "test_loss" in run.evaluate()
    # another process would import module 'mynets' (on its path there): refused without consent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "descend.cli", "predict", str(tmp_path / "r"), str(tmp_path / "x.npz")]
    np.savez(tmp_path / "x.npz", x=x[:3])
    refused = subprocess.run(command, capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "module 'mynets'" in refused.stderr, refused.stderr
    allowed = subprocess.run([*command, "--allow-code"], capture_output=True, text=True, env=env)
    assert allowed.returncode == 0 and allowed.stdout.split()[1:] == [str(v) for v in run.predict(x[:3])]


def test_the_recipe_replaced_keeps_splitting_and_takes_overrides(mynets):
    base = {**RECIPE, "data": {"name": "iris", "val_fraction": 0.25, "scale": "minmax"}}
    recipe = workflow.recipe(base, model=mynets.TinyNet, data=mynets.waves, overrides=["model.hidden=3"])
    assert recipe.data.name == "mynets:waves" and recipe.data.val_fraction == 0.25 and recipe.data.scale == "minmax"
    assert recipe.model.name == "mynets:TinyNet" and recipe.model.options == {"hidden": 3}


def test_a_built_model_or_no_factory_is_refused_with_the_fix():
    with pytest.raises(UserError, match="pass its factory"):
        workflow.recipe(RECIPE, model=nn.Linear(4, 3))
    with pytest.raises(UserError, match="must be a factory"):
        workflow.recipe(RECIPE, model=3)


@pytest.mark.filterwarnings("ignore:--seeds 1 measures no spread")
def test_search_cv_compare_and_doctor_take_model_and_data(mynets, tmp_path):
    x, y = mynets.waves(n=150)
    (tmp_path / "space.toml").write_text("[model]\nhidden = { categorical = [4, 8] }\n")
    space = tmp_path / "space.toml"
    found = ds.tune.search(
        RECIPE,
        space,
        sampler="grid",
        model=mynets.TinyNet,
        data=(x, y),
        out=tmp_path / "t",
        keep_runs=False,
        echo=lambda *a: None,
    )
    assert sorted(t["params"]["model.hidden"] for t in found["trials"]) == [4, 8]
    folds = ds.tune.cross_validate(RECIPE, 2, tmp_path / "cv", model=mynets.TinyNet, data=(x, y))
    assert len(folds["per_fold"]) == 2
    compared = compare_recipe(
        RECIPE, ["model.hidden=2,6"], seeds=1, out=tmp_path / "c", model=mynets.TinyNet, data=(x, y)
    )
    assert len(compared["runs"]) == 2 and all(r["status"] == "finished" for r in compared["runs"])
    assert config.load(tmp_path / "c" / "recipe.toml").model.name == "mynets:TinyNet"
    diagnosis = examine(RECIPE, budget=10, model=mynets.TinyNet, data=(x, y))
    assert diagnosis.checks


def test_an_ensemble_and_averaging_of_a_given_factory(mynets, tmp_path):
    x, y = mynets.waves(n=150)
    recipe = {**RECIPE, "ensemble": {"members": 2}}
    summary = ds.run(recipe, out=tmp_path / "e", model=mynets.TinyNet, data=(x, y), quiet=True)
    assert "test_accuracy" in summary["final"]
    members = ds.load_run(tmp_path / "e").model  # the members combined; the factory was given in this process
    assert members(torch.from_numpy(x[:4])).shape == (4, 3)
    averaged = ds.run(
        {**RECIPE, "averaging": {"name": "ema"}}, out=tmp_path / "a", model=mynets.TinyNet, data=(x, y), quiet=True
    )
    assert averaged["final"]["train_loss"] > 0


def test_a_run_of_objects_given_in_another_process_says_to_pass_them_again(tmp_path):
    code = (
        "import numpy as np, descend as ds\nfrom torch import nn\n"
        "def net(in_features, num_outputs):\n    return nn.Linear(in_features, num_outputs)\n"
        "x = np.random.default_rng(0).normal(size=(60, 4)).astype('float32')\n"
        f"ds.run({RECIPE!r}, out={str(tmp_path / 'r')!r}, model=net, data=(x, (x[:, 0] > 0).astype(int)), quiet=True)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    assert config.load(tmp_path / "r" / "config.toml").model.name == "__main__:net"
    with pytest.raises(UserError, match=r"'__main__:net' was passed from Python in another process.*model=factory"):
        ds.load_run(tmp_path / "r")

    def net(in_features, num_outputs):
        return nn.Linear(in_features, num_outputs)

    assert ds.load_run(tmp_path / "r", model=net).predict(np.zeros((2, 4), np.float32)).shape == (2,)


def test_each_recipe_keeps_the_data_and_factory_it_was_made_with():
    """Objects given from Python are recorded by name; a second recipe given other arrays, or a redefined factory
    of the same name, must not change what an earlier recipe trains on."""
    from descend.runs import experiment

    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(60, 4)).astype("float32"), rng.normal(size=(90, 7)).astype("float32")
    first = workflow.recipe(RECIPE, data=(x1, np.arange(60) % 2))
    second = workflow.recipe(RECIPE, data=(x2, np.arange(90) % 3))
    again = workflow.recipe(RECIPE, data=(x1, np.arange(60) % 2))
    assert first.data.name != second.data.name
    assert experiment.build(first).data.info.input_shape == (4,)
    assert experiment.build(second).data.info.input_shape == (7,)
    assert experiment.build(again).data.info.input_shape == (4,)

    def net(in_features, num_outputs):
        return nn.Linear(in_features, num_outputs)

    made = workflow.recipe(first, model=net)

    def net(in_features, num_outputs):  # noqa: F811  (redefined, as in a notebook cell run again)
        return nn.Sequential(nn.Linear(in_features, 8), nn.ReLU(), nn.Linear(8, num_outputs))

    remade = workflow.recipe(first, model=net)
    assert made.model.name != remade.model.name
    assert isinstance(experiment.build(made).trainer.model, nn.Linear)
    assert isinstance(experiment.build(remade).trainer.model, nn.Sequential)
