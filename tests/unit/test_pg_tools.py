"""Which pg_dump and pg_restore a logical clone runs: PORTAL_PG_BIN_DIR's, else PATH's."""

from __future__ import annotations

import shutil
from pathlib import Path

from pipelines.clients.postgres import tools


def test_the_tools_come_from_the_configured_folder(settings, tmp_path: Path) -> None:
    tool = tmp_path / "pg_dump"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    settings.PORTAL_PG_BIN_DIR = str(tmp_path)
    assert tools.located(["pg_dump", "--version"]) == [str(tool), "--version"]


def test_without_a_folder_the_tools_come_from_path(settings) -> None:
    settings.PORTAL_PG_BIN_DIR = ""
    assert tools.located(["pg_restore"]) == [shutil.which("pg_restore") or "pg_restore"]
