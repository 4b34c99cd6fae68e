"""pipelines.clients.aws against a real (moto) AWS endpoint.

Needs the ``moto_server`` fixture from tests/conftest_moto.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import boto3
import pytest
from botocore.exceptions import ParamValidationError
from botocore.stub import Stubber

from pipelines.clients import aws
from pipelines.clients.aws import organizations

pytestmark = pytest.mark.integration

TARGET_ACCOUNT = "222222222222"


@pytest.fixture()
def aws_settings(moto_server: str) -> aws.AwsSettings:
    return aws.AwsSettings(endpoint_url=moto_server, region="us-east-1")


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _accounts_with_email(aws_settings: aws.AwsSettings, email: str) -> list[dict]:
    org = aws.builder_session(settings=aws_settings).organizations()
    return [
        a
        for page in org.get_paginator("list_accounts").paginate()
        for a in page["Accounts"]
        if a["Email"].lower() == email.lower()
    ]


def test_settings_from_django_settings(settings: Any) -> None:
    settings.AWS_ENDPOINT_URL = ""
    settings.AWS_DEFAULT_REGION = "us-east-1"
    settings.PORTAL_AWS_ADMIN_ROLE = "OrganizationAccountAccessRole"
    s = aws.AwsSettings.from_settings()
    assert (s.endpoint_url, s.region, s.admin_role_name) == (
        None,
        "us-east-1",
        "OrganizationAccountAccessRole",
    )
    settings.AWS_ENDPOINT_URL = "http://127.0.0.1:5000"
    settings.PORTAL_AWS_ADMIN_ROLE = "Admin"
    settings.PORTAL_AWS_EMAIL_DOMAIN = "corp.test"
    s = aws.AwsSettings.from_settings()
    assert s.is_local and s.admin_role_name == "Admin" and s.email_domain == "corp.test"
    assert not aws.AwsSettings(endpoint_url="https://rds.us-east-1.amazonaws.com").is_local


def test_ensure_account_is_idempotent_by_email(aws_settings: aws.AwsSettings) -> None:
    name = _unique("qa")
    email = aws.account_email(account_name=name, email_domain="corp.test")
    lines: list[str] = []

    first = aws.ensure_account(
        email=email, name=name, timeout_s=30, poll_s=0.01, log=lines.append, settings=aws_settings
    )
    second = aws.ensure_account(
        email=email.upper(),
        name=name,
        timeout_s=30,
        poll_s=0.01,
        log=lines.append,
        settings=aws_settings,
    )

    assert first == second
    assert len(first) == 12 and first.isdigit()
    accounts = _accounts_with_email(aws_settings, email)
    assert [a["Id"] for a in accounts] == [first]
    assert accounts[0]["Name"] == name
    assert any("SUCCEEDED" in line for line in lines)
    assert lines[-1] == f"AWS account for {email.upper()} exists: {first}"


def test_hooks_create_account_then_assume_role(aws_settings: aws.AwsSettings) -> None:
    name = _unique("demo")
    corp = replace(aws_settings, email_domain="corp.test")
    out = aws.hook_create_account(account_name=name, settings=corp, poll_s=0.01)
    again = aws.hook_create_account(account_name=name, settings=corp, poll_s=0.01)
    assert out == again
    assert len(_accounts_with_email(aws_settings, f"aws+{name}@corp.test")) == 1

    role = aws.hook_assume_role(cloud_account_id=out["cloud_account_id"], settings=aws_settings)
    assert role == {
        "role_arn": f"arn:aws:iam::{out['cloud_account_id']}:role/OrganizationAccountAccessRole"
    }


def test_check_assume_role_acts_in_the_target_account(aws_settings: aws.AwsSettings) -> None:
    arn = aws.check_assume_role(
        account_id=TARGET_ACCOUNT, role_name="PortalAdmin", settings=aws_settings
    )
    assert arn == f"arn:aws:iam::{TARGET_ACCOUNT}:role/PortalAdmin"

    session, role_arn = aws.assume_role(account_id=TARGET_ACCOUNT, settings=aws_settings)
    assert role_arn.endswith(":role/OrganizationAccountAccessRole")
    identity = session.sts().get_caller_identity()
    assert identity["Account"] == TARGET_ACCOUNT
    # The session uses the configured endpoint even with no AWS_ENDPOINT_URL env.
    assert session.rds().meta.endpoint_url == aws_settings.endpoint_url


def test_assume_role_rejects_bad_account_id(aws_settings: aws.AwsSettings) -> None:
    with pytest.raises(aws.AwsError) as err:
        aws.check_assume_role(account_id="12345", settings=aws_settings)
    assert not err.value.retryable
    assert "12 digits" in err.value.explanation


def test_unreachable_endpoint_is_a_retryable_aws_error() -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused.
    s = aws.AwsSettings(endpoint_url="http://127.0.0.1:9", region="us-east-1")
    session = aws.builder_session(settings=s)
    with pytest.raises(aws.AwsError) as err:
        aws.get_secret(session=session, secret_id="anything")
    assert err.value.retryable
    assert err.value.code == "EndpointConnectionError"
    assert "\n" not in err.value.explanation


def test_route53_upsert_wait_delete(aws_settings: aws.AwsSettings) -> None:
    session, _ = aws.assume_role(account_id=TARGET_ACCOUNT, settings=aws_settings)
    r53 = session.route53()
    zone_name = f"{_unique('z')}.internal."
    zone_id = r53.create_hosted_zone(Name=zone_name, CallerReference=_unique("ref"))["HostedZone"][
        "Id"
    ]
    name = f"db.{zone_name}"
    lines: list[str] = []

    change1 = aws.upsert_record(
        session=session, zone_id=zone_id, name=name, type="CNAME", value="old.example.com", ttl=60
    )
    change2 = aws.upsert_record(
        session=session,
        zone_id=zone_id,
        name=name.rstrip("."),
        type="CNAME",
        value="new.example.com",
        ttl=60,
    )
    aws.wait_change_insync(
        session=session, change_id=change2, timeout_s=10, log=lines.append, poll_s=0.01
    )

    assert change1 and change2
    records = [
        r
        for r in r53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
        if r["Type"] == "CNAME"
    ]
    assert len(records) == 1
    assert records[0]["ResourceRecords"] == [{"Value": "new.example.com"}]
    assert aws.find_record(session=session, zone_id=zone_id, name=name, type="CNAME") is not None
    assert any("in sync" in line for line in lines)

    assert aws.delete_record(session=session, zone_id=zone_id, name=name, type="CNAME") is not None
    assert aws.delete_record(session=session, zone_id=zone_id, name=name, type="CNAME") is None
    assert aws.find_record(session=session, zone_id=zone_id, name=name, type="CNAME") is None
    remaining = r53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    assert {r["Type"] for r in remaining} == {"NS", "SOA"}


def test_secrets_put_twice_is_idempotent(aws_settings: aws.AwsSettings) -> None:
    session, _ = aws.assume_role(account_id=TARGET_ACCOUNT, settings=aws_settings)
    sm = session.secretsmanager()
    name = f"portal/test/{_unique('s')}"
    tags = {"portal:account": "qa1"}

    arn1 = aws.put_secret(session=session, name=name, value="value-1", tags=tags)
    arn2 = aws.put_secret(session=session, name=name, value="value-1", tags=tags)
    assert arn1 == arn2
    versions = sm.list_secret_version_ids(SecretId=arn1)["Versions"]
    assert len(versions) == 1  # the same value wrote no new version

    arn3 = aws.put_secret(session=session, name=name, value="value-2", tags=tags)
    assert arn3 == arn1
    assert aws.get_secret(session=session, secret_id=arn1) == "value-2"
    assert sm.describe_secret(SecretId=arn1)["Tags"] == [{"Key": "portal:account", "Value": "qa1"}]
    assert [s["Name"] for s in sm.list_secrets()["SecretList"]].count(name) == 1

    # Scheduled for deletion (with a recovery window): put restores it.
    sm.delete_secret(SecretId=arn1, RecoveryWindowInDays=7)
    assert aws.put_secret(session=session, name=name, value="value-3", tags=tags) == arn1
    assert aws.get_secret(session=session, secret_id=name) == "value-3"

    assert aws.delete_secret(session=session, secret_id=arn1) is True
    assert aws.delete_secret(session=session, secret_id=arn1) is False
    with pytest.raises(aws.AwsError) as err:
        aws.get_secret(session=session, secret_id=arn1)
    assert err.value.code == "ResourceNotFoundException"
    assert "value-3" not in err.value.explanation


def test_secrets_are_per_account(aws_settings: aws.AwsSettings) -> None:
    target, _ = aws.assume_role(account_id=TARGET_ACCOUNT, settings=aws_settings)
    name = f"portal/test/{_unique('s')}"
    aws.put_secret(session=target, name=name, value="only-in-target")
    builder = boto3.Session(region_name="us-east-1")
    names = [s["Name"] for s in builder.client("secretsmanager").list_secrets()["SecretList"]]
    assert name not in names


# Real AWS behaviours moto lacks (moto never fails a create-account request and
# accepts duplicate e-mails): botocore's Stubber plays AWS's documented answers.


@pytest.fixture()
def stubbed_org(
    monkeypatch: pytest.MonkeyPatch, aws_settings: aws.AwsSettings
) -> Iterator[Stubber]:
    client = aws.builder_session(settings=aws_settings).organizations()
    stubber = Stubber(client)
    monkeypatch.setattr(organizations, "_org_client", lambda _s: client)
    with stubber:
        yield stubber
    stubber.assert_no_pending_responses()


def _status(state: str, **extra: str) -> dict:
    return {
        "CreateAccountStatus": {
            "Id": "car-1234567890",
            "AccountName": "qa",
            "State": state,
            **extra,
        }
    }


def _account(account_id: str, email: str) -> dict:
    return {"Accounts": [{"Id": account_id, "Email": email, "Name": "qa", "Status": "ACTIVE"}]}


def _expect_a_new_account_request(stubbed_org: Stubber) -> None:
    """The organization is there, no account or request has the e-mail: one is created."""
    stubbed_org.add_response("describe_organization", {"Organization": {"Id": "o-abcdefghij"}})
    stubbed_org.add_response("list_accounts", {"Accounts": []})
    stubbed_org.add_response("list_create_account_status", {"CreateAccountStatuses": []})
    stubbed_org.add_response("create_account", _status("IN_PROGRESS"))


def test_email_already_exists_race_returns_the_winner(
    stubbed_org: Stubber, aws_settings: aws.AwsSettings
) -> None:
    email = "aws+qa@corp.test"
    _expect_a_new_account_request(stubbed_org)
    stubbed_org.add_response(
        "describe_create_account_status", _status("FAILED", FailureReason="EMAIL_ALREADY_EXISTS")
    )
    stubbed_org.add_response("list_accounts", _account("333333333333", email))
    lines: list[str] = []
    assert aws.ensure_account(
        email=email, name="qa", timeout_s=5, poll_s=0, log=lines.append, settings=aws_settings
    ) == ("333333333333")
    assert "created meanwhile" in lines[-1]


def test_email_used_outside_the_organization_is_not_retryable(
    stubbed_org: Stubber, aws_settings: aws.AwsSettings
) -> None:
    _expect_a_new_account_request(stubbed_org)
    stubbed_org.add_response(
        "describe_create_account_status", _status("FAILED", FailureReason="EMAIL_ALREADY_EXISTS")
    )
    stubbed_org.add_response("list_accounts", {"Accounts": []})
    with pytest.raises(aws.AwsError) as err:
        aws.ensure_account(
            email="aws+qa@corp.test", name="qa", timeout_s=5, poll_s=0, settings=aws_settings
        )
    assert not err.value.retryable
    assert err.value.code == "EMAIL_ALREADY_EXISTS"


def test_in_progress_request_is_resumed_not_duplicated(
    stubbed_org: Stubber, aws_settings: aws.AwsSettings
) -> None:
    stubbed_org.add_response("describe_organization", {"Organization": {"Id": "o-abcdefghij"}})
    stubbed_org.add_response("list_accounts", {"Accounts": []})
    stubbed_org.add_response(
        "list_create_account_status",
        {"CreateAccountStatuses": [_status("IN_PROGRESS")["CreateAccountStatus"]]},
        {"States": ["IN_PROGRESS"]},
    )
    # No create_account: the stubber would fail on an unexpected call.
    stubbed_org.add_response("describe_create_account_status", _status("IN_PROGRESS"))
    stubbed_org.add_response(
        "describe_create_account_status", _status("SUCCEEDED", AccountId="444444444444")
    )
    lines: list[str] = []
    assert aws.ensure_account(
        email="aws+qa@corp.test",
        name="qa",
        timeout_s=5,
        poll_s=0,
        log=lines.append,
        settings=aws_settings,
    ) == ("444444444444")
    assert any("resuming" in line for line in lines)


def test_failed_request_reports_the_failure_reason(
    stubbed_org: Stubber, aws_settings: aws.AwsSettings
) -> None:
    _expect_a_new_account_request(stubbed_org)
    stubbed_org.add_response(
        "describe_create_account_status", _status("FAILED", FailureReason="ACCOUNT_LIMIT_EXCEEDED")
    )
    with pytest.raises(aws.AwsError) as err:
        aws.ensure_account(
            email="aws+qa@corp.test", name="qa", timeout_s=5, poll_s=0, settings=aws_settings
        )
    assert "ACCOUNT_LIMIT_EXCEEDED" in err.value.explanation


def test_no_organization_on_real_aws_is_an_error(
    stubbed_org: Stubber, aws_settings: aws.AwsSettings
) -> None:
    stubbed_org.add_client_error("describe_organization", "AWSOrganizationsNotInUseException")
    real = aws.AwsSettings(endpoint_url=None, region="us-east-1")
    with pytest.raises(aws.AwsError) as err:
        aws.ensure_account(
            email="aws+qa@corp.test", name="qa", timeout_s=5, poll_s=0, settings=real
        )
    assert "not in an AWS Organization" in err.value.explanation


def test_parameter_errors_never_quote_values() -> None:
    exc = ParamValidationError(
        report="Invalid type for parameter MasterUserPassword, value: hunter2"
    )
    err = aws.translate_error(exc=exc, what="setting the password")
    assert "hunter2" not in str(err) and "hunter2" not in err.explanation
