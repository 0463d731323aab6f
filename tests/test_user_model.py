"""A model factory of the user's own code, named in a recipe (``[model] name = "file.py:factory"``): built with the
data's sizes and the recipe's arguments, checked against its signature before anything is written, recorded in the
run, and loaded from the run directory only with consent (``--allow-code``, ``allow_code=True`` or the factory)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from torch import nn

import descend as ds
from descend import config, usercode
from descend.cli import main
from descend.errors import UserError
from descend.runs import experiment

PROJECT = Path(__file__).parent / "userproject"
ROW = "sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)\n5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """The user project copied to a fresh folder, which is also the working directory."""
    folder = tmp_path / "project"
    shutil.copytree(PROJECT, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "new.csv").write_text(ROW)
    monkeypatch.chdir(folder)
    return folder


def error_of(capsys, argv) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_recipe_factory_runs_and_is_recorded_with_its_file(project, capsys):
    assert main(["run", "recipe.toml", "--out", "r", "--quiet"]) == 0
    recorded = config.load(project / "r" / "config.toml")
    assert recorded.model.name == f"{project / 'mynets.py'}:resnet1d"  # absolute: the run loads from anywhere
    assert recorded.model.options == {"channels": 8, "blocks": 1}
    run = ds.load_run(project / "r", allow_code=True)
    assert sum(isinstance(m, nn.Conv1d) for m in run.model.modules()) == 3  # stem + one residual block of two


def test_loading_a_run_that_names_code_needs_consent(project, capsys):
    assert main(["run", "recipe.toml", "--out", "r", "--quiet"]) == 0
    capsys.readouterr()
    for command in (["predict", "r", "new.csv"], ["evaluate", "r"], ["export", "r"]):
        err = error_of(capsys, command)
        assert "names code" in err and f"file '{project / 'mynets.py'}'" in err and "--allow-code" in err, err
    with pytest.raises(UserError, match="allow_code=True"):
        ds.load_run(project / "r")
    assert main(["predict", "r", "new.csv", "--allow-code"]) == 0
    allowed = capsys.readouterr().out.split()[1:]
    mynets = usercode.load(f"{project / 'mynets.py'}:resnet1d")
    given = ds.load_run(project / "r", model=mynets)  # the factory itself: nothing imported from the run
    assert [str(v) for v in given.predict(project / "new.csv")] == allowed
    assert main(["evaluate", "r", "--allow-code"]) == 0


@pytest.mark.parametrize(
    "setting, expected",
    [
        ("model.width=3", "takes no argument 'width' (it takes input_shape, num_outputs, channels, blocks, dropout)"),
        ('model.name="mynets.py:TinyNet"', "takes no argument 'channels' (it takes in_features, num_outputs, hidden)"),
        ('model.name="mynets.py:nowhere"', "has no 'nowhere'; it defines"),
        ('model.name="missing.py:net"', "there is no file"),
        ('model.name="resnet"', "must be one of mlp, cnn1d, cnn2d, or your own factory"),
    ],
)
def test_a_bad_factory_or_argument_is_one_message_and_writes_nothing(project, capsys, setting, expected):
    err = error_of(capsys, ["run", "recipe.toml", "--out", "r", "--quiet", "--set", setting])
    assert expected in err and err.startswith("descend: error:") and err.count("\n") == 1, err
    assert not (project / "r").exists()


def test_a_required_argument_nobody_gives_is_named(project, capsys):
    (project / "needs.py").write_text(
        "from torch import nn\ndef net(num_outputs, depth):\n    return nn.Linear(4, 3)\n"
    )
    err = error_of(capsys, ["run", "recipe.toml", "--out", "r", "--set", 'model={name="needs.py:net"}'])
    assert "needs argument 'depth'" in err and "input_shape, in_features, num_outputs, num_classes" in err, err
    assert not (project / "r").exists()


def test_a_module_class_by_module_reference_and_the_sizes_it_is_given(project, monkeypatch):
    monkeypatch.syspath_prepend(str(project))
    recipe = config.load(project / "recipe.toml", ['model={name="mynets:TinyNet", hidden=5}'])
    model = experiment.build(recipe).trainer.model
    assert [m.in_features for m in model.modules() if isinstance(m, nn.Linear)] == [4, 5]
    assert model.net[-1].out_features == 3  # iris: three classes


def test_a_factory_that_fails_or_returns_no_module_names_it(project, capsys):
    (project / "bad.py").write_text(
        "def boom(num_outputs):\n    raise ValueError('no')\n\ndef text():\n    return 'x'\n"
    )
    err = error_of(capsys, ["run", "recipe.toml", "--out", "r", "--set", 'model={name="bad.py:boom"}'])
    assert "model factory" in err and "failed at bad.py:2: ValueError: no" in err, err
    err = error_of(capsys, ["run", "recipe.toml", "--out", "r", "--set", 'model={name="bad.py:text"}'])
    assert "returned a str" in err and "torch.nn.Module" in err, err
    assert not (project / "r").exists()


def test_resume_and_show_use_the_recorded_factory(project, capsys):
    assert main(["run", "recipe.toml", "--out", "r", "--quiet", "--set", "train.epochs=1"]) == 0
    assert main(["resume", "r", "--quiet", "--set", "train.epochs=2"]) == 0
    assert len(ds.load_run(project / "r", allow_code=True).history) == 2
    capsys.readouterr()
    assert main(["show", "recipe.toml"]) == 0
    assert f'name = "{project / "mynets.py"}:resnet1d"' in capsys.readouterr().out


def test_a_given_factory_is_named_by_its_reference(project):
    fn = usercode.load(f"{project / 'mynets.py'}:resnet1d")
    assert usercode.name_of(fn) == f"{project / 'mynets.py'}:resnet1d"
    assert usercode.name_of(np.mean) == "numpy:mean"

    def local(num_outputs):
        return nn.Linear(4, num_outputs)

    text = usercode.name_of(local)
    assert text.startswith("__main__:") and usercode.load(text) is local


@pytest.mark.parametrize(
    "command",
    [
        ["run", "recipe.toml", "--out", "x"],
        ["ensemble", "recipe.toml", "--members", "2", "--out", "x"],
        ["cv", "recipe.toml", "--folds", "2", "--out", "x"],
        ["compare", "recipe.toml", "--vary", "model.blocks=1,2", "--out", "x"],
        ["doctor", "recipe.toml", "--out", "x", "--fix"],
        ["tune", "recipe.toml", "--space", "space.toml", "--out", "x"],
        ["show", "recipe.toml"],
    ],
)
def test_every_workflow_refuses_a_wrong_factory_argument_before_writing(project, capsys, command):
    (project / "space.toml").write_text("[model]\nchannels = { categorical = [4, 8] }\n")
    err = error_of(capsys, [*command, "--set", "model.width=3"])
    assert err.count("\n") == 1 and "takes no argument 'width'" in err, err
    assert not (project / "x").exists() and not (project / "recipe.fixed.toml").exists()
