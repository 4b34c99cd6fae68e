"""Names, settings and environment of the database clone tests, shared by every test session.

The Celery worker copies its environment once, when the first test that needs it
starts it (tests/conftest.py ``worker_env``), so ``clone_env()`` is part of every
session's worker environment, whichever test comes first. Stages run in the test
process get the same values as Django settings (``use_clone_settings``).

moto restores no real database behind an RDS instance, so the clone tests name
``LocalRdsServer`` as the endpoint resolver: the restored instance's host and port
become the local PostgreSQL server, and its database a session's stand-in database.
Everything else is the product's own path: the master user and the master password,
read from the (moto) target account's Secrets Manager, are used as they are.
"""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING

from psycopg.conninfo import make_conninfo

from pipelines.clients import postgres as pg

if TYPE_CHECKING:
    from pytest_django.fixtures import Settings

    from pipelines.dbclone.scrub import RdsEndpoint

ADMIN_URL = os.environ.get("PORTAL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
# One per session (the worker inherits it): concurrent sessions never touch each other's.
_TOKEN = os.environ.get("PORTAL_TEST_CLONE_TOKEN") or secrets.token_hex(3)
# Test accounts of the clone tests are named dct<token>-<hex>; their clones
# dct<token>_<hex>_<service>_<run>, which the session drops at its end.
ACCOUNT_PREFIX = f"dct{_TOKEN}-"
SOURCE_DB = f"dbclone_src_{_TOKEN}"
# The master user of the test RDS instances: a role of the local server for the session.
RDS_MASTER_USER = f"rds_master_{_TOKEN}"
RESOLVER = "tests.clone_env.LocalRdsServer"
# The shipped sandbox's connections (PROD_ORDERS, SANDBOX_PG): this session's own
# production database on the local server, which seed_production builds.
PRODUCTION_DB = f"prod_orders_{_TOKEN}"


def rds_standin_database(database: str) -> str:
    """The local database standing in for ``database`` of a restored RDS instance."""
    return f"dbclone_rds_{database}_{_TOKEN}"


class LocalRdsServer:
    """Endpoint resolver of the tests: the instance's host and port map to the local server.

    ``seen`` keeps every endpoint asked for in this process, so a test can check what
    the scrub step logged in with.
    """

    seen: list[RdsEndpoint] = []

    def url(self, endpoint: RdsEndpoint) -> str:
        LocalRdsServer.seen.append(endpoint)
        local = pg.endpoint(ADMIN_URL)
        return make_conninfo(
            "",
            host=local.host,
            port=str(local.port),
            user=endpoint.user,
            password=endpoint.password,
            dbname=rds_standin_database(endpoint.database),
        )


def connections() -> dict[str, str]:
    return {
        "DBCLONE_SRC": pg.with_dbname(ADMIN_URL, SOURCE_DB),
        "DBCLONE_TGT": ADMIN_URL,
        **production_connections(),
    }


def production_connections() -> dict[str, str]:
    """The shipped sandbox blueprint's source and target, for this session."""
    return {"PROD_ORDERS": pg.with_dbname(ADMIN_URL, PRODUCTION_DB), "SANDBOX_PG": ADMIN_URL}


def clone_env() -> dict[str, str]:
    """The worker's environment for the clone stages (portal/settings.py reads it)."""
    return {
        **{f"PORTAL_CONNECTION_{name}": url for name, url in connections().items()},
        "PORTAL_RDS_ENDPOINT_RESOLVER": RESOLVER,
        "PORTAL_TEST_CLONE_TOKEN": _TOKEN,
        "PORTAL_RDS_POLL_SECONDS": "0.05",
        "PORTAL_DNS_TIMEOUT_SECONDS": "30",
    }


def use_clone_settings(settings: Settings) -> None:
    """The same values for stages run in the test process (pytest-django's ``settings``)."""
    settings.PORTAL_CONNECTIONS = {**settings.PORTAL_CONNECTIONS, **connections()}
    settings.PORTAL_RDS_ENDPOINT_RESOLVER = RESOLVER
    settings.PORTAL_RDS_POLL_SECONDS = 0.05
    settings.PORTAL_DNS_TIMEOUT_SECONDS = 30.0
