"""Checkpoint writes are atomic: a SIGKILL at any moment, inside a write or of a fresh interpreter, and every I/O
error keep the previous checkpoint complete; values that cannot be stored are named and nothing is written."""


from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from descend.train.checkpoint import CheckpointError, load, save

pytestmark = pytest.mark.usefixtures("no_unpickling")  # loading must never unpickle (conftest.py)


# ------------------------------------------------------------------------------------------ atomic writes


def _versioned_states(numel: int) -> list[torch.Tensor]:
    return [torch.full((numel,), float(i)) for i in range(3)]


def _check_complete(path: Path, payloads: list[torch.Tensor]) -> int:
    state = load(path)
    version = state["version"]
    assert state["tag"] == f"v{version}"
    assert torch.equal(state["w"], payloads[version % 3])
    return version


def _fork_writer(path: Path, payloads, first_version: int, sabotage=None) -> int:
    pid = os.fork()
    if pid == 0:  # the child saves forever until it is killed; it never returns into pytest
        try:
            if sabotage:
                sabotage()
            v = first_version
            while True:
                save(path, {"version": v, "tag": f"v{v}", "w": payloads[v % 3]})
                v += 1
        finally:
            os._exit(1)
    return pid


def test_sigkill_at_random_moments_leaves_a_complete_checkpoint(tmp_path):
    path = tmp_path / "last.safetensors"
    payloads = _versioned_states(2_000_000)  # 8 MB per checkpoint
    save(path, {"version": 0, "tag": "v0", "w": payloads[0]})
    draw = random.Random(0)
    seen = {0}
    for k in range(6):
        pid = _fork_writer(path, payloads, first_version=1000 * (k + 1))
        time.sleep(draw.uniform(0.02, 0.3))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        seen.add(_check_complete(path, payloads))
    assert len(seen) > 1  # the writers did publish new versions between kills


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_sigkill_inside_a_write_keeps_the_previous_checkpoint(tmp_path, where):
    path = tmp_path / "last.safetensors"
    payloads = _versioned_states(100_000)
    save(path, {"version": 5, "tag": "v5", "w": payloads[5 % 3]})
    real = {"write": os.write, "fsync": os.fsync, "replace": os.replace}[where]

    def sabotage():
        calls = []

        def die(*args):
            calls.append(1)
            if where != "write" or len(calls) == 2:  # mid-file: after the header, during the tensor bytes
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args)

        setattr(os, where, die)

    pid = _fork_writer(path, payloads, first_version=6, sabotage=sabotage)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert _check_complete(path, payloads) == 5
    leftovers = list(tmp_path.glob(".last.safetensors.*.tmp"))
    assert len(leftovers) == 1  # the killed writer's temporary file ...
    save(path, {"version": 7, "tag": "v7", "w": payloads[7 % 3]})
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))  # ... is cleaned up
    assert _check_complete(path, payloads) == 7


@pytest.mark.slow
def test_sigkill_of_a_fresh_interpreter_many_times_leaves_a_complete_checkpoint(tmp_path):
    path = tmp_path / "last.safetensors"
    payloads = _versioned_states(8_000_000)
    save(path, {"version": 0, "tag": "v0", "w": payloads[0]})
    script = textwrap.dedent(f"""
        import torch
        from descend.train.checkpoint import save
        payloads = [torch.full((8_000_000,), float(i)) for i in range(3)]
        v = 1
        while True:
            save({str(path)!r}, {{"version": v, "tag": f"v{{v}}", "w": payloads[v % 3]}})
            print(v, flush=True)
            v += 1
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    draw = random.Random(1)
    for _ in range(15):
        proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE)
        proc.stdout.readline()  # wait until it has written once, then kill it at a random moment
        time.sleep(draw.uniform(0.0, 0.5))
        proc.kill()
        proc.wait()
        proc.stdout.close()
        _check_complete(path, payloads)


def _failing(real, err: int, after_calls: int = 0):
    calls = []

    def fn(*args):
        calls.append(1)
        if len(calls) > after_calls:
            raise OSError(err, os.strerror(err))
        return real(*args)

    return fn


@pytest.mark.parametrize(
    ("target", "err", "after", "message"),
    [
        ("write", errno.ENOSPC, 1, "disk is full"),
        ("write", errno.EDQUOT, 0, "quota"),
        ("open", errno.EACCES, 0, "permission denied"),
        ("open", errno.EROFS, 0, "read-only"),
        ("fsync", errno.EIO, 0, "Input/output error"),
        ("replace", errno.EXDEV, 0, "cross-device"),
    ],
)
def test_write_errors_keep_the_previous_checkpoint(tmp_path, monkeypatch, target, err, after, message):
    path = tmp_path / "last.safetensors"
    save(path, {"step": 1, "w": torch.zeros(100_000)})
    before = path.read_bytes()
    monkeypatch.setattr(os, target, _failing(getattr(os, target), err, after))
    with pytest.raises(CheckpointError, match=message) as info:
        save(path, {"step": 2, "w": torch.ones(100_000)})
    monkeypatch.undo()
    assert str(path) in str(info.value) and "previous" in str(info.value)
    assert path.read_bytes() == before and load(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]  # no temporary file left


def test_write_into_a_directory_path_or_a_file_as_directory_is_a_clear_error(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(CheckpointError, match="could not write"):
        save(tmp_path / "d", {"x": 1})
    (tmp_path / "f").write_text("")
    with pytest.raises(CheckpointError, match=r"f[/\\]x"):
        save(tmp_path / "f" / "x", {"x": 1})


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"s": {1, 2}}, r"state\['s'\] has type set"),
        ({"a": np.zeros(3)}, r"state\['a'\] has type ndarray"),
        ({"k": {(1, 2): 3}}, r"state\['k'\] has a key \(1, 2\)"),
        ({"k": {True: 3}}, "key True"),
        ({"c": torch.zeros(2, dtype=torch.complex64)}, r"state\['c'\].*complex64"),
        ({"s": torch.zeros(2, 2).to_sparse()}, "sparse"),
        ([1, 2], "must be a dict"),
    ],
)
def test_unsupported_values_are_named_and_nothing_is_written(tmp_path, state, message):
    with pytest.raises(CheckpointError, match=message):
        save(tmp_path / "x.safetensors", state)
    assert not list(tmp_path.iterdir())


def test_too_deep_structures_are_refused_on_save(tmp_path):
    deep: list = []
    for _ in range(300):
        deep = [deep]
    with pytest.raises(CheckpointError, match="deeper"):
        save(tmp_path / "x.safetensors", {"deep": deep})
