"""Stages db_clone and dns_cutover with the aws_rds_snapshot driver, end to end.

A real Celery worker runs the stages against a real moto server with two accounts
reached by assumed roles: production (111111111111, the source instance) and the
account's own cloud account (a fresh one per test: its VPC, subnet group,
security group and private Route 53 zone, given to the stage as Terraform
outputs).

Two things moto cannot do, handled here and nowhere else:

- moto restores no real database behind an instance, so the worker's endpoint
  resolver (``PORTAL_RDS_ENDPOINT_RESOLVER``, tests/clone_env.py) maps the
  restored instance's host and port to the local PostgreSQL server, whose stand-in
  database (``rds_scrub_db``) belongs to the instance's master user. The stage
  still reads the master password from the target's Secrets Manager and logs in
  as the master user, as against AWS.
- moto cannot copy a snapshot shared from another account by its ARN (moto 5.2.5
  looks the name up in the caller's account). We use a **test-only shim on the
  in-process moto server** (``shared_snapshot_shim``), the same as
  tests/integration/test_rds_clone.py: an ARN of another account resolves in that
  account when the snapshot is shared with the caller. The worker's real HTTP
  call, moto's copy logic and the project's code all run unchanged.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass
from typing import Any

import pytest
from moto.rds.models import RDSBackend
from pytest_django.fixtures import Settings

from pipelines import services
from pipelines.clients import aws
from pipelines.clients import postgres as pg
from pipelines.dbclone import rds, rds_driver
from pipelines.models import LogLine, RunKind, RunStatus, StageStatus
from tests.clone_env import RDS_MASTER_USER, LocalRdsServer, use_clone_settings
from tests.factories import SANDBOX_CONFIG, AccountFactory, PipelineRunFactory
from tests.integration.conftest import (
    explain,
    kill_reap_retry,
    stage_log,
    unique_account_name,
    wait_until,
)
from tests.integration.stage_context import stage_context

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SOURCE = "111111111111"
REGION = "us-east-1"


class RestoreGate:
    """Holds the first restore of an instance whose id contains ``instance_id`` inside
    moto until released, so the worker can be killed in the middle of the clone."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, instance_id: str) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        original = RDSBackend.restore_db_instance_from_db_snapshot
        gate = self

        def restore(self: RDSBackend, from_snapshot_id: str, overrides: dict[str, Any]) -> Any:
            requested = str(overrides.get("db_instance_identifier", ""))
            if instance_id in requested and not gate.entered.is_set():
                gate.entered.set()
                gate.release.wait(60)
            return original(self, from_snapshot_id, overrides)

        monkeypatch.setattr(RDSBackend, "restore_db_instance_from_db_snapshot", restore)


@dataclass
class World:
    account: Any
    src: Any  # boto3 sessions (assumed roles)
    tgt: Any
    prod_id: str
    zone_id: str
    zone: str


def make_world(moto_server: str) -> World:
    settings = aws.AwsSettings(endpoint_url=moto_server, region=REGION)
    target = f"4{secrets.randbelow(10**11):011d}"
    src, _ = aws.assume_role(account_id=SOURCE, settings=settings)
    tgt, _ = aws.assume_role(account_id=target, settings=settings)
    prod_id = f"orders-prod-{secrets.token_hex(4)}"
    src.rds().create_db_instance(
        DBInstanceIdentifier=prod_id,
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        AllocatedStorage=20,
        MasterUsername=RDS_MASTER_USER,
        MasterUserPassword="prod-password-never-copied",
    )
    ec2 = tgt.boto.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.30.{i}.0/24", AvailabilityZone=f"{REGION}{z}")[
            "Subnet"
        ]["SubnetId"]
        for i, z in ((1, "a"), (2, "b"))
    ]
    sg = ec2.create_security_group(GroupName="orders-db", Description="db", VpcId=vpc)["GroupId"]
    tgt.rds().create_db_subnet_group(
        DBSubnetGroupName="qa-db", DBSubnetGroupDescription="db", SubnetIds=subnets
    )
    name = unique_account_name()
    zone = f"{name}.internal"
    zone_id = tgt.route53().create_hosted_zone(
        Name=zone,
        CallerReference=name,
        HostedZoneConfig={"Comment": "test", "PrivateZone": True},
        VPC={"VPCRegion": REGION, "VPCId": vpc},
    )["HostedZone"]["Id"]

    def output(value: Any) -> dict[str, Any]:
        return {"value": value, "sensitive": False, "type": "string"}

    account = AccountFactory(
        name=name,
        blueprint="rds-data",
        cloud_account_id=target,
        config={
            **SANDBOX_CONFIG,
            "dns_zone": zone,
            "orders_source": {"account_id": SOURCE, "region": REGION, "instance": prod_id},
        },
        outputs={
            "db_subnet_group_name": output("qa-db"),
            "db_security_group_ids": output({"orders": [sg]}),
            "private_zone_id": output(zone_id),
        },
    )
    return World(account, src, tgt, prod_id, zone_id, zone)


def snapshot_ids(session: Any) -> list[str]:
    pages = session.rds().get_paginator("describe_db_snapshots").paginate()
    return [s["DBSnapshotIdentifier"] for p in pages for s in p["DBSnapshots"]]


def instance(session: Any, instance_id: str) -> dict[str, Any] | None:
    pages = session.rds().get_paginator("describe_db_instances").paginate()
    found = [i for p in pages for i in p["DBInstances"] if i["DBInstanceIdentifier"] == instance_id]
    return found[0] if found else None


def instance_ids(session: Any) -> list[str]:
    pages = session.rds().get_paginator("describe_db_instances").paginate()
    return [i["DBInstanceIdentifier"] for p in pages for i in p["DBInstances"]]


def secret_names(session: Any) -> list[str]:
    return [s["Name"] for s in session.secretsmanager().list_secrets()["SecretList"]]


def cname(w: World) -> list[str]:
    sets = w.tgt.route53().list_resource_record_sets(HostedZoneId=w.zone_id)
    record = [r for r in sets["ResourceRecordSets"] if r["Name"] == f"orders-db.{w.zone}."]
    assert len(record) == 1 and record[0]["Type"] == "CNAME"
    return [v["Value"] for v in record[0]["ResourceRecords"]]


def all_log_text(run_ids: list[int]) -> str:
    return "\n".join(
        LogLine.objects.filter(stage__run_id__in=run_ids).values_list("text", flat=True)
    )


def assert_clone_in_service(w: World, run: Any, rds_scrub_db: str) -> rds.CloneIds:
    """One instance, cut over, intermediate snapshots gone, password only in Secrets Manager."""
    ids = rds.clone_identifiers(account=w.account.name, service="orders", run_id=run.pk)
    inst = instance(w.tgt, ids.instance)
    assert inst is not None and inst["DBInstanceStatus"] == "available"
    assert [i for i in instance_ids(w.tgt) if i == ids.instance] == [ids.instance]
    assert inst["DBSubnetGroup"]["DBSubnetGroupName"] == "qa-db"
    tags = {t["Key"]: t["Value"] for t in inst["TagList"]}
    assert tags["portal:account"] == w.account.name and tags["portal:run"] == str(run.pk)
    address = inst["Endpoint"]["Address"]

    # The cutover: endpoint recorded (no password), DNS repointed, snapshots deleted.
    w.account.refresh_from_db()
    endpoint = w.account.endpoints["orders"]
    assert endpoint["driver"] == "aws_rds_snapshot"
    assert (endpoint["instance_id"], endpoint["host"]) == (ids.instance, address)
    assert endpoint["account_id"] == w.account.cloud_account_id
    assert "previous" not in endpoint
    assert cname(w) == [address]
    assert not {ids.source_snapshot, ids.encrypted_copy} & set(snapshot_ids(w.src))
    assert ids.target_copy not in snapshot_ids(w.tgt)

    # The password: in the target's Secrets Manager only; its ARN recorded.
    secret = json.loads(aws.get_secret(session=w.tgt, secret_id=endpoint["secret_arn"]))
    assert secret["dbInstanceIdentifier"] == ids.instance
    password = secret["password"]
    stages = list(run.stages.all())
    assert password not in all_log_text([run.pk])
    assert all(password not in json.dumps(s.outputs) for s in stages)
    assert password not in json.dumps(w.account.endpoints)

    # The scrub ran (against the local stand-in for the instance).
    assert pg.fetch_all(rds_scrub_db, "SELECT count(*) FROM users WHERE is_staff AND active") == [
        (0,)
    ]
    outputs = run.stages.get(kind="db_clone").outputs["services"]["orders"]
    assert outputs["scrubbed"] == ["scrub/orders.sql"]
    assert "public.users" in outputs["row_counts"]
    return ids


def test_rds_clone_killed_midway_retried_then_refreshed(
    celery_worker,
    wait_for_run,
    settings,
    moto_server: str,
    shared_snapshot_shim: None,
    rds_scrub_db: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Uses shared_snapshot_shim for the target's copy of the shared snapshot (module doc)."""
    w = make_world(moto_server)
    pg.execute(rds_scrub_db, "UPDATE users SET active = true")
    gate = RestoreGate(monkeypatch, f"{w.account.name}-orders-r")

    first = services.start_run(w.account, RunKind.REFRESH_DATA)
    first_ids = rds.clone_identifiers(account=w.account.name, service="orders", run_id=first.pk)
    stage = first.stages.get(kind="db_clone")
    try:
        wait_until(
            lambda: gate.entered.is_set() or first.stages.get(kind="db_clone").finished_at,
            what="the stage to reach the restore",
        )
        assert gate.entered.is_set(), "\n".join(stage_log(stage))
        # Killed while moto holds the restore call: snapshots made, instance being created.
        assert first_ids.target_copy in snapshot_ids(w.tgt)
        stage = kill_reap_retry(stage, settings)
    finally:
        gate.release.set()
    first = wait_for_run(first.pk, timeout=120)
    assert first.status == RunStatus.SUCCEEDED, explain(first)
    stage.refresh_from_db()
    assert (stage.status, stage.attempt) == (StageStatus.SUCCEEDED, 2)
    log = stage_log(stage)
    assert all(t.startswith("[orders] ") for t in log if "] " in t and t.startswith("["))
    # The retry continued where the killed attempt stopped (the restore moto was holding
    # finished after the kill): attempt 2 created nothing, it found everything.
    assert sum("started copy" in t for t in log) == 1
    retry_lines = LogLine.objects.filter(stage=stage, attempt=2).values_list("text", flat=True)
    assert not [t for t in retry_lines if "started" in t or "created KMS" in t]
    assert any("new master password applied" in t for t in retry_lines)
    assert_clone_in_service(w, first, rds_scrub_db)
    first_secret_arn = w.account.endpoints["orders"]["secret_arn"]

    # Refresh at will: a new instance; the previous one and its secret deleted.
    pg.execute(rds_scrub_db, "UPDATE users SET active = true")
    second = wait_for_run(services.start_run(w.account, RunKind.REFRESH_DATA).pk, timeout=120)
    assert second.status == RunStatus.SUCCEEDED, explain(second)
    second_ids = assert_clone_in_service(w, second, rds_scrub_db)
    assert second_ids.instance != first_ids.instance
    assert instance(w.tgt, first_ids.instance) is None
    assert aws.describe_secret(session=w.tgt, secret_id=first_secret_arn) is None
    assert first_ids.secret_name not in secret_names(w.tgt)
    cutover = second.stages.get(kind="dns_cutover").outputs["services"]["orders"]
    assert f"RDS instance {first_ids.instance}" in cutover["deleted"][0]
    # Production is never touched.
    production = instance(w.src, w.prod_id)
    assert production is not None and production["DBInstanceStatus"] == "available"


def test_scrub_logs_in_with_the_master_password_from_secrets_manager(
    moto_server: str,
    settings: Settings,
    shared_snapshot_shim: None,
    rds_scrub_db: str,
) -> None:
    """The product's scrub path, in this process: the master password is read from the
    target account's Secrets Manager (moto) and the scrub SQL runs as the master user.
    The test's endpoint resolver only maps the instance's host and port to the local
    server (and its database to this session's stand-in)."""
    use_clone_settings(settings)
    settings.AWS_ENDPOINT_URL = moto_server
    w = make_world(moto_server)
    pg.execute(rds_scrub_db, "UPDATE users SET active = true")
    run = PipelineRunFactory(account=w.account, kind=RunKind.REFRESH_DATA)
    lines: list[str] = []
    registered: list[str] = []
    ctx = stage_context(
        account=w.account,
        run_id=run.pk,
        kind="db_clone",
        previous={},
        log=lines.append,
        add_secret=registered.append,
    )
    asked_before = len(LocalRdsServer.seen)

    outputs = rds_driver.clone(ctx=ctx, entry=ctx.blueprint.databases[0], log=lines.append)

    ids = rds.clone_identifiers(account=w.account.name, service="orders", run_id=run.pk)
    inst = instance(w.tgt, ids.instance)
    assert inst is not None
    secret = json.loads(aws.get_secret(session=w.tgt, secret_id=outputs["secret_arn"]))
    [asked] = LocalRdsServer.seen[asked_before:]
    assert (asked.host, asked.port) == (inst["Endpoint"]["Address"], inst["Endpoint"]["Port"])
    assert (asked.user, asked.database) == (RDS_MASTER_USER, "orders")
    assert asked.password == secret["password"]
    assert secret["password"] in registered  # redacted from every later log line
    assert all(secret["password"] not in line for line in lines)
    assert pg.fetch_all(rds_scrub_db, "SELECT count(*) FROM users WHERE is_staff AND active") == [
        (0,)
    ]
    assert outputs["scrubbed"] == ["scrub/orders.sql"]
    assert "public.users" in outputs["row_counts"]
