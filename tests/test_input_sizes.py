"""Inputs too large for memory are refused before they are read, with one message: a CSV file too wide or with
more cells than memory holds, a checkpoint whose tensors (a sparse file of 1 TiB with a consistent header) would
not fit; and the memory limit follows what the process may take (cgroup, ulimit)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from descend import ensemble, load_run, memory
from descend.cli import main
from descend.data import files
from descend.errors import UserError
from descend.train import checkpoint

RECIPE = """
name = "iris"
[data]
name = "iris"
[model]
name = "mlp"
hidden = [4]
[train]
epochs = 1
device = "cpu"
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("sizes")
    (base / "r.toml").write_text(RECIPE)
    assert main(["run", str(base / "r.toml"), "--out", str(base / "run"), "--quiet"]) == 0
    return base / "run"


def _wide_csv(path: Path, cells: int) -> Path:
    with open(path, "w") as f:
        f.write("1," * (cells - 1) + "1\n")
    return path


def test_a_line_wider_than_any_table_is_refused_before_it_is_parsed(run, tmp_path, capsys):
    big = _wide_csv(tmp_path / "big.csv", files.MAX_CSV_COLUMNS + 2)  # 2 MiB of short numbers on one line
    assert main(["predict", str(run), str(big)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("descend: error: CSV file") and "line 1 has more than 1,048,576 cells" in err, err
    assert "Traceback" not in err
    assert main(["evaluate", str(run), "--data", str(big)]) == 2
    assert "more than 1,048,576 cells" in capsys.readouterr().err


def test_the_wide_line_need_not_be_the_first(tmp_path):
    path = tmp_path / "t.csv"
    with open(path, "w") as f:
        f.write("a,b,c\n1,2,3\n" + "4," * files.MAX_CSV_COLUMNS + "5\n")
    with pytest.raises(UserError, match="line 3 has more than"):
        files.read_table(path)


def test_a_table_with_more_cells_than_memory_holds_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    path = tmp_path / "t.csv"
    path.write_text("a,b,c,d,y\n" + "0.5,1,2,3,0\n" * 20_000)  # 100,005 cells: about 7.5 MiB once parsed
    files.read_table(path)
    monkeypatch.setenv("DESCEND_MEMORY_LIMIT", "4M")
    parsed = []
    monkeypatch.setattr(files.csv, "reader", lambda *a, **k: parsed.append(a) or iter(()))
    with pytest.raises(
        UserError,
        match=r"CSV file .* \(20,001 lines, up to 100,005 cells\) needs about .* MiB, "
        r"more than the memory limit of 4.0 MiB",
    ):
        files.read_csv(path)
    assert parsed == []


def _sparse_checkpoint(path: Path, nbytes: int) -> Path:
    """A safetensors file whose header declares one uint8 tensor of ``nbytes``, the data a hole in the file."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [nbytes], "data_offsets": [0, nbytes]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + nbytes)
    return path


def test_a_sparse_terabyte_checkpoint_is_refused_before_it_is_read(tmp_path):
    path = _sparse_checkpoint(tmp_path / "huge.safetensors", 1 << 40)
    for load in (checkpoint.load, lambda p: checkpoint.load_weights(torch.nn.Linear(2, 2), p)):
        with pytest.raises(
            UserError,
            match=r"checkpoint file .* \(1,099,511,627,776 bytes of tensors\) needs about "
            r"1.0 TiB, more than the memory limit",
        ):
            load(path)


def test_the_limit_of_a_checkpoint_is_the_memory_limit(tmp_path, monkeypatch):
    path = _sparse_checkpoint(tmp_path / "small.safetensors", 3 << 20)
    with pytest.raises(checkpoint.CheckpointError, match="not a descend checkpoint"):  # read: it fits
        checkpoint.load(path)
    monkeypatch.setenv("DESCEND_MEMORY_LIMIT", "2M")
    with pytest.raises(UserError, match="3.0 MiB, more than the memory limit of 2.0 MiB"):
        checkpoint.load(path)


def test_the_memory_limit_follows_the_process_s_address_space_limit():
    soft = 3 << 30  # a ulimit -v of 3 GiB, set in a child process only
    code = (
        "import resource\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({soft}, resource.getrlimit(resource.RLIMIT_AS)[1]))\n"
        "from descend.memory import memory_limit; print(memory_limit())"
    )
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    if hard != resource.RLIM_INFINITY and hard < soft:
        pytest.skip("this process's hard address-space limit is below 3 GiB")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    env.pop("DESCEND_MEMORY_LIMIT", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert int(out.stdout) == min(soft, memory.memory_limit()), out.stderr


def test_a_recipe_file_larger_than_any_recipe_is_refused_before_it_is_read(tmp_path, capsys):
    path = tmp_path / "huge.toml"
    with open(path, "wb") as f:
        f.truncate((16 << 20) + 1)  # sparse: no disk used
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "has 16,777,217 bytes; a recipe holds at most 16,777,216" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["summary.json", "metrics.jsonl", "inference.json"])
def test_a_run_s_json_file_too_large_for_memory_is_refused_before_it_is_read(run, tmp_path, name):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    with open(copy / name, "wb") as f:
        f.truncate(1 << 40)  # sparse: a terabyte of nothing
    with pytest.raises(UserError, match=rf"{name}' \(1,099,511,627,776 bytes\) needs about 16.0 TiB"):
        load_run(copy)


def test_an_ensemble_manifest_too_large_for_memory_is_refused_before_it_is_read(tmp_path):
    with open(tmp_path / "ensemble.json", "wb") as f:
        f.truncate(1 << 40)
    with pytest.raises(UserError, match=r"ensemble.json' \(1,099,511,627,776 bytes\) needs about 16.0 TiB"):
        ensemble.load(tmp_path)
