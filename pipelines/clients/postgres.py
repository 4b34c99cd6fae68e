"""PostgreSQL client: every psycopg 3, pg_dump and pg_restore call of the portal.

Connections are named: ``settings.PORTAL_CONNECTIONS`` (from ``PORTAL_CONNECTION_<NAME>``)
maps a name to a PostgreSQL URL, so no password sits in a blueprint. Errors leave this
module as ``PostgresError`` with passwords removed (psycopg and libpq can echo
connection strings), and the command-line tools get the password through their
environment, never argv.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from django.conf import settings as django_settings
from psycopg import pq, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import scalar_row
from psycopg.types.string import ByteaBinaryLoader

from pipelines.clients.process import ProcessResult, Program, run_pipeline, run_process
from pipelines.redaction import Redactor
from portal.errors import PortalError

ENV_PREFIX = "PORTAL_CONNECTION_"
_NAME_RE = re.compile(r"[A-Za-z0-9_]+")
COPY_BATCH = 256 * 1024  # bytes handed to the target per write
TOOL_TIMEOUT_S = 6 * 3600
TOOL_TAIL_LINES = 40
# pg_dump and pg_restore see only this (and PGPASSWORD): nothing of the worker's
# environment, whose PG* variables would change what they connect to.
_TOOL_ENV = {"PATH": os.defpath, "LANG": "C.UTF-8"}


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
    if not _NAME_RE.fullmatch(name or ""):
        raise ConnectionNotConfigured(
            f"invalid connection name {name!r}: use letters, digits and underscores"
        )
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


def _redactor(secrets: Iterable[str | None]) -> Redactor:
    return Redactor(secret for secret in secrets if secret)


@contextlib.contextmanager
def guarded(secrets: Iterable[str | None] = ()) -> Iterator[None]:
    """Turn psycopg errors into PostgresError with a sanitised message."""
    try:
        yield
    except psycopg.Error as exc:
        sqlstate = getattr(exc, "sqlstate", None)
        message = _redactor(secrets)(f"{type(exc).__name__}: {exc}".strip())
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


# --- introspection -----------------------------------------------------------------------


@dataclass
class ColumnInfo:
    name: str
    attnum: int
    type_sql: str
    base_type: str
    typmod: int
    not_null: bool
    generated: bool

    @property
    def max_length(self) -> int | None:
        if self.base_type in ("varchar", "bpchar") and self.typmod >= 4:
            return self.typmod - 4
        return None

    @property
    def numeric_digits(self) -> int | None:
        """Digits before the decimal point allowed by numeric(p, s); None if unbounded."""
        if self.base_type == "numeric" and self.typmod >= 4:
            precision = ((self.typmod - 4) >> 16) & 0xFFFF
            scale = (self.typmod - 4) & 0xFFFF
            return precision - scale
        return None


@dataclass
class TableInfo:
    schema: str
    name: str
    oid: int
    kind: str  # 'r' table, 'p' partitioned table (holds no rows itself)
    root_schema: str  # the top partitioned table for partitions, else itself
    root_name: str
    size: int
    columns: list[ColumnInfo] = field(default_factory=list)
    unique_alone: set[str] = field(default_factory=set)
    populated_matview: bool = False

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, name: str) -> ColumnInfo | None:
        return next((c for c in self.columns if c.name == name), None)


def list_tables(conn: psycopg.Connection[Any]) -> list[TableInfo]:
    """User tables (plain and partitioned), not owned by an extension, with columns."""
    with guarded():
        rows = conn.execute(
            """
            SELECT c.oid, n.nspname, c.relname, c.relkind,
                   COALESCE(rn.nspname, n.nspname), COALESCE(rc.relname, c.relname),
                   CASE WHEN c.relkind = 'r' THEN pg_relation_size(c.oid) ELSE 0 END
            FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_class rc ON rc.oid = pg_partition_root(c.oid)
            LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
            WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
              AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg\\_%'
              AND NOT EXISTS (SELECT 1 FROM pg_depend d
                              WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                AND d.deptype = 'e')
            ORDER BY n.nspname, c.relname
            """
        ).fetchall()
        tables = {
            oid: TableInfo(schema, name, oid, kind, rschema, rname, size)
            for oid, schema, name, kind, rschema, rname, size in rows
        }
        if not tables:
            return []
        oids = list(tables)
        for relid, name, attnum, type_sql, base, typmod, notnull, generated in conn.execute(
            """
            SELECT a.attrelid, a.attname, a.attnum, format_type(a.atttypid, a.atttypmod),
                   bt.typname,
                   CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END,
                   a.attnotnull OR t.typnotnull, a.attgenerated <> ''
            FROM pg_attribute a
            JOIN pg_type t ON t.oid = a.atttypid
            JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype
                                             ELSE t.oid END
            WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attrelid, a.attnum
            """,
            (oids,),
        ):
            tables[relid].columns.append(
                ColumnInfo(name, attnum, type_sql, base, typmod, notnull, generated)
            )
        for relid, name in conn.execute(
            """
            SELECT i.indrelid, a.attname FROM pg_index i
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
            WHERE i.indisunique AND i.indnkeyatts = 1 AND i.indexprs IS NULL
              AND i.indrelid = ANY(%s)
            """,
            (oids,),
        ):
            tables[relid].unique_alone.add(name)
    return list(tables.values())


def list_sequences(conn: psycopg.Connection[Any]) -> list[tuple[str, str, int | None]]:
    """(schema, sequence, last_value); last_value is None if never used."""
    with guarded():
        return [
            (schema, name, last)
            for schema, name, last in conn.execute(
                """
                SELECT s.schemaname, s.sequencename, s.last_value FROM pg_sequences s
                WHERE s.schemaname NOT IN ('pg_catalog', 'information_schema')
                ORDER BY 1, 2
                """
            )
        ]


def list_matviews(conn: psycopg.Connection[Any]) -> list[tuple[str, str, bool]]:
    """(schema, name, populated) of materialized views, in creation order."""
    with guarded():
        return list(
            conn.execute(
                """
                SELECT n.nspname, c.relname, c.relispopulated FROM pg_class c
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind = 'm' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg\\_%' ORDER BY c.oid
                """
            )
        )


def list_foreign_keys(conn: psycopg.Connection[Any]) -> dict[tuple[str, str, str], bool]:
    """(schema, table, constraint) -> validated, for every foreign key."""
    with guarded():
        return {
            (schema, table, name): validated
            for schema, table, name, validated in conn.execute(
                """
                SELECT n.nspname, c.relname, k.conname, k.convalidated FROM pg_constraint k
                JOIN pg_class c ON c.oid = k.conrelid
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE k.contype = 'f' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg\\_%'
                """
            )
        }


@dataclass(frozen=True)
class ForeignKey:
    """A validated foreign key between two plain tables, as the source defines it."""

    oid: int  # the constraint's, in the source
    schema: str
    table: str
    name: str
    definition: str  # pg_get_constraintdef, every name schema-qualified
    referenced: int  # the referenced table's oid


def plain_foreign_keys(conn: psycopg.Connection[Any]) -> list[ForeignKey]:
    """Validated foreign keys from a plain table (not a partition) to another."""
    with guarded(), conn.transaction(force_rollback=True):
        # An empty search_path makes pg_get_constraintdef qualify every table name; the
        # savepoint's rollback restores the session's own.
        conn.execute("SELECT set_config('search_path', '', true)")
        rows = conn.execute(
            """
            SELECT k.oid, n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid),
                   k.confrelid
            FROM pg_constraint k
            JOIN pg_class c ON c.oid = k.conrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_class r ON r.oid = k.confrelid
            WHERE k.contype = 'f' AND k.convalidated
              AND c.relkind = 'r' AND NOT c.relispartition
              AND r.relkind = 'r' AND NOT r.relispartition
            """
        ).fetchall()
    return [ForeignKey(int(o), s, t, n, d, int(r)) for o, s, t, n, d, r in rows]


def add_foreign_keys(*, url: str, role: str | None, keys: Sequence[ForeignKey], jobs: int) -> None:
    """Add ``keys`` as the role, NOT VALID in one transaction (no row is read), then
    validate them ``jobs`` at a time. VALIDATE locks less than ADD (SHARE UPDATE
    EXCLUSIVE on the table, ROW SHARE on the referenced one), so keys that share a
    table are checked at once, where ADD's locks would queue them on one core. Each
    validation reads every row, as ADD would."""

    def session(conn: psycopg.Connection[Any]) -> None:
        if role:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))

    def table(key: ForeignKey) -> sql.Composable:
        return sql.Identifier(key.schema, key.table)

    with connect(url) as conn, guarded():
        session(conn)
        for key in keys:
            conn.execute(
                sql.SQL("ALTER TABLE ONLY {} ADD CONSTRAINT {} {} NOT VALID").format(
                    table(key), sql.Identifier(key.name), sql.SQL(key.definition)
                )
            )
        conn.commit()

    def validate(key: ForeignKey) -> None:
        with connect(url, autocommit=True) as conn, guarded():
            session(conn)
            conn.execute(
                sql.SQL("ALTER TABLE ONLY {} VALIDATE CONSTRAINT {}").format(
                    table(key), sql.Identifier(key.name)
                )
            )

    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="clone-fk") as pool:
        list(pool.map(validate, keys))  # re-raises a failure


def count_large_objects(conn: psycopg.Connection[Any]) -> int:
    with guarded():
        row = conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()
    return int(row[0]) if row else 0


def database_settings(conn: psycopg.Connection[Any]) -> tuple[str, str, str]:
    """(encoding, collate, ctype) of the connected database."""
    with guarded():
        row = conn.execute(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
            "WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return str(row[0]), str(row[1]), str(row[2])


def check_cast(*, conn: psycopg.Connection[Any], value: str, type_sql: str) -> str | None:
    """None if ``value`` is a valid literal of ``type_sql``, else the server's message."""
    try:
        with conn.transaction():
            conn.execute(sql.SQL("SELECT CAST({} AS {})").format(value, sql.SQL(type_sql)))
    except psycopg.Error as exc:
        return str(getattr(exc.diag, "message_primary", None) or exc)
    return None


def export_snapshot(conn: psycopg.Connection[Any]) -> str:
    """Start a repeatable-read transaction on ``conn`` and export its snapshot.

    Keep the transaction open until every reader has imported the snapshot:
    pg_dump and the copy workers then all see the same consistent state.
    """
    with guarded():
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
    assert row is not None
    return str(row[0])


def import_snapshot(*, conn: psycopg.Connection[Any], snapshot: str) -> None:
    with guarded():
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))


# --- clone databases and roles ----------------------------------------------------------


@dataclass(frozen=True)
class CloneState:
    database_exists: bool
    database_owner: str | None
    database_comment: str | None
    role_exists: bool
    role_comment: str | None


def clone_state(*, conn: psycopg.Connection[Any], database: str, role: str) -> CloneState:
    with guarded():
        db = conn.execute(
            """
            SELECT pg_get_userbyid(d.datdba), shobj_description(d.oid, 'pg_database')
            FROM pg_database d WHERE d.datname = %s
            """,
            (database,),
        ).fetchone()
        rl = conn.execute(
            "SELECT shobj_description(r.oid, 'pg_authid') FROM pg_roles r WHERE r.rolname = %s",
            (role,),
        ).fetchone()
    return CloneState(
        database_exists=db is not None,
        database_owner=db[0] if db else None,
        database_comment=db[1] if db else None,
        role_exists=rl is not None,
        role_comment=rl[0] if rl else None,
    )


def try_advisory_lock(*, conn: psycopg.Connection[Any], key: str) -> bool:
    """A session lock on ``key``; released when the connection closes (or dies)."""
    with guarded():
        row = conn.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)
        ).fetchone()
    return bool(row and row[0])


def _verifier(*, conn: psycopg.Connection[Any], role: str, password: str) -> str:
    # Hash client-side (SCRAM-SHA-256): the plain password never reaches the server,
    # so it cannot show up in its statement log or in an error message.
    return conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()


def create_login_role(
    *, conn: psycopg.Connection[Any], role: str, password: str, comment: str
) -> None:
    """Create the role and its marker comment in one transaction (autocommit conn)."""
    verifier = _verifier(conn=conn, role=role, password=password)
    with guarded([password]), conn.transaction():
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(verifier)
            )
        )
        conn.execute(
            sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(role), sql.Literal(comment))
        )
        superuser = conn.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        if not (superuser and superuser[0]):
            # pg_restore --role needs membership (managed services have no superuser).
            conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)))


def set_role_password(*, conn: psycopg.Connection[Any], role: str, password: str) -> None:
    verifier = _verifier(conn=conn, role=role, password=password)
    with guarded([password]):
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier))
        )


def create_database(
    *,
    conn: psycopg.Connection[Any],
    database: str,
    owner: str | None = None,
    settings: tuple[str, str, str] | None = None,
) -> None:
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database))
    if owner:
        query += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
    if settings:
        encoding, collate, ctype = settings
        query += sql.SQL(" TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
            sql.Literal(encoding), sql.Literal(collate), sql.Literal(ctype)
        )
    with guarded():
        conn.execute(query)


class CopyStrategy(enum.StrEnum):
    """How CREATE DATABASE copies its template (PostgreSQL 15+; older ones copy files)."""

    WAL_LOG = "WAL_LOG"  # block by block through the WAL: no checkpoint
    FILE_COPY = "FILE_COPY"  # a checkpoint, the files copied, another checkpoint


def create_database_from_template(
    *,
    conn: psycopg.Connection[Any],
    database: str,
    owner: str,
    template: str,
    strategy: CopyStrategy,
) -> None:
    """``CREATE DATABASE ... TEMPLATE ... STRATEGY ...``; the template must have no other
    connections meanwhile."""
    query = sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE {}").format(
        sql.Identifier(database), sql.Identifier(owner), sql.Identifier(template)
    )
    if conn.info.server_version >= 150000:
        query += sql.SQL(" STRATEGY {}").format(sql.SQL(CopyStrategy(strategy).value))
    with guarded():
        conn.execute(query)


def checkpoint(conn: psycopg.Connection[Any]) -> bool:
    """``CHECKPOINT``: write every dirty buffer now. False when this role may not (it
    needs superuser, or pg_checkpoint on PostgreSQL 15+); nothing is changed then."""
    try:
        with guarded():
            conn.execute("CHECKPOINT")
    except PostgresError as exc:
        if exc.sqlstate == "42501":  # insufficient_privilege
            return False
        raise
    return True


def set_template(*, conn: psycopg.Connection[Any], database: str, template: bool) -> None:
    """A template takes no connections (so it can always be copied) and cannot be dropped."""
    with guarded():
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE {} ALLOW_CONNECTIONS {}").format(
                sql.Identifier(database), sql.Literal(template), sql.Literal(not template)
            )
        )


def database_to_current_user(*, conn: psycopg.Connection[Any], database: str) -> None:
    with guarded():
        conn.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO CURRENT_USER").format(sql.Identifier(database))
        )


def disable_login(*, conn: psycopg.Connection[Any], role: str) -> None:
    with guarded():
        conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN PASSWORD NULL").format(sql.Identifier(role)))


def terminate_connections(*, conn: psycopg.Connection[Any], database: str) -> int:
    """End every other session on ``database``; how many there were."""
    with guarded():
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return len(rows)


def reassign_owned(*, conn: psycopg.Connection[Any], old: str, new: str) -> None:
    """Objects of ``old`` in the connected database (and shared ones) now belong to ``new``."""
    with guarded():
        conn.execute(
            sql.SQL("REASSIGN OWNED BY {} TO {}").format(sql.Identifier(old), sql.Identifier(new))
        )


def advisory_lock(
    *, conn: psycopg.Connection[Any], key: str, shared: bool, timeout_s: float
) -> bool:
    """Wait up to ``timeout_s`` for a session lock on ``key`` (shared: many holders at
    once, exclusive: one, and no shared holder); False when the wait timed out."""
    function = "pg_advisory_lock_shared" if shared else "pg_advisory_lock"
    try:
        with guarded(), conn.transaction():
            conn.execute(
                "SELECT set_config('lock_timeout', %s, true)", (f"{int(timeout_s * 1000)}ms",)
            )
            conn.execute(
                sql.SQL("SELECT {}(hashtextextended(%s, 0))").format(sql.Identifier(function)),
                (key,),
            )
    except PostgresError as exc:
        if exc.sqlstate == "55P03":  # lock_not_available: lock_timeout passed
            return False
        raise
    return True


def advisory_unlock(*, conn: psycopg.Connection[Any], key: str, shared: bool) -> None:
    function = "pg_advisory_unlock_shared" if shared else "pg_advisory_unlock"
    with guarded():
        conn.execute(
            sql.SQL("SELECT {}(hashtextextended(%s, 0))").format(sql.Identifier(function)),
            (key,),
        )


def comment_database(*, conn: psycopg.Connection[Any], database: str, comment: str) -> None:
    with guarded():
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(database), sql.Literal(comment)
            )
        )


def drop_database(*, conn: psycopg.Connection[Any], database: str) -> None:
    with guarded():
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )


def drop_role(*, conn: psycopg.Connection[Any], role: str) -> None:
    with guarded():
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def set_sequences(
    *, conn: psycopg.Connection[Any], sequences: Sequence[tuple[str, str, int | None]]
) -> None:
    with guarded(), conn.transaction():
        for schema, name, last in sequences:
            if last is not None:
                conn.execute(
                    "SELECT pg_catalog.setval(%s::regclass, %s, true)",
                    (sql.Identifier(schema, name).as_string(conn), last),
                )


def refresh_matview(*, conn: psycopg.Connection[Any], schema: str, name: str) -> None:
    with guarded():
        conn.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(sql.Identifier(schema, name)))


def count_rows(*, conn: psycopg.Connection[Any], schema: str, table: str) -> int:
    with guarded():
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM ONLY {}").format(sql.Identifier(schema, table))
        ).fetchone()
    return int(row[0]) if row else 0


def column_value_batches(
    *,
    conn: psycopg.Connection[Any],
    schema: str,
    table: str,
    column: str,
    batch: int = 50_000,
) -> Iterator[list[bytes | None]]:
    """The column's values as UTF-8 bytes of their text form (None for NULL), in batches.

    Binary results, one scalar per row: no per-value decoding and no row tuples in
    Python (millions of short-lived tuples would keep the garbage collector busy), so
    a batch can go straight into C-level set operations.
    """
    query = sql.SQL("SELECT {}::text FROM ONLY {}").format(
        sql.Identifier(column), sql.Identifier(schema, table)
    )
    with guarded(), conn.cursor(binary=True, row_factory=scalar_row) as cur:
        # text in binary format is the raw bytes (client encoding UTF8): load as bytes.
        cur.adapters.register_loader("text", ByteaBinaryLoader)
        cur.execute(query)
        while rows := cur.fetchmany(batch):
            yield rows


@dataclass(frozen=True)
class ConstantCheck:
    """Every value of ``column`` must be ``expected`` (a ``type_sql`` literal; None: NULL)."""

    column: str
    expected: str | None
    type_sql: str
    null_ok: bool = False


@dataclass(frozen=True)
class ShapeCheck:
    """Rows whose ``value`` (a text expression of a column) is not NULL and for which the
    condition ``producible`` is not true: the candidates of a leak."""

    value: sql.Composable
    producible: sql.Composable

    def outside(self) -> sql.Composed:
        return sql.SQL("{v} IS NOT NULL AND ({ok}) IS NOT TRUE").format(
            v=self.value, ok=self.producible
        )


def table_checks(
    *,
    conn: psycopg.Connection[Any],
    schema: str,
    table: str,
    checks: Sequence[ConstantCheck],
    shapes: Sequence[ShapeCheck] = (),
) -> tuple[int, list[int], list[int]]:
    """(row count, rows violating each check, rows outside each shape) in one scan of
    the table."""
    parts: list[sql.Composable] = [sql.SQL("count(*)")]
    for check in checks:
        col = sql.Identifier(check.column)
        if check.expected is None:
            cond: sql.Composable = sql.SQL("{} IS NOT NULL").format(col)
        else:
            cond = sql.SQL("{} IS DISTINCT FROM CAST({} AS {})").format(
                col, sql.Literal(check.expected), sql.SQL(check.type_sql)
            )
            if check.null_ok:
                cond = sql.SQL("{} IS NOT NULL AND {}").format(col, cond)
        parts.append(sql.SQL("count(*) FILTER (WHERE {})").format(cond))
    for shape in shapes:
        parts.append(sql.SQL("count(*) FILTER (WHERE {})").format(shape.outside()))
    query = sql.SQL("SELECT {} FROM ONLY {}").format(
        sql.SQL(", ").join(parts), sql.Identifier(schema, table)
    )
    with guarded():
        row = conn.execute(query).fetchone()
    assert row is not None
    counts = [int(n) for n in row[1:]]
    return int(row[0]), counts[: len(checks)], counts[len(checks) :]


def values_present(
    *, conn: psycopg.Connection[Any], schema: str, table: str, column: str, values: Sequence[str]
) -> list[str]:
    """Which of ``values`` occur in the column (compared as text)."""
    query = sql.SQL("SELECT DISTINCT {}::text FROM ONLY {} WHERE {}::text = ANY(%s)").format(
        sql.Identifier(column), sql.Identifier(schema, table), sql.Identifier(column)
    )
    with guarded():
        return [row[0] for row in conn.execute(query, (list(values),))]


def values_outside(
    *, conn: psycopg.Connection[Any], schema: str, table: str, shape: ShapeCheck, limit: int
) -> list[str]:
    """Up to ``limit`` distinct values outside ``shape``."""
    query = sql.SQL("SELECT DISTINCT {v} FROM ONLY {t} WHERE {outside} LIMIT {n}").format(
        v=shape.value,
        t=sql.Identifier(schema, table),
        outside=shape.outside(),
        n=sql.Literal(limit),
    )
    with guarded():
        return [row[0] for row in conn.execute(query)]


def execute(url: str, statements: str | Sequence[str], *, autocommit: bool = True) -> None:
    """Run SQL statements (no parameters) on ``url``."""
    items = [statements] if isinstance(statements, str) else list(statements)
    with connect(url, autocommit=autocommit) as conn, guarded([url_password(url)]):
        for statement in items:
            conn.execute(statement.encode())  # bytes: a plain, parameterless query


def fetch_all(url: str, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with connect(url) as conn, guarded([url_password(url)]):
        return list(conn.execute(query, params or None).fetchall())


# --- COPY streaming ---------------------------------------------------------------------


class CopyCancelled(Exception):
    pass


def _copy_rows(
    *, conn: psycopg.Connection[Any], out: psycopg.Copy, tags: list[int] | None = None
) -> Iterator[Any]:
    """The rows of a ``COPY ... TO STDOUT`` in progress on ``conn``.

    Same rows as iterating ``out``, for about half the CPU: rows libpq has already
    buffered are taken with one ``PQgetCopyData`` call each (through psycopg's
    documented ``pgconn``), and only when none is buffered does ``out.read()`` wait
    for more. If the end of the copy turns up in the buffer, its final result is
    collected here (``Copy`` needs nothing more on exit for COPY TO), and its row
    count appended to ``tags`` (else psycopg sets the cursor's ``rowcount``).
    """
    pgconn = conn.pgconn
    get = pgconn.get_copy_data
    while True:
        size, data = get(1)  # non-blocking
        if size > 0:
            yield data
        elif size == 0:  # nothing buffered: psycopg waits for the next row (or the end)
            row = out.read()
            if not row:
                return
            yield row
        else:  # the copy ended (or failed): collect its result, as libpq requires
            error = None
            while (result := pgconn.get_result()) is not None:
                if result.status != pq.ExecStatus.COMMAND_OK:
                    error = result.error_message.decode(errors="replace").strip()
                elif tags is not None and result.command_tuples is not None:
                    tags.append(result.command_tuples)
            if error:
                raise psycopg.DatabaseError(error)
            return


def copy_table(
    *,
    source: psycopg.Connection[Any],
    target: psycopg.Connection[Any],
    schema: str,
    table: str,
    columns: Sequence[str],
    transform: Callable[[bytes], bytes] | None,
    stop: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Stream one table from ``source`` to ``target`` with COPY (text format).

    ``transform`` rewrites each row (one COPY text line); with None the bytes pass
    straight through. The target side truncates and copies in one transaction with
    FREEZE (rows are written frozen: no later anti-wraparound rewrite, and an
    interrupted copy leaves the table empty). Returns the number of rows.
    """
    name = sql.Identifier(schema, table)
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    copy_out = sql.SQL("COPY {} ({}) TO STDOUT").format(name, cols)
    copy_in = sql.SQL("COPY {} ({}) FROM STDIN WITH (FREEZE)").format(name, cols)
    with guarded(), target.transaction():
        target.execute(sql.SQL("TRUNCATE ONLY {}").format(name))
        with (
            source.cursor() as scur,
            target.cursor() as tcur,
            scur.copy(copy_out) as out,
            tcur.copy(copy_in) as into,
        ):
            messages = _copy_rows(conn=source, out=out)  # one row per message
            # Unmasked rows go on as the buffers libpq gave (bytes.join takes them).
            lines = messages if transform is None else (transform(bytes(m)) for m in messages)
            rows = _relay(
                lines=lines, into=into, stop=stop, progress=progress, what=f"{schema}.{table}"
            )
    return rows


def _relay(
    *,
    lines: Iterable[Any],
    into: psycopg.Copy,
    stop: threading.Event | None,
    progress: Callable[[int], None] | None,
    what: str,
) -> int:
    """Write COPY data to the target in batches, checking for a stop between batches;
    returns how many messages (about a row each) went."""
    batch: list[Any] = []
    size = count = 0
    for data in lines:
        batch.append(data)
        size += len(data)
        count += 1
        if size >= COPY_BATCH:
            into.write(b"".join(batch))
            batch, size = [], 0
            if stop is not None and stop.is_set():
                raise CopyCancelled(f"copy of {what} cancelled")
            if progress is not None:
                progress(count)
    if batch:
        into.write(b"".join(batch))
    return count


_COPY_TAG = re.compile(r"COPY (\d+)")
_TAKEN_TAG = re.compile(r"portal-copy-taken (\d+)")


def copy_table_binary(
    *,
    source_url: str,
    target_url: str,
    schema: str,
    table: str,
    columns: Sequence[str],
    snapshot: str | None = None,
    select: sql.Composable | None = None,
    session: Mapping[str, str] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    secrets: Iterable[str | None] = (),
) -> int:
    """Relay one table as binary COPY bytes from one ``psql`` to another: the rows are
    never parsed, and the bytes never pass through this process (nor its GIL).

    ``select`` (a query giving ``columns`` in order, with the columns' exact types)
    replaces ``COPY table (columns) TO STDOUT``: masking done by the source's server.
    ``session`` holds settings the query reads with ``current_setting`` (a masking
    key): they reach the source's psql in its environment (``PGOPTIONS``, so the
    server gets them in the connection's startup packet), never in argv or in a
    statement's text; ``/proc/PID/environ`` is readable only by the same user (and
    root), like the ``PGPASSWORD`` the tools already get. The source reads in
    ``snapshot``. The target truncates and copies in one transaction with FREEZE
    (rows are written frozen; an interrupted copy leaves the table empty). Returns
    the rows the source sent, checked equal to the rows the target took.
    """
    name = sql.Identifier(schema, table)
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    copy_out = (
        sql.SQL("COPY {} ({}) TO STDOUT (FORMAT binary)").format(name, cols)
        if select is None
        else sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(select)
    )
    # The source's script goes on its stdin. "-o /dev/stderr": its command tags
    # (COPY n) become output lines, while "\g /dev/stdout" sends the data down the pipe.
    begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n"
    if snapshot:
        begin += sql.SQL("SET TRANSACTION SNAPSHOT {};\n").format(sql.Literal(snapshot)).as_string()
    script = f"{begin}{copy_out.as_string()} \\g /dev/stdout\nCOMMIT;\n"
    copy_in = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary, FREEZE)").format(name, cols)
    truncate = sql.SQL("TRUNCATE ONLY {}").format(name)
    what = f"copy of {schema}.{table}"
    src_info, src_env = _tool_env(source_url, session=session)
    tgt_info, tgt_env = _tool_env(target_url)
    for env in (src_env, tgt_env):
        env["PGCLIENTENCODING"] = "UTF8"  # the caller checked both servers store UTF-8
    psql = ["psql", "--no-psqlrc", "--set=ON_ERROR_STOP=1"]
    lines: list[str] = []
    _run_tools(
        programs=[
            Program(
                argv=_located([*psql, "--output=/dev/stderr", "--file=-", f"--dbname={src_info}"]),
                env=src_env,
            ),
            Program(
                argv=_located(
                    [
                        *psql,
                        "--quiet",
                        "--single-transaction",
                        f"--dbname={tgt_info}",
                        f"--command={truncate.as_string()}",
                        f"--command={copy_in.as_string()}",
                        "--command=\\echo portal-copy-taken :ROW_COUNT",
                    ]
                ),
                env=tgt_env,
            ),
        ],
        urls=[source_url, target_url],
        secrets=[*secrets, *(session or {}).values()],
        what=what,
        stdin_data=script.encode(),
        on_line=lines.append,
        should_cancel=should_cancel,
    )
    sent = [int(m.group(1)) for line in lines if (m := _COPY_TAG.fullmatch(line))]
    taken = [int(m.group(1)) for line in lines if (m := _TAKEN_TAG.fullmatch(line))]
    if len(sent) != 1 or sent != taken:
        raise PostgresError(f"{what}: the source sent {sent} rows, the target took {taken}")
    return sent[0]


def binary_copy_unsupported(conn: psycopg.Connection[Any]) -> set[int]:
    """Oids of tables with a column whose type has no binary send/receive function."""
    with guarded():
        rows = conn.execute(
            """
            SELECT DISTINCT a.attrelid FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
            WHERE a.attnum > 0 AND NOT a.attisdropped
              AND (t.typsend::oid = 0 OR t.typreceive::oid = 0)
            """
        ).fetchall()
    return {int(r[0]) for r in rows}


def utf8_session(conn: psycopg.Connection[Any]) -> bool:
    """True if the server stores UTF-8 and the session reads UTF-8."""
    return all(
        conn.info.parameter_status(name) in ("UTF8", b"UTF8")
        for name in ("server_encoding", "client_encoding")
    )


# --- pg_dump / pg_restore ---------------------------------------------------------------


def _tool_env(url: str, *, session: Mapping[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """(connection string without password or options, minimal environment carrying the
    password and the options: ``session`` settings are added to them, never to argv)."""
    info = conninfo_to_dict(url)
    password = info.pop("password", None)
    options = [str(info.pop("options", None) or "")]
    for setting, value in (session or {}).items():
        if not re.fullmatch(r"[A-Za-z0-9_.]+", setting + value):
            raise ValueError(f"setting {setting}: only letters, digits, '_' and '.' can be passed")
        options.append(f"-c {setting}={value}")
    env = dict(_TOOL_ENV)
    if password:
        env["PGPASSWORD"] = str(password)
    if " ".join(options).strip():
        env["PGOPTIONS"] = " ".join(options).strip()  # libpq's options, from the environment
    return make_conninfo("", **info), env


def _located(args: list[str]) -> list[str]:
    """The tool in ``PORTAL_PG_BIN_DIR``, else on the worker's PATH (the child's own PATH
    is the minimal one)."""
    folder = str(django_settings.PORTAL_PG_BIN_DIR or "")
    found = shutil.which(args[0], path=folder) if folder else shutil.which(args[0])
    return [found or args[0], *args[1:]]


def _run_tools(
    *,
    programs: Sequence[Program],
    urls: Sequence[str],
    what: str,
    secrets: Iterable[str | None] = (),
    stdin_data: bytes | None = None,
    on_line: Callable[[str], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> ProcessResult:
    """Run one tool, or a pipeline of them; raise PostgresError (or CopyCancelled)
    unless every one of them succeeded. Output is redacted of the URLs' passwords and
    ``secrets``."""
    try:
        done = run_pipeline(
            programs=programs,
            cwd=Path.cwd(),
            timeout_s=TOOL_TIMEOUT_S,
            redact=_redactor([*(url_password(url) for url in urls), *secrets]),
            tail_size=TOOL_TAIL_LINES,
            stdin_data=stdin_data,
            on_line=on_line,
            should_cancel=should_cancel or (lambda: False),
        )
    except OSError as exc:
        raise PostgresError(f"{what} failed: {type(exc).__name__}", retryable=False) from None
    if done.cancelled:
        raise CopyCancelled(f"{what} cancelled")
    if done.timed_out:
        raise PostgresError(f"{what} failed: timed out after {TOOL_TIMEOUT_S} s")
    if done.returncode != 0:
        tail = "\n".join(done.tail).strip()[-2000:]
        codes = ", ".join(str(code) for code in done.returncodes) or str(done.returncode)
        raise PostgresError(f"{what} failed (exit {codes}): {tail}")
    return done


def _run_tool(*, args: list[str], url: str, what: str) -> None:
    conninfo, env = _tool_env(url)
    args = [a.replace("{conninfo}", conninfo) for a in args]
    _run_tools(programs=[Program(argv=_located(args), env=env)], urls=[url], what=what)


def dump_schema(*, url: str, path: Path, snapshot: str | None = None) -> None:
    """``pg_dump --schema-only -Fc`` (pre-data and post-data) into ``path``."""
    args = ["pg_dump", "--schema-only", "--format=custom", "--no-owner", "--no-privileges"]
    if snapshot:
        args.append(f"--snapshot={snapshot}")
    _run_tool(args=[*args, f"--file={path}", "--dbname={conninfo}"], url=url, what="pg_dump")


def restore_section(*, url: str, path: Path, section: str, role: str | None, jobs: int = 1) -> None:
    """``pg_restore --section=SECTION`` of a custom-format archive into ``url``."""
    args = [
        "pg_restore",
        f"--section={section}",
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
    ]
    if role:
        args.append(f"--role={role}")  # objects end up owned by the clone's role
    args += [f"--jobs={jobs}"] if jobs > 1 else ["--single-transaction"]
    _run_tool(args=[*args, "--dbname={conninfo}", str(path)], url=url, what=f"pg_restore {section}")


_TOC_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")


@dataclass(frozen=True)
class TocEntry:
    """One line of ``pg_restore --list``: catalog and object OIDs of the source."""

    line: str
    catalog_oid: int
    object_oid: int
    desc: str  # "INDEX public orders_user_id postgres", "FK CONSTRAINT ...", ...


def list_archive(path: Path, section: str) -> list[TocEntry]:
    """The entries of one section of a custom-format archive."""
    try:
        done = run_process(
            argv=_located(["pg_restore", "--list", f"--section={section}", str(path)]),
            cwd=Path.cwd(), env=_TOOL_ENV, timeout_s=600, capture_stdout=True,
        )  # fmt: skip
    except OSError as exc:
        raise PostgresError(f"pg_restore --list failed: {type(exc).__name__}") from None
    if done.returncode != 0 or done.timed_out:
        tail = "\n".join(done.tail).strip()[-2000:]
        raise PostgresError(f"pg_restore --list failed: {tail}")
    entries = []
    for line in done.stdout.decode("utf-8", "replace").splitlines():
        match = _TOC_LINE.match(line)
        if match:
            entries.append(TocEntry(line, int(match.group(2)), int(match.group(3)), match.group(4)))
    return entries


def table_objects(conn: psycopg.Connection[Any]) -> dict[tuple[int, int], int]:
    """(catalog oid, object oid) -> table oid for indexes and primary-key, unique and
    exclusion constraints of plain tables (not partitions): objects that only need
    their own table's data, so they can be built as soon as that table is copied."""
    with guarded():
        rows = conn.execute(
            """
            SELECT 'pg_class'::regclass::oid, i.indexrelid, i.indrelid
            FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
            WHERE c.relkind = 'r' AND NOT c.relispartition
            UNION ALL
            SELECT 'pg_constraint'::regclass::oid, k.oid, k.conrelid
            FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
            WHERE k.contype IN ('p', 'u', 'x') AND c.relkind = 'r' AND NOT c.relispartition
            """
        ).fetchall()
    return {(int(cat), int(obj)): int(rel) for cat, obj, rel in rows}


def restore_entries(
    *, url: str, path: Path, entries: Sequence[TocEntry], role: str | None, jobs: int = 1
) -> None:
    """``pg_restore --use-list``: only the given entries of the archive."""
    list_file = path.with_name(f"{path.stem}-{threading.get_ident()}-{len(entries)}.list")
    list_file.write_text("".join(e.line + "\n" for e in entries))
    args = ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error"]
    if role:
        args.append(f"--role={role}")
    args += [f"--jobs={jobs}"] if jobs > 1 else ["--single-transaction"]
    try:
        _run_tool(
            args=[*args, f"--use-list={list_file}", "--dbname={conninfo}", str(path)],
            url=url,
            what="pg_restore",
        )
    finally:
        list_file.unlink(missing_ok=True)


def dump_restore_pipe(source_url: str, target_url: str) -> None:
    """``pg_dump -Fc SOURCE | pg_restore -d TARGET``: the plain, unmasked copy."""
    src_info, src_env = _tool_env(source_url)
    tgt_info, tgt_env = _tool_env(target_url)
    dump = ["pg_dump", "--format=custom", f"--dbname={src_info}"]
    restore = ["pg_restore", "--no-owner", "--exit-on-error", f"--dbname={tgt_info}"]
    _run_tools(
        programs=[
            Program(argv=_located(dump), env=src_env),
            Program(argv=_located(restore), env=tgt_env),
        ],
        urls=[source_url, target_url],
        what="pg_dump | pg_restore",
    )
