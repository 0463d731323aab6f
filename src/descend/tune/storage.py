"""Where a study lives: an Optuna RDB storage (SQLite or PostgreSQL) with heartbeats, opened safely by many workers.

Workers that start together. Optuna's ``RDBStorage`` creates its tables when it is constructed, and two processes
creating them at the same moment collide: on PostgreSQL one of them fails with ``duplicate key value violates
unique constraint "pg_type_typname_nsp_index"`` (Optuna issue #1092), on SQLite with ``table studies already
exists``. :func:`exclusive` serialises the few steps that create things (the tables, then the study and its queue)
across every process that opens the same storage: a PostgreSQL session-level advisory lock on the server, a file
lock next to an SQLite file. Both are released by the operating system or the server when their holder dies, so
a killed worker never leaves them held; no sleep is guessed.

Files that are not studies. Before opening an existing SQLite file, :func:`check_sqlite` reads it without writing:
a file that is not an SQLite database, one whose pages are damaged, or one that holds another program's tables is
refused with one message naming the file (Optuna would otherwise fail half-way with ``StorageInternalError``, or
add its tables to someone else's database).
"""

from __future__ import annotations

import contextlib
import sqlite3
import warnings
from collections.abc import Iterator
from pathlib import Path

import filelock
import optuna
import sqlalchemy

from ..errors import UserError

LOCK_KEY = 0x64657363656E64  # "descend" in ASCII: the advisory lock every descend worker takes on a PostgreSQL server
LOCK_WAIT = 600.0  # seconds a worker waits for another that is creating the study (queueing a large grid included)
OPTUNA_TABLES = {"studies", "trials", "version_info", "alembic_version"}


def storage(url: str, *, heartbeat: int = 10, retries: int = 2) -> optuna.storages.RDBStorage:
    """An RDB storage (SQLite or PostgreSQL) with heartbeats; a trial whose worker died is retried ``retries`` times.

    Safe when many processes open the same storage at the same moment (see :func:`exclusive`).
    """
    url = normalized(url)
    if url.startswith("sqlite"):
        check_sqlite(url)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    with exclusive(url):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retries)
                store = optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine,
                    heartbeat_interval=heartbeat,
                    grace_period=3 * heartbeat,
                    heartbeat_stale_trial_callback=retry,
                )
        except Exception as e:  # sqlalchemy: bad URL, missing driver, refused connection, a damaged file
            raise UserError(f"cannot open the study storage {safe(url)}: {_first_line(e)}") from None
    if url.startswith("sqlite"):
        _write_ahead_log(store.engine)
    return store


def normalized(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3, the driver descend installs."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


@contextlib.contextmanager
def exclusive(url: str, *, wait: float = LOCK_WAIT) -> Iterator[None]:
    """Hold the storage's creation lock: one process at a time, across processes and machines.

    PostgreSQL: ``pg_advisory_lock`` on a connection of its own (a session lock: the server drops it when the
    connection ends, so a killed holder frees it). SQLite: an exclusive ``flock`` on ``<file>.lock`` (freed by the
    kernel when its holder dies). Other databases, and SQLite in memory, are used by one process: no lock.
    """
    url = normalized(url)
    parsed = _parsed(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if not database or database == ":memory:" or database.startswith("file:"):
            yield
            return
        lock = filelock.FileLock(f"{database}.lock", timeout=wait)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise UserError(
                f"another process has been creating the study in {database} for {wait:.0f} s (its lock "
                f"file {database}.lock); wait for it, or stop it"
            ) from None
        except OSError as e:
            raise UserError(f"cannot lock the study storage {database}: {e}") from None
        try:
            yield
        finally:
            lock.release()
        return
    if parsed.get_backend_name() != "postgresql":
        yield
        return
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        connection = engine.connect()
    except Exception as e:  # refused connection, bad credentials, missing driver
        engine.dispose()
        raise UserError(f"cannot open the study storage {safe(url)}: {_first_line(e)}") from None
    try:
        with connection:
            connection.execute(sqlalchemy.text(f"SET lock_timeout = {int(wait * 1000)}"))
            try:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
            except sqlalchemy.exc.OperationalError:
                raise UserError(
                    f"another process has been creating the study on {safe(url)} for {wait:.0f} s "
                    f"(advisory lock {LOCK_KEY}); wait for it, or stop it"
                ) from None
            connection.commit()  # the session lock outlives the transaction; nothing stays open while it is held
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
                connection.commit()
    finally:
        engine.dispose()


def check_sqlite(url: str) -> None:
    """Refuse an existing file that is not an SQLite database, is damaged, or holds another program's tables.

    Read only (the file is opened with ``mode=ro``): whatever the file is, it is left as it was.
    """
    database = _parsed(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.is_file() or path.stat().st_size == 0:
        return  # a new study: Optuna creates the file
    fix = (
        "move it away to start a new study there (or give --out another folder, or --storage another "
        "database); nothing was written to it"
    )
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
    except sqlite3.Error as e:
        raise UserError(f"cannot read the study database {path}: {e}") from None
    try:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        damage = [row[0] for row in connection.execute("PRAGMA quick_check(5)")]
    except sqlite3.DatabaseError as e:  # "file is not a database", "database disk image is malformed"
        raise UserError(f"{path} is not a readable SQLite database ({e}): {fix}") from None
    finally:
        connection.close()
    if damage != ["ok"]:
        raise UserError(
            f"{path} is damaged (SQLite's integrity check: {'; '.join(damage)[:300]}): {fix}; "
            f"'sqlite3 {path} .recover' may save the trials it still holds"
        )
    if tables and not OPTUNA_TABLES <= tables:
        raise UserError(
            f"{path} is an SQLite database of another program (tables: {', '.join(sorted(tables))[:200]}"
            f"), not an Optuna study: {fix}"
        )


def _write_ahead_log(engine) -> None:
    """SQLite in write-ahead-log mode: readers never block the writer (local workers share the file), and a commit
    is not an fsync (a power cut may lose the last trials, never corrupt the file)."""

    def pragmas(connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened before the listener get the pragmas when they are made again


def _parsed(url: str) -> sqlalchemy.engine.URL:
    try:
        return sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise UserError(
            f"cannot open the study storage {safe(url)}: not a database URL (sqlite:///FILE or "
            f"postgresql://USER@HOST:PORT/DATABASE)"
        ) from None


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def safe(url: str) -> str:
    """The URL without its password, for messages."""
    head, sep, tail = url.partition("@")
    return f"{head.rsplit(':', 1)[0]}:***@{tail}" if sep and head.count(":") > 1 else url
