"""Golden copies on the local PostgreSQL: one masking pass, many databases copied from it."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from pytest_django.fixtures import Settings

from pipelines.clients import postgres as pg
from pipelines.dbclone import golden, logical, table_copy
from pipelines.dbclone.golden import GoldenRef
from pipelines.dbclone.logical import CloneError, LogicalCloneSpec
from tests.integration.test_logical_clone import ADMIN_URL, MASKING, SOURCE_SQL, Recorder, q

MASKED_COLUMNS = (
    ("users", "email"),
    ("users", "full_name"),
    ("users", "phone"),
    ("users", "api_token"),
    ("orders", "customer_email"),
    ("billing.cards", "card_number"),
    ("events", "actor_email"),
)


@pytest.fixture(scope="module")
def golden_source() -> Iterator[str]:
    name = f"itest_gsrc_{secrets.token_hex(4)}"
    pg.execute(ADMIN_URL, f'CREATE DATABASE "{name}"')
    url = pg.with_dbname(ADMIN_URL, name)
    try:
        pg.execute(url, SOURCE_SQL)
        yield url
    finally:
        pg.execute(ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def blueprint(golden_source: str, settings: Settings) -> Iterator[str]:
    """A blueprint name of this test only; its golden copies and clones dropped after it."""
    settings.PORTAL_CONNECTIONS = {
        **settings.PORTAL_CONNECTIONS,
        "GSRC": golden_source,
        "GTGT": ADMIN_URL,
    }
    name = f"gt{secrets.token_hex(3)}"
    yield name
    for (datname,) in q(
        ADMIN_URL, "SELECT datname FROM pg_database WHERE datname LIKE %s", f"%{name}%"
    ):
        if datname.startswith(golden.GOLDEN_ACCOUNT_PREFIX):
            golden.drop_golden(url=ADMIN_URL, database=datname, role=datname + "_owner")
        else:
            logical.drop_clone(url=ADMIN_URL, database=datname, role=datname + "_owner")
    assert not q(ADMIN_URL, "SELECT rolname FROM pg_roles WHERE rolname LIKE %s", f"%{name}%")


def spec() -> LogicalCloneSpec:
    return LogicalCloneSpec(source="GSRC", target="GTGT", masking=MASKING, jobs=2)


def build(blueprint: str, rec: Recorder, number: int = 1) -> golden.GoldenBuild:
    return golden.build_golden(
        spec=spec(),
        blueprint=blueprint,
        service="orders",
        build=number,
        log=rec.log,
        add_secret=rec.add_secret,
        scrub=lambda url: [],
    )


def ref(made: golden.GoldenBuild) -> GoldenRef:
    return GoldenRef(database=made.database, role=made.role, table_counts=made.table_counts)


def test_one_masking_pass_three_databases_each_with_its_own_owner(
    blueprint: str, golden_source: str
) -> None:
    rec = Recorder()
    made = build(blueprint, rec)
    # Frozen: a template that takes no connections, owned by the admin; its role cannot log in.
    assert q(
        ADMIN_URL,
        "SELECT datistemplate, datallowconn, pg_get_userbyid(datdba), "
        "shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
        made.database,
    ) == [(True, False, "postgres", golden.GOLDEN_READY)]
    assert q(ADMIN_URL, "SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", made.role) == [
        (False,)
    ]
    with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
        psycopg.connect(pg.with_dbname(ADMIN_URL, made.database)).close()
    assert made.checks["leaks"] == {} and made.checks["row_counts_match"] is True

    copies = []
    for n in range(3):
        crec = Recorder()
        database = logical.clone_database_name(account=blueprint, service="orders", run_id=n + 1)
        result = golden.copy_golden(
            target="GTGT",
            golden=ref(made),
            database=database,
            log=crec.log,
            add_secret=crec.add_secret,
        )
        copies.append(result)
        assert result.table_counts == made.table_counts and not result.reused
        assert result.checks["golden"] == made.database
        assert crec.events[0] == ("secret", result.password)
        assert not any(result.password in line for line in crec.lines)
    assert len({c.password for c in copies}) == 3 and len({c.role for c in copies}) == 3

    emails = None
    for copy in copies:
        url = pg.with_dbname(ADMIN_URL, copy.database)
        # Every object belongs to the copy's own login role; none to the golden's.
        owners = q(
            url,
            "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class c JOIN "
            "pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN "
            "('public', 'billing')",
        )
        assert owners == [(copy.role,)]
        assert q(
            ADMIN_URL,
            "SELECT pg_get_userbyid(datdba), datistemplate, "
            "shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            copy.database,
        ) == [(copy.role, False, logical.DB_COMPLETE)]
        assert q(ADMIN_URL, "SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", copy.role) == [
            (True,)
        ]
        # Masked data, joins matching, foreign keys valid, counts equal to the source's.
        for table, n in copy.table_counts.items():
            assert q(url, f"SELECT count(*) FROM {table}")[0][0] == n
            assert q(golden_source, f"SELECT count(*) FROM {table}")[0][0] == n
        join = "SELECT count(*) FROM orders o JOIN users u ON u.email = o.customer_email"
        assert q(url, join)[0][0] == 900
        assert all(
            ok for (ok,) in q(url, "SELECT convalidated FROM pg_constraint WHERE contype = 'f'")
        )
        for table, column in MASKED_COLUMNS:
            before = {r[0] for r in q(golden_source, f"SELECT {column}::text FROM {table}") if r[0]}
            after = {r[0] for r in q(url, f"SELECT {column}::text FROM {table}") if r[0]}
            assert before and after and not before & after, (table, column)
        mine = q(url, "SELECT id, email FROM users ORDER BY id")
        assert emails is None or mine == emails  # one masking pass: the same masked values
        emails = mine

    # A rerun of a finished copy only rotates its password.
    again = golden.copy_golden(
        target="GTGT",
        golden=ref(made),
        database=copies[0].database,
        log=Recorder().log,
        add_secret=lambda _: None,
    )
    assert again.reused and again.password != copies[0].password

    # Dropping the golden leaves the copies whole; the golden's role goes with it.
    assert golden.drop_golden(url=ADMIN_URL, database=made.database, role=made.role)
    assert not q(ADMIN_URL, "SELECT 1 FROM pg_roles WHERE rolname = %s", made.role)
    assert q(pg.with_dbname(ADMIN_URL, copies[1].database), "SELECT count(*) FROM users") == [
        (302,)
    ]


def test_a_copy_ends_a_stray_session_on_the_golden(blueprint: str) -> None:
    made = build(blueprint, Recorder())
    with pg.connect(ADMIN_URL, autocommit=True) as admin:  # as if someone re-opened it
        pg.set_template(conn=admin, database=made.database, template=False)
    stray = psycopg.connect(pg.with_dbname(ADMIN_URL, made.database), autocommit=True)
    try:
        database = logical.clone_database_name(account=blueprint, service="orders", run_id=7)
        result = golden.copy_golden(
            target="GTGT",
            golden=ref(made),
            database=database,
            log=Recorder().log,
            add_secret=lambda _: None,
        )
        assert q(pg.with_dbname(ADMIN_URL, result.database), "SELECT count(*) FROM users") == [
            (302,)
        ]
        with pytest.raises(psycopg.OperationalError):
            stray.execute("SELECT 1")
    finally:
        stray.close()


def test_a_leak_fails_the_build_and_leaves_nothing_to_copy(
    blueprint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real: Callable[..., Any] = table_copy.row_masker

    def broken(*, masker: Any, plan: Any, collect: Any = None) -> Any:
        if plan.name == "public.orders":
            return None  # a bug: the table is copied unmasked
        return real(masker=masker, plan=plan, collect=collect)

    monkeypatch.setattr(table_copy, "row_masker", broken)
    with pytest.raises(CloneError, match="leak scan failed"):
        build(blueprint, Recorder())
    name = golden.golden_database_name(blueprint=blueprint, service="orders", build=1)
    assert not q(ADMIN_URL, "SELECT 1 FROM pg_database WHERE datname = %s", name)
    database = logical.clone_database_name(account=blueprint, service="orders", run_id=1)
    with pytest.raises(CloneError, match="is not ready"):
        golden.copy_golden(
            target="GTGT",
            golden=GoldenRef(database=name, role=name + "_owner"),
            database=database,
            log=Recorder().log,
            add_secret=lambda _: None,
        )
    assert not q(ADMIN_URL, "SELECT 1 FROM pg_database WHERE datname = %s", database)


def test_a_failed_scrub_drops_the_golden(blueprint: str) -> None:
    def scrub(url: str) -> list[str]:
        raise CloneError("scrub failed: bad.sql", retryable=False)

    with pytest.raises(CloneError, match="scrub failed"):
        golden.build_golden(
            spec=spec(),
            blueprint=blueprint,
            service="orders",
            build=2,
            log=Recorder().log,
            add_secret=lambda _: None,
            scrub=scrub,
        )
    name = golden.golden_database_name(blueprint=blueprint, service="orders", build=2)
    assert not q(ADMIN_URL, "SELECT 1 FROM pg_database WHERE datname = %s", name)
