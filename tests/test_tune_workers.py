"""Many workers on one study: the same trials whatever their number, and no trial lost or counted twice when one is
killed mid-trial (PostgreSQL, heartbeats, retries)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from descend.tune import postgres, search

RECIPE = """
name = "iris"
seed = 0
[data]
name = "iris"
val_fraction = 0.2
[model]
name = "mlp"
hidden = [8]
[train]
epochs = {epochs}
batch_size = 8
[optimizer]
name = "adam"
lr = 1e-2
"""

SPACE = """
[optimizer.lr]
float = [1e-3, 1e-1]
log = true
grid = 3
[model.dropout]
categorical = [0.0, 0.3]
"""


def files(tmp_path: Path, epochs: int) -> tuple[Path, Path]:
    (tmp_path / "r.toml").write_text(RECIPE.format(epochs=epochs))
    (tmp_path / "s.toml").write_text(SPACE)
    return tmp_path / "r.toml", tmp_path / "s.toml"


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("sampler", ["random", "qmc", "grid"])
def test_same_trials_whatever_the_number_of_workers(tmp_path, sampler):
    recipe, space = files(tmp_path, epochs=2)
    runs = {}
    for workers in (1, 2):
        result = search(recipe, space, sampler=sampler, trials=6, seed=11, workers=workers, keep_runs=False,
                        out=tmp_path / f"w{workers}", echo=lambda text: None)
        assert [t["state"] for t in result["trials"]] == ["complete"] * 6
        runs[workers] = {t["number"]: t["params"] for t in result["trials"]}
    assert runs[1] == runs[2]


@pytest.fixture
def server():
    if postgres.binaries() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; make setup does it as root)")
    directory, url = postgres.start()
    yield url
    postgres.stop(directory)


def _running_pid(url: str, deadline: float) -> tuple[int, int]:
    """The trial number and worker pid of a trial that is running (and has trained a little)."""
    # one storage without a connection pool for all the looks (a storage made per look keeps its pool's connections
    # until it is collected, and a few hundred looks exhaust the server's max_connections), which never creates the
    # tables itself: that is the workers' job, under descend's lock
    storage = None
    while time.monotonic() < deadline:
        try:
            storage = storage or optuna.storages.RDBStorage(
                url, engine_kwargs={"poolclass": sqlalchemy.pool.NullPool}, skip_table_creation=True)
            study = optuna.load_study(study_name="killed", storage=storage)
        except (KeyError, sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError):  # not yet made
            time.sleep(0.5)
            continue
        running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if "pid" in t.user_attrs]
        if running and any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
            return running[0].number, running[0].user_attrs["pid"]
        time.sleep(0.2)
    raise AssertionError("no trial was seen running")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_three_workers_one_killed_mid_trial(tmp_path, server):
    # trials of a few seconds: the kill lands inside the trial seen running, not after it (iris at 60 epochs took
    # 0.3 s a trial on a quiet machine, and the trial could end between the look and the kill)
    recipe, space = files(tmp_path, epochs=600)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    plain = server.replace("+psycopg", "")  # a plain postgresql:// URL works too
    command = [sys.executable, "-m", "descend.cli", "tune", str(recipe), "--space", str(space), "--sampler", "grid",
               "--seed", "0", "--storage", plain, "--study", "killed", "--workers", "3", "--heartbeat", "1",
               "--out", str(tmp_path / "out"), "--no-runs"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        number, pid = _running_pid(server, time.monotonic() + 240)
        os.kill(pid, signal.SIGKILL)
        output, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert f"(pid {pid}) ended with signal 9" in output
    assert not [line for line in output.splitlines() if "Warning" in line and not line.startswith("descend:")], output
    trials = optuna.load_study(study_name="killed", storage=server).get_trials(deepcopy=False)
    counted = [t for t in trials if not t.user_attrs.get("surplus")]
    states = [t.state for t in counted]
    assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.COMPLETE) == 6, output
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    failed = next(t for t in counted if t.state == TrialState.FAIL)
    # the killed worker's trial failed: the one seen running, or (on a busy machine, when that trial ended between
    # the look and the kill) the next one the same worker had begun
    assert failed.user_attrs.get("pid") == pid and failed.number >= number
    retry = [t for t in counted if t.system_attrs.get("failed_trial") == failed.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == failed.params
    points = [tuple(sorted(t.params.items())) for t in counted if t.state == TrialState.COMPLETE]
    assert len(set(points)) == 6  # every grid point finished exactly once
    assert all(t.state == TrialState.PRUNED for t in trials if t.user_attrs.get("surplus"))
