"""Decommission: a teardown from any state, its safety rails, its sweep, the name set free.

The teardown runs go through the real worker, Terraform and moto; the rails are proven
in this process, where every HTTP request botocore sends is seen (``aws_requests``).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.httpsession import URLLib3Session
from django.core.management import call_command
from django.db import IntegrityError, transaction
from moto.organizations.exceptions import ConstraintViolationException
from moto.organizations.models import OrganizationsBackend

from accounts_app import decommission
from accounts_app import services as account_services
from accounts_app.models import Account, AccountStatus
from pipelines import services, sweep
from pipelines.clients import aws
from pipelines.clients import postgres as pg
from pipelines.dbclone.logical import ROLE_MARKER, clone_database_name, clone_role_name
from pipelines.models import RunKind, RunStatus, StageStatus
from pipelines.stages import close_account, teardown_checks
from pipelines.stages import sweep as sweep_stage
from pipelines.stages.base import StageContext, StageError
from pipelines.stages.terraform_support import backend_for, state_resource_count
from pipelines.teardown_rails import RailRefused
from tests.clone_env import ADMIN_URL, use_clone_settings
from tests.conftest import token_client
from tests.factories import SANDBOX_CONFIG, AccountFactory
from tests.integration.conftest import CloneSource, clone_databases, explain, unique_account_name
from tests.integration.stage_context import stage_context

pytestmark = [pytest.mark.integration]

TAG = "portal:account"


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture
def aws_requests(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The service (from the request's signature) of every HTTP request botocore sends."""
    seen: list[str] = []
    original = URLLib3Session.send

    def send(self: URLLib3Session, request: Any) -> Any:
        auth = request.headers.get("Authorization", b"")
        auth = auth.decode() if isinstance(auth, bytes) else str(auth)
        match = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", auth)
        seen.append(match.group(1) if match else request.url)
        return original(self, request)

    monkeypatch.setattr(URLLib3Session, "send", send)
    return seen


@pytest.fixture
def local_aws(settings: Any, moto_server: str) -> str:
    settings.AWS_ENDPOINT_URL = moto_server
    settings.PORTAL_TEARDOWN_BLOCKLIST = ()
    return moto_server


def new_cloud_account() -> str:
    return "9" + "".join(secrets.choice("0123456789") for _ in range(11))


def session_in(account_id: str) -> aws.Session:
    return aws.assume_role(account_id=account_id, session_name="test")[0]


def plant(session: aws.Session, *, prefix: str, tag: str) -> dict[str, str]:
    """An RDS instance, a snapshot, a secret and a KMS key with a grant, tagged for ``tag``."""
    tags = [{"Key": TAG, "Value": tag}]
    rds = session.rds()
    rds.create_db_instance(
        DBInstanceIdentifier=f"{prefix}-db",
        Engine="postgres",
        DBInstanceClass="db.t3.micro",
        AllocatedStorage=20,
        MasterUsername="master",
        MasterUserPassword="not-a-real-password",
        Tags=tags,
    )
    rds.create_db_snapshot(
        DBSnapshotIdentifier=f"{prefix}-snap", DBInstanceIdentifier=f"{prefix}-db", Tags=tags
    )
    secret = session.secretsmanager().create_secret(
        Name=f"{prefix}/secret", SecretString="x", Tags=tags
    )["ARN"]
    kms = session.kms()
    key = kms.create_key(Tags=[{"TagKey": TAG, "TagValue": tag}])["KeyMetadata"]["KeyId"]
    kms.create_grant(
        KeyId=key, GranteePrincipal="arn:aws:iam::111122223333:root", Operations=["Decrypt"]
    )
    return {"instance": f"{prefix}-db", "snapshot": f"{prefix}-snap", "secret": secret, "key": key}


def still_there(session: aws.Session, planted: dict[str, str]) -> dict[str, bool]:
    rds = session.rds()
    instances = {i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]}
    snapshots = {s["DBSnapshotIdentifier"] for s in rds.describe_db_snapshots()["DBSnapshots"]}
    secret = aws.describe_secret(session=session, secret_id=planted["secret"])
    key = session.kms().describe_key(KeyId=planted["key"])["KeyMetadata"]
    return {
        "instance": planted["instance"] in instances,
        "snapshot": planted["snapshot"] in snapshots,
        "secret": secret is not None and not secret.get("DeletedDate"),
        "key": key["KeyState"] != "PendingDeletion",
    }


def teardown_context(account: Account, *, kind: str, tmp_path: Path) -> StageContext:
    """The context of stage ``kind`` of a teardown run of ``account``, in this process."""
    return stage_context(
        account=account,
        run_id=1,
        kind=kind,
        previous={},
        log=lambda line: None,
        run_kind=RunKind.TEARDOWN,
        workdir=tmp_path,
    )


def org_status(account_id: str) -> str:
    found = aws.organization_account(account_id=account_id)
    assert found is not None
    return found.status


# --- the rails refuse before any AWS call --------------------------------------------------


def _protected(settings: Any) -> dict[str, Any]:
    return {"protected": True}


def _production(settings: Any) -> dict[str, Any]:
    return {"purpose": "production"}


def _real_aws_without_blocklist(settings: Any) -> dict[str, Any]:
    settings.AWS_ENDPOINT_URL = ""
    return {}


def _blocklisted(settings: Any) -> dict[str, Any]:
    cloud = new_cloud_account()
    settings.PORTAL_TEARDOWN_BLOCKLIST = (cloud,)
    return {"cloud_account_id": cloud}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arrange", "refusal"),
    [
        (_protected, "is protected"),
        (_production, "is protected"),
        (_real_aws_without_blocklist, "PORTAL_TEARDOWN_BLOCKLIST is empty"),
        (_blocklisted, "is on the blocklist"),
    ],
)
def test_each_offline_rail_refuses_before_any_aws_call(
    arrange: Any, refusal: str, local_aws: str, settings: Any, aws_requests: list[str]
) -> None:
    fields = {"cloud_account_id": new_cloud_account(), **arrange(settings)}
    account = AccountFactory(status=AccountStatus.READY, **fields)

    with pytest.raises(RailRefused, match=refusal):
        decommission.request_teardown(account=account, user=account.owner, confirm=account.name)

    assert aws_requests == []
    assert not account.runs.exists()


@pytest.mark.django_db
def test_a_teardown_needs_the_name_typed(local_aws: str, aws_requests: list[str]) -> None:
    account = AccountFactory(status=AccountStatus.READY, cloud_account_id=new_cloud_account())

    for typed in ("", "yes", account.name.upper(), account.name + "x"):
        with pytest.raises(account_services.RequestInvalid) as refused:
            decommission.request_teardown(account=account, user=account.owner, confirm=typed)
        assert list(refused.value.errors) == ["confirm"]
    assert aws_requests == []
    assert not account.runs.exists()

    run = decommission.request_teardown(
        account=account, user=account.owner, confirm=account.name, reason="the demo is over"
    )
    assert [s.kind for s in run.stages.all()][:2] == ["teardown_checks", "render"]
    assert aws_requests == []  # starting the run calls nothing: its first stage does
    account.refresh_from_db()
    assert (account.status, account.teardown_reason) == (
        AccountStatus.TEARING_DOWN,
        "the demo is over",
    )


@pytest.mark.django_db
def test_live_rails_refuse_a_prod_named_cloud_account_the_portal_did_not_make(
    local_aws: str, aws_requests: list[str], tmp_path: Path
) -> None:
    cloud = new_cloud_account()
    session = session_in(cloud)
    session.iam().create_account_alias(AccountAlias=f"acme-prod-{secrets.token_hex(2)}")
    name = unique_account_name()
    planted = plant(session, prefix=name, tag=name)
    account = AccountFactory(name=name, status=AccountStatus.FAILED, cloud_account_id=cloud)
    aws_requests.clear()

    with pytest.raises(StageError, match="contains 'prod'"):
        teardown_checks.execute(
            teardown_context(account, kind="teardown_checks", tmp_path=tmp_path)
        )

    # Only the identity was read (STS, IAM alias, Organizations): nothing listed or deleted.
    assert set(aws_requests) <= {"sts", "iam", "organizations"}
    assert still_there(session, planted) == dict.fromkeys(planted, True)


@pytest.mark.django_db
def test_live_rails_refuse_when_sts_names_a_blocklisted_account(
    local_aws: str, settings: Any, aws_requests: list[str], tmp_path: Path
) -> None:
    cloud = new_cloud_account()
    session = session_in(cloud)
    name = unique_account_name()
    planted = plant(session, prefix=name, tag=name)
    account = AccountFactory(name=name, status=AccountStatus.FAILED, cloud_account_id=cloud)
    ctx = teardown_context(account, kind="teardown_checks", tmp_path=tmp_path)
    aws_requests.clear()
    # The id on record passed the request's rails; production's id is added since.
    settings.PORTAL_TEARDOWN_BLOCKLIST = (cloud,)

    with pytest.raises(StageError, match="blocklist"):
        teardown_checks.execute(ctx)
    assert aws_requests == []  # the recorded id is checked first, with no call

    with pytest.raises(StageError, match="blocklisted"):
        teardown_checks.target_session(ctx)  # the live id, from STS under the assumed role
    assert set(aws_requests) <= {"sts", "iam", "organizations"}
    assert still_there(session, planted) == dict.fromkeys(planted, True)


@pytest.mark.django_db
def test_the_dry_run_lists_only_what_carries_the_accounts_tag(
    local_aws: str, tmp_path: Path
) -> None:
    cloud = new_cloud_account()
    session = session_in(cloud)
    name = unique_account_name()
    ours = plant(session, prefix=name, tag=name)
    theirs = plant(session, prefix=f"{name}-x", tag=f"{name}-x")
    account = AccountFactory(name=name, status=AccountStatus.FAILED, cloud_account_id=cloud)

    outputs = teardown_checks.execute(
        teardown_context(account, kind="teardown_checks", tmp_path=tmp_path)
    )

    listed = {(item["kind"], item["id"]) for item in outputs["sweep"]}
    assert listed == {
        ("rds-instance", ours["instance"]),
        ("rds-snapshot", ours["snapshot"]),
        ("secret", ours["secret"]),
        ("kms-key", ours["key"]),
    }
    assert not {theirs["instance"], theirs["snapshot"], theirs["secret"], theirs["key"]} & {
        item_id for _, item_id in listed
    }


@pytest.mark.django_db
def test_a_close_refused_by_the_quota_is_marked_for_later_not_failed(
    local_aws: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    name = unique_account_name()
    cloud = aws.hook_create_account(account_name=name)["cloud_account_id"]
    account = AccountFactory(
        name=name, blueprint="teardown-any", config={}, status=AccountStatus.TEARING_DOWN,
        cloud_account_id=cloud,
    )  # fmt: skip

    def refuse(self: OrganizationsBackend, **kwargs: Any) -> None:
        raise ConstraintViolationException(
            "You have exceeded close account quota for the past 30 days."
        )

    with monkeypatch.context() as patch:
        patch.setattr(OrganizationsBackend, "close_account", refuse)
        outputs = close_account.execute(
            teardown_context(account, kind="close_account", tmp_path=tmp_path)
        )
    assert outputs["close_pending"] is True
    assert "10 % of the organization's accounts per 30 days" in outputs["reason"]
    account.refresh_from_db()
    assert account.close_pending
    assert org_status(cloud) == "ACTIVE"

    assert name in sweep.close_pending_accounts()  # the daily task, once the quota allows
    account.refresh_from_db()
    assert not account.close_pending
    assert org_status(cloud) == "SUSPENDED"


# --- teardowns through the worker ----------------------------------------------------------


@pytest.fixture
def worker_aws(local_aws: str, celery_worker: Any) -> Iterator[str]:
    yield local_aws


def _approve(run_id: int, *, wait_for_run: Any, approver: Any) -> Any:
    waiting = wait_for_run(run_id, statuses=(RunStatus.WAITING_APPROVAL, RunStatus.FAILED))
    assert waiting.status == RunStatus.WAITING_APPROVAL, explain(waiting)
    stage = waiting.stages.get(kind="approve_plan")
    services.decide_stage(stage, user=approver, approve=True, comment="go")
    return waiting


@pytest.mark.django_db(transaction=True)
def test_teardown_of_an_account_that_failed_at_plan(
    worker_aws: str, wait_for_run: Any, sally: Any, april: Any
) -> None:
    name = unique_account_name()
    account = AccountFactory(
        name=name, blueprint="teardown-any", config={"fail_at": "plan"}, owner=sally
    )
    provision = wait_for_run(services.start_run(account, RunKind.PROVISION, user=sally).pk)
    assert provision.status == RunStatus.FAILED, explain(provision)
    assert [s.status for s in provision.stages.all()] == [
        StageStatus.SUCCEEDED, StageStatus.SUCCEEDED, StageStatus.FAILED,
        StageStatus.SKIPPED, StageStatus.SKIPPED,
    ]  # fmt: skip
    plan = provision.stages.get(kind="plan")
    with pytest.raises(services.RunRefused, match="a retry of plan cannot help"):
        services.retry_stage(plan, user=sally)  # the same config fails the same way
    account.refresh_from_db()
    cloud = account.cloud_account_id
    assert account.status == AccountStatus.FAILED and cloud
    session = session_in(cloud)
    ours = plant(session, prefix=name, tag=name)
    theirs = plant(session, prefix=f"{name}-x", tag="someone-else")

    run = decommission.request_teardown(
        account=account, user=sally, confirm=name, reason="the plan never worked"
    )
    waiting = _approve(run.pk, wait_for_run=wait_for_run, approver=april)
    approval = waiting.stages.get(kind="approve_plan")
    assert len(approval.outputs["sweep"]) == 4  # the approver saw the dry run's list
    done = wait_for_run(run.pk, timeout=240)

    assert done.status == RunStatus.SUCCEEDED, explain(done)
    assert [s.kind for s in done.stages.all()] == [
        "teardown_checks", "render", "plan", "approve_plan", "sweep", "apply", "close_account",
    ]  # fmt: skip
    assert done.stages.get(kind="plan").outputs["empty_state"] is True  # no init, no provider
    assert still_there(session, ours) == dict.fromkeys(ours, False)
    assert still_there(session, theirs) == dict.fromkeys(theirs, True)
    assert org_status(cloud) == "SUSPENDED"
    account.refresh_from_db()
    assert account.status == AccountStatus.TORN_DOWN
    assert (account.outputs, account.expires_at) == ({}, None)
    assert account.torn_down_at is not None
    assert (account.teardown_requested_by, account.teardown_reason) == (
        sally,
        "the plan never worked",
    )
    assert state_resource_count(backend_for(name)) == 0


@pytest.mark.django_db(transaction=True)
def test_teardown_of_a_half_applied_account(
    worker_aws: str, wait_for_run: Any, sally: Any, april: Any
) -> None:
    name = unique_account_name()
    account = AccountFactory(
        name=name, blueprint="teardown-any", config={"fail_at": "apply"}, owner=sally
    )
    provision = wait_for_run(services.start_run(account, RunKind.PROVISION, user=sally).pk)
    assert provision.status == RunStatus.FAILED, explain(provision)
    assert provision.stages.get(kind="apply").status == StageStatus.FAILED
    assert state_resource_count(backend_for(name)) >= 1  # the network was built

    run = decommission.request_teardown(account=account, user=sally, confirm=name)
    waiting = _approve(run.pk, wait_for_run=wait_for_run, approver=april)
    assert waiting.stages.get(kind="plan").outputs["destroy"] >= 1
    done = wait_for_run(run.pk, timeout=240)

    assert done.status == RunStatus.SUCCEEDED, explain(done)
    assert state_resource_count(backend_for(name)) == 0
    account.refresh_from_db()
    assert account.status == AccountStatus.TORN_DOWN
    assert org_status(account.cloud_account_id) == "SUSPENDED"


@pytest.mark.django_db(transaction=True)
def test_teardown_of_a_ready_account_drops_its_clone_database(
    worker_aws: str, wait_for_run: Any, sally: Any, april: Any, clone_source: CloneSource
) -> None:
    name = unique_account_name()
    account = AccountFactory(
        name=name,
        blueprint="sandbox-data",
        config={**SANDBOX_CONFIG, "account_name": name, "dns_zone": f"{name}.internal"},
        owner=sally,
    )
    provision = wait_for_run(
        services.start_run(account, RunKind.PROVISION, user=sally).pk, timeout=240
    )
    assert provision.status == RunStatus.SUCCEEDED, explain(provision)
    assert len(clone_databases(name)) == 1
    assert state_resource_count(backend_for(name)) > 0
    assert account.secrets.exists()  # the clone's password, stored encrypted

    run = decommission.request_teardown(account=account, user=sally, confirm=name)
    _approve(run.pk, wait_for_run=wait_for_run, approver=april)
    done = wait_for_run(run.pk, timeout=240)

    assert done.status == RunStatus.SUCCEEDED, explain(done)
    assert clone_databases(name) == []
    assert state_resource_count(backend_for(name)) == 0
    account.refresh_from_db()
    assert (account.status, account.outputs, account.endpoints) == (AccountStatus.TORN_DOWN, {}, {})
    assert not account.secrets.exists()


@pytest.mark.django_db(transaction=True)
def test_account_teardown_command_waits_and_exits_as_account_provision(
    worker_aws: str, capsys: pytest.CaptureFixture[str]
) -> None:
    account = AccountFactory(status=AccountStatus.FAILED)  # never built: nothing in state

    with pytest.raises(SystemExit) as bad:
        call_command("account_teardown", account.name, "--confirm", "something-else")
    assert bad.value.code == 2
    assert "--confirm: type the account's name" in capsys.readouterr().err
    with pytest.raises(SystemExit) as unknown:
        call_command("account_teardown", "no-such-account", "--confirm", "no-such-account")
    assert unknown.value.code == 2

    call_command(
        "account_teardown", account.name, "--confirm", account.name, "--wait", "--poll", "0.2"
    )
    out = capsys.readouterr()
    account.refresh_from_db()
    assert account.status == AccountStatus.TORN_DOWN
    run = account.runs.get(kind=RunKind.TEARDOWN)
    assert out.out.strip() == str(run.pk) and "succeeded" in out.err


@pytest.mark.django_db
def test_the_api_asks_for_the_name_before_a_teardown(local_aws: str, sally: Any) -> None:
    account = AccountFactory(owner=sally, status=AccountStatus.READY)
    client = token_client(sally)
    url = f"/api/v1/accounts/{account.pk}/runs/"

    refused = client.post(url, {"kind": "teardown"}, format="json")
    assert refused.status_code == 400
    assert "type the account's name" in refused.json()["confirm"][0]

    started = client.post(url, {"kind": "teardown", "confirm": account.name}, format="json")
    assert started.status_code == 201, started.json()
    assert started.json()["kind"] == "teardown"


# --- the name, free again -------------------------------------------------------------------


@pytest.mark.django_db
def test_a_torn_down_accounts_name_can_be_used_again(sally: Any) -> None:
    gone = AccountFactory(name="reused-name", owner=sally, status=AccountStatus.TORN_DOWN)

    account, _ = account_services.request_account(
        user=sally,
        name="reused-name",
        blueprint="sandbox",
        purpose="qa",
        config={**SANDBOX_CONFIG, "account_name": "reused-name"},
    )

    assert account.pk != gone.pk
    gone.refresh_from_db()
    assert gone.status == AccountStatus.TORN_DOWN  # kept for the record
    with pytest.raises(account_services.RequestInvalid, match="already exists"):
        account_services.request_account(
            user=sally,
            name="reused-name",
            blueprint="sandbox",
            purpose="qa",
            config={**SANDBOX_CONFIG, "account_name": "reused-name"},
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        AccountFactory(name="reused-name")  # the database itself keeps live names unique


@pytest.mark.django_db
def test_a_clone_a_crashed_stage_left_unrecorded_is_listed_and_dropped(
    local_aws: str, settings: Any, tmp_path: Path
) -> None:
    use_clone_settings(settings)
    name = unique_account_name()
    account = AccountFactory(
        name=name,
        blueprint="sandbox-data",
        config={**SANDBOX_CONFIG, "account_name": name, "dns_zone": f"{name}.internal"},
        status=AccountStatus.FAILED,
    )
    ours = clone_database_name(account=name, service="orders", run_id=4242)
    # Another account whose name starts like this one's: its clone must not be listed.
    theirs = clone_database_name(account=f"{name}-orders", service="orders", run_id=7)
    for database in (ours, theirs):
        role = clone_role_name(database)
        marker = ROLE_MARKER.format(database=database)
        pg.execute(ADMIN_URL, [
            f'CREATE ROLE "{role}" LOGIN', f"COMMENT ON ROLE \"{role}\" IS '{marker}'",
            f'CREATE DATABASE "{database}" OWNER "{role}"',
        ])  # fmt: skip
    try:
        checks = teardown_checks.execute(
            teardown_context(account, kind="teardown_checks", tmp_path=tmp_path)
        )
        assert [(i["kind"], i["id"]) for i in checks["sweep"]] == [("pg-database", ours)]

        ctx = teardown_context(account, kind="sweep", tmp_path=tmp_path)
        ctx.previous = {"teardown_checks": checks}
        assert sweep_stage.execute(ctx)["deleted"] == [
            f"PostgreSQL clone database {ours} (connection DBCLONE_TGT)"
        ]
        assert clone_databases(name) == [theirs]  # only the other account's is left
        assert sweep_stage.execute(ctx)["deleted"] == []  # again: nothing, no error
    finally:
        for database in (ours, theirs):
            pg.execute(ADMIN_URL, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            pg.execute(ADMIN_URL, f'DROP ROLE IF EXISTS "{clone_role_name(database)}"')


@pytest.mark.django_db
def test_the_hooks_private_zone_is_swept_once_only_its_own_records_are_left(
    local_aws: str, tmp_path: Path
) -> None:
    # A sandbox whose post hook made its zone in the builder's account and then crashed
    # before recording it; another zone of the same name is someone else's.
    name = unique_account_name()
    zone = f"{name}.internal"
    account = AccountFactory(
        name=name,
        blueprint="sandbox",
        config={**SANDBOX_CONFIG, "account_name": name, "dns_zone": zone},
        status=AccountStatus.FAILED,
    )
    builder = aws.builder_session()
    reference = aws.private_zone_reference(account=name, zone=zone)
    ours = aws.ensure_private_zone(session=builder, name=zone, caller_reference=reference)
    theirs = aws.ensure_private_zone(session=builder, name=zone, caller_reference="someone-else")
    aws.upsert_record(session=builder, zone_id=ours, name=f"app.{zone}", type="A", value="10.0.0.9")

    checks = teardown_checks.execute(
        teardown_context(account, kind="teardown_checks", tmp_path=tmp_path)
    )
    assert [(i["kind"], i["id"], i["where"]) for i in checks["sweep"]] == [
        ("dns-zone", ours, sweep.BUILDER)
    ]
    lines: list[str] = []
    ctx = stage_context(
        account=account,
        run_id=1,
        kind="sweep",
        previous={"teardown_checks": checks},
        log=lines.append,
        run_kind=RunKind.TEARDOWN,
        workdir=tmp_path,
    )

    # A record the portal did not write keeps the zone (and the record) in place.
    assert sweep_stage.execute(ctx)["deleted"] == []
    assert any("left in place: it still holds 1 record(s)" in line for line in lines), lines
    assert aws.zone_caller_reference(session=builder, zone_id=ours) == reference

    aws.delete_record(session=builder, zone_id=ours, name=f"app.{zone}", type="A")
    assert sweep_stage.execute(ctx)["deleted"] == [
        f"dns-zone {ours} ({zone}) (the builder's account)"
    ]
    assert aws.zone_caller_reference(session=builder, zone_id=ours) is None
    assert aws.zone_caller_reference(session=builder, zone_id=theirs) == "someone-else"
    assert sweep_stage.execute(ctx)["deleted"] == []  # a retry: already gone
