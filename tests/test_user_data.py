"""Data from the user's own code: (x, y), a torch Dataset, or named splits, split, scaled and checked as descend's
own data; and a recipe's ``[data] name = "file.py:loader"`` read from the recipe's folder."""

import warnings

import numpy as np
import pytest
import torch

from descend import config as cfg
from descend import data as datasets
from descend.errors import UserError
from descend.runs import experiment

LOADER = """
import warnings

import numpy as np
import torch

def table(n=120, noise=0.1):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3))
    return x, x @ np.array([1.0, -2.0, 0.5]) + noise * rng.normal(size=n)

def splits():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 2))
    y = np.where(x[:, 0] > 0, "yes", "no")
    return {"train": (x[:60], y[:60]), "val": (x[60:75], y[60:75]), "test": (x[75:], y[75:])}

def broken():
    raise ValueError("no such table")
"""


def _xy(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    return x, (x[:, 0] > 0).astype(np.int64)


class Pairs(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_pairs_split_and_scale_as_builtin_data():
    x, y = _xy()
    bundle = datasets.from_user((x, y), val_fraction=0.1, test_fraction=0.2, seed=3)
    assert bundle.info.task == "classification" and bundle.info.num_classes == 2
    assert bundle.info.sizes == {"train": 144, "val": 16, "test": 40}
    # scaled on the training split only: its columns have mean 0 and (population) std 1
    assert torch.allclose(bundle.train.x.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(bundle.train.x.std(0, unbiased=False), torch.ones(3), atol=1e-5)


def test_dataset_is_materialised_like_arrays():
    x, y = _xy()
    a = datasets.from_user((x.astype(np.float32), y), seed=1)
    b = datasets.from_user(Pairs(x, y), seed=1)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.train.y, b.train.y)


def test_named_splits_are_kept_and_text_labels_encoded():
    x, y = _xy(90)
    words = np.array(["no", "yes"])[y]
    bundle = datasets.from_user({"train": (x[:60], words[:60]), "val": (x[60:75], words[60:75])}, test_fraction=0.25)
    assert bundle.info.labels == ["no", "yes"]
    assert bundle.info.sizes == {"train": 45, "val": 15, "test": 15}
    assert torch.equal(bundle.val.y, torch.as_tensor(y[60:75]))


@pytest.mark.parametrize(
    "data, message",
    [
        ((np.zeros((4, 2)), np.zeros(3)), "4 inputs but 3 targets"),
        ([np.zeros((4, 2))], "must be (x, y) arrays"),
        ({"training": (np.zeros((4, 2)), np.zeros(4))}, "a dict of splits has keys 'train'"),
        ((np.array([[1.0, np.inf]] * 4), np.zeros(4)), "NaN or infinite"),
        (torch.utils.data.TensorDataset(torch.zeros(4, 2)), "(x, y) pairs"),
        ({"train": _xy(20), "val": (np.zeros((5, 4)), np.zeros(5))}, "shape (4,)"),
    ],
)
def test_bad_data_is_one_clear_error(data, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        datasets.from_user(data)


def test_iterable_dataset_is_refused():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield torch.zeros(2), 0

    with pytest.raises(UserError, match="without a length"):
        datasets.from_user(Stream())


def test_dataset_too_large_for_memory_is_refused(monkeypatch):
    monkeypatch.setenv("DESCEND_MEMORY_LIMIT", "1K")
    x, y = _xy(100)
    with pytest.raises(UserError, match="memory limit"):
        datasets.from_user(Pairs(x, y))


def _recipe(tmp_path, data: str) -> cfg.Config:
    (tmp_path / "loaders.py").write_text(LOADER)
    sub = tmp_path / "recipes"
    sub.mkdir(exist_ok=True)
    path = sub / "r.toml"
    path.write_text(f"[data]\n{data}\n[train]\nepochs = 1\n")
    return cfg.load(path)


def test_recipe_loader_by_file_relative_to_the_recipe(tmp_path):
    config = _recipe(tmp_path, 'name = "../loaders.py:table"\nn = 150')
    assert config.data.name == f"{tmp_path / 'loaders.py'}:table"  # recorded in the run as an absolute reference
    bundle = experiment.load_data(config)
    assert bundle.info.task == "regression" and sum(bundle.info.sizes.values()) == 150
    assert bundle.info.source.startswith("data loader")


def test_recipe_loader_returning_named_splits(tmp_path):
    bundle = experiment.load_data(_recipe(tmp_path, 'name = "../loaders.py:splits"'))
    assert bundle.info.sizes == {"train": 60, "val": 15, "test": 15} and bundle.info.labels == ["no", "yes"]


@pytest.mark.parametrize(
    "data, message",
    [
        ('name = "../loaders.py:table"\nrows = 5', "takes no argument 'rows'"),
        ('name = "../loaders.py:broken"', "failed: ValueError: no such table"),
        ('name = "../loaders.py:missing"', "has no 'missing'"),
        ('name = "../loaders.py:table"\ntarget = "y"', "target and features choose CSV columns"),
    ],
)
def test_recipe_loader_mistakes_name_the_loader(tmp_path, data, message):
    config = _recipe(tmp_path, data)
    with pytest.raises(UserError, match=message) as error:
        experiment.load_data(config)
    assert str(error.value).startswith("[data]")


def test_many_whole_number_classes_announce_the_inferred_task():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(400, 2)), rng.integers(0, 50, 400)
    with pytest.warns(UserWarning, match='task = "classification" inferred .* 50 classes; .* task = "regression"'):
        assert datasets.from_user((x, y)).info.task == "classification"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert datasets.from_user((x, y), task="regression").info.task == "regression"
        assert datasets.from_user((x, y % 3)).info.num_classes == 3
