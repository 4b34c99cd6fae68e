"""Names and environment of the database clone tests, shared by every test session.

The Celery worker copies its environment once, when the first test that needs it
starts it (tests/conftest.py ``worker_env``), so these variables are part of every
session's worker environment, whichever test comes first.
"""

from __future__ import annotations

import os
import secrets

from pipelines.clients import postgres as pg

ADMIN_URL = os.environ.get("PORTAL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
_TOKEN = secrets.token_hex(3)  # one per session: concurrent sessions never touch each other's
# Test accounts of the clone tests are named dct<token>-<hex>; their clones
# dct<token>_<hex>_<service>_<run>, which the session drops at its end.
ACCOUNT_PREFIX = f"dct{_TOKEN}-"
SOURCE_DB = f"dbclone_src_{_TOKEN}"
RDS_SCRUB_DB = f"dbclone_rds_{{service}}_{_TOKEN}"


def clone_env() -> dict[str, str]:
    return {
        "PORTAL_CONNECTION_DBCLONE_SRC": pg.with_dbname(ADMIN_URL, SOURCE_DB),
        "PORTAL_CONNECTION_DBCLONE_TGT": ADMIN_URL,
        "PORTAL_RDS_SCRUB_URL_OVERRIDE": pg.with_dbname(ADMIN_URL, RDS_SCRUB_DB),
        "PORTAL_RDS_POLL_SECONDS": "0.05",
        "PORTAL_DNS_TIMEOUT_SECONDS": "30",
    }
