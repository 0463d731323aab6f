"""Using a trained run: load_run + predict on raw inputs (the saved scaling applied, text labels decoded), and the
`descend predict` / `descend evaluate` commands with one clear message (exit 2) for each bad input."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
import torch

import descend as ds
from descend import config
from descend.cli import main
from descend.data.scaling import Scaler
from descend.runs import experiment

CULTIVARS = ["barolo", "grignolino", "barbera"]


@pytest.fixture(scope="module")
def wine_run(tmp_path_factory):
    """Wine exported to CSV with text labels, trained briefly into a run directory."""
    folder = tmp_path_factory.mktemp("wine")
    bunch = sklearn.datasets.load_wine()
    with open(folder / "wine.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*bunch.feature_names, "cultivar"])
        writer.writerows([*row, CULTIVARS[label]] for row, label in zip(bunch.data.tolist(), bunch.target))
    with open(folder / "new.csv", "w", newline="") as f:  # new rows: no label column, columns in another order
        writer = csv.writer(f)
        writer.writerow(list(reversed(bunch.feature_names)))
        writer.writerows(list(reversed(row)) for row in bunch.data[::40].tolist())
    (folder / "wine.toml").write_text(
        'seed = 0\n[data]\nname = "wine.csv"\ntarget = "cultivar"\ntest_fraction = 0.2\n'
        '[model]\nname = "mlp"\nhidden = [16]\n[train]\nepochs = 3\nbatch_size = 16\ndevice = "cpu"\n'
        'deterministic = true\n[optimizer]\nname = "adam"\nlr = 0.02\n')
    exp = experiment.build(config.load(folder / "wine.toml"))
    result = exp.fit(out=folder / "run")
    return folder, exp, result, bunch


def test_predictions_on_raw_rows_equal_the_trainers_on_the_scaled_test_split(wine_run, no_unpickling):
    folder, exp, result, _ = wine_run
    run = ds.load_run(folder / "run")
    test = exp.data.test
    raw = exp.data.info.scaler.inverse_transform(test.x)              # the test split as the user has it
    expected = exp.trainer.predict(test.x)
    torch.testing.assert_close(run.outputs(raw), expected, rtol=1e-4, atol=1e-4)
    assert run.classes == sorted(CULTIVARS)                             # text labels, encoded in sorted order
    assert run.predict(raw).tolist() == [run.classes[i] for i in expected.argmax(1).tolist()]
    proba = run.predict_proba(raw.numpy())
    assert proba.shape == (len(test), 3) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert run.evaluate() == {k: v for k, v in result.final.items() if k.startswith("test_")}
    assert run.summary["final"]["test_accuracy"] == result.final["test_accuracy"]
    assert len(run.history) == 3 and run.config.data.target == "cultivar"


def test_inputs_of_every_kind_give_the_same_labels(wine_run, tmp_path):
    folder, _, _, bunch = wine_run
    run = ds.load_run(folder / "run")
    rows = bunch.data[::40]
    from_csv = run.predict(folder / "new.csv")                          # unlabeled, columns reordered, by name
    assert from_csv.dtype.kind == "U" and set(from_csv) <= set(CULTIVARS)
    assert run.predict(rows).tolist() == from_csv.tolist()
    assert run.predict(torch.tensor(rows)).tolist() == from_csv.tolist()
    np.savez(tmp_path / "new.npz", x=rows)
    assert run.predict(tmp_path / "new.npz").tolist() == from_csv.tolist()

    class Frame:  # what a DataFrame offers: named columns, selection by a list of names, to_numpy
        def __init__(self, columns, values):
            self.columns, self.values = columns, values

        def __getitem__(self, names):
            return Frame(names, self.values[:, [self.columns.index(n) for n in names]])

        def to_numpy(self):
            return self.values

    frame = Frame(list(reversed(bunch.feature_names)), rows[:, ::-1])
    assert run.predict(frame).tolist() == from_csv.tolist()
    assert run.predict(folder / "wine.csv").shape == (len(bunch.data),)  # a labelled file: the label is ignored


def test_best_and_last_weights_load(wine_run):
    folder = wine_run[0]
    for which in ("best", "last"):
        assert ds.load_run(folder / "run", which=which).predict_proba(folder / "new.csv").shape == (5, 3)
    with pytest.raises(ds.UserError, match="which must be one of final, best, last"):
        ds.load_run(folder / "run", which="first")


def test_scaler_round_trips_through_json():
    scaler = Scaler.fit("standardize", torch.randn(20, 3, 4, 4))
    back = Scaler.from_json(scaler.to_json())
    assert back.kind == "standardize" and torch.equal(back.shift, scaler.shift) and torch.equal(back.scale,
                                                                                                 scaler.scale)


def test_predict_and_evaluate_commands(wine_run, tmp_path, capsys):
    folder = wine_run[0]
    out = tmp_path / "preds.csv"
    assert main(["predict", str(folder / "run"), str(folder / "new.csv"), "--out", str(out), "--proba"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "prediction,p_barbera,p_barolo,p_grignolino" and len(lines) == 6
    assert lines[1].split(",")[0] in CULTIVARS
    assert capsys.readouterr().out == f"5 predictions -> {out}\n"
    assert main(["predict", str(folder / "run"), str(folder / "new.csv")]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [line.split(",")[0] for line in lines[1:]]
    assert main(["evaluate", str(folder / "run"), "--data", str(folder / "wine.csv")]) == 0
    shown = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert set(shown) == {"test_loss", "test_accuracy"} and 0 <= float(shown["test_accuracy"]) <= 1
    assert main(["evaluate", str(folder / "run")]) == 0


def test_bad_inputs_give_one_message_and_exit_2(wine_run, tmp_path, capsys):
    folder = wine_run[0]
    run = str(folder / "run")
    (tmp_path / "cols.csv").write_text("alcohol,colour\n1,2\n")
    header, first, *rest = (folder / "new.csv").read_text().splitlines()
    (tmp_path / "nan.csv").write_text("\n".join([header, "nan," + first.split(",", 1)[1], *rest]))
    np.savez(tmp_path / "shape.npz", x=np.zeros((4, 12)))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.toml").write_text((folder / "run" / "config.toml").read_text())
    (tmp_path / "empty" / "inference.json").write_text((folder / "run" / "inference.json").read_text())
    cases = [(["predict", run, str(tmp_path / "cols.csv")], "lacks the model's feature column"),
             (["predict", run, str(tmp_path / "nan.csv")], "not a finite number"),
             (["predict", run, str(tmp_path / "shape.npz")], r"shape \(4, 12\); this model takes rows of shape"),
             (["predict", str(tmp_path / "empty"), str(folder / "new.csv")], "holds no final weights"),
             (["predict", str(tmp_path), str(folder / "new.csv")], "is not a run directory"),
             (["evaluate", str(tmp_path / "empty")], "holds no final weights")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("descend: error: ") and len(err.strip().splitlines()) == 1
        assert re.search(message, err), err
    with pytest.raises(ds.UserError, match="NaN or infinite"):
        ds.load_run(run).predict(np.full((2, 13), np.nan))


def _edited(run: Path, folder: Path, name: str, file: str, change) -> str:
    """A copy of ``run`` with ``file`` changed by ``change`` (the parsed JSON in, the new text or value out)."""
    copy = folder / name
    shutil.copytree(run, copy)
    path = copy / file
    new = change(json.loads(path.read_text()) if file.endswith(".json") else path.read_text())
    path.write_text(new if isinstance(new, str) else json.dumps(new))
    return str(copy)


EDITS = {  # an edited run file -> what the one message says
    "field missing": ("inference.json", lambda r: {k: v for k, v in r.items() if k != "input_shape"},
                      "input_shape must be a non-empty list of integers >= 1, got None"),
    "not an object": ("inference.json", lambda r: [1, 2], "holds a JSON list, not an object"),
    "task unknown": ("inference.json", lambda r: {**r, "task": "ranking"}, "task must be one of classification"),
    "labels of another count": ("inference.json", lambda r: {**r, "labels": ["a"]}, "labels names 1 classes"),
    "labels twice": ("inference.json", lambda r: {**r, "labels": ["a", "a", "b"]}, "a list of distinct strings"),
    "outputs of another count": ("inference.json", lambda r: {**r, "num_outputs": 5}, "cannot have 5 outputs"),
    "feature names of a type": ("inference.json", lambda r: {**r, "feature_names": 7}, "feature_names must be"),
    "feature names of another count": ("inference.json", lambda r: {**r, "feature_names": ["a"]},
                                       "feature_names names 1 columns"),
    "scaling of another shape": ("inference.json", lambda r: {**r, "scaler": {**r["scaler"], "shift": [0.0]}},
                                 "saved feature scaling must hold finite statistics of shape (13,)"),
    "scaling by zero": ("inference.json", lambda r: {**r, "scaler": {**r["scaler"], "scale": [0.0] * 13}},
                        "scale > 0"),
    "not JSON": ("inference.json", lambda r: "{", "cannot read the inference record"),
    "deep JSON": ("inference.json", lambda r: "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "metrics line": ("metrics.jsonl", lambda text: text + "{oops\n", "line 4 is not a JSON object"),
    "summary a list": ("summary.json", lambda r: [r], "summary"),
}


@pytest.mark.parametrize("case", EDITS)
def test_an_edited_run_file_is_one_message_for_predict_evaluate_and_report(wine_run, tmp_path, capsys, case):
    folder = wine_run[0]
    file, change, message = EDITS[case]
    run = _edited(folder / "run", tmp_path, "edited", file, change)
    commands = [["predict", run, str(folder / "new.csv")], ["evaluate", run]]
    commands += [["report", run]] if file != "inference.json" else []
    for argv in commands:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("descend: error: ") and len(err.splitlines()) == 1 and message in err, (argv, err)


@pytest.fixture(scope="module")
def numeric_runs(tmp_path_factory):
    """Runs on data with labels 0..K-1 (iris) and on a regression (diabetes)."""
    folder = tmp_path_factory.mktemp("numeric")
    for name in ("iris", "diabetes"):
        raw = {"data": {"name": name}, "model": {"hidden": [4]}, "train": {"epochs": 1, "device": "cpu"}}
        experiment.build(config.validate(raw)).fit(out=folder / name)
    return folder


@pytest.mark.parametrize(("run", "y", "message"), [
    ("iris", [0, 1.5, 2], "whole numbers 0..K-1, got 1.5"),
    ("iris", [0, 1, 7], "labels must be in [0, 2], got 7"),
    ("iris", [0, 1, np.nan], "1 NaN or infinite values"),
    ("iris", ["a", "b", "c"], "are text, but"),
    ("iris", [0, 1], "has 3 inputs but 2 targets"),
    ("iris", np.zeros((3, 2), dtype=int), "labels must be one column"),
    ("diabetes", [1.0, np.inf, 2.0], "1 NaN or infinite values"),
    ("diabetes", ["a", "b", "c"], "must hold real numbers"),
    ("diabetes", [1.0, 2.0], "has 3 inputs but 2 targets"),
    ("diabetes", [1.0, 1e39, 2.0], "beyond float32's range"),
])
def test_labelled_data_to_evaluate_on_is_checked_as_training_data_is(numeric_runs, tmp_path, capsys, run, y,
                                                                    message):
    width = 4 if run == "iris" else 10
    np.savez(tmp_path / "labelled.npz", x=np.zeros((3, width)), y=np.asarray(y))
    assert main(["evaluate", str(numeric_runs / run), "--data", str(tmp_path / "labelled.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("descend: error: ") and len(err.splitlines()) == 1 and message in err, err


@pytest.mark.parametrize(("x", "message"), [
    (np.array([["1.0"] * 13]), "must be real numbers, got values of type <U3"),
    (np.zeros((2, 13), dtype=complex), "must be real numbers, got values of type complex128"),
    (np.zeros((0, 13)), "no rows to predict on"),
])
def test_npz_inputs_that_are_not_real_numbers_or_hold_no_rows_are_refused(wine_run, tmp_path, x, message):
    np.savez(tmp_path / "x.npz", x=x)
    with pytest.raises(ds.UserError, match=re.escape(message)):
        ds.load_run(wine_run[0] / "run").predict(tmp_path / "x.npz")


def test_a_header_holding_a_line_break_still_gives_a_one_line_error(wine_run, tmp_path, capsys):
    (tmp_path / "odd.csv").write_text('"alco\nhol",b\n1,2\n')
    assert main(["predict", str(wine_run[0] / "run"), str(tmp_path / "odd.csv")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "its columns: alco hol, b" in err, err


def test_options_that_do_not_apply_to_the_run_are_one_message(numeric_runs, tmp_path, capsys):
    """--proba on a regression (was a TypeError), and a headerless CSV for a model that reads named columns (was a
    ValueError): each refused with one line, before any prediction is written."""
    rows = tmp_path / "rows.csv"
    np.savetxt(rows, np.random.default_rng(0).random((3, 10)), delimiter=",")
    out = tmp_path / "preds.csv"
    cases = [(["predict", str(numeric_runs / "diabetes"), str(rows), "--proba", "--out", str(out)],
              r"--proba \(class probabilities\) is for classifiers; .* learned a regression task"),
             (["predict", str(numeric_runs / "iris"), str(rows), "--out", str(out)],
              "has 10 columns and no header; the model reads the 4 columns sepal length")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("descend: error: ") and len(err.strip().splitlines()) == 1 and re.search(message, err)
        assert not out.exists()
    assert main(["predict", str(numeric_runs / "diabetes"), str(rows)]) == 0  # the same rows, without --proba
