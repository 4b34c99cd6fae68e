"""The aws_rds_snapshot driver (pipelines.dbclone.rds) against a real moto server.

Two accounts, reached the way the portal reaches them (STS AssumeRole from
the builder account): production 111111111111 and the new account
222222222222. Crash tests use a fresh target account per case so that every
"create" step really runs (the share key, for one, is per target account and
would otherwise already exist from an earlier test).

Needs the ``moto_server`` fixture from tests/conftest_moto.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from moto.rds.models import rds_backends

from pipelines.clients import aws
from pipelines.clients.kms import ALIAS_TAG as KMS_ALIAS_TAG
from pipelines.dbclone import rds

pytestmark = pytest.mark.integration

SOURCE = "111111111111"
TARGET = "222222222222"
REGION = "us-east-1"
PROD_PASSWORD = "prod-password-never-copied"


# --------------------------------------------------------------------------- fixtures


@dataclass
class World:
    settings: aws.AwsSettings
    spec: rds.SourceSpec
    target: rds.TargetSpec
    ids: rds.CloneIds
    src: Any  # boto3 sessions (assumed roles)
    tgt: Any


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def make_world(
    aws_settings: aws.AwsSettings, target_account: str = TARGET, *, automated: bool = False
) -> World:
    """A production postgres instance in SOURCE and a network in the target account."""
    src, _ = aws.assume_role(account_id=SOURCE, settings=aws_settings)
    tgt, _ = aws.assume_role(account_id=target_account, settings=aws_settings)
    prod_id = _unique("orders-prod-")
    src.rds().create_db_instance(
        DBInstanceIdentifier=prod_id,
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        AllocatedStorage=20,
        MasterUsername="orders",
        MasterUserPassword=PROD_PASSWORD,
        BackupRetentionPeriod=7,
        Tags=[{"Key": "env", "Value": "production"}],
    )
    ec2 = tgt.boto.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=f"{REGION}{z}")[
            "Subnet"
        ]["SubnetId"]
        for i, z in ((1, "a"), (2, "b"))
    ]
    sg = ec2.create_security_group(GroupName=_unique("db-"), Description="db", VpcId=vpc)["GroupId"]
    subnet_group = _unique("qa-db-subnets-")
    tgt.rds().create_db_subnet_group(
        DBSubnetGroupName=subnet_group, DBSubnetGroupDescription="db", SubnetIds=subnets
    )
    return World(
        settings=aws_settings,
        spec=rds.SourceSpec(
            account_id=SOURCE, region=REGION, instance_id=prod_id, use_automated_snapshot=automated
        ),
        target=rds.TargetSpec(
            account_id=target_account, subnet_group_name=subnet_group, security_group_ids=(sg,)
        ),
        ids=rds.clone_identifiers(account=_unique("qa-"), service="orders", run_id=42),
        src=src,
        tgt=tgt,
    )


@pytest.fixture()
def aws_settings(moto_server: str) -> aws.AwsSettings:
    return aws.AwsSettings(endpoint_url=moto_server, region=REGION)


@pytest.fixture()
def world(aws_settings: aws.AwsSettings, shared_snapshot_shim: None) -> World:
    return make_world(aws_settings)


class Recorder:
    """Stands in for the stage's logger and secret registry."""

    def __init__(self, crash_when: Callable[[str], bool] | None = None) -> None:
        self.lines: list[str] = []
        self.secrets: list[str] = []
        self.crash_when = crash_when
        self.crashed = False

    def log(self, text: str) -> None:
        # A registered secret must never reach a log line, redacted or not.
        assert not any(s in text for s in self.secrets), "a secret reached the log"
        self.lines.append(text)
        if self.crash_when and not self.crashed and self.crash_when(text):
            self.crashed = True
            raise SimulatedCrash(text)

    def add_secret(self, value: str) -> None:
        self.secrets.append(value)


class SimulatedCrash(Exception):
    pass


def run_clone(w: World, rec: Recorder, **kwargs: Any) -> rds.CloneResult:
    return rds.clone_rds(
        spec=w.spec,
        target=w.target,
        ids=w.ids,
        log=rec.log,
        add_secret=rec.add_secret,
        timeout_s=60,
        settings=w.settings,
        poll_s=0.01,
        **kwargs,
    )


# --------------------------------------------------------------------------- inspection


def manual_snapshot_ids(session: Any) -> list[str]:
    pages = session.rds().get_paginator("describe_db_snapshots").paginate()
    return [s["DBSnapshotIdentifier"] for p in pages for s in p["DBSnapshots"]]


def instance_ids(session: Any) -> list[str]:
    pages = session.rds().get_paginator("describe_db_instances").paginate()
    return [i["DBInstanceIdentifier"] for p in pages for i in p["DBInstances"]]


def live_keys_for_alias(session: Any, alias: str) -> list[str]:
    """Keys (not pending deletion) created for ``alias``, by their portal tag."""
    kms = session.kms()
    found = []
    for key in kms.list_keys()["Keys"]:
        tags = kms.list_resource_tags(KeyId=key["KeyId"]).get("Tags", [])
        state = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"]
        if {"TagKey": KMS_ALIAS_TAG, "TagValue": alias} in tags and state != "PendingDeletion":
            found.append(key["KeyId"])
    return found


def secret_names(session: Any) -> list[str]:
    return [s["Name"] for s in session.secretsmanager().list_secrets()["SecretList"]]


def moto_master_password(account: str, instance_id: str) -> str:
    """The password moto holds for the instance (what a client would have to log in with)."""
    return str(rds_backends[account][REGION].databases[instance_id]._master_user_password)


def assert_single_clone(w: World, result: rds.CloneResult) -> None:
    """The end state: exactly one of everything, password consistent everywhere."""
    ids = w.ids
    ours = [s for s in manual_snapshot_ids(w.src) if ids.instance in s]
    expected_src = (
        [ids.encrypted_copy]
        if w.spec.use_automated_snapshot
        else [
            ids.source_snapshot,
            ids.encrypted_copy,
        ]
    )
    assert sorted(ours) == sorted(expected_src)
    tgt_snaps = manual_snapshot_ids(w.tgt)
    assert tgt_snaps.count(ids.target_copy) == 1
    assert instance_ids(w.tgt).count(ids.instance) == 1
    assert len(live_keys_for_alias(w.src, rds.share_key_alias(w.target.account_id))) == 1
    assert len(live_keys_for_alias(w.tgt, ids.kms_alias)) == 1
    assert secret_names(w.tgt).count(ids.secret_name) == 1

    secret = json.loads(aws.get_secret(session=w.tgt, secret_id=result.secret_arn))
    assert secret["username"] == "orders" == result.master_username
    assert secret["host"] == result.address
    assert moto_master_password(w.target.account_id, ids.instance) == secret["password"]
    assert secret["password"] != PROD_PASSWORD
    assert len(secret["password"]) == rds.PASSWORD_LENGTH
    versions = w.tgt.secretsmanager().list_secret_version_ids(SecretId=result.secret_arn)
    assert len(versions["Versions"]) == 1


# --------------------------------------------------------------------------- tests


def test_moto_gap_still_exists(aws_settings: aws.AwsSettings) -> None:
    """Without the shim, moto cannot copy a snapshot shared from another account.

    If this starts failing, moto fixed the gap: delete ``shared_snapshot_shim``.
    """
    w = make_world(aws_settings)
    src_rds, tgt_rds = w.src.rds(), w.tgt.rds()
    snap_id = _unique("gap-")
    snap = src_rds.create_db_snapshot(
        DBInstanceIdentifier=w.spec.instance_id, DBSnapshotIdentifier=snap_id
    )["DBSnapshot"]
    src_rds.modify_db_snapshot_attribute(
        DBSnapshotIdentifier=snap_id, AttributeName="restore", ValuesToAdd=[TARGET]
    )
    shared = tgt_rds.describe_db_snapshots(SnapshotType="shared")["DBSnapshots"]
    assert snap["DBSnapshotArn"] in [s["DBSnapshotArn"] for s in shared]
    with pytest.raises(tgt_rds.exceptions.ClientError) as err:
        tgt_rds.copy_db_snapshot(
            SourceDBSnapshotIdentifier=snap["DBSnapshotArn"],
            TargetDBSnapshotIdentifier=_unique("gap-copy-"),
        )
    assert aws.error_code(err.value) == "DBSnapshotNotFound"


def test_shim_refuses_snapshots_not_shared_with_the_caller(
    aws_settings: aws.AwsSettings, shared_snapshot_shim: None
) -> None:
    w = make_world(aws_settings)
    snap_id = _unique("private-")
    arn = w.src.rds().create_db_snapshot(
        DBInstanceIdentifier=w.spec.instance_id, DBSnapshotIdentifier=snap_id
    )["DBSnapshot"]["DBSnapshotArn"]
    tgt_rds = w.tgt.rds()
    with pytest.raises(tgt_rds.exceptions.ClientError) as err:
        tgt_rds.copy_db_snapshot(
            SourceDBSnapshotIdentifier=arn, TargetDBSnapshotIdentifier=_unique("steal-")
        )
    assert aws.error_code(err.value) == "DBSnapshotNotFound"


def test_clone_end_to_end_then_again_without_duplicates(world: World) -> None:
    """Uses shared_snapshot_shim (see its docstring) for the target's copy of the shared ARN."""
    w = world
    rec = Recorder()
    result = run_clone(w, rec)

    # The new instance: new id, in the target account, network from the target spec, tagged.
    tgt_rds = w.tgt.rds()
    inst = tgt_rds.describe_db_instances(DBInstanceIdentifier=w.ids.instance)["DBInstances"][0]
    assert result.instance_id == w.ids.instance == inst["DBInstanceIdentifier"]
    assert result.instance_arn.split(":")[4] == TARGET
    assert inst["DBSubnetGroup"]["DBSubnetGroupName"] == w.target.subnet_group_name
    assert [g["VpcSecurityGroupId"] for g in inst["VpcSecurityGroups"]] == list(
        w.target.security_group_ids
    )
    assert inst["Engine"] == "postgres"
    assert inst["StorageEncrypted"] is True
    assert (result.address, result.port) == (inst["Endpoint"]["Address"], inst["Endpoint"]["Port"])
    expected_tags = w.ids.tags()
    inst_tags = {t["Key"]: t["Value"] for t in inst["TagList"]}
    assert expected_tags.items() <= inst_tags.items()
    assert "env" not in inst_tags  # production's tags stay in production

    # Snapshots: encrypted with the right keys, shared with the target only, tagged.
    src_rds = w.src.rds()
    enc = src_rds.describe_db_snapshots(DBSnapshotIdentifier=w.ids.encrypted_copy)["DBSnapshots"][0]
    share_key = w.src.kms().describe_key(KeyId=rds.share_key_alias(TARGET))["KeyMetadata"]
    assert enc["Encrypted"] and enc["KmsKeyId"] == share_key["Arn"] == result.source_kms_key_arn
    attrs = src_rds.describe_db_snapshot_attributes(DBSnapshotIdentifier=w.ids.encrypted_copy)
    restore = attrs["DBSnapshotAttributesResult"]["DBSnapshotAttributes"][0]
    assert restore == {"AttributeName": "restore", "AttributeValues": [TARGET]}
    copy = tgt_rds.describe_db_snapshots(DBSnapshotIdentifier=w.ids.target_copy)["DBSnapshots"][0]
    target_key = w.tgt.kms().describe_key(KeyId=w.ids.kms_alias)["KeyMetadata"]
    assert copy["KmsKeyId"] == target_key["Arn"] == result.target_kms_key_arn
    for client, arn in (
        (src_rds, enc["DBSnapshotArn"]),
        (tgt_rds, copy["DBSnapshotArn"]),
    ):
        tags = {
            t["Key"]: t["Value"] for t in client.list_tags_for_resource(ResourceName=arn)["TagList"]
        }
        assert tags == expected_tags

    # The share key's policy lets the target use it, the source administer it.
    policy = json.loads(
        w.src.kms().get_key_policy(KeyId=share_key["KeyId"], PolicyName="default")["Policy"]
    )
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert by_sid["TargetAccountUsesForSnapshotCopies"]["Principal"] == {
        "AWS": f"arn:aws:iam::{TARGET}:root"
    }
    assert "kms:CreateGrant" in by_sid["TargetAccountUsesForSnapshotCopies"]["Action"]
    assert by_sid["SourceAccountAdministers"]["Principal"] == {"AWS": f"arn:aws:iam::{SOURCE}:root"}
    # The share key serves every clone into TARGET, so an earlier test may have made it.
    key_tags = w.src.kms().list_resource_tags(KeyId=share_key["KeyId"])["Tags"]
    assert {t["TagKey"] for t in key_tags} == {*expected_tags, KMS_ALIAS_TAG}
    target_key_tags = w.tgt.kms().list_resource_tags(KeyId=target_key["KeyId"])["Tags"]
    assert {t["TagKey"]: t["TagValue"] for t in target_key_tags} == {
        **expected_tags,
        KMS_ALIAS_TAG: w.ids.kms_alias,
    }

    # The secret: in the target account, tagged; the password only there and in add_secret.
    secret = json.loads(aws.get_secret(session=w.tgt, secret_id=result.secret_arn))
    assert result.secret_arn.split(":")[4] == TARGET
    sm_tags = w.tgt.secretsmanager().describe_secret(SecretId=result.secret_arn)["Tags"]
    assert {t["Key"]: t["Value"] for t in sm_tags} == expected_tags
    assert rec.secrets == [secret["password"]]
    assert all(secret["password"] not in line for line in rec.lines)
    assert secret["password"] not in json.dumps(result.to_outputs())
    assert (
        rds.read_master_password(session=w.tgt, secret_arn=result.secret_arn) == secret["password"]
    )
    assert result.source_snapshot_ids == (w.ids.source_snapshot, w.ids.encrypted_copy)
    assert result.target_snapshot_ids == (w.ids.target_copy,)
    assert_single_clone(w, result)

    # Again: same result, nothing new, password not rotated.
    rec2 = Recorder()
    again = run_clone(w, rec2)
    assert again == result
    assert_single_clone(w, again)
    assert (
        json.loads(aws.get_secret(session=w.tgt, secret_id=result.secret_arn))["password"]
        == secret["password"]
    )
    assert not any("started" in line or "created" in line for line in rec2.lines)


def test_clone_from_latest_automated_snapshot(
    aws_settings: aws.AwsSettings, shared_snapshot_shim: None
) -> None:
    w = make_world(aws_settings, automated=True)
    automated = [
        s["DBSnapshotIdentifier"]
        for s in w.src.rds().describe_db_snapshots(
            DBInstanceIdentifier=w.spec.instance_id, SnapshotType="automated"
        )["DBSnapshots"]
    ]
    assert len(automated) == 1
    rec = Recorder()
    result = run_clone(w, rec)
    assert result.source_snapshot_ids == (w.ids.encrypted_copy,)  # automated one is not ours
    assert any(f"using automated snapshot {automated[0]}" in line for line in rec.lines)
    assert w.ids.source_snapshot not in manual_snapshot_ids(w.src)
    assert_single_clone(w, result)


# Each case: where the process "dies" (a log line right after a side effect).
CRASH_POINTS: dict[str, Callable[[str], bool]] = {
    "target key created, no alias yet": lambda t: "created KMS key" in t and "portal-rds-" in t,
    "share key created, no alias yet": lambda t: "created KMS key" in t and "portal-share-" in t,
    "source snapshot started": lambda t: "started snapshot" in t,
    "encrypted copy started": lambda t: "started encrypted copy" in t,
    "copy shared": lambda t: t.startswith("step 2/4: shared snapshot"),
    "target copy started": lambda t: "started copy" in t,
    "restore started": lambda t: "started restore" in t,
    "secret stored, password not applied": lambda t: "stored master credentials" in t,
    "password applied": lambda t: "new master password" in t,
    "clone ready": lambda t: t.startswith("clone ready"),
}


@pytest.mark.parametrize("crash_point", list(CRASH_POINTS))
def test_crash_at_any_step_then_retry_completes_without_duplicates(
    aws_settings: aws.AwsSettings, shared_snapshot_shim: None, crash_point: str
) -> None:
    """Raise from the log callback right after a side effect, then run again.

    Uses shared_snapshot_shim (see its docstring). A fresh target account per
    case, so the share key of that account is really created in this test.
    """
    target_account = f"2222{uuid.uuid4().int % 10**8:08d}"
    w = make_world(aws_settings, target_account)
    crashing = Recorder(CRASH_POINTS[crash_point])
    with pytest.raises(SimulatedCrash):
        run_clone(w, crashing)
    assert crashing.crashed

    rec = Recorder()
    result = run_clone(w, rec)
    assert_single_clone(w, result)
    secret = json.loads(aws.get_secret(session=w.tgt, secret_id=result.secret_arn))
    assert all(secret["password"] not in line for line in crashing.lines + rec.lines)
    assert rec.secrets == [secret["password"]]


def test_delete_clone_is_idempotent_and_spares_production(world: World) -> None:
    w = world
    rec = Recorder()
    result = run_clone(w, rec)
    common: dict[str, Any] = {
        "source_snapshot_ids": result.source_snapshot_ids,
        "target_snapshot_ids": result.target_snapshot_ids,
        "log": rec.log,
        "settings": w.settings,
        "poll_s": 0.01,
        "timeout_s": 30,
    }

    # Production's own snapshots are out of reach.
    automated = w.src.rds().describe_db_snapshots(
        DBInstanceIdentifier=w.spec.instance_id, SnapshotType="automated"
    )["DBSnapshots"][0]["DBSnapshotIdentifier"]
    with pytest.raises(aws.AwsError, match="not made by the portal"):
        rds.delete_clone(
            spec=w.spec,
            target=w.target,
            **{**common, "instance_id": None, "source_snapshot_ids": [automated]},
        )
    assert automated in manual_snapshot_ids(w.src)

    # Cleanup after a successful clone: snapshots go, the instance stays.
    rds.delete_clone(spec=w.spec, target=w.target, instance_id=None, **common)
    assert not {w.ids.source_snapshot, w.ids.encrypted_copy} & set(manual_snapshot_ids(w.src))
    assert w.ids.target_copy not in manual_snapshot_ids(w.tgt)
    assert w.ids.instance in instance_ids(w.tgt)

    # Retrying the stage after the cleanup must not recreate anything.
    again = run_clone(w, Recorder())
    assert again.secret_arn == result.secret_arn
    assert w.ids.encrypted_copy not in manual_snapshot_ids(w.src)

    # Teardown of the clone, twice.
    for _ in range(2):
        rds.delete_clone(
            spec=w.spec,
            target=w.target,
            instance_id=w.ids.instance,
            secret_arn=result.secret_arn,
            **common,
        )
        assert w.ids.instance not in instance_ids(w.tgt)
        assert w.ids.secret_name not in secret_names(w.tgt)
    assert w.spec.instance_id in instance_ids(w.src)


def test_clone_refuses_same_account(world: World) -> None:
    same = rds.TargetSpec(account_id=SOURCE, subnet_group_name="x")
    with pytest.raises(aws.AwsError) as err:
        rds.clone_rds(
            spec=world.spec,
            target=same,
            ids=world.ids,
            log=print,
            add_secret=print,
            settings=world.settings,
        )
    assert not err.value.retryable


def test_clone_refuses_another_region(world: World) -> None:
    elsewhere = rds.TargetSpec(account_id=TARGET, subnet_group_name="x", region="eu-west-1")
    with pytest.raises(aws.AwsError, match="cross-region"):
        rds.clone_rds(
            spec=world.spec,
            target=elsewhere,
            ids=world.ids,
            log=print,
            add_secret=print,
            settings=world.settings,
        )


def test_missing_source_instance_is_a_clear_error(world: World) -> None:
    spec = rds.SourceSpec(account_id=SOURCE, region=REGION, instance_id="no-such-db")
    rec = Recorder()
    with pytest.raises(aws.AwsError) as err:
        rds.clone_rds(
            spec=spec,
            target=world.target,
            ids=world.ids,
            log=rec.log,
            add_secret=rec.add_secret,
            settings=world.settings,
        )
    assert err.value.code == "DBInstanceNotFound"
    assert "snapshotting the source" in err.value.explanation


# --------------------------------------------------------------------------- identifiers


def test_identifiers_are_deterministic_and_distinct() -> None:
    a = rds.clone_identifiers(account="qa-1", service="orders", run_id=7)
    assert a == rds.clone_identifiers(account="qa-1", service="orders", run_id=7)
    assert a.instance == "qa-1-orders-r7"
    assert a.source_snapshot == "portal-qa-1-orders-r7-snap"
    assert a.kms_alias == "alias/portal-rds-qa-1"
    assert a.secret_name == "portal/qa-1/orders/r7/rds-master-credentials"
    b = rds.clone_identifiers(account="qa-1", service="orders", run_id=8)
    assert {a.instance, a.target_copy}.isdisjoint({b.instance, b.target_copy})


def test_long_names_are_cut_with_a_hash() -> None:
    long_account = "load-test-" + "x" * 80
    a = rds.clone_identifiers(account=long_account + "a", service="billing_service", run_id=123456)
    b = rds.clone_identifiers(account=long_account + "b", service="billing_service", run_id=123456)
    for ids in (a, b):
        for name in (ids.instance, ids.source_snapshot, ids.encrypted_copy, ids.target_copy):
            assert rds.is_valid_rds_identifier(name), name
        assert "-r123456-" in ids.instance
    assert a.instance != b.instance


@given(
    account=st.text(min_size=0, max_size=120),
    service=st.text(min_size=0, max_size=80),
    run_id=st.one_of(st.integers(min_value=0), st.text(max_size=100)),
)
def test_identifiers_always_valid(account: str, service: str, run_id: int | str) -> None:
    ids = rds.clone_identifiers(account=account, service=service, run_id=run_id)
    for name in (ids.instance, ids.source_snapshot, ids.encrypted_copy, ids.target_copy):
        assert rds.is_valid_rds_identifier(name), name
    assert ids.secret_name.startswith("portal/") and len(ids.secret_name) <= 512
