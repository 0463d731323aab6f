"""Shared set-up of the descend.data tests (a pytest plugin of conftest.py): an isolated environment, and data
files written independently of descend's readers."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def mnist1d_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def isolated_data_env(monkeypatch, tmp_path, mnist1d_cache):
    """No test reads the user's DESCEND_* settings or writes outside its temp folders (a data test module asks
    for it with ``pytestmark = pytest.mark.usefixtures("isolated_data_env")``)."""
    monkeypatch.setenv("DESCEND_CACHE", str(mnist1d_cache))
    monkeypatch.delenv("DESCEND_DATA", raising=False)
    monkeypatch.delenv("DESCEND_DOWNLOAD", raising=False)
    monkeypatch.chdir(tmp_path)


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file as the format defines it (written here independently of descend's reader)."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}[array.dtype]
    payload = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    payload += array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(payload)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
