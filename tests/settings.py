"""Settings of the test suite (pytest and the test Celery worker): production's, plus
what only tests want. Values that depend on a session's temporary folders are set by
fixtures in tests/conftest.py."""

import os

from django.core.exceptions import ImproperlyConfigured

from portal.settings import *  # noqa: F403

if not os.environ.get("DATABASE_URL"):
    # Tests make and drop their own databases: never the embedded server of a local run.
    raise ImproperlyConfigured("tests run on a PostgreSQL server: set DATABASE_URL")

# A fast hasher: test users need no protection, and PBKDF2 costs ~0.3 s a user.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Tests collect no static files: WhiteNoise serves them from static/ (its finders).
STATIC_ROOT = None
