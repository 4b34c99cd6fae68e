"""Stages db_clone and dns_cutover with the postgres_logical driver, end to end.

A real Celery worker runs the stages; the source is a generated database on the
local PostgreSQL (tests/integration/conftest.py), the clones go to the same
server, and Route 53 is a real moto server (the account's private zone lives in
its own cloud account, reached by an assumed role as in production).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from pytest_django.fixtures import Settings

from accounts_app.records import read_secret
from pipelines import services
from pipelines.blueprints import BlueprintError, load_blueprint
from pipelines.clients import aws
from pipelines.clients import postgres as pg
from pipelines.dbclone.logical import DB_COMPLETE, clone_database_name, clone_role_name
from pipelines.models import RunKind, RunStatus, StageStatus
from pipelines.stages import db_clone, dns_cutover
from pipelines.stages.base import StageError
from tests.clone_env import use_clone_settings
from tests.factories import SANDBOX_CONFIG, AccountFactory, PipelineRunFactory
from tests.integration.conftest import (
    ADMIN_URL,
    CloneSource,
    clone_databases,
    explain,
    kill_reap_retry,
    q,
    stage_log,
    unique_account_name,
    wait_until,
)
from tests.integration.stage_context import stage_context

pytestmark = pytest.mark.integration
# The stage tests share the database with the worker process; the blueprint checks need none.
transactional = pytest.mark.django_db(transaction=True)

SERVICES = ("billing", "orders")


def one(url: str, query: str, *params: Any) -> Any:
    return q(url, query, *params)[0][0]


def make_account(blueprint: str, moto_server: str) -> tuple[Any, Any, str]:
    """An account with its own cloud account (moto) holding its private DNS zone."""
    name = unique_account_name()
    cloud_id = f"3{secrets.randbelow(10**11):011d}"
    session, _ = aws.assume_role(
        account_id=cloud_id, settings=aws.AwsSettings(endpoint_url=moto_server)
    )
    vpc = session.boto.client("ec2").create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    zone = f"{name}.internal"
    zone_id = session.route53().create_hosted_zone(
        Name=zone,
        CallerReference=name,
        HostedZoneConfig={"Comment": "test", "PrivateZone": True},
        VPC={"VPCRegion": "us-east-1", "VPCId": vpc},
    )["HostedZone"]["Id"]
    account = AccountFactory(
        name=name,
        blueprint=blueprint,
        cloud_account_id=cloud_id,
        config={**SANDBOX_CONFIG, "dns_zone": zone},
        outputs={"private_zone_id": {"value": zone_id, "sensitive": False, "type": "string"}},
    )
    return account, session, zone_id


def dns_records(session: Any, zone_id: str) -> dict[str, tuple[str, list[str]]]:
    sets = session.route53().list_resource_record_sets(HostedZoneId=zone_id)
    return {
        r["Name"].rstrip("."): (r["Type"], [v["Value"] for v in r.get("ResourceRecords", [])])
        for r in sets["ResourceRecordSets"]
        if r["Type"] in ("A", "CNAME")
    }


def roles_of(account_name: str) -> list[str]:
    prefix = account_name.replace("-", "_") + "_"
    return [
        r[0]
        for r in q(ADMIN_URL, "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", prefix)
    ]


# --- end to end: killed mid-way, retried, then refreshed -------------------------------------


@transactional
def test_logical_clone_killed_midway_retried_then_refreshed(
    celery_worker, wait_for_run, settings, clone_source: CloneSource, moto_server: str
) -> None:
    account, session, zone_id = make_account("logical-data", moto_server)

    # pg_dump of the schema waits behind this lock (the catalog checks do not): the
    # stage gets past creating both clone databases, then blocks, and is killed there.
    lock = psycopg.connect(clone_source.url)
    lock.execute("LOCK TABLE ONLY events IN ACCESS EXCLUSIVE MODE")
    try:
        first = services.start_run(account, RunKind.REFRESH_DATA)
        stage = first.stages.get(kind="db_clone")
        wait_until(
            lambda: sum("] created database" in t for t in stage_log(stage)) == 2,
            what="both clone databases to be created",
        )
        names = {
            s: clone_database_name(account=account.name, service=s, run_id=first.pk)
            for s in SERVICES
        }
        assert clone_databases(account.name) == sorted(names.values())
        stage = kill_reap_retry(stage, settings)
    finally:
        lock.rollback()
        lock.close()

    first = wait_for_run(first.pk, timeout=120)
    assert first.status == RunStatus.SUCCEEDED, explain(first)
    stage.refresh_from_db()
    assert (stage.status, stage.attempt) == (StageStatus.SUCCEEDED, 2)
    log = stage_log(stage)
    # Each service has its own progress lines; the retry removed the leftovers first.
    for service in SERVICES:
        assert any(t.startswith(f"[{service}] copied public.users") for t in log), service
        assert any(
            t.startswith(f"[{service}] removing the incomplete clone {names[service]}") for t in log
        ), service
    # No duplicates: exactly one complete clone per service, owned by its role.
    assert clone_databases(account.name) == sorted(names.values())
    assert sorted(roles_of(account.name)) == sorted(clone_role_name(n) for n in names.values())
    for database in names.values():
        comment = one(
            ADMIN_URL,
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            database,
        )
        assert comment == DB_COMPLETE

    outputs = stage.outputs["services"]
    assert set(outputs) == set(SERVICES)
    orders = outputs["orders"]
    assert orders["driver"] == "postgres_logical"
    assert orders["database"] == names["orders"]
    assert orders["row_counts"]["public.users"] == 3000
    assert orders["row_counts"]["public.orders"] == 9000
    assert orders["checks"]["leaks"] == {} and orders["checks"]["row_counts_match"] is True
    assert orders["scrubbed"] == ["scrub/orders.sql"]
    assert orders["secret"] == f"db/orders/{names['orders']}"
    assert "password" not in str(orders).lower().replace("password_hash", "")
    # billing masks less: its unruled personal columns are reported, not copied silently.
    assert any(
        "users.full_name looks like personal data" in w for w in outputs["billing"]["warnings"]
    )
    assert orders["warnings"] == []

    # The scrub ran against the clone, not the source.
    clone_url = pg.with_dbname(ADMIN_URL, names["orders"])
    assert one(clone_url, "SELECT count(*) FROM users WHERE is_staff AND active") == 0
    assert one(clone_source.url, "SELECT count(*) FROM users WHERE is_staff AND active") == 60

    # The cutover: endpoints recorded, DNS records in the account's private zone.
    account.refresh_from_db()
    zone = account.config["dns_zone"]
    for service in SERVICES:
        endpoint = account.endpoints[service]
        assert endpoint["database"] == names[service]
        assert endpoint["role"] == clone_role_name(names[service])
        assert endpoint["connection"] == "DBCLONE_TGT"
        assert "previous" not in endpoint
        assert read_secret(account_id=account.pk, name=f"db/{service}/{names[service]}")
    records = dns_records(session, zone_id)
    assert records[f"orders-db.{zone}"] == ("A", ["127.0.0.1"])
    assert records[f"billing-db.{zone}"] == ("A", ["127.0.0.1"])

    # Refresh at will: new clones, endpoints switched, the previous clones gone.
    first_secrets = {
        s: read_secret(account_id=account.pk, name=f"db/{s}/{names[s]}") for s in SERVICES
    }
    second = wait_for_run(services.start_run(account, RunKind.REFRESH_DATA).pk, timeout=120)
    assert second.status == RunStatus.SUCCEEDED, explain(second)
    new_names = {
        s: clone_database_name(account=account.name, service=s, run_id=second.pk) for s in SERVICES
    }
    assert clone_databases(account.name) == sorted(new_names.values())
    assert sorted(roles_of(account.name)) == sorted(clone_role_name(n) for n in new_names.values())
    account.refresh_from_db()
    for service in SERVICES:
        assert account.endpoints[service]["database"] == new_names[service]
        assert "previous" not in account.endpoints[service]
        assert read_secret(account_id=account.pk, name=f"db/{service}/{names[service]}") is None
        new_secret = read_secret(account_id=account.pk, name=f"db/{service}/{new_names[service]}")
        assert new_secret and new_secret != first_secrets[service]
    cutover = second.stages.get(kind="dns_cutover").outputs["services"]["orders"]
    assert cutover["deleted"] == [f"database {names['orders']} on 127.0.0.1:5432"]
    clone = second.stages.get(kind="db_clone").outputs["services"]["orders"]
    # While db_clone ran, the first clone still served (the old endpoint was untouched).
    assert clone["delete_after_cutover"]["previous"]["database"] == names["orders"]
    assert dns_records(session, zone_id)[f"orders-db.{zone}"] == ("A", ["127.0.0.1"])


# --- masking: determinism, referential consistency, leak scan --------------------------------


@transactional
def test_masking_is_deterministic_joins_match_and_nothing_leaks(
    celery_worker, wait_for_run, clone_source: CloneSource, moto_server: str
) -> None:
    account, _, _ = make_account("logical-data", moto_server)
    run = wait_for_run(services.start_run(account, RunKind.REFRESH_DATA).pk, timeout=120)
    assert run.status == RunStatus.SUCCEEDED, explain(run)
    src = clone_source.url
    tgt = pg.with_dbname(
        ADMIN_URL, clone_database_name(account=account.name, service="orders", run_id=run.pk)
    )

    # Referential consistency: the same source e-mail/name gives the same masked value in
    # every table (users, orders, the partitions of events), so joins on them still match.
    join = "SELECT count(*) FROM orders o JOIN users u ON o.customer_email = u.email"
    assert one(tgt, join) == one(src, join) == 9000
    events_join = "SELECT count(*) FROM events e JOIN users u ON e.actor_email = u.email"
    assert one(tgt, events_join) == one(src, events_join) == 2000
    # Deterministic per row: each order's e-mail and name are its own user's masked ones.
    mismatched = (
        "SELECT count(*) FROM orders o JOIN users u ON u.id = o.user_id "
        "WHERE o.customer_email <> u.email OR o.shipping_name <> u.full_name"
    )
    assert one(src, mismatched) == one(tgt, mismatched) == 0
    # ...and the masked values are still distinct where the source's were (unique index).
    assert one(tgt, "SELECT count(DISTINCT email) FROM users") == 3000
    # Foreign keys in place and valid.
    assert one(tgt, "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated") == 2

    # Leak scan, independent of the driver's own: no source value of a masked column.
    for table, column in [
        ("users", "email"),
        ("users", "full_name"),
        ("users", "phone"),
        ("users", "address"),
        ("users", "password_hash"),
        ("users", "api_token"),
        ("orders", "customer_email"),
        ("orders", "shipping_name"),
        ("payments", "card_number"),
        ("payments", "iban"),
        ("events", "actor_email"),
    ]:
        select = f"SELECT DISTINCT {column}::text FROM {table} WHERE {column} IS NOT NULL"
        source_values = {r[0] for r in q(src, select)}
        clone_values = {r[0] for r in q(tgt, select)}
        assert source_values, (table, column)
        assert not source_values & clone_values, f"{table}.{column} leaked"
    assert {r[0] for r in q(tgt, "SELECT DISTINCT password_hash FROM users")} == {"!disabled"}
    assert {r[0] for r in q(tgt, "SELECT DISTINCT address FROM users")} == {"REDACTED"}
    assert one(tgt, "SELECT count(*) FROM payments WHERE iban IS NOT NULL") == 0
    assert all(
        e.endswith("@example.invalid") for (e,) in q(tgt, "SELECT email FROM users LIMIT 50")
    )
    # The driver's scan agrees, and covered every masked column.
    checks = run.stages.get(kind="db_clone").outputs["services"]["orders"]["checks"]
    assert checks["leaks"] == {}
    assert checks["masked_columns_scanned"] == 12  # events.actor_email: 2 partitions


# --- a bad rule stops the stage before anything is created --------------------------------------


@transactional
@pytest.mark.parametrize(
    ("blueprint", "expected"),
    [
        ("logical-badrule", ["users.no_such_column", "column 'no_such_column' does not exist"]),
        # masking_strict: personal-looking columns without a rule are errors, not warnings.
        ("logical-strict", ["masking_strict", "users.full_name looks like personal data"]),
    ],
)
def test_bad_masking_rules_are_refused_before_copying(
    celery_worker,
    wait_for_run,
    clone_source: CloneSource,
    moto_server: str,
    blueprint: str,
    expected: list[str],
) -> None:
    account, _, _ = make_account(blueprint, moto_server)
    run = wait_for_run(services.start_run(account, RunKind.REFRESH_DATA).pk, timeout=60)

    assert run.status == RunStatus.FAILED
    stage = run.stages.get(kind="db_clone")
    assert stage.status == StageStatus.FAILED
    assert stage.retryable is False
    for text in expected:
        assert text in stage.explanation
    assert run.stages.get(kind="dns_cutover").status == StageStatus.SKIPPED
    # Nothing was created on the target: no database, no role.
    assert clone_databases(account.name) == []
    assert roles_of(account.name) == []
    assert not any("created database" in t for t in stage_log(stage))
    account.refresh_from_db()
    assert account.endpoints == {}


# --- the blueprint's databases section is checked when the blueprint loads -------------------


def _write(root: Path, databases: list[dict[str, Any]], files: dict[str, str] | None = None) -> str:
    folder = root / "dbcheck"
    folder.mkdir(exist_ok=True)
    for name, text in (files or {}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    spec = {
        "name": "dbcheck",
        "title": "t",
        "version": "1",
        "stages": ["db_clone", "dns_cutover"],
        "parameters": {"type": "object", "properties": {"prod": {"type": "object"}}},
        "databases": databases,
    }
    (folder / "blueprint.yaml").write_text(yaml.safe_dump(spec))
    return "dbcheck"


LOGICAL = {"service": "orders", "driver": "postgres_logical", "source": "SRC", "target": "TGT"}
RDS = {
    "service": "orders",
    "driver": "aws_rds_snapshot",
    "source": {"account_id": "111111111111", "region": "us-east-1", "instance": "orders-prod"},
}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({**LOGICAL, "source": "bad-name"}, "databases[0].source must name a connection"),
        ({**LOGICAL, "target": None}, "databases[0].target must name a connection"),
        ({**LOGICAL, "masking": {"users": "email"}}, "expected 'table.column'"),
        ({**LOGICAL, "masking": {"users.email": "scramble"}}, "unknown transformer 'scramble'"),
        ({**LOGICAL, "masking": {"users.email": {"fixed": "x", "y": 1}}}, "{fixed: VALUE}"),
        ({**LOGICAL, "masking_strict": "yes"}, "masking_strict must be true or false"),
        ({**LOGICAL, "jobs": 0}, "jobs must be a whole number from 1 to 32"),
        ({**LOGICAL, "jobs": True}, "jobs must be a whole number"),
        ({**LOGICAL, "dns": "not a name"}, "dns must be a DNS record name"),
        ({**LOGICAL, "scrub_sql": ["missing.sql"]}, "file 'missing.sql' does not exist"),
        ({**LOGICAL, "scrub_sql": ["/etc/passwd"]}, "leaves the blueprint"),
        ({**LOGICAL, "use_automated_snapshot": True}, "unknown setting(s) use_automated_snapshot"),
        ({**RDS, "masking": {"users.email": "email"}}, "masking is for postgres_logical"),
        (
            {**RDS, "source": {"account_id": 111111111111, "region": "us-east-1", "instance": "x"}},
            "account_id must be 12 digits, quoted",
        ),
        (
            {**RDS, "source": {"account_id": "111111111111", "region": "moon", "instance": "x"}},
            "region must be an AWS region",
        ),
        (
            {
                **RDS,
                "source": {
                    "account_id": "111111111111",
                    "region": "us-east-1",
                    "instance": "bad--id",
                },
            },
            "instance must be an RDS instance",
        ),
        ({**RDS, "source": "orders-prod"}, "source must be {account_id, region, instance}"),
        ({**RDS, "source": {"parameter": ""}}, "source.parameter must name a config parameter"),
        ({**RDS, "use_automated_snapshot": "no"}, "use_automated_snapshot must be true or false"),
        ({**RDS, "target_region": "mars-1"}, "target_region must be an AWS region"),
    ],
)
def test_bad_database_entries_are_refused(
    blueprints_root: Path, entry: dict[str, Any], message: str
) -> None:
    name = _write(blueprints_root, [entry])
    with pytest.raises(BlueprintError) as error:
        load_blueprint(name)
    assert message in str(error.value)


def test_database_entries_are_normalised(blueprints_root: Path) -> None:
    name = _write(
        blueprints_root,
        [
            {
                **LOGICAL,
                "masking": {"users.email": "email", "users.code": {"fixed": 7}},
                "scrub_sql": ["scrub/a.sql"],
                "dns": "orders-db",
            },
            {**RDS, "service": "billing", "source": {"parameter": "prod"}},
        ],
        {"scrub/a.sql": "SELECT 1;"},
    )
    logical, rds = load_blueprint(name).databases
    assert logical["jobs"] == 2 and logical["masking_strict"] is False
    assert logical["scrub_sql"] == ["scrub/a.sql"] and logical["dns"] == "orders-db"
    assert rds["source"] == {"parameter": "prod"}
    assert rds["use_automated_snapshot"] is False and rds["database_name"] == "postgres"


# --- dns_cutover killed right after switching the endpoint, then run again --------------------


class SimulatedCrash(Exception):
    pass


@transactional
def test_dns_cutover_crashed_after_the_switch_deletes_the_previous_clone_on_retry(
    clone_source: CloneSource, moto_server: str, settings: Settings
) -> None:
    """Both stages run in this process here, to crash at an exact line."""
    use_clone_settings(settings)

    account, session, zone_id = make_account("logical-data", moto_server)
    lines: list[str] = []
    runs = [PipelineRunFactory(account=account, kind=RunKind.REFRESH_DATA).pk for _ in range(2)]
    clones = []
    for run_id in runs:
        outputs = db_clone.execute(
            stage_context(
                account=account, run_id=run_id, kind="db_clone", previous={}, log=lines.append
            )
        )
        clones.append(outputs)
    first, second = ({s: c["services"][s]["database"] for s in SERVICES} for c in clones)
    dns_cutover.execute(
        stage_context(
            account=account,
            run_id=runs[0],
            kind="dns_cutover",
            previous={"db_clone": clones[0]},
            log=lines.append,
        )
    )

    crashed: list[str] = []

    def crash_after_switch(text: str) -> None:
        lines.append(text)
        if not crashed and "endpoint of" in text and "is now" in text:
            crashed.append(text)
            raise SimulatedCrash(text)

    ctx = stage_context(
        account=account,
        run_id=runs[1],
        kind="dns_cutover",
        previous={"db_clone": clones[1]},
        log=crash_after_switch,
    )
    with pytest.raises(StageError):
        dns_cutover.execute(ctx)
    account.refresh_from_db()
    switched = [s for s in SERVICES if account.endpoints[s]["database"] == second[s]]
    assert switched, "the crash came after at least one switch"
    for service in switched:
        # Switched, and still remembering which clone to delete.
        assert account.endpoints[service]["previous"]["database"] == first[service]
    # The crashed service's previous clone is still there, to be deleted on retry (the
    # other service, cut over in parallel, may have finished before it was stopped).
    crashed_service = crashed[0].removeprefix("[").split("]", 1)[0]
    assert crashed_service in SERVICES
    assert first[crashed_service] in clone_databases(account.name)

    for _ in range(2):  # the retry, then once more: same end state
        outputs = dns_cutover.execute(
            stage_context(
                account=account,
                run_id=runs[1],
                kind="dns_cutover",
                previous={"db_clone": clones[1]},
                log=lines.append,
            )
        )
        assert clone_databases(account.name) == sorted(second.values())
        account.refresh_from_db()
        for service in SERVICES:
            assert account.endpoints[service]["database"] == second[service]
            assert "previous" not in account.endpoints[service]
    assert all(outputs["services"][s]["deleted"] == [] for s in SERVICES)
    assert sorted(roles_of(account.name)) == sorted(clone_role_name(n) for n in second.values())
