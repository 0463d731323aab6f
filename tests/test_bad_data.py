"""Hostile and degenerate data files: each is one UserError naming the file and the problem, refused before a
model is built or a byte more than the header promises is read."""

from __future__ import annotations

import gzip
import struct
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

import descend.data as dd
from descend.data.files import read_idx
from descend.data.scaling import Scaler
from descend.errors import UserError


@pytest.fixture(autouse=True)
def _in_tmp(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DESCEND_MEMORY_LIMIT", raising=False)


def _idx_header(code: int, shape: tuple[int, ...]) -> bytes:
    return struct.pack(">BBBB", 0, 0, code, len(shape)) + struct.pack(f">{len(shape)}i", *shape)


def _csv(path: Path, rows: list[str]) -> str:
    path.write_text("\n".join(["a,b,label", *rows]) + "\n")
    return str(path)


@pytest.mark.parametrize("name", ["a" * 300 + ".csv", "x" * 300 + ".npz", "./" + "b" * 400 + "-ubyte"])
def test_a_path_the_system_refuses_is_one_message(name):
    with pytest.raises(UserError, match="cannot use the path .*File name too long"):
        dd.load(name)


def test_a_labels_path_too_long_is_one_message(tmp_path):
    images = tmp_path / "img-idx3-ubyte"
    images.write_bytes(_idx_header(0x08, (2, 2, 2)) + bytes(8))
    with pytest.raises(UserError, match="File name too long"):
        dd.load(str(images), labels="l" * 300)


@pytest.mark.parametrize("shape", [(-1, 28, 28), (5, -3), (2**31 - 1, -2)])
def test_idx_with_a_negative_size_is_refused(tmp_path, shape):
    path = tmp_path / "neg-idx3-ubyte"
    path.write_bytes(_idx_header(0x08, shape) + bytes(16))
    with pytest.raises(UserError, match=r"negative size in its header"):
        read_idx(path)


def test_a_gzip_idx_that_inflates_past_its_header_is_refused_while_streaming(tmp_path):
    path = tmp_path / "bomb-idx1-ubyte.gz"
    with gzip.open(path, "wb") as f:  # the header says 10 bytes; the stream inflates to 64 MiB
        f.write(_idx_header(0x08, (10,)))
        for _ in range(64):
            f.write(bytes(1 << 20))
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(UserError, match=r"has more than 18 bytes, its header \(10,\) says 18"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"peak {peak} bytes: the file was inflated whole"


def test_an_idx_header_promising_more_than_memory_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setenv("DESCEND_MEMORY_LIMIT", "1M")
    path = tmp_path / "huge-idx3-ubyte"
    path.write_bytes(_idx_header(0x0D, (1000, 100, 100)) + bytes(64))
    with pytest.raises(UserError, match=r"needs about 38.1 MiB, more than the memory limit of 1.0 MiB"):
        read_idx(path)


def test_a_truncated_idx_says_how_many_bytes_it_has(tmp_path):
    path = tmp_path / "short-idx1-ubyte"
    path.write_bytes(_idx_header(0x08, (100,)) + bytes(50))
    with pytest.raises(UserError, match=r"has 58 bytes, its header \(100,\) says 108"):
        read_idx(path)


@pytest.mark.parametrize("shape", [(10, 0), (10, 3, 0)])
def test_npz_with_zero_features_is_refused(tmp_path, shape):
    np.savez(tmp_path / "empty.npz", x=np.zeros(shape, np.float32), y=np.arange(10) % 2)
    with pytest.raises(UserError, match=r"no features to learn from"):
        dd.load(str(tmp_path / "empty.npz"))


@pytest.mark.parametrize("labels", [[0, 1, 10**9], [0, 1, 2, 40]])
def test_a_label_far_above_the_sample_count_is_refused(tmp_path, labels):
    y = np.array(labels * 3, dtype=np.int64)
    np.savez(tmp_path / "wide.npz", x=np.random.default_rng(0).normal(size=(len(y), 2)), y=y)
    with pytest.raises(UserError, match=rf"labels go up to {max(labels)}, which would mean {max(labels) + 1} classes"):
        dd.load(str(tmp_path / "wide.npz"))
    bundle = dd.load(str(tmp_path / "wide.npz"), num_classes=max(labels) + 1) if max(labels) < 100 else None
    assert bundle is None or bundle.info.num_outputs == 41


def test_one_class_only_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"holds only class 0: a classifier needs examples of at least two"):
        dd.load(_csv(tmp_path / "one.csv", [f"{i},{i * 2},0" for i in range(30)]), task="classification")


@pytest.mark.parametrize("rows", [1, 2])
def test_too_few_training_rows_are_refused(tmp_path, rows):
    path = _csv(tmp_path / "few.csv", [f"{i}.5,{i},{i}.25" for i in range(rows)])
    with pytest.raises(UserError, match=r"training needs at least 2"):
        dd.load(path, val_fraction=0.5, test_fraction=0.5 if rows > 1 else None)


def test_sine_needs_two_training_samples():
    with pytest.raises(UserError, match="option 'n_train' must be an integer >= 2; got 1."):
        dd.load("sine", n_train=1)


def test_values_beyond_float32_are_refused_not_turned_infinite(tmp_path):
    x = np.ones((20, 2))
    x[3, 1] = 1e39
    np.savez(tmp_path / "big.npz", x=x, y=np.arange(20) % 2)
    with pytest.raises(UserError, match=r"reach 1e\+39, beyond float32's range"):
        dd.load(str(tmp_path / "big.npz"))
    np.savez(tmp_path / "bigy.npz", x=np.ones((20, 2)), y=np.full(20, 1e40) * np.arange(20))
    with pytest.raises(UserError, match=r"targets of 'bigy.npz' reach .*beyond float32's range"):
        dd.load(str(tmp_path / "bigy.npz"), task="regression")


@pytest.mark.parametrize("kind", ["standardize", "minmax"])
def test_scaling_1e20_values_keeps_them_apart_and_warns(kind):
    x = np.random.default_rng(1).normal(size=(200, 3)) * np.array([1e20, 1e30, 1.0])
    with pytest.warns(UserWarning, match=r"inputs reach .*e\+30"):
        scaler = Scaler.fit(kind, x)
    scaled = scaler.transform(x)
    assert np.isfinite(scaled.numpy()).all()
    spread = scaled.std(0) if kind == "standardize" else scaled.amax(0) - scaled.amin(0)
    assert np.allclose(spread.numpy(), 1.0, atol=0.01)


def test_scaling_warns_where_float32_loses_a_features_variation():
    x = np.random.default_rng(2).normal(size=(100, 2)) * 20 + np.array([1e8, 0.0])
    with pytest.warns(UserWarning, match=r"feature 0 varies by .* around values of 1e\+08"):
        Scaler.fit("standardize", x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Scaler.fit("standardize", np.random.default_rng(3).normal(size=(100, 4)) * 1e6 + 1e7)


@pytest.mark.parametrize(("name", "options"), [("sine", {"n_train": 10**9}), ("linear_highdim", {"d": 10**9}),
                                               ("mnist1d", {"num_samples": 10**10})])
def test_a_generated_set_larger_than_memory_is_refused_before_it_is_made(name, options, monkeypatch):
    monkeypatch.setenv("DESCEND_MEMORY_LIMIT", "4G")
    with pytest.raises(UserError, match=rf"dataset '{name}' with [\d,]+ samples .* more than the memory limit of "
                                        r"4.0 GiB"):
        dd.load(name, **options)


@pytest.mark.parametrize("header", ["a,a,label", ",,label", "a,label,a"])
def test_a_csv_header_naming_a_column_twice_is_refused(tmp_path, header):
    """Columns are chosen and matched by name (target, features, prediction inputs in any order): a second column
    of one name would be silently ignored, and predictions made from the first one twice."""
    (tmp_path / "twice.csv").write_text("\n".join([header, "1,2,0", "3,4,1", "5,6,0", "7,8,1"]) + "\n")
    with pytest.raises(UserError, match="names the column '.*' more than once in its header"):
        dd.load(str(tmp_path / "twice.csv"))


@pytest.mark.parametrize("features", [["a", "a"], ["a", 0], [1, "b"]])
def test_features_naming_a_column_twice_are_refused(tmp_path, features):
    path = _csv(tmp_path / "f.csv", ["1,2,0", "3,4,1", "5,6,0", "7,8,1"])
    with pytest.raises(UserError, match="features names a column more than once"):
        dd.load(path, features=features)


def test_a_compressed_npz_inflating_past_the_memory_limit_is_refused_from_its_header(tmp_path, monkeypatch):
    """64 MiB of zeros compress to about 64 KiB; the array's .npy header says how large it is before it is read."""
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, x=np.zeros((1 << 14, 1 << 10), dtype=np.float32), y=np.zeros(1 << 14, dtype=np.int64))
    assert path.stat().st_size < 1 << 20
    monkeypatch.setenv("DESCEND_MEMORY_LIMIT", "8M")
    tracemalloc.start()
    try:
        with pytest.raises(UserError, match=r"array 'x' of NPZ file .* needs about 64.0 MiB, more than the memory "
                                            r"limit of 8.0 MiB"):
            dd.load(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"peak {peak} bytes: the array was inflated"
