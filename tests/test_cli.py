"""`descend run` end to end: the run directory, determinism, and one clear message (exit 2) for each bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from descend import config
from descend.cli import main
from descend.errors import UserError

IRIS = """
name = "iris"
seed = 0
[data]
name = "iris"
[model]
name = "mlp"
hidden = [16]
[train]
epochs = 3
batch_size = 16
device = "cpu"
deterministic = true
[optimizer]
name = "adam"
lr = 0.01
"""


def recipe(tmp_path: Path, text: str = IRIS, name: str = "r.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_run_writes_the_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", recipe(tmp_path), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {"config.toml", "metrics.jsonl", "model.safetensors", "summary.json",
                                                 "tb"}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    logged = {"epoch", "step", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"}
    assert logged <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    assert {"train_accuracy", "val_accuracy", "test_accuracy"} <= set(summary["final"])
    assert summary["parameters"] == 4 * 16 + 16 + 16 * 3 + 3
    assert summary["best"]["monitor"] == "val_loss" and summary["versions"]["torch"]
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").iterdir())
    resolved = config.load(out / "config.toml")
    assert resolved.optimizer.lr == 0.01 and resolved.train.epochs == 3
    assert "epoch 3/3" in capsys.readouterr().out   # plain per-epoch lines when stdout is not a terminal


def test_set_overrides_fields_with_types(tmp_path):
    c = config.load(recipe(tmp_path), ["optimizer.lr=3e-3", "train.batch_size=\"full\"", "model.hidden=[4, 4]",
                                       "data.scale=minmax"])
    assert c.optimizer.lr == 3e-3 and c.train.batch_size == "full"
    assert c.model.options["hidden"] == [4, 4] and c.data.scale == "minmax"


def test_same_seed_deterministic_runs_are_bit_identical(tmp_path):
    for name in ("a", "b"):
        assert main(["run", recipe(tmp_path), "--out", str(tmp_path / name), "--quiet"]) == 0
    a = (tmp_path / "a" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert main(["run", recipe(tmp_path), "--out", str(tmp_path / "c"), "--quiet", "--set", "seed=1"]) == 0
    assert a != (tmp_path / "c" / "model.safetensors").read_bytes()


BAD = {
    "unknown config key": ("[train]\nepoch = 3", ["unknown field 'train.epoch'", "epochs"]),
    "wrong type": ("[train]\nepochs = \"many\"", ["train.epochs", "'many'"]),
    "negative learning rate": ("[optimizer]\nname = \"adam\"\nlr = -0.1", ["lr", "-0.1"]),
    "negative batch size": ("[train]\nbatch_size = -5", ["train.batch_size", "-5"]),
    "unknown dataset": ("[data]\nname = \"imagenet\"", ["imagenet", "mnist1d", "digits"]),
    "unknown activation": ("[model]\nname = \"mlp\"\nactivation = \"swishy\"", ["swishy", "relu", "maxout"]),
    "unknown loss": ("[train]\nloss = \"hinge\"", ["train.loss", "cross_entropy"]),
    "unknown optimizer": ("[optimizer]\nname = \"adamax_plus\"", ["adamax_plus", "adam"]),
}


def _patched(section_text: str) -> str:
    """The iris recipe with one section's fields replaced by ``section_text``'s."""
    header, *fields = section_text.split("\n")
    lines, skip = [], False
    for line in IRIS.strip().split("\n"):
        if line.startswith("["):
            skip = line == header
            if skip:
                lines += [header, *fields]
                continue
        if not skip:
            lines.append(line)
    if header not in lines:
        lines += [header, *fields]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("case", list(BAD))
def test_each_bad_recipe_gives_one_message_and_exit_2(case, tmp_path, capsys, monkeypatch):
    text, expected = BAD[case]
    monkeypatch.chdir(tmp_path)
    assert main(["run", recipe(tmp_path, _patched(text)), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("descend: error: ") and err.count("\n") == 1, err
    for fragment in expected:
        assert fragment in err, err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.toml"]   # nothing written, no runs/ directory


@pytest.mark.parametrize("csv, expected", [
    ("a,b,label\n1,2,0\n3,inf,1\n5,6,0\n7,8,1\n", ["row 3, column 'b'", "not a finite number"]),
    ("a,b,label\n1,2,0\n3,x,1\n5,6,0\n7,8,1\n", ["column 'b'", "'x'", "leave it empty"]),
    ("a,b,label\n1,2,0\n3,4,1\n5,6,0.5\n7,8,1\n", ["whole numbers", "0.5"]),
])
def test_bad_csv_files(csv, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.csv").write_text(csv)
    text = _patched(f"[data]\nname = \"{tmp_path / 'd.csv'}\"\ntarget = \"label\"\ntask = \"classification\"")
    assert main(["run", recipe(tmp_path, text), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert all(fragment in err for fragment in expected), err


def test_missing_files(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    assert "recipe file not found" in capsys.readouterr().err
    text = _patched(f"[data]\nname = \"{tmp_path / 'missing.csv'}\"\ntarget = \"label\"")
    assert main(["run", recipe(tmp_path, text), "--out", str(tmp_path / "o")]) == 2
    assert "missing.csv" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DESCEND_DATA", str(tmp_path / "empty"))
    text = _patched(f"[data]\nname = \"fashion_mnist\"\npath = \"{tmp_path / 'empty'}\"")
    assert main(["run", recipe(tmp_path, text), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "apt-get install dataset-fashion-mnist" in err and "DESCEND_DATA" in err


def test_labels_out_of_range_in_an_npz_file(tmp_path, capsys):
    import numpy as np

    np.savez(tmp_path / "d.npz", x=np.random.rand(20, 3), y=np.array([0, 1, -1, 2] * 5))
    text = _patched(f"[data]\nname = \"{tmp_path / 'd.npz'}\"\ntask = \"classification\"")
    assert main(["run", recipe(tmp_path, text), "--out", str(tmp_path / "o")]) == 2
    assert "-1" in capsys.readouterr().err


def test_config_errors_name_the_field():
    with pytest.raises(UserError, match="missing required field 'data'"):
        config.validate({"train": {"epochs": 1}})


def test_console_script_exit_code_and_no_traceback(tmp_path):
    """The real entry point, in a subprocess: a user error is one line on stderr and exit code 2."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    text = _patched("[optimizer]\nname = \"adam\"\nlr = -1")
    proc = subprocess.run([sys.executable, "-m", "descend.cli", "run", recipe(tmp_path, text)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("descend: error:")
    datasets = subprocess.run([sys.executable, "-m", "descend.cli", "datasets"], capture_output=True, text=True,
                              env={**env, "COLUMNS": "200"}, timeout=120)
    assert datasets.returncode == 0
    for name in ("mnist1d", "fashion_mnist", "digits", "breast_cancer", "wine", "iris", "diabetes", "sine",
                 "linear_highdim"):
        assert name in datasets.stdout
