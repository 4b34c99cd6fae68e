"""Clone databases and their owner roles: create, copy from a template, lock, hand over,
drop; and what a clone adds after its data (foreign keys, sequences, materialized
views)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pipelines.clients.postgres.catalog import ForeignKey
from pipelines.clients.postgres.connection import PostgresError, connect, guarded


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
