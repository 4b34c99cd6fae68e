"""Golden copies on the local PostgreSQL: one masking pass, many databases copied from it."""

from __future__ import annotations

import json
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django.fixtures import Settings

from accounts_app.parity import data_taken_at
from pipelines.blueprints import BlueprintError, load_blueprint
from pipelines.clients import postgres as pg
from pipelines.dbclone import golden, golden_store, logical, table_copy
from pipelines.dbclone.golden import GoldenRef
from pipelines.dbclone.logical import CloneError, LogicalCloneSpec
from pipelines.models import GoldenCopy, GoldenStatus, RunKind
from pipelines.stages import db_clone
from pipelines.stages.base import StageError
from tests.factories import AccountFactory, UserFactory
from tests.integration.conftest import q, scratch_database
from tests.integration.stage_context import stage_context
from tests.integration.test_logical_clone import ADMIN_URL, MASKING, SOURCE_SQL, Recorder

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
    with scratch_database(name=f"itest_gsrc_{secrets.token_hex(4)}", sql=SOURCE_SQL) as url:
        yield url


@pytest.fixture
def blueprint(golden_source: str, settings: Settings, blueprints_root: Path) -> Iterator[str]:
    """A blueprint name of this test only; its golden copies and clones dropped after it."""
    settings.PORTAL_CONNECTIONS = {
        **settings.PORTAL_CONNECTIONS,
        "GSRC": golden_source,
        "GTGT": ADMIN_URL,
    }
    name = f"gt{secrets.token_hex(3)}"
    yield name
    shutil.rmtree(blueprints_root / name, ignore_errors=True)  # no schedule builds it later
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
    # Its pages were written out by a checkpoint (the admin may take one).
    assert rec.lines[-1].endswith(" rows, frozen"), rec.lines[-1]

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


@pytest.mark.parametrize("strategy", list(pg.CopyStrategy))
def test_a_copy_ends_a_stray_session_on_the_golden(
    blueprint: str, strategy: pg.CopyStrategy
) -> None:
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
            strategy=strategy,
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


# --- the golden copy of a blueprint database, as db_clone uses it ---------------------------


def _golden_blueprint(root: Path, name: str, golden_setting: Any) -> None:
    folder = root / name
    (folder / "scrub").mkdir(parents=True, exist_ok=True)
    # Scrub SQL runs once, on the golden copy: every copy has it applied.
    (folder / "scrub" / "orders.sql").write_text("UPDATE orders SET total = 0 WHERE id = 1;\n")
    spec = {
        "name": name,
        "title": "golden",
        "version": "1",
        "stages": ["db_clone"],
        "parameters": {"type": "object"},
        "databases": [
            {
                "service": "orders",
                "driver": "postgres_logical",
                "source": "GSRC",
                "target": "GTGT",
                "masking": MASKING,
                "scrub_sql": ["scrub/orders.sql"],
                "golden": golden_setting,
            }
        ],
    }
    (folder / "blueprint.yaml").write_text(yaml.safe_dump(spec))


def _clone_stage(account: Any, run_id: int, kind: RunKind) -> tuple[dict[str, Any], list[str]]:
    lines: list[str] = []
    ctx = replace(
        stage_context(
            account=account, run_id=run_id, kind="db_clone", previous={}, log=lines.append
        ),
        run_kind=kind,
    )
    outputs = db_clone.execute(ctx)["services"]["orders"]
    account.endpoints = {"orders": outputs["endpoint"]}
    account.save(update_fields=["endpoints"])
    return outputs, lines


@pytest.mark.django_db(transaction=True)
def test_accounts_share_one_masking_pass_and_record_its_age(
    blueprint: str, blueprints_root: Path
) -> None:
    _golden_blueprint(blueprints_root, blueprint, {"max_age_hours": 24})
    first = AccountFactory(name=f"{blueprint}-a", blueprint=blueprint, config={})
    second = AccountFactory(name=f"{blueprint}-b", blueprint=blueprint, config={})

    out_a, lines_a = _clone_stage(first, 101, RunKind.PROVISION)
    out_b, lines_b = _clone_stage(second, 102, RunKind.PROVISION)
    made = GoldenCopy.objects.get(blueprint=blueprint)
    assert made.status == GoldenStatus.READY and made.taken_at is not None
    assert out_a["golden"] == out_b["golden"] == made.database
    assert any("building one" in line for line in lines_a)
    assert not any("building" in line for line in lines_b)  # no second masking pass
    assert out_a["endpoint"]["data_taken_at"] == made.taken_at.isoformat()
    assert out_a["scrubbed"] == ["scrub/orders.sql"]
    for out in (out_a, out_b):
        url = pg.with_dbname(ADMIN_URL, out["database"])
        assert q(url, "SELECT total FROM orders WHERE id = 1") == [(0,)]
        assert q(url, "SELECT count(*) FROM users WHERE email LIKE '%corp.example.com'") == [(0,)]
        assert out["row_counts"] == made.table_counts
    # The parity report's data age counts from the golden copy's snapshot, not the copy.
    GoldenCopy.objects.filter(pk=made.pk).update(taken_at=timezone.now() - timedelta(hours=5))
    made.refresh_from_db()
    _clone_stage(second, 103, RunKind.PROVISION)  # within 24 h: the same golden copy
    second.refresh_from_db()
    assert second.endpoints["orders"]["golden"] == made.database
    assert data_taken_at(second) == made.taken_at

    # A refresh wants data at most an hour old: a new golden copy, the old one dropped.
    out_r, lines_r = _clone_stage(first, 104, RunKind.REFRESH_DATA)
    fresh = GoldenCopy.objects.get(blueprint=blueprint, status=GoldenStatus.READY)
    assert out_r["golden"] == fresh.database != made.database
    made.refresh_from_db()
    assert made.status == GoldenStatus.RETIRED
    assert not q(ADMIN_URL, "SELECT 1 FROM pg_database WHERE datname = %s", made.database)
    assert q(pg.with_dbname(ADMIN_URL, out_b["database"]), "SELECT count(*) FROM users") == [
        (302,)
    ]  # copies outlive the golden copy they came from

    # The schedule rebuilds it once half its maximum age has passed, and not before.
    assert [c for c in golden_store.refresh_due() if c.blueprint == blueprint] == []
    GoldenCopy.objects.filter(pk=fresh.pk).update(taken_at=timezone.now() - timedelta(hours=13))
    rebuilt = [c for c in golden_store.refresh_due() if c.blueprint == blueprint]
    assert [c.status for c in rebuilt] == [GoldenStatus.READY] and rebuilt[0].pk != fresh.pk


@pytest.mark.django_db(transaction=True)
def test_a_golden_copy_is_never_served_under_changed_rules(
    blueprint: str, blueprints_root: Path
) -> None:
    _golden_blueprint(blueprints_root, blueprint, True)
    account = AccountFactory(name=f"{blueprint}-a", blueprint=blueprint, config={})
    first, _ = _clone_stage(account, 201, RunKind.PROVISION)
    (blueprints_root / blueprint / "scrub" / "orders.sql").write_text(
        "UPDATE orders SET total = 1 WHERE id = 1;\n"
    )
    second, lines = _clone_stage(account, 202, RunKind.PROVISION)
    assert first["golden"] != second["golden"] and any("building one" in x for x in lines)
    url = pg.with_dbname(ADMIN_URL, second["database"])
    assert q(url, "SELECT total FROM orders WHERE id = 1") == [(1,)]


@pytest.mark.django_db(transaction=True)
def test_a_failed_build_is_recorded_and_nothing_is_copied(
    blueprint: str, blueprints_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _golden_blueprint(blueprints_root, blueprint, True)
    (blueprints_root / blueprint / "scrub" / "orders.sql").write_text("UPDATE nowhere SET x = 1;")
    account = AccountFactory(name=f"{blueprint}-a", blueprint=blueprint, config={})
    with pytest.raises(StageError, match="nowhere"):
        _clone_stage(account, 301, RunKind.PROVISION)
    failed = GoldenCopy.objects.get(blueprint=blueprint)
    assert failed.status == GoldenStatus.FAILED and "nowhere" in failed.error
    assert not q(ADMIN_URL, "SELECT 1 FROM pg_database WHERE datname LIKE %s", f"%{blueprint}%")


@pytest.mark.django_db
def test_operators_see_golden_copies_in_the_admin_and_change_nothing() -> None:
    ready = GoldenCopy.objects.create(
        blueprint="shop", service="orders", target="LOCAL", rules_digest="d" * 64,
        database="golden_shop_orders_3", role="golden_shop_orders_3_owner",
        status=GoldenStatus.READY, taken_at=timezone.now() - timedelta(hours=5),
        ready_at=timezone.now(), table_counts={"public.orders": 12},
    )  # fmt: skip
    failed = GoldenCopy.objects.create(
        blueprint="shop", service="orders", target="LOCAL", rules_digest="d" * 64,
        status=GoldenStatus.FAILED, error="scrub orders.sql: relation nowhere does not exist",
    )  # fmt: skip
    staff = UserFactory(username="ops", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(staff)

    listing = client.get(reverse("admin:pipelines_goldencopy_changelist"))
    assert listing.status_code == 200
    assert b"golden_shop_orders_3" in listing.content and b"Failed" in listing.content
    assert b"2 golden copies" in listing.content
    page = client.get(reverse("admin:pipelines_goldencopy_change", args=[failed.pk]))
    assert page.status_code == 200 and b"relation nowhere does not exist" in page.content
    # Read-only: no add page, no edit, no delete, even for a superuser.
    assert client.get(reverse("admin:pipelines_goldencopy_add")).status_code == 403
    edit = client.post(
        reverse("admin:pipelines_goldencopy_change", args=[ready.pk]),
        {"status": GoldenStatus.RETIRED},
    )
    assert edit.status_code == 403
    gone = client.post(
        reverse("admin:pipelines_goldencopy_delete", args=[ready.pk]), {"post": "yes"}
    )
    assert gone.status_code == 403
    ready.refresh_from_db()
    assert ready.status == GoldenStatus.READY
    # Not staff: the admin's login page instead.
    outsider = Client()
    outsider.force_login(UserFactory(username="sales"))
    answer = outsider.get(reverse("admin:pipelines_goldencopy_changelist"))
    assert answer.status_code == 302 and "/login/" in answer["Location"]


def test_golden_settings_are_checked(blueprint: str, blueprints_root: Path) -> None:
    for setting, message in (
        ("yes", "golden must be true, false or a mapping"),
        ({"max_age_hours": 0}, "golden.max_age_hours must be a number of hours"),
        ({"max_age_hours": True}, "golden.max_age_hours must be a number of hours"),
        ({"ttl": 1}, "golden: unknown setting(s) ttl"),
    ):
        _golden_blueprint(blueprints_root, blueprint, setting)
        with pytest.raises(BlueprintError, match=re.escape(message)):
            load_blueprint(blueprint)
    _golden_blueprint(blueprints_root, blueprint, {"refresh_max_age_hours": 2})
    (entry,) = load_blueprint(blueprint).databases
    assert entry["golden"] == {"max_age_hours": 24.0, "refresh_max_age_hours": 2.0}


def test_bench_clone_golden_prints_copy_times_and_cleans_up() -> None:
    def bench_objects() -> set[str]:
        like = "SELECT {0} FROM {1} WHERE {0} LIKE 'bench\\_%' OR {0} LIKE 'golden\\_bench\\_%'"
        dbs = q(ADMIN_URL, like.format("datname", "pg_database"))
        return {r[0] for r in dbs + q(ADMIN_URL, like.format("rolname", "pg_roles"))}

    before = bench_objects()  # another benchmark may be running on this server
    out, err = StringIO(), StringIO()
    call_command("bench_clone", rows=2000, golden=3, dsn=ADMIN_URL, stdout=out, stderr=err)
    figures = json.loads(out.getvalue().strip().splitlines()[-1])
    assert list(figures) == ["rows", "copies", "copy_s_median", "copy_s_max"]
    assert figures["rows"] == 2000 and figures["copies"] == 3
    assert 0 < figures["copy_s_median"] <= figures["copy_s_max"]
    assert err.getvalue().count("database from the golden copy:") == 3
    assert bench_objects() <= before  # everything it created is gone


def test_a_checkpoint_is_taken_only_by_a_role_that_may() -> None:
    # The build ends with one, so that a FILE_COPY copy's own checkpoint finds little to
    # write; a role without superuser or pg_checkpoint gets False and no error.
    role = f"nocheckpoint_{secrets.token_hex(3)}"
    pg.execute(ADMIN_URL, f'CREATE ROLE "{role}" LOGIN')
    try:
        with pg.connect(ADMIN_URL, autocommit=True) as admin:
            last = "SELECT checkpoint_lsn FROM pg_control_checkpoint()"
            before = q(ADMIN_URL, last)
            assert pg.checkpoint(admin) is True
            assert q(ADMIN_URL, last) != before
        with pg.connect(psycopg.conninfo.make_conninfo(ADMIN_URL, user=role)) as plain:
            assert pg.checkpoint(plain) is False
    finally:
        pg.execute(ADMIN_URL, f'DROP ROLE "{role}"')
