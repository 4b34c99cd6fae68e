"""Which database the settings choose: the embedded server's socket, or DATABASE_URL's
PostgreSQL; importing them starts and creates nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHOW = (
    "import json, portal.settings as s; d = s.DATABASES['default']; "
    "print(json.dumps([d['ENGINE'], d['HOST'], d['PORT'], d['NAME'], s.PORTAL_PG_BIN_DIR]))"
)


def settings_of(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "PORTAL_VAR_DIR"}}
    return subprocess.run(
        [sys.executable, "-c", SHOW],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_without_database_url_the_settings_name_the_embedded_socket_and_create_nothing(
    tmp_path: Path,
) -> None:
    var = tmp_path / "var"
    shown = settings_of({"PORTAL_VAR_DIR": str(var)})
    assert shown.returncode == 0, shown.stderr
    engine, host, port, name, bin_dir = json.loads(shown.stdout)
    assert (engine, host, port, name) == (
        "django.db.backends.postgresql",
        str(var / "postgres"),
        5432,
        "portal",
    )
    assert (Path(bin_dir) / "pg_dump").is_file()  # the embedded server's own tools
    assert not var.exists()


def test_a_database_url_is_used_as_it_is(tmp_path: Path) -> None:
    shown = settings_of({"DATABASE_URL": "postgres://app@db.internal:6543/portal"})
    assert shown.returncode == 0, shown.stderr
    *database, bin_dir = json.loads(shown.stdout)
    assert database == ["django.db.backends.postgresql", "db.internal", 6543, "portal"]
    # The tools: PATH's, or the newest Debian-style folder (no Perl wrapper) when there is one.
    newest = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_dump"), key=lambda p: int(p.parts[-3])
    )
    assert bin_dir == (str(newest[-1].parent) if newest else "")


def test_a_database_url_that_is_not_postgresql_is_refused() -> None:
    shown = settings_of({"DATABASE_URL": "sqlite:///portal.sqlite3"})
    assert shown.returncode != 0
    assert "DATABASE_URL must point at a PostgreSQL server" in shown.stderr
