"""A run directory has one owner while it is written: real processes started together, a run still training,
and an owner killed with SIGKILL (the kernel frees its lock; nothing stale is left)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from descend.cli import main
from descend.errors import UserError
from descend.runs import directory as rundir

RECIPE = """
name = "iris"
seed = 0
[data]
name = "iris"
[model]
name = "mlp"
hidden = [8]
[train]
epochs = {epochs}
batch_size = 16
device = "cpu"
deterministic = true
[optimizer]
name = "adam"
lr = 0.01
"""

# Imports descend first, then waits for the go file: the processes start their commands in the same instant.
BARRIER = textwrap.dedent("""
    import os, sys, time
    from descend.cli import main
    print("ready", flush=True)
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.0005)
    sys.exit(main(sys.argv[2:]))
""")
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}


def _recipe(tmp_path: Path, epochs: int) -> str:
    path = tmp_path / f"r{epochs}.toml"
    path.write_text(RECIPE.format(epochs=epochs))
    return str(path)


def _together(tmp_path: Path, commands: list[list[str]]) -> list[subprocess.CompletedProcess]:
    go = tmp_path / f"go-{time.monotonic_ns()}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BARRIER, str(go), *argv],
            env=ENV,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for argv in commands
    ]
    for proc in procs:
        assert proc.stdout.readline() == "ready\n"
    go.touch()
    done = []
    for proc, argv in zip(procs, commands, strict=True):
        out, err = proc.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
    return done


def _race(tmp_path: Path, rounds: int) -> None:
    r = _recipe(tmp_path, 12)
    reference = tmp_path / "reference"
    assert main(["run", r, "--out", str(reference), "--quiet"]) == 0
    for k in range(rounds):
        out = tmp_path / f"run{k}"
        done = _together(tmp_path, [["run", r, "--out", str(out), "--quiet"]] * 2)
        codes = sorted(p.returncode for p in done)
        assert codes == [0, 2], [(p.returncode, p.stderr[-400:]) for p in done]
        loser = next(p for p in done if p.returncode == 2)
        error = loser.stderr.splitlines()[-1]  # after any warning lines
        assert error.startswith("descend: error: ") and str(out) in error, loser.stderr
        assert "Traceback" not in loser.stderr
        # the directory is the winner's run, whole: the same bytes as the same recipe run alone
        for name in ("model.safetensors", "metrics.jsonl"):
            if name == "metrics.jsonl":
                assert len((out / name).read_text().splitlines()) == 12
            else:
                assert (out / name).read_bytes() == (reference / name).read_bytes()
        assert not (out / rundir.LOCK_FILE).exists()


def test_two_runs_started_together_on_one_directory_one_is_refused(tmp_path):
    _race(tmp_path, rounds=1)


@pytest.mark.slow
def test_two_runs_started_together_many_times(tmp_path):
    _race(tmp_path, rounds=4)


def test_a_run_still_training_cannot_be_resumed_and_its_killed_owner_leaves_no_lock(tmp_path):
    r, out = _recipe(tmp_path, 100_000), tmp_path / "run"
    owner = subprocess.Popen(
        [sys.executable, "-m", "descend.cli", "run", r, "--out", str(out), "--quiet"],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not ((out / "checkpoints" / "last.safetensors").exists() and (out / "metrics.jsonl").exists()):
            assert owner.poll() is None, owner.stderr.read()
            assert time.monotonic() < deadline, "the run wrote no checkpoint"
            time.sleep(0.05)
        before = (out / "metrics.jsonl").read_text()
        resumed = subprocess.run(
            [sys.executable, "-m", "descend.cli", "resume", str(out), "--quiet"],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert resumed.returncode == 2, resumed.stderr
        error = resumed.stderr.splitlines()[-1]  # after any warning lines
        assert error.startswith(f"descend: error: cannot resume {out}: process {owner.pid} is training"), error
        with pytest.raises(UserError, match=f"process {owner.pid} is training in it now"):
            with rundir.owned(out):
                pass
        assert (out / "metrics.jsonl").read_text().startswith(before)  # the owner's log, untouched by the refusal
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        owner.stderr.close()
    assert (out / rundir.LOCK_FILE).exists()  # the file stays after SIGKILL; its lock does not
    with rundir.owned(out, doing="resume") as path:
        assert (path / rundir.LOCK_FILE).read_text() == f"{os.getpid()}\n"
    assert not (out / rundir.LOCK_FILE).exists()
    assert rundir.status(out) == "in_progress"  # resumable: `descend resume` continues it


def test_owning_is_reentrant_in_one_process_and_a_failed_check_leaves_no_directory(tmp_path):
    out = tmp_path / "fresh" / "run"
    with rundir.owned(out):
        with rundir.owned(out):  # the run command owns it, and the fit it calls owns it again
            assert (out / rundir.LOCK_FILE).exists()
        assert (out / rundir.LOCK_FILE).exists()
    assert not out.exists()  # created here and left empty: removed again
    with pytest.raises(ValueError):
        with rundir.owned(out):
            raise ValueError
    assert not out.exists()


def test_a_file_system_without_locks_is_a_warning_not_a_traceback(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(rundir.fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="does not support locks"):
        with rundir.owned(tmp_path / "run") as path:
            (path / "config.toml").write_text("")
    assert not (tmp_path / "run" / rundir.LOCK_FILE).exists()
