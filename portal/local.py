"""What a local run (`make up`, `manage.py run_local`) needs on disk before it starts.

Settings only name these paths; nothing is created when they are imported.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings


def ensure_local_dirs() -> None:
    """Make var/ and the folders the local processes write to (SQLite, broker, beat, mail)."""
    for folder in (settings.VAR_DIR, settings.STATIC_ROOT, settings.EMAIL_FILE_PATH):
        Path(folder).mkdir(parents=True, exist_ok=True)
