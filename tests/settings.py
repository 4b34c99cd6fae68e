"""Settings of the test suite (pytest and the test Celery worker): production's, plus
what only tests want. Values that depend on a session's temporary folders are set by
fixtures in tests/conftest.py."""

import tempfile
from pathlib import Path

from portal.settings import *  # noqa: F403
from portal.settings import DATABASES

# A fast hasher: test users need no protection, and PBKDF2 costs ~0.3 s a user.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Tests collect no static files: WhiteNoise serves them from static/ (its finders).
STATIC_ROOT = None

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so a test's Celery worker process sees the same test database.
    DATABASES["default"]["TEST"] = {
        "NAME": str(Path(tempfile.gettempdir()) / "portal-test.sqlite3")
    }
