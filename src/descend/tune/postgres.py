"""A throw-away PostgreSQL server for shared studies: a cluster in a temporary directory, on the loopback only.

::

    python -m descend.tune.postgres start            # prints the directory and the URL for --storage
    descend tune cfg.toml --space s.toml --storage postgresql+psycopg://descend@127.0.0.1:PORT/postgres --workers 3
    python -m descend.tune.postgres stop DIRECTORY   # stops the server and deletes the cluster

Uses Debian's ``postgresql`` package (``initdb`` and ``pg_ctl`` under ``/usr/lib/postgresql/<version>/bin``; the
set-up installs it where apt-get may run). The server listens on 127.0.0.1 only, on a free port, with trust
authentication for the one user ``descend``: it is for tests and single-user experiments, not for a database that
other people can reach. PostgreSQL refuses to run as root, so under root the cluster is owned by and run as the
``postgres`` system user.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import UserError

USER = "descend"


def binaries() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


def _as_owner(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(directory: str | Path | None = None, port: int | None = None) -> tuple[Path, str]:
    """Create and start a cluster; returns ``(directory, url)``. ``stop(directory)`` ends it."""
    bin_dir = binaries()
    if bin_dir is None:
        raise UserError("PostgreSQL is not installed: run 'apt-get install postgresql' (or make setup as root)")
    directory = Path(directory or tempfile.mkdtemp(prefix="descend-pg-"))
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "data"
    port = port or _free_port()
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    _run(_as_owner([str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8"]), "initdb")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {directory} -c max_connections=100 -c fsync=off"
    _run(_as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(directory / "server.log"),
                    "-w", "-t", "60", "start"]), "pg_ctl start")
    return directory, f"postgresql+psycopg://{USER}@127.0.0.1:{port}/postgres"


def stop(directory: str | Path) -> None:
    """Stop the cluster in ``directory`` (fast shutdown) and delete it."""
    directory = Path(directory)
    bin_dir = binaries()
    if bin_dir is not None and (directory / "data" / "postmaster.pid").exists():
        _run(_as_owner([str(bin_dir / "pg_ctl"), "-D", str(directory / "data"), "-m", "fast", "-w", "stop"]),
             "pg_ctl stop")
    shutil.rmtree(directory, ignore_errors=True)


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise UserError(f"{what} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-500:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m descend.tune.postgres", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("start", help="start a throw-away server; prints its directory and URL")
    up.add_argument("--dir", help="cluster directory (default: a new temporary one)")
    up.add_argument("--port", type=int, help="loopback port (default: a free one)")
    down = sub.add_parser("stop", help="stop the server and delete its directory")
    down.add_argument("dir")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            directory, url = start(args.dir, args.port)
            print(f"directory {directory}\nurl {url}")
        else:
            stop(args.dir)
    except UserError as e:
        print(f"descend: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
