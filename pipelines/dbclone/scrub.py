"""Scrub SQL: the blueprint's files run against a fresh clone, and how an RDS clone is reached.

An RDS clone is reached at its restored instance's endpoint with the master password
from the target account's Secrets Manager. Turning that endpoint into a PostgreSQL
URL is the job of an ``EndpointResolver``, named by ``settings.PORTAL_RDS_ENDPOINT_RESOLVER``
(a class path). The default, ``DirectEndpoint``, connects to the instance itself with
TLS required. Tests name one that maps the (moto) instance's host and port to a local
PostgreSQL server standing in for it: moto restores no real database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string
from psycopg.conninfo import make_conninfo

from pipelines.blueprints import Blueprint
from pipelines.clients import aws
from pipelines.clients import postgres as pg
from pipelines.dbclone import rds
from pipelines.dbclone.parallel import LogFn


@dataclass(frozen=True)
class RdsEndpoint:
    """Where and as whom the scrub step logs in to a restored RDS instance."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str


class EndpointResolver(Protocol):
    """Turns a restored instance's endpoint into the URL the scrub step connects to."""

    def url(self, endpoint: RdsEndpoint) -> str: ...


class DirectEndpoint:
    """The instance's own address and port, TLS required (the product default)."""

    def url(self, endpoint: RdsEndpoint) -> str:
        return make_conninfo(
            "",
            host=endpoint.host,
            port=str(endpoint.port),
            user=endpoint.user,
            password=endpoint.password,
            dbname=endpoint.database,
            sslmode="require",
            connect_timeout="30",
        )


def endpoint_resolver() -> EndpointResolver:
    """The resolver ``settings.PORTAL_RDS_ENDPOINT_RESOLVER`` names."""
    resolver: EndpointResolver = import_string(settings.PORTAL_RDS_ENDPOINT_RESOLVER)()
    return resolver


def rds_clone_url(
    *,
    cloud_account_id: str,
    run_id: int,
    clone: rds.CloneResult,
    database: str,
    add_secret: Callable[[str], None],
    resolver: EndpointResolver,
) -> str:
    """The URL of the restored instance, logged in as its master user.

    The master password is read from the target account's Secrets Manager (the
    secret the clone wrote) and registered with ``add_secret`` before any use.
    """
    session, _ = aws.assume_role(
        account_id=cloud_account_id,
        session_name=f"portal-scrub-{run_id}",
        region=clone.region or None,
    )
    password = rds.read_master_password(session=session, secret_arn=clone.secret_arn)
    add_secret(password)
    return resolver.url(
        RdsEndpoint(
            host=clone.address,
            port=clone.port,
            user=clone.master_username,
            password=password,
            database=database,
        )
    )


def run_scrub(*, blueprint: Blueprint, files: list[str], url: str, log: LogFn) -> list[str]:
    """Run each scrub file in one transaction against ``url``. Scrub SQL must be
    idempotent (a retried stage runs it again), as UPDATEs usually are."""
    for relative in files:
        text = blueprint.resolve_file(relative).read_text()
        pg.execute(url, text, autocommit=False)
        log(f"scrub {relative}: done")
    return list(files)


def row_estimates(url: str) -> dict[str, int]:
    """Rows per table from the planner statistics: exact counts of a freshly restored
    production-sized instance would read every block from S3."""
    rows = pg.fetch_all(
        url,
        """
        SELECT n.nspname || '.' || c.relname, GREATEST(c.reltuples, 0)::bigint
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_%'
        ORDER BY 1
        """,
    )
    return {str(name): int(count) for name, count in rows}
