"""descend.data: built-in datasets, the generated sets, splits, seeds, stratification and scaling (user files and
bad input: test_data_files.py)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import descend.data as dd
from datafiles import write_idx
from descend.data import fashion, registry
from descend.data.scaling import Scaler
from descend.data.splits import kfold_indices, split_indices
from descend.errors import UserError

SMALL = ["digits", "breast_cancer", "wine", "iris", "diabetes", "sine", "linear_highdim"]
DEBIAN_FILES = all((fashion.DEBIAN_DIR / (f + ".gz")).is_file() for f in fashion.FILES.values())


pytestmark = pytest.mark.usefixtures("isolated_data_env")



# --- built-in datasets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*SMALL, "mnist1d"])
def test_builtin_shapes_and_sizes(name):
    row = next(r for r in dd.datasets() if r["name"] == name)
    b = dd.load(name)
    assert b.info.sizes == row["sizes"] == {"train": len(b.train), "val": len(b.val), "test": len(b.test)}
    assert b.info.input_shape == row["input_shape"] == tuple(b.train.x.shape[1:])
    for s in (b.train, b.val, b.test):
        assert s.x.dtype == torch.float32 and torch.isfinite(s.x).all()
        if b.info.task == "classification":
            assert s.y.dtype == torch.int64 and s.y.shape == (len(s),)
            assert 0 <= int(s.y.min()) and int(s.y.max()) < b.info.num_classes == row["num_classes"]
        else:
            assert s.y.dtype == torch.float32 and s.y.shape == (len(s), 1)
    assert b.info.num_outputs == (b.info.num_classes or 1)


def test_builtin_sizes_as_published():
    rows = {r["name"]: r for r in dd.datasets()}
    total = {n: sum(r["sizes"].values()) for n, r in rows.items()}
    assert total["digits"] == 1797 and total["breast_cancer"] == 569 and total["wine"] == 178
    assert total["iris"] == 150 and total["diabetes"] == 442 and total["mnist1d"] == 5000
    assert rows["fashion_mnist"]["sizes"]["test"] == 10000 and total["fashion_mnist"] == 70000
    assert rows["sine"]["sizes"]["train"] == 20 and rows["linear_highdim"]["sizes"]["train"] == 20
    assert rows["linear_highdim"]["input_shape"] == (200,) and rows["fashion_mnist"]["input_shape"] == (
        1,
        28,
        28,
    )


def test_datasets_lists_without_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("datasets() must not generate or read data")

    monkeypatch.setattr(registry, "generate_mnist1d", refuse)
    monkeypatch.setattr(fashion, "read_idx", refuse)
    names = [r["name"] for r in dd.datasets()]
    assert names == list(registry.REGISTRY)
    assert all({"name", "task", "input_shape", "sizes", "source"} <= set(r) for r in dd.datasets())


def test_mnist1d_matches_the_package_and_is_cached(mnist1d_cache):
    from mnist1d.data import get_dataset_args, make_dataset

    ref = make_dataset(get_dataset_args())
    assert ref["x"].shape == (4000, 40) and ref["x_test"].shape == (1000, 40)
    assert sorted(set(ref["y"].tolist())) == list(range(10))
    state = np.random.get_state()[1].copy(), random.getstate()
    b = dd.load("mnist1d", scale="none", val_fraction=0.0)
    assert np.array_equal(np.random.get_state()[1], state[0]) and random.getstate() == state[1]
    assert b.val is None and len(b.train) == 4000 and len(b.test) == 1000
    # scale="none", no validation: the package's own split, row for row (float32 of its float64)
    np.testing.assert_array_equal(b.train.x.numpy(), ref["x"].astype(np.float32))
    np.testing.assert_array_equal(b.train.y.numpy(), ref["y"])
    np.testing.assert_array_equal(b.test.x.numpy(), ref["x_test"].astype(np.float32))
    cached = list(mnist1d_cache.glob("mnist1d-*.npz"))
    assert len(cached) == 1 and not list(mnist1d_cache.glob("*.tmp"))
    again = dd.load("mnist1d", scale="none", val_fraction=0.0)
    assert "cached at" in again.info.source and "generated" not in again.info.source
    assert torch.equal(again.train.x, b.train.x) and torch.equal(again.test.y, b.test.y)


def test_mnist1d_damaged_cache_is_regenerated(mnist1d_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("DESCEND_CACHE", str(tmp_path))
    b = dd.load("mnist1d", num_samples=200, data_seed=1)
    (path,) = tmp_path.glob("mnist1d-*.npz")
    path.write_bytes(b"not a zip")
    again = dd.load("mnist1d", num_samples=200, data_seed=1)
    assert "generated" in again.info.source and torch.equal(again.train.x, b.train.x)
    assert sum(b.info.sizes.values()) == 200


def test_test_fraction_pools_the_own_split():
    b = dd.load("mnist1d", test_fraction=0.25, val_fraction=0.2)
    assert b.info.sizes == {"train": 3000, "val": 750, "test": 1250}


@pytest.mark.skipif(not DEBIAN_FILES, reason="Debian package dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_the_debian_files():
    b = dd.load("fashion_mnist", scale="none")
    assert b.info.sizes == {"train": 54000, "val": 6000, "test": 10000}
    assert b.train.x.shape == (54000, 1, 28, 28) and b.info.input_shape == (1, 28, 28)
    assert float(b.train.x.min()) == 0.0 and float(b.train.x.max()) == 1.0  # uint8 / 255
    counts = torch.bincount(b.val.y, minlength=10)
    assert counts.tolist() == [600] * 10  # 6000 per class, stratified 10 % for validation
    assert b.info.class_names[9] == "Ankle boot" and str(fashion.DEBIAN_DIR) in b.info.source


def _tiny_fashion(folder: Path, n: int = 30, n_test: int = 10) -> np.ndarray:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte.gz", images)
    write_idx(folder / "train-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte", images[:n_test])  # uncompressed works too
    write_idx(folder / "t10k-labels-idx1-ubyte", (np.arange(n_test) % 10).astype(np.uint8))
    return images


def test_fashion_mnist_from_path_option_and_descend_data(tmp_path, monkeypatch):
    images = _tiny_fashion(tmp_path / "fashion-mnist")
    b = dd.load("fashion_mnist", path=str(tmp_path / "fashion-mnist"), scale="none", val_fraction=0.0)
    assert b.train.x.shape == (30, 1, 28, 28) and len(b.test) == 10
    np.testing.assert_array_equal(b.train.x.numpy()[:, 0], images.astype(np.float32) / 255)
    monkeypatch.setenv("DESCEND_DATA", str(tmp_path))  # a folder holding fashion-mnist/
    monkeypatch.setattr(fashion, "DEBIAN_DIR", tmp_path / "absent")
    assert len(dd.load("fashion_mnist").test) == 10


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion, "DEBIAN_DIR", tmp_path / "absent")
    cache = tmp_path / "cache"
    monkeypatch.setenv("DESCEND_CACHE", str(cache))
    with pytest.raises(UserError) as e:
        dd.load("fashion_mnist")
    msg = str(e.value)
    assert "sudo apt-get install dataset-fashion-mnist" in msg and "DESCEND_DATA" in msg and "download" in msg
    assert not cache.exists()
    row = next(r for r in dd.datasets() if r["name"] == "fashion_mnist")
    assert "not installed" in row["source"]


@pytest.mark.parametrize("how", ["option", "env"])
def test_fashion_mnist_download_failure_is_one_clean_error(tmp_path, monkeypatch, how):
    monkeypatch.setattr(fashion, "DEBIAN_DIR", tmp_path / "absent")
    monkeypatch.setattr(fashion, "URL", "http://127.0.0.1:9/")  # nothing listens: refused at once
    cache = tmp_path / "cache"
    monkeypatch.setenv("DESCEND_CACHE", str(cache))
    kwargs = {"download": True} if how == "option" else {}
    if how == "env":
        monkeypatch.setenv("DESCEND_DOWNLOAD", "1")
    with pytest.raises(UserError, match="download from http://127.0.0.1:9/ failed.*apt-get install"):
        dd.load("fashion_mnist", **kwargs)
    assert not cache.exists()  # no partial files, no empty folders


# --- the synthetic sets ---------------------------------------------------------------------------------


def test_sine_follows_its_formula():
    b = dd.load("sine", noise_std=0.0, scale="none", target_scale="none", n_train=50)
    x, y = b.train.x[:, 0].double(), b.train.y[:, 0].double()
    assert len(b.train) == 50 and float(x.min()) >= 0.0 and float(x.max()) <= 10.0
    # float32 storage of values up to ~12: 1e-5 absolute is a few ulps
    torch.testing.assert_close(y, x + 2 * torch.sin(1.5 * x), rtol=0, atol=1e-5)


def test_sine_noise_is_sigma_sqrt_0_2_by_default():
    b = dd.load("sine", scale="none", target_scale="none", n_train=20000)
    x, y = b.train.x[:, 0].double(), b.train.y[:, 0].double()
    resid = y - (x + 2 * torch.sin(1.5 * x))
    # the sample std of 20000 normals has std σ/√(2n) ≈ 0.0022; 0.01 is > 4 of those
    assert abs(float(resid.std()) - math.sqrt(0.2)) < 0.01
    other = dd.load("sine", scale="none", target_scale="none", n_train=20000, noise_std=0.2)
    r2 = other.train.y[:, 0].double() - (
        other.train.x[:, 0].double() + 2 * torch.sin(1.5 * other.train.x[:, 0])
    )
    assert abs(float(r2.std()) - 0.2) < 0.01


def test_linear_highdim_follows_its_formula():
    b = dd.load("linear_highdim", noise_std=0.0, scale="none", target_scale="none")
    assert b.info.sizes == {"train": 20, "val": 2, "test": 100} and b.train.x.shape == (20, 200)
    expect = 0.05 + 0.01 * b.train.x.double().sum(dim=1, keepdim=True)
    torch.testing.assert_close(b.train.y.double(), expect, rtol=0, atol=1e-6)  # float32 of values ~0.1
    noisy = dd.load("linear_highdim", scale="none", target_scale="none", n_train=5000, d=5)
    resid = noisy.train.y.double() - (0.05 + 0.01 * noisy.train.x.double().sum(dim=1, keepdim=True))
    assert noisy.train.x.shape == (5000, 5) and abs(float(resid.std()) - 0.01) < 0.0005  # σ/√(2n)=1e-4


def test_generated_sets_keep_test_points_when_n_train_changes():
    a, b = dd.load("sine", n_train=20, scale="none"), dd.load("sine", n_train=40, scale="none")
    assert torch.equal(a.test.x, b.test.x)
    assert not torch.equal(a.train.x, dd.load("sine", n_train=20, scale="none", data_seed=1).train.x)


# --- splits, seeds, stratification, scaling --------------------------------------------------------------


def test_same_seed_same_data_other_seed_other_split():
    a, b, c = dd.load("wine", seed=3), dd.load("wine", seed=3), dd.load("wine", seed=4)
    for s, t in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert torch.equal(s.x, t.x) and torch.equal(s.y, t.y)
    assert not torch.equal(a.test.y, c.test.y) or not torch.equal(a.test.x, c.test.x)


def test_iris_splits_are_exactly_stratified():
    b = dd.load("iris")  # 50 per class: test 10 per class, val 4 per class of the remaining 120
    assert torch.bincount(b.test.y).tolist() == [10, 10, 10]
    assert torch.bincount(b.val.y).tolist() == [4, 4, 4]
    assert torch.bincount(b.train.y).tolist() == [36, 36, 36]


def test_stratified_holdout_keeps_proportions_within_one_row():
    y = np.repeat(np.arange(5), [7, 13, 29, 3, 48])
    for seed in range(5):
        idx = split_indices(y, val_fraction=0.15, test_fraction=0.3, seed=seed, stratify=True)
        everything = np.concatenate(list(idx.values()))
        assert sorted(everything.tolist()) == list(range(len(y)))  # disjoint and complete
        assert len(idx["test"]) == round(0.3 * len(y))
        counts = np.bincount(y[idx["test"]], minlength=5)
        assert np.all(np.abs(counts - 0.3 * np.bincount(y)) < 1)


def test_kfold_partitions_and_stratifies():
    y = np.repeat(np.arange(3), [10, 20, 31])
    folds = kfold_indices(y, 5, seed=0)
    vals = np.concatenate([v for _, v in folds])
    assert sorted(vals.tolist()) == list(range(len(y)))
    for train, val in folds:
        assert set(train.tolist()).isdisjoint(val.tolist()) and len(train) + len(val) == len(y)
        assert np.all(np.abs(np.bincount(y[val], minlength=3) - np.bincount(y) / 5) < 1)
    with pytest.raises(UserError, match="k"):
        kfold_indices(y, 1)


def test_standardize_fits_on_train_only_and_agrees_with_sklearn():
    from sklearn.preprocessing import StandardScaler

    raw = dd.load("breast_cancer", scale="none", seed=1)
    b = dd.load("breast_cancer", scale="standardize", seed=1)
    ref = StandardScaler().fit(raw.train.x.double().numpy())
    # float32 inputs of magnitude up to ~4000: relative 1e-5 is float32 rounding
    np.testing.assert_allclose(
        b.train.x.numpy(), ref.transform(raw.train.x.double().numpy()), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        b.test.x.numpy(), ref.transform(raw.test.x.double().numpy()), rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(b.info.scaler.transform(raw.val.x), b.val.x)
    torch.testing.assert_close(b.train.x.mean(0), torch.zeros(30), rtol=0, atol=1e-5)
    assert torch.abs(b.test.x.mean(0)).max() > 1e-3  # test statistics played no part in the fit


def test_minmax_maps_the_training_range_onto_unit_interval():
    b = dd.load("wine", scale="minmax")
    torch.testing.assert_close(b.train.x.amin(0), torch.zeros(13), rtol=0, atol=1e-6)
    torch.testing.assert_close(b.train.x.amax(0), torch.ones(13), rtol=0, atol=1e-6)


@pytest.mark.parametrize("scale", ["standardize", "minmax"])
def test_constant_features_give_zeros_not_nan(scale):
    b = dd.load("digits", scale=scale)  # pixel 0 is 0 in every digit
    assert torch.isfinite(b.train.x).all() and torch.isfinite(b.test.x).all()
    assert torch.all(b.train.x[:, 0] == 0)


def test_images_scale_per_channel(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(40, 6, 5), dtype=np.uint8)
    write_idx(tmp_path / "img-images-idx3-ubyte", images)
    write_idx(tmp_path / "img-labels-idx1-ubyte", (np.arange(40) % 4).astype(np.uint8))
    raw = dd.load(str(tmp_path / "img-images-idx3-ubyte"), scale="none")
    b = dd.load(str(tmp_path / "img-images-idx3-ubyte"))
    assert b.info.input_shape == (1, 6, 5) and b.info.num_classes == 4
    assert b.info.scaler.shift.shape == (1, 1, 1)  # one mean and one σ for the single channel
    pixels = raw.train.x.double()
    assert abs(float(b.info.scaler.shift) - float(pixels.mean())) < 1e-6
    assert abs(float(b.info.scaler.scale) - float(pixels.std(correction=0))) < 1e-6
    # uint8 inputs given to the scaler are mapped to [0, 1] first, as the loader does
    torch.testing.assert_close(
        b.info.scaler.transform(torch.from_numpy(images[:3])[:, None]),
        b.info.scaler.transform(torch.from_numpy(images[:3])[:, None] / 255.0),
    )


def test_scaler_state_dict_round_trip():
    s = dd.load("iris").info.scaler
    t = Scaler.from_state_dict(s.state_dict())
    x = torch.randn(5, 4)
    assert torch.equal(t.transform(x), s.transform(x))
    torch.testing.assert_close(s.inverse_transform(s.transform(x)), x)


def test_split_to_subset_len():
    b = dd.load("iris")
    sub = b.train.subset([0, 2, 4])
    assert len(sub) == 3 and torch.equal(sub.y, b.train.y[[0, 2, 4]])
    assert b.train.to("cpu").x is b.train.x
