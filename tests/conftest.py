"""Shared test set-up: two CPU threads (the CI machine has two cores), and no stray network use."""

import _pickle
import os
import pickle
import sys

import pytest
import torch

torch.set_num_threads(2)
os.environ.setdefault("MPLBACKEND", "Agg")

pytest_plugins = ["datafiles"]  # fixtures of the data tests

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


@pytest.fixture
def fashion_mnist_dir():
    """The Debian package's Fashion-MNIST files; tests that need them skip where the package is absent."""
    if not os.path.exists(os.path.join(FASHION_MNIST, "train-images-idx3-ubyte.gz")):
        pytest.skip("dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    return FASHION_MNIST


_UNPICKLING_FORBIDDEN = []


def _audit(event, args):
    if _UNPICKLING_FORBIDDEN and event == "pickle.find_class":  # any unpickler resolving a class or function
        raise AssertionError(f"unpickling tried to load {args}")


sys.addaudithook(_audit)


@pytest.fixture
def no_unpickling(monkeypatch):
    """Loading must never unpickle: the unpickling entry points fail the test if they are reached."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    for module in (pickle, _pickle):
        for name in ("load", "loads"):
            monkeypatch.setattr(module, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    _UNPICKLING_FORBIDDEN.append(True)
    yield
    _UNPICKLING_FORBIDDEN.clear()


@pytest.fixture(autouse=True)
def _threads_left_as_found():
    """descend restores torch's thread count after every fit, whatever ends it: a test that leaves another count
    fails (and the count is put back so the tests after it are not changed by it)."""
    before = torch.get_num_threads()
    yield
    after = torch.get_num_threads()
    if after != before:
        torch.set_num_threads(before)
        pytest.fail(f"torch's thread count was left at {after} (it was {before})")
