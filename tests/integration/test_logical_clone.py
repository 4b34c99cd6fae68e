"""The postgres_logical clone driver against the local PostgreSQL (trust auth)."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from psycopg import sql as pgsql
from pytest_django.fixtures import Settings

from pipelines.clients import postgres as pg
from pipelines.clients.postgres import streams, tools
from pipelines.clients.process import Program
from pipelines.dbclone import logical, table_copy
from pipelines.dbclone.clone_plan import TablePlan
from pipelines.dbclone.logical import (
    CloneError,
    CloneResult,
    LogicalCloneSpec,
    clone_database_name,
    clone_logical,
    clone_role_name,
    drop_clone,
)
from pipelines.dbclone.masking import Masker
from pipelines.redaction import Redactor
from tests.integration.conftest import q, scratch_database

ADMIN_URL = os.environ.get("PORTAL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ROOT = Path(__file__).resolve().parents[2]

SOURCE_SQL = r"""
CREATE SCHEMA billing;
CREATE TABLE users (
    id serial PRIMARY KEY,
    email varchar(120) NOT NULL UNIQUE,
    full_name text NOT NULL,
    phone varchar(20),
    address text,
    api_token text,
    nickname varchar(6),
    email_domain text GENERATED ALWAYS AS (split_part(email, '@', 2)) STORED
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    user_id integer NOT NULL REFERENCES users (id),
    customer_email text NOT NULL,
    total numeric(10, 2) NOT NULL
);
CREATE INDEX orders_customer_email ON orders (customer_email);
CREATE TABLE billing.cards (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    card_number char(19) NOT NULL,
    iban text
);
CREATE TABLE events (
    id bigserial,
    happened date NOT NULL,
    actor_email text,
    PRIMARY KEY (id, happened)
) PARTITION BY RANGE (happened);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE MATERIALIZED VIEW order_counts AS
    SELECT customer_email, count(*) AS n FROM orders GROUP BY customer_email;

INSERT INTO users (email, full_name, phone, address, api_token, nickname)
SELECT 'user' || g || '@corp.example.com', 'Real Person ' || g,
       CASE WHEN g % 5 = 0 THEN NULL ELSE '+44 20 7946 ' || lpad(g::text, 4, '0') END,
       g || ' High Street', md5(g::text), 'n' || g
FROM generate_series(1, 300) g;
-- Awkward values: COPY escapes (tab, backslash, newline) and non-ASCII.
INSERT INTO users (email, full_name, phone, address, api_token, nickname) VALUES
    (E'odd\tone@corp.example.com', E'Back\\slash\nNewline', '555', NULL, NULL, NULL),
    ('zoë@corp.example.com', 'Zoë Ünïcode', NULL, 'Straße 1', NULL, 'zoë');
INSERT INTO orders (user_id, customer_email, total)
SELECT u.id, u.email, (g % 97) + 0.5
FROM generate_series(1, 900) g JOIN users u ON u.id = 1 + g % 302;
INSERT INTO billing.cards (user_id, card_number, iban)
SELECT id, '4111 1111 1111 ' || lpad(id::text, 4, '0'), 'DE' || lpad(id::text, 20, '0')
FROM users WHERE id % 2 = 0;
INSERT INTO events (happened, actor_email)
SELECT date '2024-06-01' + (g * 2),
       CASE WHEN g % 4 = 0 THEN NULL ELSE 'user' || g || '@corp.example.com' END
FROM generate_series(1, 200) g;
-- Sequences ahead of the data, as after deleted rows.
SELECT setval('orders_id_seq', 5000);
SELECT setval('users_id_seq', 777);
REFRESH MATERIALIZED VIEW order_counts;
"""

MASKING: dict[str, Any] = {
    "users.email": "email",
    "users.full_name": "name",
    "users.phone": "phone",
    "users.address": "redact",
    "users.api_token": "hash",
    "users.nickname": {"fixed": "anon"},
    "orders.customer_email": "email",
    "billing.cards.card_number": "hash",
    "billing.cards.iban": "null",
    "events.actor_email": "email",  # on the partitioned parent: applies to the partitions
}


@dataclass
class Recorder:
    """The stage's log and add_secret, recording their order."""

    events: list[tuple[str, str]] = field(default_factory=list)
    raise_after: str | None = None

    def log(self, line: str) -> None:
        self.events.append(("log", line))
        if self.raise_after and self.raise_after in line:
            raise KeyboardInterrupt("worker killed")  # like a SIGTERM'd stage

    def add_secret(self, value: str) -> None:
        self.events.append(("secret", value))

    @property
    def lines(self) -> list[str]:
        return [text for kind, text in self.events if kind == "log"]


@dataclass
class Env:
    source_url: str
    account: str
    created_runs: list[str]

    def spec(self, **changes: Any) -> LogicalCloneSpec:
        values: dict[str, Any] = {"source": "SRC", "target": "TGT", "masking": MASKING, "jobs": 2}
        values.update(changes)
        return LogicalCloneSpec(**values)

    def clone(self, run_id: str, recorder: Recorder | None = None, **changes: Any) -> CloneResult:
        self.created_runs.append(run_id)
        rec = recorder or Recorder()
        return clone_logical(
            spec=self.spec(**changes),
            account=self.account,
            service="orders",
            run_id=run_id,
            log=rec.log,
            add_secret=rec.add_secret,
        )

    def names(self, run_id: str) -> tuple[str, str]:
        database = clone_database_name(account=self.account, service="orders", run_id=run_id)
        return database, clone_role_name(database)


def exists(database: str, role: str) -> tuple[bool, bool]:
    db = q(ADMIN_URL, "SELECT 1 FROM pg_database WHERE datname = %s", database)
    rl = q(ADMIN_URL, "SELECT 1 FROM pg_roles WHERE rolname = %s", role)
    return bool(db), bool(rl)


@pytest.fixture(scope="module")
def source_db() -> Iterator[str]:
    with scratch_database(name=f"itest_src_{secrets.token_hex(4)}", sql=SOURCE_SQL) as url:
        yield url


@pytest.fixture
def env(source_db: str, settings: Settings) -> Iterator[Env]:
    settings.PORTAL_CONNECTIONS = {
        **settings.PORTAL_CONNECTIONS,
        "SRC": source_db,
        "TGT": ADMIN_URL,
    }
    e = Env(source_db, f"it{secrets.token_hex(3)}", [])
    try:
        yield e
    finally:
        for run_id in e.created_runs:
            database, role = e.names(run_id)
            drop_clone(url=ADMIN_URL, database=database, role=role)
            assert exists(database, role) == (False, False)


# --- the happy path ---------------------------------------------------------------------


def check_clone(env: Env, result: CloneResult, rec: Recorder) -> None:
    src, tgt = env.source_url, pg.with_dbname(ADMIN_URL, result.database)
    assert (result.host, result.port) == ("127.0.0.1", 5432)

    # Row counts per table, as reported and as found.
    tables = [
        "public.users",
        "public.orders",
        "billing.cards",
        "public.events_2024",
        "public.events_2025",
    ]
    for table in tables:
        (n_src,), (n_tgt,) = (
            q(src, f"SELECT count(*) FROM {table}")[0],
            q(tgt, f"SELECT count(*) FROM {table}")[0],
        )
        assert n_src == n_tgt == result.table_counts[table] > 0, table
    assert result.checks["row_counts_match"] is True

    # Foreign keys: present, validated, and no orphan (checked directly too).
    fks = q(tgt, "SELECT conname, convalidated FROM pg_constraint WHERE contype = 'f'")
    assert len(fks) == 2 and all(ok for _, ok in fks)
    assert (
        q(
            tgt,
            "SELECT count(*) FROM orders o LEFT JOIN users u ON u.id = o.user_id "
            "WHERE u.id IS NULL",
        )[0][0]
        == 0
    )
    assert result.checks["foreign_key_problems"] == []

    # The join on masked e-mails still matches, row for row.
    join = "SELECT count(*) FROM orders o JOIN users u ON u.email = o.customer_email"
    assert q(tgt, join)[0][0] == q(src, join)[0][0] == 900
    ev = "SELECT count(*) FROM events e JOIN users u ON u.email = e.actor_email"
    assert q(tgt, ev)[0][0] == q(src, ev)[0][0] > 0

    # No source value of a masked column is in the clone (independent of the driver's scan).
    for table, column in (
        ("users", "email"),
        ("users", "full_name"),
        ("users", "phone"),
        ("users", "api_token"),
        ("orders", "customer_email"),
        ("billing.cards", "card_number"),
        ("events", "actor_email"),
    ):
        before = {r[0] for r in q(src, f"SELECT {column}::text FROM {table}") if r[0]}
        after = {r[0] for r in q(tgt, f"SELECT {column}::text FROM {table}") if r[0]}
        assert before and after and not before & after, (table, column)
    assert result.checks["leaks"] == {} and result.checks["masked_columns_scanned"] >= 9
    emails = [r[0] for r in q(tgt, "SELECT email FROM users")]
    assert all(e.startswith("u_") and e.endswith("@example.invalid") for e in emails)
    assert len(set(emails)) == 302
    assert (
        q(tgt, "SELECT count(*) FROM users WHERE phone IS NULL")[0][0]
        == q(src, "SELECT count(*) FROM users WHERE phone IS NULL")[0][0]
        > 0
    )
    assert {r[0] for r in q(tgt, "SELECT DISTINCT nickname FROM users")} == {"anon"}
    assert q(tgt, "SELECT count(iban) FROM billing.cards")[0][0] == 0
    assert {r[0] for r in q(tgt, "SELECT DISTINCT address FROM users")} == {"REDACTED", None}
    # Generated columns are recomputed from the masked value.
    assert {r[0] for r in q(tgt, "SELECT DISTINCT email_domain FROM users")} == {"example.invalid"}
    # The materialized view was refreshed from the masked data.
    assert q(tgt, "SELECT sum(n) FROM order_counts")[0][0] == 900
    assert q(tgt, "SELECT count(*) FROM order_counts WHERE customer_email LIKE '%corp%'")[0][0] == 0

    # Indexes and constraints as in the source.
    indexes = (
        "SELECT indexrelid::regclass::text, indisunique FROM pg_index i JOIN pg_class c "
        "ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname IN ('public', 'billing') ORDER BY 1"
    )
    assert q(tgt, indexes) == q(src, indexes) and len(q(tgt, indexes)) == 8
    constraints = (
        "SELECT conrelid::regclass::text, conname, contype, convalidated "
        "FROM pg_constraint WHERE connamespace::regnamespace::text IN ('public', 'billing') "
        "ORDER BY 1, 2"
    )
    assert q(tgt, constraints) == q(src, constraints)

    # Sequences equal the source's.
    seqs = "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2"
    assert q(tgt, seqs) == q(src, seqs)
    assert ("public", "orders_id_seq", 5000) in q(tgt, seqs)

    # Everything belongs to the clone's role; the database is marked complete.
    owners = q(
        tgt,
        "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class c JOIN "
        "pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN "
        "('public', 'billing') ",
    )
    assert owners == [(result.role,)]
    comment = q(
        ADMIN_URL,
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
        result.database,
    )
    assert comment == [(logical.DB_COMPLETE,)]

    # The password: registered before anything could log it, never logged, not in repr.
    assert len(result.password) >= 32
    first_secret = rec.events.index(("secret", result.password))
    created = next(i for i, (k, t) in enumerate(rec.events) if t.startswith("created database"))
    assert first_secret < created
    assert not any(result.password in line for line in rec.lines)
    assert result.password not in repr(result) and "password" not in result.outputs()
    assert any(line.startswith("copied public.users: 302 rows") for line in rec.lines)


def test_clone_twice_with_masking_and_checks(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    rec1, rec2 = Recorder(), Recorder()
    # First clone: every table's indexes and keys built right after its copy; second:
    # the small tables' indexes wait for the final post-data restore (the default).
    with monkeypatch.context() as patched:
        patched.setattr(table_copy, "EARLY_INDEX_MIN_BYTES", 0)
        first = env.clone("101", rec1)
    assert any(line.startswith("built 2 indexes and keys of public.orders") for line in rec1.lines)
    second = env.clone("102", rec2)
    assert not any(line.startswith("built ") for line in rec2.lines)
    assert first.database != second.database and first.role != second.role
    check_clone(env, first, rec1)
    check_clone(env, second, rec2)
    # Every personal-data column has a rule (the generated email_domain is computed
    # from the masked email, so it is not reported).
    assert first.warnings == [] and second.warnings == []
    # A per-clone key: the two clones mask the same person differently.
    e1 = q(pg.with_dbname(ADMIN_URL, first.database), "SELECT email FROM users WHERE id = 1")
    e2 = q(pg.with_dbname(ADMIN_URL, second.database), "SELECT email FROM users WHERE id = 1")
    assert e1 != e2

    # drop_clone is idempotent and removes both database and role.
    drop_clone(url=ADMIN_URL, database=first.database, role=first.role)
    drop_clone(url=ADMIN_URL, database=first.database, role=first.role)
    assert exists(first.database, first.role) == (False, False)


def test_masked_in_the_source_or_in_python_the_clone_is_the_same(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = secrets.token_bytes(32)

    def clone(run_id: str, rec: Recorder) -> CloneResult:
        env.created_runs.append(run_id)
        return clone_logical(
            spec=env.spec(),
            account=env.account,
            service="orders",
            run_id=run_id,
            log=rec.log,
            add_secret=rec.add_secret,
            masking_key=key,
        )

    rec_sql, rec_py = Recorder(), Recorder()
    in_sql = clone("111", rec_sql)
    with monkeypatch.context() as patched:  # as for types without binary COPY
        patched.setattr(
            pg, "binary_copy_unsupported", lambda conn: {t.oid for t in pg.list_tables(conn)}
        )
        in_py = clone("112", rec_py)
    assert any("(masked in the source: " in line for line in rec_sql.lines)
    assert not any("(masked in the source: " in line for line in rec_py.lines)
    assert any("(masked: " in line for line in rec_py.lines)
    check_clone(env, in_py, rec_py)
    sql_url, py_url = (pg.with_dbname(ADMIN_URL, c.database) for c in (in_sql, in_py))
    for table in ("users", "orders", "billing.cards", "events"):
        query = f"SELECT * FROM {table} ORDER BY 1, 2"
        assert q(sql_url, query) == q(py_url, query), table


def test_the_masking_key_reaches_the_source_psql_only_in_its_environment(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = secrets.token_bytes(32)
    blocks = [
        b.hex()
        for kind in ("email", "name", "phone", "hash")
        for b in Masker(key).hmac_blocks(kind)
    ]
    runs: list[tuple[list[Program], bytes | None]] = []
    real = tools.run_pipeline

    def spy(*, programs: list[Program], stdin_data: bytes | None = None, **kwargs: Any) -> Any:
        runs.append((list(programs), stdin_data))
        return real(programs=programs, stdin_data=stdin_data, **kwargs)

    monkeypatch.setattr(tools, "run_pipeline", spy)
    rec = Recorder()
    env.created_runs.append("121")
    clone_logical(
        spec=env.spec(),
        account=env.account,
        service="orders",
        run_id="121",
        log=rec.log,
        add_secret=rec.add_secret,
        masking_key=key,
    )
    copies = [(programs, data) for programs, data in runs if "psql" in programs[0].argv[0]]
    assert copies, "no table was relayed by psql"
    used = set()
    for programs, stdin_data in copies:
        visible = " ".join(a for p in programs for a in p.argv) + (stdin_data or b"").decode()
        assert not any(block in visible for block in blocks)  # not in argv, not in the SQL
        target_env = " ".join(programs[1].env.values())
        assert not any(block in target_env for block in blocks)
        used.update(b for b in blocks if b in programs[0].env.get("PGOPTIONS", ""))
    assert used, "the masked tables' key blocks went in the source psql's PGOPTIONS"
    assert not any(block in line for block in blocks for line in rec.lines)


def test_rerun_of_a_complete_clone_only_rotates_the_password(env: Env) -> None:
    first = env.clone("201")
    rec = Recorder()
    again = env.clone("201", rec)
    assert again.reused and again.database == first.database
    assert again.password != first.password
    assert again.table_counts == first.table_counts
    assert ("secret", again.password) in rec.events
    assert not any(again.password in line for line in rec.lines)


# --- killed and rerun -------------------------------------------------------------------


def test_killed_after_first_table_then_rerun_completes(env: Env) -> None:
    database, role = env.names("301")
    killed = Recorder(raise_after="copied ")
    with pytest.raises(KeyboardInterrupt):
        env.clone("301", killed)
    assert exists(database, role) == (True, True)  # an incomplete clone is left behind
    comment = q(
        ADMIN_URL,
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
        database,
    )
    assert comment == [(logical.DB_INCOMPLETE,)]

    rec = Recorder()
    result = env.clone("301", rec)
    assert any("removing the incomplete clone" in line for line in rec.lines)
    assert not result.reused
    check_clone(env, result, rec)
    # No leftovers: one database, one role of that name, no other clone of the run.
    like = q(ADMIN_URL, "SELECT datname FROM pg_database WHERE datname LIKE %s", database + "%")
    assert like == [(database,)]
    assert q(ADMIN_URL, "SELECT rolname FROM pg_roles WHERE rolname LIKE %s", database + "%") == [
        (role,)
    ]


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pipelines.dbclone.logical import LogicalCloneSpec, clone_logical
    masking = {"users.email": "email", "orders.customer_email": "email"}
    spec = LogicalCloneSpec(source="SRC", target="TGT", masking=masking, jobs=1)
    def log(line):
        print(line, flush=True)
        if line.startswith(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
    clone_logical(
        spec=spec, account=sys.argv[1], service="orders", run_id="401", log=log,
        add_secret=lambda s: None,
    )
    """
)


@pytest.mark.parametrize("kill_at", ["created database", "schema restored", "copied "])
def test_sigkill_at_any_step_then_rerun(env: Env, kill_at: str) -> None:
    database, role = env.names("401")
    env.created_runs.append("401")
    done = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, env.account, kill_at],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "PORTAL_CONNECTION_SRC": env.source_url,
            "PORTAL_CONNECTION_TGT": ADMIN_URL,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert exists(database, role) == (True, True)
    rec = Recorder()
    result = env.clone(
        "401", rec, masking={"users.email": "email", "orders.customer_email": "email"}
    )
    assert result.checks["leaks"] == {} and result.checks["row_counts_match"]
    assert any("removing the incomplete clone" in line for line in rec.lines)


# --- refused before anything is created -------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"users.nope": "email"}, "masking rule 'users.nope': column 'nope' does not exist"),
        ({"clients.email": "email"}, "masking rule 'clients.email': table public.clients"),
        ({"billing.users.email": "email"}, "table billing.users does not exist"),
        ({"users.nickname": "email"}, "the column allows 6"),
        ({"users.full_name": "null"}, "NOT NULL"),
        ({"orders.total": {"fixed": "lots"}}, "fixed value is invalid"),
        ({"users.email": "name"}, "the column is unique"),
    ],
)
def test_bad_rule_refused_before_target_exists(
    env: Env, rule: dict[str, Any], message: str
) -> None:
    database, role = env.names("501")
    rec = Recorder()
    with pytest.raises(CloneError, match=message) as info:
        env.clone("501", rec, masking={**MASKING, **rule})
    assert not info.value.retryable
    assert exists(database, role) == (False, False)
    assert not any(kind == "secret" for kind, _ in rec.events)


def test_strict_mode_makes_unmasked_personal_columns_errors(env: Env) -> None:
    masking = {k: v for k, v in MASKING.items() if k != "users.phone"}
    database, role = env.names("601")
    with pytest.raises(CloneError, match=r"masking_strict: public\.users\.phone") as info:
        env.clone("601", masking=masking, masking_strict=True)
    assert "users.email_domain" not in str(info.value)  # generated: computed from email
    assert exists(database, role) == (False, False)
    # Without strict mode the same rules clone, with the column listed as a warning.
    result = env.clone("602", masking=masking)
    assert any(w.startswith("public.users.phone looks like personal data") for w in result.warnings)


def test_a_personal_column_added_to_the_source_since_the_rules_stops_a_strict_clone(
    env: Env,
) -> None:
    pg.execute(env.source_url, "ALTER TABLE orders ADD COLUMN backup_email text")
    try:
        pg.execute(env.source_url, "UPDATE orders SET backup_email = 'x' || id || '@corp.example'")
        database, role = env.names("603")
        rec = Recorder()
        with pytest.raises(CloneError, match=r"public\.orders\.backup_email looks like personal"):
            env.clone("603", rec, masking_strict=True)
        assert exists(database, role) == (False, False)  # before any data moved
        assert not any(kind == "secret" for kind, _ in rec.events)
        rec = Recorder()
        result = env.clone("604", rec)
        warning = "public.orders.backup_email looks like personal data and has no masking rule"
        assert any(w.startswith(warning) for w in result.warnings)
        assert any(line.startswith("warning: " + warning) for line in rec.lines)
    finally:
        pg.execute(env.source_url, "ALTER TABLE orders DROP COLUMN backup_email")


def test_missing_connection_is_named(env: Env, settings: Settings) -> None:
    settings.PORTAL_CONNECTIONS = {
        name: url for name, url in settings.PORTAL_CONNECTIONS.items() if name != "TGT"
    }
    with pytest.raises(CloneError, match="PORTAL_CONNECTION_TGT") as info:
        env.clone("701")
    assert not info.value.retryable


def test_connection_password_never_in_errors(env: Env, settings: Settings) -> None:
    password = "Sup3r-s3cret-" + secrets.token_hex(6)
    settings.PORTAL_CONNECTIONS = {
        **settings.PORTAL_CONNECTIONS,
        "SRC": f"postgresql://postgres:{password}@127.0.0.1:5432/no_such_db_x",
    }
    with pytest.raises(CloneError) as info:
        env.clone("702")
    assert "no_such_db_x" in str(info.value) and password not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert Redactor()(f"postgresql://u:{password}@h/db password={password}") == (
        "postgresql://u:[redacted]@h/db password=[redacted]"
    )


# --- the leak scan can fail -------------------------------------------------------------


def test_leak_scan_catches_unmasked_data_and_drops_the_clone(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    real: Callable[..., Any] = table_copy.row_masker

    def broken(*, masker: Any, plan: Any, collect: Any = None) -> Any:
        if plan.name == "public.orders":
            return None  # a bug: the table is copied unmasked
        return real(masker=masker, plan=plan, collect=collect)

    monkeypatch.setattr(table_copy, "row_masker", broken)
    database, role = env.names("801")
    with pytest.raises(CloneError, match=r"leak scan failed.*public\.orders\.customer_email"):
        env.clone("801")
    assert exists(database, role) == (False, False)


def test_leak_scan_catches_a_broken_mask_in_the_source(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    real: Callable[..., Any] = table_copy.masked_select

    def broken(*, plan: Any, masker: Any) -> Any:
        if plan.name == "public.users":  # a bug: the source sends e-mails as they are
            rules = [(r, c) for r, c in plan.rules if r.column != "email"]
            plan = TablePlan(plan.table, plan.columns, rules)
        return real(plan=plan, masker=masker)

    monkeypatch.setattr(table_copy, "masked_select", broken)
    database, role = env.names("802")
    with pytest.raises(CloneError, match=r"leak scan failed.*public\.users\.email"):
        env.clone("802")
    assert exists(database, role) == (False, False)


def test_drop_clone_refuses_foreign_databases(env: Env) -> None:
    name = f"itest_notaclone_{secrets.token_hex(3)}"
    pg.execute(ADMIN_URL, f'CREATE DATABASE "{name}"')
    try:
        with pytest.raises(CloneError, match="not created by the clone driver"):
            drop_clone(url=ADMIN_URL, database=name, role=name + "_owner")
        assert exists(name, "x")[0]
    finally:
        pg.execute(ADMIN_URL, f'DROP DATABASE "{name}"')


def test_copy_rows_reader_matches_psycopg_and_reports_errors(source_db: str) -> None:
    query = "COPY (SELECT g, repeat('x', g % 50) FROM generate_series(1, 20000) g) TO STDOUT"
    with pg.connect(source_db, autocommit=True) as conn:
        with conn.cursor() as cur, cur.copy(query) as out:
            expected = [bytes(row) for row in out]
        with conn.cursor() as cur, cur.copy(query) as out:
            fast = [bytes(row) for row in streams._copy_rows(conn=conn, out=out)]
        assert fast == expected and len(fast) == 20000
        failing = "COPY (SELECT 1 / (15000 - g) FROM generate_series(1, 20000) g) TO STDOUT"
        with (
            pytest.raises(Exception, match="division by zero"),
            conn.cursor() as cur,
            cur.copy(failing) as out,
        ):
            for _ in streams._copy_rows(conn=conn, out=out):
                pass
        assert conn.execute("SELECT 42").fetchone() == (42,)  # still usable


def _bench_objects() -> set[str]:
    dbs = q(ADMIN_URL, "SELECT datname FROM pg_database WHERE datname LIKE 'bench\\_%'")
    roles = q(ADMIN_URL, "SELECT rolname FROM pg_roles WHERE rolname LIKE 'bench\\_%'")
    return {r[0] for r in dbs + roles}


def test_bench_clone_command_prints_figures_and_cleans_up() -> None:
    before = _bench_objects()  # another benchmark may be running on this server
    out, err = StringIO(), StringIO()
    call_command("bench_clone", rows=3000, jobs=2, dsn=ADMIN_URL, stdout=out, stderr=err)
    figures = json.loads(out.getvalue().strip().splitlines()[-1])
    assert set(figures) == {
        "rows", "masked_s", "raw_s", "floor_s", "rows_per_s", "ratio", "floor_ratio"
    }  # fmt: skip
    assert figures["rows"] == 3000 and figures["masked_s"] > 0 and figures["raw_s"] > 0
    assert figures["floor_s"] > 0
    assert figures["ratio"] == pytest.approx(figures["masked_s"] / figures["raw_s"], rel=0.01)
    assert figures["floor_ratio"] == pytest.approx(
        figures["masked_s"] / figures["floor_s"], rel=0.01
    )
    assert "binary COPY floor:" in err.getvalue()
    # Each copy's line gives the machine's CPU time while it ran (Linux: /proc/stat).
    assert re.search(
        r"masked clone: [0-9.]+s \([0-9.]+ CPU-s, machine [0-9]+% busy\)", err.getvalue()
    )
    assert "fastest of each: masked clone" in err.getvalue()
    assert err.getvalue().startswith("before: load average ")
    assert "copied public.users: 300 rows" in err.getvalue()
    # Everything it created is gone; its names carry the tag of its source database (another
    # benchmark may create and drop its own objects meanwhile).
    found = re.search(r"source bench_src_([0-9a-f]+):", err.getvalue())
    assert found, err.getvalue()
    assert {name for name in _bench_objects() - before if found.group(1) in name} == set()


def test_bench_clone_breakdown_prints_the_bound_and_cleans_up() -> None:
    before = _bench_objects()
    out, err = StringIO(), StringIO()
    call_command("bench_clone", rows=3000, breakdown=True, dsn=ADMIN_URL, stdout=out, stderr=err)
    figures = json.loads(out.getvalue().strip().splitlines()[-1])
    assert set(figures) == {
        "rows", "masked_s", "floor_s", "floor_ratio", "floor_cpu_s", "masking_cpu_s",
        "leak_scan_cpu_s", "index_cpu_s", "cores", "bound_s", "bound_ratio",
    }  # fmt: skip
    parts = ("floor_cpu_s", "masking_cpu_s", "leak_scan_cpu_s", "index_cpu_s")
    assert all(figures[name] >= 0 for name in parts) and figures["floor_cpu_s"] > 0
    assert figures["bound_s"] == pytest.approx(
        sum(figures[name] for name in parts) / figures["cores"], abs=0.002
    )
    assert figures["bound_ratio"] == pytest.approx(
        figures["bound_s"] / figures["floor_s"], rel=0.01
    )
    assert figures["floor_ratio"] == pytest.approx(
        figures["masked_s"] / figures["floor_s"], rel=0.01
    )
    assert re.search(r"alone: masking [0-9.]+ CPU-s, leak scan [0-9.]+ CPU-s", err.getvalue())
    assert "checks: 4 row counts (0 differ)" in err.getvalue()  # the clone measured is whole
    found = re.search(r"source bench_src_([0-9a-f]+):", err.getvalue())
    assert found, err.getvalue()
    assert {name for name in _bench_objects() - before if found.group(1) in name} == set()


RELAY_SQL = """
CREATE TABLE t (id int PRIMARY KEY, v text);
INSERT INTO t SELECT g, repeat('x', g % 50) FROM generate_series(1, 20000) g;
"""


def test_the_psql_relay_copies_checks_counts_and_leaves_nothing_on_failure() -> None:
    name = secrets.token_hex(3)
    with (
        scratch_database(name=f"itest_relay_src_{name}", sql=RELAY_SQL) as src,
        scratch_database(name=f"itest_relay_tgt_{name}", sql=RELAY_SQL) as tgt,
    ):
        pg.execute(tgt, "TRUNCATE t; INSERT INTO t VALUES (-1, 'kept until a copy commits')")

        def copy(**kwargs: Any) -> int:
            return pg.copy_table_binary(
                source_url=src, target_url=tgt, schema="public", table="t", columns=["id", "v"],
                **kwargs,
            )  # fmt: skip

        # The source fails part way (after rows went down the pipe): the target keeps
        # what it had, and the error names the copy.
        failing = pgsql.SQL("SELECT id, CAST(v || (1 / (15000 - id)) AS text) FROM t")
        with pytest.raises(
            pg.PostgresError, match=r"(?s)copy of public\.t failed.*division by zero"
        ):
            copy(select=failing)
        assert q(tgt, "SELECT id FROM t") == [(-1,)]
        # A cancel part way stops both programs; nothing changes either.
        slow = pgsql.SQL("SELECT id, v FROM t WHERE pg_sleep(0.0005) IS NOT NULL")
        asked = time.monotonic() + 1.0
        with pytest.raises(pg.CopyCancelled):
            copy(select=slow, should_cancel=lambda: time.monotonic() > asked)
        assert time.monotonic() < asked + 5
        assert q(tgt, "SELECT id FROM t") == [(-1,)]
        # A copy: the source's count, equal to what the target took; settings from the
        # session reach the query (a masking key's way in).
        keyed = pgsql.SQL("SELECT id, current_setting('portal_mask.test') || v FROM t")
        assert copy(select=keyed, session={"portal_mask.test": "k1"}) == 20000
        assert q(tgt, "SELECT count(*), min(left(v, 2)) FROM t") == [(20000, "k1")]
        assert copy() == 20000  # rerun: the same table again, not twice the rows
        assert q(tgt, "SELECT count(*), sum(length(v)) FROM t") == q(
            src, "SELECT count(*), sum(length(v)) FROM t"
        )
