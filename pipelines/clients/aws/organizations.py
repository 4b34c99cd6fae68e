"""AWS Organizations: find, create and close member accounts; the built-in hooks that
create an account and check its role."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from pipelines.clients.aws.core import (
    AwsSettings,
    LogFn,
    Session,
    aws_call,
    builder_session,
    check_account_id,
    check_assume_role,
    client_error_code,
    clock,
    fail,
    noop_log,
    resolve_settings,
    sleep,
    translate_error,
)

if TYPE_CHECKING:
    from mypy_boto3_organizations import OrganizationsClient
    from mypy_boto3_organizations.type_defs import CreateAccountRequestTypeDef


def _org_client(s: AwsSettings) -> OrganizationsClient:
    return builder_session(settings=s).organizations()


def _ensure_organization(*, org: OrganizationsClient, s: AwsSettings, log: LogFn) -> None:
    """Create the organization when none exists; only ever against a local endpoint."""
    try:
        org.describe_organization()
        return
    except ClientError as exc:
        if client_error_code(exc) != "AWSOrganizationsNotInUseException":
            raise translate_error(exc=exc, what="describing the organization") from None
    if not s.is_local:
        fail("the builder account is not in an AWS Organization; create one first")
    log("no organization on the local endpoint: creating one")
    with aws_call("creating the organization"):
        org.create_organization(FeatureSet="ALL")


def find_account_by_email(*, email: str, settings: AwsSettings | None = None) -> str | None:
    """The id of the organization's account with this e-mail, or None."""
    return _find_account(org=_org_client(resolve_settings(settings)), email=email)


def _find_account(*, org: OrganizationsClient, email: str) -> str | None:
    wanted = email.strip().lower()
    with aws_call("listing the organization's accounts"):
        for page in org.get_paginator("list_accounts").paginate():
            for account in page.get("Accounts", []):
                if str(account.get("Email", "")).lower() == wanted:
                    status = account.get("Status", "ACTIVE")
                    if status != "ACTIVE":
                        fail(f"account {account['Id']} for {email} is {status}, not ACTIVE")
                    return str(account["Id"])
    return None


def _in_progress_request(*, org: OrganizationsClient, name: str) -> str | None:
    """Id of an IN_PROGRESS create-account request for this account name."""
    with aws_call("listing create-account requests"):
        for page in org.get_paginator("list_create_account_status").paginate(
            States=["IN_PROGRESS"]
        ):
            for status in page.get("CreateAccountStatuses", []):
                if status.get("AccountName") == name:
                    return str(status["Id"])
    return None


def ensure_account(
    *,
    email: str,
    name: str,
    log: LogFn = noop_log,
    settings: AwsSettings | None = None,
    tags: Mapping[str, str] | None = None,
    timeout_s: float = 1800.0,
    poll_s: float = 10.0,
) -> str:
    """Return the id of the organization account with ``email``, creating it if missing.

    Idempotent by e-mail: the account is looked up first (moto accepts a
    duplicate e-mail, real AWS fails the request with EMAIL_ALREADY_EXISTS),
    then an in-progress request with the same name is resumed, and only then
    a new account is requested.
    """
    s = resolve_settings(settings)
    org = _org_client(s)
    _ensure_organization(org=org, s=s, log=log)

    account_id = _find_account(org=org, email=email)
    if account_id:
        log(f"AWS account for {email} exists: {account_id}")
        return account_id

    request_id = _in_progress_request(org=org, name=name)
    if request_id:
        log(f"resuming the in-progress creation of AWS account {name!r} ({request_id})")
    else:
        log(f"requesting a new AWS account {name!r} for {email}")
        request: CreateAccountRequestTypeDef = {
            "Email": email,
            "AccountName": name,
            "RoleName": s.admin_role_name,
            "IamUserAccessToBilling": "DENY",
        }
        if tags:
            request["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
        with aws_call(f"requesting AWS account {name!r}"):
            request_id = str(org.create_account(**request)["CreateAccountStatus"]["Id"])

    deadline = clock() + timeout_s
    last_state = ""
    while True:
        with aws_call("checking the create-account request"):
            status = org.describe_create_account_status(CreateAccountRequestId=request_id)[
                "CreateAccountStatus"
            ]
        state = str(status.get("State", ""))
        if state != last_state:
            log(f"create-account request {request_id}: {state}")
            last_state = state
        if state == "SUCCEEDED":
            account_id = str(status["AccountId"])
            log(f"AWS account {name!r} is ready: {account_id}")
            return account_id
        if state == "FAILED":
            reason = str(status.get("FailureReason", "unknown reason"))
            if reason == "EMAIL_ALREADY_EXISTS":
                # A concurrent request (or an earlier attempt) won the race.
                account_id = _find_account(org=org, email=email)
                if account_id:
                    log(f"AWS account for {email} was created meanwhile: {account_id}")
                    return account_id
                fail(
                    f"e-mail {email} already belongs to an AWS account outside this "
                    "organization; choose another account name or e-mail domain",
                    code=reason,
                )
            retryable = reason in {"CONCURRENT_ACCOUNT_MODIFICATION", "INTERNAL_FAILURE"}
            fail(
                f"creating AWS account {name!r} failed: {reason}", retryable=retryable, code=reason
            )
        if clock() >= deadline:
            fail(
                f"AWS account {name!r} not ready after {int(timeout_s)} s (state {state}); "
                "a retry resumes the same request",
                retryable=True,
                code="Timeout",
            )
        sleep(poll_s)


def account_email(*, account_name: str, email_domain: str) -> str:
    """Deterministic root e-mail for a portal account: aws+<name>@<domain>."""
    local = re.sub(r"[^a-z0-9.-]+", "-", account_name.lower()).strip("-.") or "account"
    return f"aws+{local}@{email_domain}"


def caller_account_id(session: Session) -> str:
    """The account the session's credentials act in, as STS GetCallerIdentity says."""
    with aws_call("checking the caller identity"):
        return str(session.sts().get_caller_identity()["Account"])


def account_aliases(session: Session) -> list[str]:
    """The IAM account aliases of the session's account (at most one in AWS)."""
    with aws_call("listing the account aliases"):
        return list(session.iam().list_account_aliases().get("AccountAliases", []))


@dataclass(frozen=True)
class OrgAccount:
    id: str
    name: str
    status: str
    tags: dict[str, str]


def organization_account(
    *, account_id: str, settings: AwsSettings | None = None
) -> OrgAccount | None:
    """The organization's account with this id (name, status, tags), or None if not a member."""
    org = _org_client(resolve_settings(settings))
    try:
        account = org.describe_account(AccountId=check_account_id(account_id))["Account"]
        tags = org.list_tags_for_resource(ResourceId=account_id).get("Tags", [])
    except ClientError as exc:
        if client_error_code(exc) in {
            "AccountNotFoundException",
            "AWSOrganizationsNotInUseException",
        }:
            return None
        raise translate_error(exc=exc, what=f"describing AWS account {account_id}") from None
    except BotoCoreError as exc:
        raise translate_error(exc=exc, what=f"describing AWS account {account_id}") from None
    return OrgAccount(
        id=account_id,
        name=str(account.get("Name", "")),
        status=str(account.get("Status", "")),
        tags={str(t["Key"]): str(t["Value"]) for t in tags},
    )


# Organizations refuses a close past its quota (10 % of the accounts per 30 days).
CLOSE_QUOTA_REASON = "CLOSE_ACCOUNT_QUOTA_EXCEEDED"


def close_account(*, account_id: str, settings: AwsSettings | None = None) -> None:
    """Organizations CloseAccount. AwsError code ``CLOSE_ACCOUNT_QUOTA_EXCEEDED`` when
    the quota refuses it, ``ACCOUNT_ALREADY_CLOSED`` when it is closed already."""
    org = _org_client(resolve_settings(settings))
    try:
        org.close_account(AccountId=check_account_id(account_id))
    except ClientError as exc:
        code = client_error_code(exc)
        message = str(exc.response.get("Error", {}).get("Message", ""))
        if code == "AccountAlreadyClosedException":
            fail(f"AWS account {account_id} is already closed", code="ACCOUNT_ALREADY_CLOSED")
        reason = str(exc.response.get("Reason", ""))
        if code == "ConstraintViolationException" and (
            CLOSE_QUOTA_REASON in (reason, message) or "quota" in message.lower()
        ):
            fail(
                f"AWS Organizations refused to close account {account_id}: its quota of "
                "10 % of the organization's accounts per 30 days is used up",
                retryable=True,
                code=CLOSE_QUOTA_REASON,
            )
        raise translate_error(exc=exc, what=f"closing AWS account {account_id}") from None
    except BotoCoreError as exc:
        raise translate_error(exc=exc, what=f"closing AWS account {account_id}") from None


# --------------------------------------------------------------------------- built-in hooks


def hook_create_account(
    *,
    account_name: str,
    log: LogFn = noop_log,
    settings: AwsSettings | None = None,
    timeout_s: float = 1800.0,
    poll_s: float = 10.0,
) -> dict[str, str]:
    """Built-in hook aws.create_account: outputs {"cloud_account_id": ...}."""
    s = resolve_settings(settings)
    account_id = ensure_account(
        email=account_email(account_name=account_name, email_domain=s.email_domain),
        name=account_name[:50],  # AWS account names are at most 50 characters
        log=log,
        settings=s,
        tags={"portal:account": account_name},
        timeout_s=timeout_s,
        poll_s=poll_s,
    )
    return {"cloud_account_id": account_id}


def hook_assume_role(
    *,
    cloud_account_id: str,
    log: LogFn = noop_log,
    settings: AwsSettings | None = None,
    role_name: str | None = None,
) -> dict[str, str]:
    """Built-in hook aws.assume_role: outputs {"role_arn": ...}."""
    arn = check_assume_role(account_id=cloud_account_id, role_name=role_name, settings=settings)
    log(f"the builder can assume {arn}")
    return {"role_arn": arn}
