"""What a database holds: tables and their columns, sequences, materialized views,
foreign keys, settings; and the snapshot every reader of a clone's source shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pipelines.clients.postgres.connection import guarded


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
