"""Masked golden snapshots (pipelines.dbclone.rds_golden) on a real moto server.

Three kinds of account, reached by assumed roles as in production: production
111111111111, the data-preparation account 333333333333, and sandbox accounts
(222222222222 and a fresh one per test). Raw production data may reach the
preparation account, never a sandbox: every snapshot a sandbox account is shared
comes from the preparation account and is a copy of the masked golden snapshot.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from pytest_django.fixtures import Settings

from pipelines.clients import aws
from pipelines.clients import postgres as pg
from pipelines.dbclone import rds, rds_golden
from pipelines.models import GoldenCopy, GoldenStatus
from pipelines.stages import db_clone
from tests.clone_env import RDS_MASTER_USER, LocalRdsServer, use_clone_settings
from tests.factories import AccountFactory
from tests.integration.stage_context import stage_context
from tests.integration.test_rds_clone import (
    REGION,
    SOURCE,
    Recorder,
    SimulatedCrash,
    instance_ids,
    make_world,
    manual_snapshot_ids,
)

pytestmark = pytest.mark.integration

PREP = "333333333333"


@pytest.fixture()
def aws_settings(moto_server: str) -> aws.AwsSettings:
    return aws.AwsSettings(endpoint_url=moto_server, region=REGION)


def _fresh_account() -> str:
    return str(uuid.uuid4().int)[:12].rjust(12, "4")


def _session(settings: aws.AwsSettings, account: str) -> Any:
    return aws.assume_role(account_id=account, settings=settings)[0]


def _scrubber(lines: list[str], settings: aws.AwsSettings) -> Any:
    def scrub(clone: rds.CloneResult) -> list[str]:
        # The scrub step reaches an instance of the preparation account, never production's.
        prep_instances = instance_ids(_session(settings, PREP))
        assert clone.instance_id in prep_instances
        lines.append(clone.instance_id)
        return ["scrub/orders.sql"]

    return scrub


def build(w: Any, rec: Recorder, scrubbed: list[str], build_no: int | str = 1) -> Any:
    return rds_golden.build_golden_snapshot(
        source=w.spec,
        prep=w.target,
        build=build_no,
        scrub=_scrubber(scrubbed, w.settings),
        log=rec.log,
        add_secret=rec.add_secret,
        timeout_s=60,
        poll_s=0.01,
        settings=w.settings,
    )


def clone_into(w: Any, golden: rds_golden.GoldenSnapshot, target: rds.TargetSpec) -> Any:
    rec = Recorder()
    ids = rds.clone_identifiers(account=f"qa-{uuid.uuid4().hex[:6]}", service="orders", run_id=7)
    result = rds.clone_rds(
        spec=golden.source(),
        target=target,
        ids=ids,
        log=rec.log,
        add_secret=rec.add_secret,
        timeout_s=60,
        poll_s=0.01,
        settings=w.settings,
    )
    return result, ids


def shared_with(settings: aws.AwsSettings, account: str) -> list[str]:
    snaps = _session(settings, account).rds().describe_db_snapshots(SnapshotType="shared")
    return [s["DBSnapshotArn"] for s in snaps["DBSnapshots"]]


def test_production_scrubbed_once_in_the_preparation_account_then_shared_masked(
    aws_settings: aws.AwsSettings, shared_snapshot_shim: None
) -> None:
    w = make_world(aws_settings, PREP)  # production's instance; the preparation network
    # Fresh accounts: earlier tests on this moto server shared snapshots with TARGET.
    sandboxes = [
        make_world(aws_settings, account) for account in (_fresh_account(), _fresh_account())
    ]
    rec, scrubbed = Recorder(), []
    golden = build(w, rec, scrubbed)

    prep = _session(aws_settings, PREP)
    assert golden.account_id == PREP and golden.snapshot_id.endswith("-masked")
    assert golden.scrubbed == ("scrub/orders.sql",) and len(scrubbed) == 1
    tags = prep.rds().list_tags_for_resource(ResourceName=golden.snapshot_arn)["TagList"]
    assert {"Key": rds.GOLDEN_TAG, "Value": rds.GOLDEN_MASKED} in tags
    # Nothing raw is left: no preparation instance, only the masked snapshot there, and
    # production keeps no snapshot of this build.
    ids = rds_golden.golden_identifiers(source=w.spec, build=1)
    assert ids.instance not in instance_ids(prep)
    assert [s for s in manual_snapshot_ids(prep) if s.startswith(f"portal-{ids.instance}")] == [
        golden.snapshot_id
    ]
    prod = _session(aws_settings, SOURCE)
    assert not [s for s in manual_snapshot_ids(prod) if ids.instance in s]
    assert not rec.secrets or not any(
        secret in line for secret in rec.secrets for line in rec.lines
    )

    # Again: the golden snapshot exists, nothing is restored or scrubbed a second time.
    again = build(w, Recorder(), scrubbed)
    assert again.snapshot_id == golden.snapshot_id and len(scrubbed) == 1

    for sandbox in sandboxes:
        result, clone_ids = clone_into(w, golden, sandbox.target)
        account = sandbox.target.account_id
        assert result.instance_id in instance_ids(_session(aws_settings, account))
        # Every snapshot this sandbox was ever shared comes from the preparation
        # account: production shared nothing with it.
        arns = shared_with(aws_settings, account)
        assert arns and all(f":{PREP}:" in arn for arn in arns)
        assert not any(f":{SOURCE}:" in arn for arn in arns)
        # The golden snapshot stays for the next sandbox; the clone's own copy in the
        # preparation account is its intermediate, deleted with it.
        assert result.source_snapshot_ids == (clone_ids.encrypted_copy,)
        rds.delete_clone(
            spec=golden.source(),
            target=sandbox.target,
            instance_id=None,
            log=Recorder().log,
            source_snapshot_ids=result.source_snapshot_ids,
            target_snapshot_ids=result.target_snapshot_ids,
            settings=aws_settings,
            poll_s=0.01,
        )
        assert golden.snapshot_id in manual_snapshot_ids(prep)
        assert clone_ids.encrypted_copy not in manual_snapshot_ids(prep)

    rds_golden.delete_golden_snapshot(golden=golden, log=Recorder().log, settings=aws_settings)
    assert golden.snapshot_id not in manual_snapshot_ids(prep)


def test_a_snapshot_not_tagged_masked_is_never_shared(
    aws_settings: aws.AwsSettings, shared_snapshot_shim: None
) -> None:
    w = make_world(aws_settings, PREP)
    sandbox = make_world(aws_settings, _fresh_account())
    prep = _session(aws_settings, PREP).rds()
    raw_id = f"portal-raw-{uuid.uuid4().hex[:8]}"
    prep.create_db_instance(
        DBInstanceIdentifier=f"raw-{uuid.uuid4().hex[:8]}",
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        AllocatedStorage=20,
        MasterUsername="orders",
        MasterUserPassword="x" * 16,
    )
    instance = instance_ids(_session(aws_settings, PREP))[-1]
    prep.create_db_snapshot(DBInstanceIdentifier=instance, DBSnapshotIdentifier=raw_id)
    fake = rds_golden.GoldenSnapshot(
        account_id=PREP, region=REGION, snapshot_id=raw_id, snapshot_arn="", instance_id=instance
    )
    with pytest.raises(aws.AwsError, match="not a masked golden snapshot"):
        clone_into(w, fake, sandbox.target)
    assert shared_with(aws_settings, sandbox.target.account_id) == []


@pytest.mark.parametrize("crash_at", ["scrubbed in account", "started masked snapshot"])
def test_a_crash_while_building_then_retry_makes_one_golden_snapshot(
    aws_settings: aws.AwsSettings, shared_snapshot_shim: None, crash_at: str
) -> None:
    w = make_world(aws_settings, PREP)
    scrubbed: list[str] = []
    with pytest.raises(SimulatedCrash):
        build(w, Recorder(crash_when=lambda line: crash_at in line), scrubbed, build_no=3)
    golden = build(w, Recorder(), scrubbed, build_no=3)
    prep = _session(aws_settings, PREP)
    ids = rds_golden.golden_identifiers(source=w.spec, build=3)
    assert [s for s in manual_snapshot_ids(prep) if ids.instance in s] == [golden.snapshot_id]
    assert ids.instance not in instance_ids(prep)


def test_a_failed_scrub_leaves_no_golden_snapshot(
    aws_settings: aws.AwsSettings, shared_snapshot_shim: None
) -> None:
    w = make_world(aws_settings, PREP)

    def scrub(clone: rds.CloneResult) -> list[str]:
        raise aws.AwsError("scrub failed", retryable=True)

    with pytest.raises(aws.AwsError, match="scrub failed"):
        rds_golden.build_golden_snapshot(
            source=w.spec,
            prep=w.target,
            build=4,
            scrub=scrub,
            log=Recorder().log,
            add_secret=lambda _: None,
            timeout_s=60,
            poll_s=0.01,
            settings=w.settings,
        )
    ids = rds_golden.golden_identifiers(source=w.spec, build=4)
    assert rds_golden.golden_snapshot_id(ids) not in manual_snapshot_ids(
        _session(aws_settings, PREP)
    )


def test_the_preparation_account_is_not_production(aws_settings: aws.AwsSettings) -> None:
    w = make_world(aws_settings, PREP)
    with pytest.raises(aws.AwsError, match="must not be production's"):
        rds_golden.build_golden_snapshot(
            source=w.spec,
            prep=rds.TargetSpec(account_id=SOURCE, subnet_group_name="x"),
            build=5,
            scrub=lambda c: [],
            log=Recorder().log,
            add_secret=lambda _: None,
            settings=w.settings,
        )


# --- db_clone with golden: the stage side ------------------------------------------------------


def _network(session: Any, cidr: int) -> tuple[str, str]:
    """A VPC with a subnet group and a security group in the session's account."""
    ec2 = session.boto.client("ec2")
    vpc = ec2.create_vpc(CidrBlock=f"10.{cidr}.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(
            VpcId=vpc, CidrBlock=f"10.{cidr}.{i}.0/24", AvailabilityZone=f"{REGION}{z}"
        )["Subnet"]["SubnetId"]
        for i, z in ((1, "a"), (2, "b"))
    ]
    sg = ec2.create_security_group(
        GroupName=f"db-{uuid.uuid4().hex[:6]}", Description="db", VpcId=vpc
    )["GroupId"]
    group = f"db-{uuid.uuid4().hex[:8]}"
    session.rds().create_db_subnet_group(
        DBSubnetGroupName=group, DBSubnetGroupDescription="db", SubnetIds=subnets
    )
    return group, sg


def _rds_blueprint(root: Path, name: str, prod_id: str) -> None:
    folder = root / name
    (folder / "scrub").mkdir(parents=True, exist_ok=True)
    (folder / "scrub" / "orders.sql").write_text(
        "UPDATE users SET active = false WHERE is_staff AND active;\n"
    )
    spec = {
        "name": name,
        "title": "golden rds",
        "version": "1",
        "stages": ["db_clone"],
        "parameters": {"type": "object"},
        "databases": [
            {
                "service": "orders",
                "driver": "aws_rds_snapshot",
                "source": {"account_id": SOURCE, "region": REGION, "instance": prod_id},
                "database_name": "orders",
                "scrub_sql": ["scrub/orders.sql"],
                "golden": True,
            }
        ],
    }
    (folder / "blueprint.yaml").write_text(yaml.safe_dump(spec))


@pytest.mark.django_db(transaction=True)
def test_db_clone_of_two_sandboxes_from_one_golden_snapshot(
    moto_server: str,
    shared_snapshot_shim: None,
    rds_scrub_db: str,
    settings: Settings,
    blueprints_root: Path,
) -> None:
    use_clone_settings(settings)
    aws_settings = aws.AwsSettings(endpoint_url=moto_server, region=REGION)
    settings.AWS_ENDPOINT_URL = moto_server
    prep_group, prep_sg = _network(_session(aws_settings, PREP), 40)
    settings.PORTAL_RDS_PREP_ACCOUNT_ID = PREP
    settings.PORTAL_RDS_PREP_SUBNET_GROUP = prep_group
    settings.PORTAL_RDS_PREP_SECURITY_GROUP_IDS = [prep_sg]
    prod_id = f"orders-prod-{uuid.uuid4().hex[:8]}"
    _session(aws_settings, SOURCE).rds().create_db_instance(
        DBInstanceIdentifier=prod_id,
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        AllocatedStorage=20,
        MasterUsername=RDS_MASTER_USER,
        MasterUserPassword="prod-password-never-copied",
    )
    name = f"gr{uuid.uuid4().hex[:6]}"
    _rds_blueprint(blueprints_root, name, prod_id)
    LocalRdsServer.seen.clear()

    outputs = []
    for n in range(2):
        account_id = _fresh_account()
        group, sg = _network(_session(aws_settings, account_id), 50 + n)
        account = AccountFactory(
            name=f"{name}-{n}",
            blueprint=name,
            cloud_account_id=account_id,
            config={},
            outputs={
                "db_subnet_group_name": {"value": group, "sensitive": False, "type": "string"},
                "db_security_group_ids": {"value": [sg], "sensitive": False, "type": "list"},
            },
        )
        lines: list[str] = []
        ctx = stage_context(
            account=account, run_id=500 + n, kind="db_clone", previous={}, log=lines.append
        )
        out = db_clone.execute(ctx)["services"]["orders"]
        outputs.append((account_id, out, lines))
        assert all(f":{PREP}:" in arn for arn in shared_with(aws_settings, account_id))
        assert shared_with(aws_settings, account_id)

    made = GoldenCopy.objects.get(blueprint=name)
    assert made.status == GoldenStatus.READY and made.target == PREP
    for account_id, out, _lines in outputs:
        assert out["golden"] == made.database and out["scrubbed"] == ["scrub/orders.sql"]
        assert out["endpoint"]["data_taken_at"] == made.taken_at.isoformat()
        assert out["endpoint"]["source"]["account_id"] == PREP
        assert out["endpoint"]["account_id"] == account_id
    first_lines, second_lines = outputs[0][2], outputs[1][2]
    assert any("building #" in line for line in first_lines)
    assert not any("building" in line for line in second_lines)  # one scrub pass for both
    # The scrub ran once, logged in to the preparation instance; the sandboxes' instances
    # are only read for their row estimates.
    assert [line for line in first_lines + second_lines if "] scrub " in line] == [
        "[orders] scrub scrub/orders.sql: done"
    ]
    golden_ids = rds_golden.golden_identifiers(
        source=rds.SourceSpec(SOURCE, REGION, prod_id), build=made.pk
    )
    assert any(
        host.startswith(golden_ids.instance + ".")
        for host in {endpoint.host for endpoint in LocalRdsServer.seen}
    )
    assert pg.fetch_all(rds_scrub_db, "SELECT count(*) FROM users WHERE is_staff AND active") == [
        (0,)
    ]
    shutil.rmtree(blueprints_root / name, ignore_errors=True)
