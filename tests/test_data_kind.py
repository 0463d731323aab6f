"""What a sample is (DatasetInfo.kind: image, signal or tabular), and the augmentation that follows from it:
flips, crops, shifts and rotations reorder axes, so they are refused on tabular rows before anything is written."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

import descend.data as dd
from descend.cli import main
from descend.data import augment
from descend.errors import UserError


@pytest.fixture(autouse=True)
def _cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DESCEND_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize(("name", "options", "kind"), [
    ("iris", {}, "tabular"), ("diabetes", {}, "tabular"), ("sine", {}, "tabular"),
    ("mnist1d", {"num_samples": 100, "cache": False}, "signal"),
])
def test_builtin_data_says_what_a_sample_is(name, options, kind):
    assert dd.load(name, **options).info.kind == kind


@pytest.mark.parametrize(("shape", "given", "kind"), [
    ((30, 5), None, "tabular"), ((30, 2, 16), None, "signal"), ((30, 1, 8, 8), None, "image"),
    ((30, 16), "signal", "signal"), ((30, 1, 8, 8), "tabular", "tabular"),
])
def test_npz_kind_by_shape_or_as_given(tmp_path, shape, given, kind):
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).normal(size=shape).astype(np.float32),
             y=np.arange(shape[0]) % 3)
    options = {"kind": given} if given else {}
    assert dd.load(str(tmp_path / "d.npz"), **options).info.kind == kind


def test_csv_is_tabular(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,y\n" + "".join(f"{i},{i % 7},{i % 2}\n" for i in range(20)))
    assert dd.load(str(tmp_path / "t.csv")).info.kind == "tabular"


@pytest.mark.parametrize("options", [{"hflip": 0.5}, {"hflip": True}, {"shift": 2}, {"scale": 0.1},
                                     {"crop_padding": 1}, {"rotation": 5.0}, {"vflip": 0.5}])
def test_ordered_augmentations_are_refused_on_tabular_data(options):
    made = augment.create(kind="tabular", **options)
    with pytest.raises(UserError, match=rf"option {next(iter(options))} reorders .* this data is tabular"):
        made.check((8, 5))


def test_noise_is_allowed_on_tabular_data_and_flips_on_signals():
    augment.create(kind="tabular", noise_std=0.1).check((8, 5))
    made = augment.create(kind="signal", hflip=0.5, shift=2)
    made.check((8, 40))
    assert made(torch.zeros(8, 40), torch.Generator().manual_seed(0)).shape == (8, 40)


RECIPE = """
[data]
name = "{data}"
{data_options}
[model]
name = "mlp"
hidden = [4]
[train]
epochs = 1
device = "cpu"
[augment]
{augment}
"""


@pytest.mark.parametrize(("data", "augment_text", "code"), [
    ("iris", "hflip = 0.5", 2), ("wine", "shift = 3", 2), ("sine", "rotation = 10.0", 2),
    ("iris", "noise_std = 0.05", 0), ("mnist1d", "shift = 3\nhflip = 0.5", 0),
])
def test_the_command_refuses_them_before_writing(tmp_path, capsys, data, augment_text, code):
    path = tmp_path / "r.toml"
    options = "num_samples = 60\ncache = false" if data == "mnist1d" else ""
    path.write_text(RECIPE.format(data=data, data_options=options, augment=augment_text))
    out = tmp_path / "run"
    digits_flipped = "hflip" in augment_text and data == "mnist1d"
    with pytest.warns(UserWarning, match="flips are enabled") if digits_flipped else contextlib.nullcontext():
        assert main(["run", str(path), "--out", str(out), "--quiet"]) == code
    err = capsys.readouterr().err
    if code == 2:
        assert err.startswith("descend: error: augmentation option") and "tabular" in err
        assert not out.exists()
    else:
        assert (out / "summary.json").is_file()
