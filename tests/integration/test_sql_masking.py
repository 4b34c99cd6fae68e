"""The SQL transformers (run by the source's server) give exactly the Python ones' output."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pipelines.clients import postgres as pg
from pipelines.dbclone.clone_plan import TablePlan
from pipelines.dbclone.masking import ColumnType, Masker, Rule, could_produce, unescape_field
from pipelines.dbclone.sql_masking import masked_select, producible, text_value

pytestmark = pytest.mark.integration

ADMIN_URL = os.environ.get("PORTAL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
KEY = b"k" * 32

# column, SQL type, transformer (None: copied as it is), ColumnType
COLUMNS: list[tuple[str, str, str | None, ColumnType]] = [
    ("id", "integer", None, ColumnType("integer", "int4")),
    ("e", "text", "email", ColumnType("text", "text")),
    ("ev", "varchar(40)", "email", ColumnType("character varying(40)", "varchar", 40)),
    ("n", "text", "name", ColumnType("text", "text")),
    ("nv", "varchar(7)", "name", ColumnType("character varying(7)", "varchar", 7)),
    ("p", "varchar(20)", "phone", ColumnType("character varying(20)", "varchar", 20)),
    ("pi", "bigint", "phone", ColumnType("bigint", "int8")),
    ("h", "text", "hash", ColumnType("text", "text")),
    ("hv", "varchar(20)", "hash", ColumnType("character varying(20)", "varchar", 20)),
    ("hc", "char(24)", "hash", ColumnType("character(24)", "bpchar", 24)),
    ("hu", "uuid", "hash", ColumnType("uuid", "uuid")),
    ("hb", "bytea", "hash", ColumnType("bytea", "bytea")),
    ("r", "varchar(5)", "redact", ColumnType("character varying(5)", "varchar", 5)),
    ("z", "text", "null", ColumnType("text", "text")),
    ("f", "text", "fixed", ColumnType("text", "text")),
    ("kept", "text", "keep", ColumnType("text", "text")),
]

AWKWARD = [
    "",
    " ",
    "a",
    "Zoë Ångström",
    "日本語のテキスト",
    "emoji 🙂👩‍👩‍👧",
    "tab\there",
    "new\nline",
    "back\\slash",
    "\\N",
    "trailing   ",
    "x" * 300,
    "Alice.Smith@corp.example.com",
    "+44 20 7946 0000",
    "'quote\" mark",
    "\r\x01\x7f",
]


def values(count: int) -> Iterator[str | None]:
    rng = random.Random(12)
    yield None
    yield from AWKWARD
    alphabet = "abcXYZ019 @.+-_éß漢\t\\"
    for _ in range(count):
        yield "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))


def rule_for(column: str, kind: str) -> Rule:
    return Rule(
        f"t.{column}", "pg_temp", "t", column, kind, "fixed value" if kind == "fixed" else None
    )


def row(i: int, v: str | None) -> tuple[Any, ...]:
    """One source row: ``v`` in every masked column, cut to fit, or NULL."""
    if v is None:
        return (i, *[None] * (len(COLUMNS) - 1))
    out: list[Any] = [i]
    for _, _, _, ctype in COLUMNS[1:]:
        if ctype.base_type == "int8":
            out.append(4400000000 + i)
        elif ctype.base_type == "uuid":
            out.append(f"{i:08x}-0000-4000-8000-{i:012x}")
        elif ctype.base_type == "bytea":
            out.append(v.encode())
        else:
            out.append(v[: ctype.max_length] if ctype.max_length else v)
    return tuple(out)


@pytest.fixture
def conn() -> Iterator[psycopg.Connection[Any]]:
    with pg.connect(ADMIN_URL, autocommit=True) as c:
        assert pg.utf8_session(c)
        c.execute(
            "CREATE TEMP TABLE t ("
            + ", ".join(f"{name} {type_}" for name, type_, _, _ in COLUMNS)
            + ")"
        )
        rows = [row(i, v) for i, v in enumerate(values(2000))]
        with c.cursor() as cur:
            cur.executemany("INSERT INTO t VALUES (" + ", ".join(["%s"] * len(COLUMNS)) + ")", rows)
        yield c


def copy_text(conn: psycopg.Connection[Any], query: sql.Composable) -> list[list[bytes]]:
    with conn.cursor() as cur, cur.copy(sql.SQL("COPY ({}) TO STDOUT").format(query)) as out:
        return [bytes(row)[:-1].split(b"\t") for row in out]


def test_sql_transformers_equal_python_transformers(conn: psycopg.Connection[Any]) -> None:
    masker = Masker(KEY)
    rules = [(rule_for(name, kind), ctype) for name, _, kind, ctype in COLUMNS if kind]
    table = pg.TableInfo("pg_temp", "t", 0, "r", "pg_temp", "t", 0)
    plan = TablePlan(table, [name for name, _, _, _ in COLUMNS], rules)
    masked = masked_select(plan=plan, masker=masker)
    assert KEY.hex() not in masked.query.as_string(conn)
    for block in masked.session.values():
        assert block not in masked.query.as_string(conn)  # only in bound parameters
    source = copy_text(conn, sql.SQL("SELECT * FROM t ORDER BY id"))
    for setting, value in masked.session.items():
        conn.execute("SELECT set_config(%s, %s, false)", (setting, value))
    out = copy_text(conn, sql.SQL("SELECT * FROM ({}) q ORDER BY 1").format(masked.query))
    assert len(out) == len(source) > 2000
    transforms = [
        masker.field_transform(rule=rule_for(name, kind), col=ctype) if kind else None
        for name, _, kind, ctype in COLUMNS
    ]
    checked = 0
    for src_row, out_row in zip(source, out, strict=True):
        for i, (name, _, _, _) in enumerate(COLUMNS):
            expected = src_row[i] if transforms[i] is None else transforms[i](src_row[i])
            assert out_row[i] == expected, (name, src_row[i])
            checked += 1
    assert checked == len(COLUMNS) * len(source)
    # NULLs stay NULL under the keyed transformers; the key changes the output.
    assert out[0][1] == b"\\N"
    other = masked_select(plan=plan, masker=Masker(b"o" * 32))
    assert other.session != masked.session


def near_misses(good: str) -> list[str]:
    return [
        good,
        good.upper(),
        good[:-1],
        good + "0",
        good + "\n",
        " " + good,
        good[:3] + "G" + good[4:],
        good[:3] + "٣" + good[4:],  # a non-ASCII digit
        good.replace("-", "_"),
        "\\x" + good,
        good[2:],
    ]


@pytest.mark.parametrize(
    ("kind", "ctype"),
    [
        ("email", ColumnType("text", "text")),
        ("phone", ColumnType("text", "text")),
        ("hash", ColumnType("text", "text")),
        ("hash", ColumnType("uuid", "uuid")),
        ("hash", ColumnType("bytea", "bytea")),
        ("hash", ColumnType("character varying(20)", "varchar", 20)),
        ("name", ColumnType("text", "text")),
        ("name", ColumnType("character varying(7)", "varchar", 7)),
    ],
)
def test_sql_shape_check_equals_could_produce(
    conn: psycopg.Connection[Any], kind: str, ctype: ColumnType
) -> None:
    masker = Masker(KEY)
    rule = rule_for("v", kind)
    transform = masker.field_transform(rule=rule, col=ctype)
    produced = [unescape_field(transform(f"input {i}".encode())).decode() for i in range(200)]
    if ctype.base_type == "bytea":
        produced = [p.replace("\\\\", "\\") for p in produced]
    candidates = [v for p in produced[:20] for v in near_misses(p)] + produced + AWKWARD
    candidates += ["Ada Abbott", "Ada Abbot", "ada abbott", "Ada  Abbott", "u_", "555", "0" * 65]
    value = text_value("v")
    query = sql.SQL("SELECT v, {} FROM unnest(%s::text[]) AS v").format(
        producible(rule=rule, col=ctype, value=value)
    )
    rows = conn.execute(query, (candidates,)).fetchall()
    assert len(rows) == len(candidates)
    accepted = 0
    for text, ok in rows:
        assert bool(ok) == could_produce(rule=rule, value=text, col=ctype), text
        accepted += bool(ok)
    assert accepted >= len(produced) and accepted < len(rows)


def test_hash_and_email_cut_to_odd_widths_equal_python(conn: psycopg.Connection[Any]) -> None:
    # The SQL encodes only the digest bytes a width needs: odd widths cut half a byte.
    columns = [
        ("h19", "varchar(19)", "hash", ColumnType("character varying(19)", "varchar", 19)),
        ("h1", "varchar(1)", "hash", ColumnType("character varying(1)", "varchar", 1)),
        ("h63", "varchar(63)", "hash", ColumnType("character varying(63)", "varchar", 63)),
        ("hc7", "char(7)", "hash", ColumnType("character(7)", "bpchar", 7)),
        ("e", "varchar(34)", "email", ColumnType("character varying(34)", "varchar", 34)),
    ]
    conn.execute(
        "CREATE TEMP TABLE odd AS SELECT "
        + ", ".join(f"CAST(left(e, {c.max_length}) AS {t}) AS {n}" for n, t, _, c in columns)
        + " FROM t WHERE e IS NOT NULL"
    )
    masker = Masker(KEY)
    rules = [(rule_for(name, kind), ctype) for name, _, kind, ctype in columns]
    table = pg.TableInfo("pg_temp", "odd", 0, "r", "pg_temp", "odd", 0)
    masked = masked_select(plan=TablePlan(table, [c[0] for c in columns], rules), masker=masker)
    for setting, value in masked.session.items():
        conn.execute("SELECT set_config(%s, %s, false)", (setting, value))
    source = copy_text(conn, sql.SQL("SELECT * FROM odd"))
    out = copy_text(conn, sql.SQL("SELECT * FROM ({}) q").format(masked.query))
    expected = [
        [
            masker.field_transform(rule=rule, col=ctype)(field)
            for (rule, ctype), field in zip(rules, row, strict=True)
        ]
        for row in source
    ]
    assert len(out) == len(source) > 2000
    assert sorted(out) == sorted(expected)
    assert {len(row[0]) for row in out} == {19} and {len(row[1]) for row in out} == {1}
