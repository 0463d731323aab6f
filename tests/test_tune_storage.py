"""Where a study lives: workers that start in the same instant all join (SQLite and PostgreSQL), a killed worker
leaves no lock behind, and a study file that is damaged or belongs to another program is refused untouched."""

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from descend.cli import main
from descend.errors import UserError
from descend.tune import postgres
from descend.tune.space import parse
from descend.tune.storage import check_sqlite, exclusive, storage
from descend.tune.study import Plan, canonical, open_study

SRC = str(Path(__file__).parents[1] / "src")
RECIPE = """
name = "iris"
seed = 0
[data]
name = "iris"
val_fraction = 0.2
[model]
name = "mlp"
hidden = [4]
[train]
epochs = 1
batch_size = 32
[optimizer]
name = "adam"
lr = 1e-2
"""
SPACE = "[optimizer.lr]\nfloat = [1e-3, 1e-1]\nlog = true\n"

# A worker: the heavy imports first, then it says it is ready and waits for the one signal that starts them all
WORKER = r"""
import sys, time
from pathlib import Path
import descend.tune.search
from descend.cli import main
Path(sys.argv[1]).touch()
while not Path(sys.argv[2]).exists():
    time.sleep(0.001)
sys.exit(main(sys.argv[3:]))
"""


def _together(tmp_path: Path, commands: list[list[str]]) -> list[tuple[int, str]]:
    """Run ``descend`` with each argument list in its own process, all released in the same instant."""
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(len(commands))]
    env = {**os.environ, "PYTHONPATH": SRC}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(r), str(go), *argv],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r, argv in zip(ready, commands)
    ]
    try:
        deadline = time.monotonic() + 240
        while not all(r.exists() for r in ready) and time.monotonic() < deadline:
            time.sleep(0.01)
        go.touch()
        return [(p.wait(timeout=600), p.stdout.read()) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def _tune(tmp_path: Path, storage_url: str | None, out: Path) -> list[str]:
    (tmp_path / "r.toml").write_text(RECIPE)
    (tmp_path / "s.toml").write_text(SPACE)
    return [
        "tune",
        str(tmp_path / "r.toml"),
        "--space",
        str(tmp_path / "s.toml"),
        "--sampler",
        "random",
        "--trials",
        "6",
        "--seed",
        "3",
        "--study",
        "together",
        "--out",
        str(out),
        "--no-runs",
        *(["--storage", storage_url] if storage_url else []),
    ]


def _all_joined(results: list[tuple[int, str]], url: str) -> None:
    assert [code for code, _ in results] == [0] * len(results), "\n".join(text for _, text in results)
    trials = optuna.load_study(study_name="together", storage=url).get_trials(deepcopy=False)
    # a worker that asks just after another took the last queued point gets a fresh trial, pruned as surplus
    counted = [t for t in trials if not t.user_attrs.get("surplus")]
    assert sorted(t.number for t in counted) == list(range(6))
    assert [t.state for t in counted] == [TrialState.COMPLETE] * 6
    assert len({t.params["optimizer.lr"] for t in counted}) == 6
    assert all(t.state == TrialState.PRUNED for t in trials if t.user_attrs.get("surplus"))
    created = [text for _, text in results if "created study 'together'" in text]
    assert len(created) == 1  # one creates, the others continue


def _open_together(url: str, count: int) -> list[bool]:
    """``count`` threads open the storage and the study at the same instant (a barrier); returns who created it."""
    space = parse({"optimizer": {"lr": {"float": [1e-3, 1e-1]}}})
    plan = Plan("random", seed=0, trials=5, space=canonical(space))
    barrier = threading.Barrier(count)

    def one() -> bool:
        barrier.wait()
        return open_study("s", storage(url), plan, space)[1]

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: one(), range(count)))


def test_sqlite_storage_and_study_opened_in_the_same_instant(tmp_path):
    for attempt in range(3):
        url = f"sqlite:///{tmp_path / f'tune{attempt}.db'}"
        assert sorted(_open_together(url, 4)) == [False, False, False, True]
        trials = optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False)
        assert [t.state for t in trials] == [TrialState.WAITING] * 5  # queued once


@pytest.fixture(scope="module")
def server():
    if postgres.binaries() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; make setup does it as root)")
    directory, url = postgres.start()
    yield url
    postgres.stop(directory)


def _fresh_database(url: str, name: str) -> str:
    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return url.rsplit("/", 1)[0] + f"/{name}"


@pytest.mark.slow
def test_postgres_storage_and_study_opened_in_the_same_instant(server):
    for attempt in range(3):  # each time on a fresh, empty database: the tables are created by the race's winner
        url = _fresh_database(server, f"threads{attempt}")
        assert sorted(_open_together(url, 4)) == [False, False, False, True]
        trials = optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False)
        assert [t.state for t in trials] == [TrialState.WAITING] * 5


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_postgres_workers_started_in_the_same_instant_all_join(tmp_path, server):
    """Three ``descend tune`` processes released by one barrier, three times, each on a fresh empty database."""
    for attempt in range(3):
        url = _fresh_database(server, f"together{attempt}")
        here = tmp_path / str(attempt)
        here.mkdir()
        _all_joined(_together(here, [_tune(here, url, here / f"out{i}") for i in range(3)]), url)


HOLD = r"""
import sys, time
from descend.tune.storage import exclusive
with exclusive(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def _killed_holder_frees_the_lock(url: str) -> None:
    env = {**os.environ, "PYTHONPATH": SRC}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, url], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match="another process has been creating the study"):
            with exclusive(url, wait=0.5):
                pass
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=60)
        with exclusive(url, wait=60):  # freed by the kernel (a file lock) or the server (a session lock)
            pass
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_killed_worker_leaves_no_sqlite_lock_behind(tmp_path):
    _killed_holder_frees_the_lock(f"sqlite:///{tmp_path / 'tune.db'}")


@pytest.mark.slow
def test_a_killed_worker_leaves_no_postgres_lock_behind(server):
    _killed_holder_frees_the_lock(server)


# ---------------------------------------------------------------------------------------------- files
def _study_file(tmp_path: Path) -> Path:
    """A real study with a finished trial and queued ones."""
    db = tmp_path / "out" / "tune.db"
    db.parent.mkdir()
    space = parse({"optimizer": {"lr": {"float": [1e-3, 1e-1], "log": True}}})
    store = storage(f"sqlite:///{db}")
    study, _ = open_study("together", store, Plan("random", 3, 40, space=canonical(space)), space)
    trial = study.ask()
    study.tell(trial, 0.5)
    store.engine.dispose()  # the last connection closed: the write-ahead log is folded into the file
    return db


def _refused_untouched(db: Path, argv: list[str], capsys, match: str) -> None:
    before = db.read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("descend: error:") == 1 and str(db) in err and "move it away" in err, err
    assert match in err, err
    assert "Traceback" not in err
    assert db.read_bytes() == before  # nothing lost, nothing added


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_damaged_or_foreign_study_files_are_refused_with_the_fix_and_left_as_they_were(tmp_path, capsys):
    db = _study_file(tmp_path)
    argv = _tune(tmp_path, None, db.parent)
    capsys.readouterr()
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    healthy = db.read_bytes()
    page = int.from_bytes(healthy[16:18], "big")  # the page size, from the SQLite header
    assert len(healthy) // page >= 10
    for number in range(len(healthy) // page):  # any one page overwritten: the header, the schema, a table, an index
        damaged = bytearray(healthy)
        damaged[number * page : (number + 1) * page] = b"\xa5" * page
        db.write_bytes(bytes(damaged))
        with pytest.raises(UserError, match="move it away"):
            check_sqlite(f"sqlite:///{db}")
    _refused_untouched(db, argv, capsys, "is damaged (SQLite's integrity check")  # the last page, through the CLI
    db.write_bytes(b"this is a text file, not a database\n" * 200)
    _refused_untouched(db, argv, capsys, "not a readable SQLite database")
    db.unlink()
    with sqlite3.connect(db) as other:  # another program's database where the study should be
        other.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        other.execute("INSERT INTO invoices VALUES (1, 9.5)")
    other.close()
    _refused_untouched(db, argv, capsys, "another program (tables: invoices)")
    db.write_bytes(healthy)  # the healthy study opens, its trials intact
    trials = optuna.load_study(study_name="together", storage=storage(f"sqlite:///{db}")).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] + [TrialState.WAITING] * 39


def test_a_new_or_empty_study_file_is_opened(tmp_path):
    check_sqlite(f"sqlite:///{tmp_path / 'missing.db'}")
    (tmp_path / "empty.db").write_bytes(b"")
    store = storage(f"sqlite:///{tmp_path / 'empty.db'}")
    assert store.get_all_studies() == []
