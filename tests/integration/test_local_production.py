"""The local production (`seed_production`) and a demo sandbox cloned from it.

`seed_production` builds account `prod` of the shipped sandbox blueprint through the
portal's own pipeline (its Terraform state in the portal's `pg` backend) and fills its
orders database, the blueprint's `PROD_ORDERS` connection (this session's own database,
tests/clone_env.py), with generated production-like data. A demo sandbox provisioned by
a real worker then gets a masked, scrubbed copy, its DNS record in a private zone of
the moto server, and a parity report; refresh-data clones again.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from django.db import connection
from django.utils import timezone

from accounts_app import decommission
from accounts_app.local_production import production_config
from accounts_app.models import Account, AccountStatus, Purpose
from accounts_app.production import system_user
from accounts_app.services import start_account_run
from pipelines import services
from pipelines.blueprints import load_blueprint
from pipelines.clients import postgres as pg
from pipelines.dbclone import production_data
from pipelines.models import PipelineRun, RunKind, RunStatus, StageRun, StageStatus
from pipelines.stages.terraform_support import state_schema
from tests.clone_env import ADMIN_URL, PRODUCTION_DB
from tests.conftest import run_command
from tests.factories import AccountFactory, UserFactory
from tests.integration.conftest import clone_databases, drop_test_clones, explain
from tests.integration.conftest import unique_account_name as unique_name

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ROWS = 300
PRODUCTION_URL = pg.with_dbname(ADMIN_URL, PRODUCTION_DB)
BUILD = ["pre_hooks", "render", "plan", "approve_plan", "apply", "post_hooks"]
DEMO = [*BUILD, "db_clone", "dns_cutover"]


def _drop(database: str) -> None:
    pg.execute(ADMIN_URL, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture(scope="module", autouse=True)
def _production_database() -> Iterator[None]:
    """This session's production database and its clones are gone after these tests."""
    _drop(PRODUCTION_DB)
    yield
    drop_test_clones()
    _drop(PRODUCTION_DB)


@pytest.fixture(autouse=True)
def _local_aws(settings: Any, moto_server: str) -> None:
    settings.AWS_ENDPOINT_URL = moto_server  # the post hook's private zone, in this process


def route53(moto_server: str) -> Any:
    return boto3.client("route53", endpoint_url=moto_server, region_name="us-east-1")


def private_zone(*, moto_server: str, account: str, zone: str) -> dict[str, Any]:
    listed = route53(moto_server).list_hosted_zones_by_name(DNSName=zone + ".")
    [found] = [
        z for z in listed["HostedZones"] if z["CallerReference"] == f"portal:{account}:{zone}"
    ]
    return found


def rows_of(url: str, query: str) -> list[tuple[Any, ...]]:
    return pg.fetch_all(url, query)


def test_seed_production_builds_prod_through_the_portal_then_changes_nothing(
    moto_server: str,
) -> None:
    code, out, err = run_command("seed_production", "--rows", str(ROWS))
    assert code == 0, err
    assert f"database {PRODUCTION_DB} with {ROWS} rows" in out

    prod = Account.objects.get(name="prod")
    assert (prod.blueprint, prod.purpose, prod.protected, prod.status) == (
        "sandbox", Purpose.PRODUCTION, True, AccountStatus.READY,
    )  # fmt: skip
    assert prod.config["instance_size"] == "large"
    assert prod.config["dns_zone"] == "prod.internal"
    assert [s["name"] for s in prod.config["services"] if s["database"]] == ["orders"]
    assert len(prod.config["services"]) > 2
    [run] = PipelineRun.objects.filter(account=prod)
    assert [(s.kind, s.status) for s in run.stages.all()] == [
        (kind, StageStatus.SUCCEEDED) for kind in BUILD
    ]  # production is the data's source: no data stages
    # Its Terraform state is in the portal's own database, and its resources recorded.
    assert run.stages.get(kind="plan").outputs["backend"] == {
        "type": "pg", "schema": state_schema("prod"),
    }  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT data FROM {state_schema('prod')}.states")
        [(state,)] = cursor.fetchall()
    assert '"terraform_data"' in state
    addresses = {r["address"] for r in prod.resources}
    assert {'terraform_data.database["orders"]', 'terraform_data.service["search"]'} <= addresses
    assert prod.outputs["private_zone_name"]["value"] == "prod.internal"
    zone = private_zone(moto_server=moto_server, account="prod", zone="prod.internal")
    assert zone["Config"]["PrivateZone"] is True
    assert prod.outputs["private_zone_id"]["value"] == zone["Id"]

    # The data: N rows over customers, orders and payments, with personal data and keys.
    counts = {
        t: rows_of(PRODUCTION_URL, f"SELECT count(*) FROM {t}")[0][0]
        for t in ("customers", "orders", "payments")
    }
    assert sum(counts.values()) == ROWS and min(counts.values()) > 0
    [(email, name, phone, address, card)] = rows_of(
        PRODUCTION_URL,
        "SELECT c.email, c.full_name, c.phone, c.address, p.card_number FROM payments p"
        " JOIN orders o ON o.id = p.order_id JOIN customers c ON c.id = o.customer_id"
        " WHERE p.id = 7",
    )
    assert "@" in email and " " in name and phone.startswith("+1") and address[0].isdigit()
    assert len(card) == 16 and card.isdigit()
    assert rows_of(PRODUCTION_URL, "SELECT count(*) FROM pg_constraint WHERE contype = 'f'") == [
        (2,)
    ]
    assert rows_of(PRODUCTION_URL, "SELECT count(*) FROM customers WHERE is_staff AND active") == [
        (2,)
    ]

    # Again: nothing to do, and it says so.
    code, out, err = run_command("seed_production", "--rows", str(ROWS))
    assert code == 0, err
    assert "nothing changed" in out
    assert PipelineRun.objects.filter(account=prod).count() == 1
    assert rows_of(PRODUCTION_URL, "SELECT count(*) FROM customers") == [(counts["customers"],)]


def test_a_killed_build_is_finished_by_the_next_call(moto_server: str) -> None:
    # The first call was killed while its pre_hooks stage ran: the process is gone.
    prod = Account.objects.create(
        name="prod",
        blueprint="sandbox",
        purpose=Purpose.PRODUCTION,
        owner=system_user(),
        config=load_blueprint("sandbox").validate_config(production_config()),
        status=AccountStatus.PROVISIONING,
    )
    run = services.start_production_build(prod)
    dead = subprocess.Popen(["true"])
    dead.wait()
    StageRun.objects.filter(run=run, position=1, status=StageStatus.QUEUED).update(
        status=StageStatus.RUNNING,
        worker=f"{socket.gethostname()}:{dead.pid}",
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
    )

    code, _, err = run_command("seed_production", "--rows", str(ROWS))

    assert code == 0, err
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, explain(run)
    assert PipelineRun.objects.filter(account=prod).count() == 1  # finished, not started over
    assert Account.objects.get(pk=prod.pk).status == AccountStatus.READY
    # Built again in this session, still one private zone (found by its caller reference).
    zone = private_zone(moto_server=moto_server, account="prod", zone="prod.internal")
    assert Account.objects.get(pk=prod.pk).outputs["private_zone_id"]["value"] == zone["Id"]


def test_production_accounts_still_refuse_every_other_run() -> None:
    prod = AccountFactory(name="prod", purpose=Purpose.PRODUCTION, status=AccountStatus.READY)
    for kind in (RunKind.PROVISION, RunKind.UPDATE, RunKind.REFRESH_DATA, RunKind.TEARDOWN):
        with pytest.raises(services.RunRefused, match="protected"):
            services.start_run(prod, kind)
    clone = AccountFactory(purpose=Purpose.DEMO)
    with pytest.raises(services.RunRefused, match="not a production account"):
        services.start_production_build(clone)


def test_data_left_unfinished_is_written_and_a_foreign_database_is_never_touched() -> None:
    # A first call killed after CREATE DATABASE: an empty database, no marker.
    _drop(PRODUCTION_DB)
    pg.execute(ADMIN_URL, f'CREATE DATABASE "{PRODUCTION_DB}"')
    result = production_data.seed(url=PRODUCTION_URL, rows=50, log=lambda _: None)
    assert result.written and not result.created_database
    assert sum(result.table_rows.values()) == 50
    assert not production_data.seed(url=PRODUCTION_URL, rows=50, log=lambda _: None).written

    foreign = f"{PRODUCTION_DB}_foreign"
    _drop(foreign)
    pg.execute(ADMIN_URL, f'CREATE DATABASE "{foreign}"')
    try:
        url = pg.with_dbname(ADMIN_URL, foreign)
        pg.execute(url, "CREATE TABLE customers (id int); INSERT INTO customers VALUES (1)")
        with pytest.raises(pg.PostgresError, match="did not write: refusing"):
            production_data.seed(url=url, rows=50, log=lambda _: None)
        assert rows_of(url, "SELECT count(*) FROM customers") == [(1,)]
    finally:
        _drop(foreign)


def test_seed_production_refuses_bad_rows() -> None:
    code, _, err = run_command("seed_production", "--rows", "3")
    assert code == 2
    assert "--rows: between 10 and" in err


def test_a_demo_sandbox_of_the_local_production_has_masked_data_dns_and_parity(
    celery_worker: Any, wait_for_run: Any, moto_server: str
) -> None:
    code, _, err = run_command("seed_production", "--rows", str(ROWS))
    assert code == 0, err
    name = unique_name()
    zone = f"{name}.internal"
    account = AccountFactory(
        name=name,
        blueprint="sandbox",
        purpose=Purpose.DEMO,
        config={
            "cidr": "10.61.0.0/16",
            "dns_zone": zone,
            "services": [{"name": "web"}, {"name": "orders", "database": True}],
        },
    )
    provision = wait_for_run(services.start_run(account, RunKind.PROVISION).pk, timeout=300)
    assert provision.status == RunStatus.SUCCEEDED, explain(provision)
    assert [s.kind for s in provision.stages.all()] == DEMO
    account.refresh_from_db()
    first = account.endpoints["orders"]["database"]
    clone_url = pg.with_dbname(ADMIN_URL, first)

    # Masked: no source value of any masked column is in the clone.
    masking = load_blueprint("sandbox").databases[0]["masking"]
    for key, rule in masking.items():
        table, column = key.split(".")
        query = f"SELECT DISTINCT {column} FROM {table} WHERE {column} IS NOT NULL"
        source = {row[0] for row in rows_of(PRODUCTION_URL, query)}
        cloned = {row[0] for row in rows_of(clone_url, query)}
        assert source and not source & cloned, key
        if rule == "null":
            assert cloned == set(), key
    for table in ("customers", "orders", "payments"):
        query = f"SELECT count(*) FROM {table}"
        assert rows_of(clone_url, query) == rows_of(PRODUCTION_URL, query)
    # Scrubbed: the special users cannot log in to the clone.
    staff = "SELECT count(*) FROM customers WHERE is_staff AND active"
    assert rows_of(clone_url, staff) == [(0,)]
    assert rows_of(PRODUCTION_URL, staff) == [(2,)]

    # DNS: the record in the account's private zone on the local AWS endpoint.
    found = private_zone(moto_server=moto_server, account=name, zone=zone)
    assert found["Config"]["PrivateZone"] is True
    records = route53(moto_server).list_resource_record_sets(HostedZoneId=found["Id"])
    [record] = [r for r in records["ResourceRecordSets"] if r["Name"] == f"orders-db.{zone}."]
    assert (record["Type"], record["ResourceRecords"]) == ("A", [{"Value": "127.0.0.1"}])

    # A parity report against prod: same blueprint version, fresh data.
    code, out, err = run_command("account_parity", name, "--json")
    assert code == 0, out + err
    report = json.loads(out)
    assert (report["production"], report["purpose"], report["in_parity"]) == ("prod", "demo", True)
    assert report["blueprint_version"] == {"clone": "1.0.0", "production": "1.0.0"}
    assert report["data_age_hours"] is not None and report["data_age_hours"] < 1

    # Refresh data: a new clone, the DNS record still points at it, the old clone gone.
    # (what the account page's "Refresh data from production" and the API start)
    started = start_account_run(account=account, kind=RunKind.REFRESH_DATA, user=account.owner)
    refresh = wait_for_run(started.pk, timeout=180)
    assert refresh.status == RunStatus.SUCCEEDED, explain(refresh)
    account.refresh_from_db()
    second = account.endpoints["orders"]["database"]
    assert second != first and clone_databases(name) == [second]
    assert account.endpoints["orders"]["dns"] == f"orders-db.{zone}"
    query = "SELECT count(*) FROM customers WHERE email LIKE '%example.com'"
    assert rows_of(pg.with_dbname(ADMIN_URL, second), query) == [(0,)]

    # Teardown: the clone, its DNS record and the private zone the hook made all go
    # (the zone is in the builder's account: the sandbox has no cloud account).
    teardown = decommission.request_teardown(account=account, user=account.owner, confirm=name)
    waiting = wait_for_run(teardown.pk, statuses=(RunStatus.WAITING_APPROVAL, RunStatus.FAILED))
    assert waiting.status == RunStatus.WAITING_APPROVAL, explain(waiting)
    services.decide_stage(
        waiting.stages.get(kind="approve_plan"),
        user=UserFactory(roles=["approvers"]),
        approve=True,
        comment="demo over",
    )
    done = wait_for_run(teardown.pk, timeout=240)
    assert done.status == RunStatus.SUCCEEDED, explain(done)
    assert clone_databases(name) == []
    deleted = done.stages.get(kind="sweep").outputs["deleted"]
    assert [line.split(" ", 1)[0] for line in deleted] == ["dns-record", "dns-zone"], deleted
    listed = route53(moto_server).list_hosted_zones_by_name(DNSName=zone + ".")["HostedZones"]
    assert [z for z in listed if z["CallerReference"] == f"portal:{name}:{zone}"] == []
