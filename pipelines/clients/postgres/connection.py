"""Named connections, sanitised errors, and the one way to open a connection and run
statements; the rest of the package builds on these."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from django.conf import settings as django_settings
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pipelines.redaction import Redactor
from portal.errors import PortalError

ENV_PREFIX = "PORTAL_CONNECTION_"
# A connection's name, in blueprints and in PORTAL_CONNECTION_<NAME>.
CONNECTION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")
CONNECTION_NAME_RULE = "a letter, then up to 62 letters, digits and underscores"


# SQLSTATE classes where the same statement fails again: bad data, integrity, syntax
# or undefined objects, authorization. Anything else (a dropped connection, a
# deadlock, a server shutting down) may pass on a retry.
_NOT_RETRYABLE_CLASSES = ("22", "23", "28", "42")


class PostgresError(PortalError):
    """A PostgreSQL or pg_dump/pg_restore failure; the message holds no password."""

    def __init__(
        self, message: str, *, sqlstate: str | None = None, retryable: bool = True
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.sqlstate = sqlstate
        self.explanation = message


class ConnectionNotConfigured(PostgresError):
    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


def connection_url(name: str) -> str:
    """The URL of the named connection, from ``settings.PORTAL_CONNECTIONS``
    (configured as ``PORTAL_CONNECTION_<NAME>``)."""
    if not CONNECTION_NAME.fullmatch(name or ""):
        raise ConnectionNotConfigured(f"invalid connection name {name!r}: {CONNECTION_NAME_RULE}")
    url = str(django_settings.PORTAL_CONNECTIONS.get(name.upper(), "")).strip()
    if not url:
        raise ConnectionNotConfigured(
            f"connection {name!r} is not configured: set the environment variable "
            f"{ENV_PREFIX}{name.upper()} to a PostgreSQL URL"
        )
    return url


def url_password(url: str) -> str | None:
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.Error:
        return None
    return str(password) if password else None


def secrets_redactor(secrets: Iterable[str | None]) -> Redactor:
    return Redactor(secret for secret in secrets if secret)


@contextlib.contextmanager
def guarded(secrets: Iterable[str | None] = ()) -> Iterator[None]:
    """Turn psycopg errors into PostgresError with a sanitised message."""
    try:
        yield
    except psycopg.Error as exc:
        sqlstate = getattr(exc, "sqlstate", None)
        message = secrets_redactor(secrets)(f"{type(exc).__name__}: {exc}".strip())
        retryable = not str(sqlstate or "").startswith(_NOT_RETRYABLE_CLASSES)
        error = PostgresError(message, sqlstate=sqlstate, retryable=retryable)
        # Drop the chain: the original exception may carry the connection string.
        error.__cause__ = None
        error.__suppress_context__ = True
        raise error from None


def with_dbname(url: str, dbname: str) -> str:
    return make_conninfo(url, dbname=dbname)


def no_parallel_workers(conn: psycopg.Connection[Any]) -> None:
    """This session's queries run without parallel workers."""
    with guarded():
        conn.execute("SET max_parallel_workers_per_gather = 0")


def with_settings(url: str, settings: Mapping[str, str]) -> str:
    """``url`` whose sessions start with these settings (libpq ``options``, kept with
    any the URL has), for psycopg and the command-line tools alike."""
    current = str(conninfo_to_dict(url).get("options") or "")
    extra = " ".join(f"-c {name}={value}" for name, value in settings.items())
    return make_conninfo(url, options=f"{current} {extra}".strip())


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    user: str
    dbname: str


def endpoint(url: str) -> Endpoint:
    info = conninfo_to_dict(url)
    return Endpoint(
        host=str(info.get("host") or "localhost"),
        port=int(info.get("port") or 5432),
        user=str(info.get("user") or ""),
        dbname=str(info.get("dbname") or ""),
    )


def connect(
    url: str, *, autocommit: bool = False, secrets: Iterable[str | None] = ()
) -> psycopg.Connection[Any]:
    """Open a connection; errors are sanitised (the URL's password included)."""
    with guarded([url_password(url), *secrets]):
        conn = psycopg.connect(url, autocommit=autocommit, application_name="portal-clone")
        conn.execute("SET client_encoding = 'UTF8'")
        return conn


def execute(url: str, statements: str | Sequence[str], *, autocommit: bool = True) -> None:
    """Run SQL statements (no parameters) on ``url``."""
    items = [statements] if isinstance(statements, str) else list(statements)
    with connect(url, autocommit=autocommit) as conn, guarded([url_password(url)]):
        for statement in items:
            conn.execute(statement.encode())  # bytes: a plain, parameterless query


def fetch_all(url: str, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with connect(url) as conn, guarded([url_password(url)]):
        return list(conn.execute(query, params or None).fetchall())


class CopyCancelled(Exception):
    pass
