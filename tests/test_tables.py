"""Tables as people have them: text columns one-hot encoded (a cap and an "other" level), missing cells imputed
from the training split with an indicator column (or refused), all fitted on the training split, saved in the run
and applied to raw rows at prediction."""

import json

import numpy as np
import pytest

from descend import config as cfg
from descend import data as datasets
from descend.data.tables import MAX_LEVELS, TableEncoder
from descend.errors import UserError
from descend.runs import execute
from descend.runs.loaded import load_run


def test_numbers_with_missing_cells_are_imputed_with_the_training_median_and_flagged():
    train = np.array([["1.0", "a"], ["", "b"], ["3.0", "a"], ["NA", "a"]], dtype=object)
    enc = TableEncoder.fit(train, ["size", "kind"])
    assert enc.names == ["size", "size=missing", "kind=a", "kind=b"]
    out = enc.transform(np.array([["", "b"], ["5", "zzz"]], dtype=object))
    # median of 1 and 3 is 2; an unseen level with no "other" column is all zeros
    assert out.tolist() == [[2.0, 1.0, 0.0, 1.0], [5.0, 0.0, 0.0, 0.0]]
    again = TableEncoder.from_json(json.loads(json.dumps(enc.to_json())))
    assert np.array_equal(again.transform(train), enc.transform(train))


def test_many_levels_keep_the_most_frequent_and_share_other():
    levels = [f"l{i:02d}" for i in range(30)]
    cells = [lv for i, lv in enumerate(levels) for _ in range(30 - i)]  # l00 most frequent, l29 least
    enc = TableEncoder.fit(np.array(cells, dtype=object)[:, None], ["city"])
    assert enc.width == MAX_LEVELS
    assert enc.names[: MAX_LEVELS - 1] == [f"city={lv}" for lv in levels[: MAX_LEVELS - 1]]
    assert enc.names[-1] == "city=other"
    out = enc.transform(np.array([["l29"], ["never seen"], ["l00"]], dtype=object))
    assert out[:, -1].tolist() == [1.0, 1.0, 0.0] and out[2, 0] == 1.0 and out.sum() == 3


def test_missing_text_is_its_own_level():
    enc = TableEncoder.fit(np.array([["x"], [None], ["y"], ["x"]], dtype=object), ["c"])
    assert enc.names == ["c=x", "c=(missing)", "c=y"]


@pytest.mark.parametrize(
    "cells, message",
    [
        ([["1"], ["2"], ["oops"], ["4"]], "mostly numbers but holds the text 'oops'"),
        ([["1"], ["inf"], ["3"]], "infinite"),
    ],
)
def test_bad_cells_are_named(cells, message):
    with pytest.raises(UserError, match=message):
        TableEncoder.fit(np.array(cells, dtype=object), ["n"])


def test_refuse_names_the_missing_cell():
    with pytest.raises(UserError, match=r"column 'n' has 1 missing cell .* missing = \"impute\""):
        TableEncoder.fit(np.array([["1"], [""]], dtype=object), ["n"], missing="refuse")


def _shop(path, n=300, seed=0, blanks=True):
    rng = np.random.default_rng(seed)
    size, color = rng.normal(size=n), rng.choice(["red", "green", "blue"], n)
    age = rng.normal(40, 10, n)
    label = (size + 2 * (color == "red") - (color == "blue") > 0.5).astype(int)
    lines = ["size,color,age,label"]
    for i in range(n):
        a = "" if blanks and i % 10 == 3 else f"{age[i]:.1f}"
        c = "" if blanks and i % 20 == 7 else color[i]
        lines.append(f"{size[i]:.3f},{c},{a},{['no', 'yes'][label[i]]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_csv_table_is_encoded_on_the_training_split(tmp_path):
    bundle = datasets.load(str(_shop(tmp_path / "shop.csv")), seed=1)
    table = bundle.info.table
    assert table is not None and bundle.info.feature_names == ["size", "color", "age"]
    assert {"color=red", "color=green", "color=blue", "color=(missing)", "age", "age=missing"} <= set(table.names)
    assert bundle.info.input_shape == (table.width,)
    with pytest.raises(UserError, match="missing"):
        datasets.load(str(tmp_path / "shop.csv"), missing="refuse")


def test_a_dataframe_with_text_and_missing_values_from_python():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"size": rng.normal(size=200), "color": rng.choice(["red", "blue"], 200)})
    frame.loc[::10, "size"] = np.nan
    bundle = datasets.from_user((frame, (frame["color"] == "red").astype(int)))
    assert bundle.info.table.names == ["size", "size=missing", "color=blue", "color=red"]
    assert not bundle.train.x.isnan().any()


def test_a_run_on_a_table_predicts_and_evaluates_raw_rows(tmp_path):
    path = _shop(tmp_path / "shop.csv")
    config = cfg.validate({"data": {"name": str(path)}, "train": {"epochs": 20}, "name": "shop"})
    summary = execute.run(config, tmp_path / "run", quiet=True)
    assert summary["final"]["test_accuracy"] > 0.8
    run = load_run(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "inference.json").read_text())["table"]["missing"] == "impute"
    rows = _shop(tmp_path / "new.csv", n=40, seed=5)
    predicted = run.predict(rows)
    truth = np.loadtxt(rows, delimiter=",", skiprows=1, usecols=3, dtype=str)
    assert set(predicted) <= {"no", "yes"} and np.mean(predicted == truth) > 0.7
    assert run.evaluate()["test_accuracy"] == pytest.approx(summary["final"]["test_accuracy"])
    assert run.evaluate(rows)["test_accuracy"] == pytest.approx(float(np.mean(predicted == truth)))
    with pytest.raises(UserError, match="cannot encode"):
        run.export(tmp_path / "shop.onnx")


def test_the_command_line_refuses_missing_cells_when_asked(tmp_path, capsys):
    from descend.cli import main

    path = _shop(tmp_path / "shop.csv", n=60)
    (tmp_path / "r.toml").write_text(f'[data]\nname = "{path}"\nmissing = "refuse"\n[train]\nepochs = 1\n')
    assert main(["run", str(tmp_path / "r.toml"), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("descend: error: [data]") and "missing cells" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
