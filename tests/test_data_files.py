"""descend.data on user files (CSV, NPZ, IDX) and every bad input: one UserError each, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import descend.data as dd
from datafiles import write_csv, write_idx
from descend.data import registry
from descend.data.files import read_idx
from descend.errors import UserError

pytestmark = pytest.mark.usefixtures("isolated_data_env")


# --- user files ------------------------------------------------------------------------------------------


def test_csv_with_header_target_and_feature_choice(tmp_path):
    path = write_csv(
        tmp_path / "d.csv", "a,b,label,c\n" + "".join(f"{i},{i * 2},{i % 3},{-i}\n" for i in range(30))
    )
    b = dd.load(
        str(path), target="label", features=["c", "a"], scale="none", test_fraction=0.0, val_fraction=0.0
    )
    assert b.info.task == "classification" and b.info.num_classes == 3
    assert b.info.feature_names == ["c", "a"]
    np.testing.assert_array_equal(b.train.x.numpy(), np.stack([-np.arange(30), np.arange(30)], 1))
    np.testing.assert_array_equal(b.train.y.numpy(), np.arange(30) % 3)


def test_csv_without_header_default_last_column_regression(tmp_path):
    path = write_csv(tmp_path / "r.csv", "".join(f"{i},{i / 7:.6f}\n" for i in range(20)))
    b = dd.load(str(path), scale="none")
    assert b.info.task == "regression" and b.train.y.shape[1] == 1 and b.info.sizes["test"] == 4
    b2 = dd.load(str(path), target=0, task="regression", scale="none", target_scale="none",
                 test_fraction=0.0, val_fraction=0.0)
    np.testing.assert_array_equal(b2.train.y[:, 0].numpy(), np.arange(20))


def test_npz_with_own_test_split(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "d.npz",
        x=rng.normal(size=(50, 3)),
        y=np.arange(50) % 2,
        x_test=rng.normal(size=(8, 3)),
        y_test=np.arange(8) % 2,
    )
    b = dd.load(str(tmp_path / "d.npz"))
    assert b.info.sizes == {"train": 45, "val": 5, "test": 8} and b.info.task == "classification"
    np.savez(tmp_path / "k.npz", inputs=rng.normal(size=(20, 2)), out=rng.normal(size=(20, 2)))
    r = dd.load(str(tmp_path / "k.npz"), x_key="inputs", y_key="out")
    assert r.info.task == "regression" and r.info.num_outputs == 2


def test_idx_reader_round_trip(tmp_path):
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    write_idx(tmp_path / "a.idx", a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), a)
    f = np.linspace(0, 1, 6, dtype=np.float32)
    write_idx(tmp_path / "f.idx.gz", f)
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx.gz"), f)


# --- bad input: one UserError each, nothing written ------------------------------------------------------


def _nothing_written(folder: Path, before: set[str]) -> None:
    assert {p.name for p in folder.iterdir()} == before


def test_unknown_dataset_lists_valid_names(tmp_path):
    with pytest.raises(UserError) as e:
        dd.load("mnist2d")
    assert "'mnist2d'" in str(e.value) and all(n in str(e.value) for n in registry.REGISTRY)
    _nothing_written(tmp_path, set())


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found: .*nope.csv"):
        dd.load(str(tmp_path / "nope.csv"))
    with pytest.raises(UserError, match="not found"):
        dd.load(str(tmp_path / "nope.npz"))
    with pytest.raises(UserError, match="not found"):
        dd.load(str(tmp_path / "nope-images-idx3-ubyte.gz"))


@pytest.mark.parametrize(
    "cell, why",
    [
        ("inf", "row 3, column 'b': .*not a finite number"),
        ("abc", "column 'b' is mostly numbers but holds the text 'abc'"),
    ],
)
def test_csv_bad_cells(tmp_path, cell, why):
    path = write_csv(tmp_path / "bad.csv", f"a,b,y\n1,2,0\n3,{cell},1\n5,6,0\n")
    before = {p.name for p in tmp_path.iterdir()}
    with pytest.raises(UserError, match=why):
        dd.load(str(path))
    _nothing_written(tmp_path, before)


@pytest.mark.parametrize("cell", ["nan", "NaN", "", "NA"])
def test_csv_missing_cells_are_imputed_or_refused(tmp_path, cell):
    rows = "".join(f"{i},{cell if i == 3 else i % 5},{i % 2}\n" for i in range(40))
    path = write_csv(tmp_path / "gaps.csv", "a,b,y\n" + rows)
    assert dd.load(str(path)).info.table.names == ["a", "b", "b=missing"]
    with pytest.raises(UserError, match="column 'b' has 1 missing cell .* missing = \"impute\""):
        dd.load(str(path), missing="refuse")


@pytest.mark.parametrize(
    "labels, extra, match",
    [
        ([0, 1, -1, 2], {}, r"labels must be in \[0, 2\], got -1"),
        ([0, 1, 3, 2], {"num_classes": 3}, r"labels must be in \[0, 2\], got 3"),
        ([0, 1, 0.5, 2], {}, "labels must be whole numbers 0..K-1, got 0.5"),
    ],
)
def test_bad_classification_labels(tmp_path, labels, extra, match):
    rows = "".join(f"{i},{lab}\n" for i, lab in enumerate(labels * 5))
    path = write_csv(tmp_path / "l.csv", "x,y\n" + rows)
    with pytest.raises(UserError, match=match):
        dd.load(str(path), task="classification", **extra)


def test_npz_negative_integer_labels(tmp_path):
    np.savez(tmp_path / "n.npz", x=np.zeros((10, 2)), y=np.arange(10) - 1)
    with pytest.raises(UserError, match="labels must be in"):
        dd.load(str(tmp_path / "n.npz"))


def test_npz_bad_key_and_nan(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((10, 2)), y=np.zeros(10))
    with pytest.raises(UserError, match="no array 'labels'; its arrays: x, y"):
        dd.load(str(tmp_path / "a.npz"), y_key="labels")
    x = np.zeros((10, 2))
    x[3, 1] = np.nan
    np.savez(tmp_path / "b.npz", x=x, y=np.arange(10) % 2)
    with pytest.raises(UserError, match="column 'x1' has 1 missing cell"):
        dd.load(str(tmp_path / "b.npz"), missing="refuse")
    x[3, 1] = np.inf
    np.savez(tmp_path / "b.npz", x=x, y=np.zeros(10))
    with pytest.raises(UserError, match="1 NaN or infinite"):
        dd.load(str(tmp_path / "b.npz"))
    np.savez(
        tmp_path / "c.npz", x=np.zeros((10, 2)), y=np.zeros(10), x_test=np.zeros((3, 5)), y_test=np.zeros(3)
    )
    with pytest.raises(UserError, match=r"inputs test of .* have shape \(3, 5\); need rows of shape \(2,\)"):
        dd.load(str(tmp_path / "c.npz"))
    np.savez(tmp_path / "e.npz", x=np.zeros((0, 2)), y=np.zeros(0))
    with pytest.raises(UserError, match="have no rows"):
        dd.load(str(tmp_path / "e.npz"))


def test_truncated_and_foreign_idx_files(tmp_path):
    write_idx(tmp_path / "t-images-idx3-ubyte", np.zeros((4, 3, 3), dtype=np.uint8))
    raw = (tmp_path / "t-images-idx3-ubyte").read_bytes()
    (tmp_path / "t-images-idx3-ubyte").write_bytes(raw[:-5])
    with pytest.raises(UserError, match="header .* says"):
        dd.load(str(tmp_path / "t-images-idx3-ubyte"))
    (tmp_path / "x.idx").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(UserError, match="not an IDX file"):
        read_idx(tmp_path / "x.idx")
    write_idx(tmp_path / "u-images-idx3-ubyte", np.zeros((4, 3, 3), dtype=np.uint8))
    with pytest.raises(UserError, match="labels file .*not found"):
        dd.load(str(tmp_path / "u-images-idx3-ubyte"))
    write_idx(tmp_path / "plain.idx", np.zeros((4, 3), dtype=np.uint8))
    with pytest.raises(UserError, match="option labels=PATH"):
        dd.load(str(tmp_path / "plain.idx"))
    write_idx(tmp_path / "lab.idx", np.arange(4, dtype=np.uint8))
    assert dd.load(
        str(tmp_path / "plain.idx"), labels=str(tmp_path / "lab.idx"), test_fraction=0.0
    ).info.sizes == {"train": 4, "val": 0, "test": 0}


def test_unknown_and_invalid_options():
    with pytest.raises(
        UserError, match="dataset 'sine': unknown option 'n_trian'; valid options: .*n_train"
    ):
        dd.load("sine", n_trian=5)
    with pytest.raises(UserError, match="valid options: none"):
        dd.load("iris", foo=1)
    with pytest.raises(UserError, match="dataset 'sine': option 'n_train' must be an integer >= 2; got 0"):
        dd.load("sine", n_train=0)
    with pytest.raises(UserError, match="dataset 'sine': option 'noise_std' must be a number >= 0; got -1.0"):
        dd.load("sine", noise_std=-1.0)
    with pytest.raises(UserError, match="data: option 'val_fraction' must be a number in \\[0, 1\\); got 1.0"):
        dd.load("iris", val_fraction=1.0)
    with pytest.raises(UserError, match="data: option 'scale' must be one of 'standardize', 'minmax', 'none'; "
                       "got 'zscore'"):
        dd.load("iris", scale="zscore")
    with pytest.raises(UserError, match="task for dataset 'iris' must be 'classification'"):
        dd.load("iris", task="regression")
    with pytest.raises(UserError, match="target and features choose CSV columns"):
        dd.load("iris", target=0)
    with pytest.raises(UserError, match="data: option 'seed' must be an integer >= 0; got -3"):
        dd.load("iris", seed=-3)


def test_csv_column_errors(tmp_path):
    path = write_csv(tmp_path / "c.csv", "a,b,y\n1,2,0\n3,4,1\n")
    with pytest.raises(UserError, match="target 'z' is not a column of the CSV file; columns: a, b, y"):
        dd.load(str(path), target="z")
    with pytest.raises(UserError, match="features must not contain the target"):
        dd.load(str(path), features=["a", "y"])
    with pytest.raises(UserError, match="column index 7 is out of range"):
        dd.load(str(path), target=7)
    (tmp_path / "data.txt").write_text("1,2\n")
    with pytest.raises(UserError, match="must be .csv, .npz or IDX"):
        dd.load(str(tmp_path / "data.txt"))
