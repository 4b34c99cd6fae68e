"""Scans of a clone's tables for its checks: row counts, constant and shape checks, and
the values of a masked column, in batches or by lookup."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import scalar_row
from psycopg.types.string import ByteaBinaryLoader

from pipelines.clients.postgres.connection import guarded


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
