"""The one place where the portal talks to AWS (boto3).

Everything else in the project calls these functions, never boto3 directly, so
that endpoint selection (a local moto server in tests and local mode), role
assumption, retries and error translation live in one module.

Settings come from ``django.conf.settings`` (``AwsSettings.from_settings()``) or
are passed in as an ``AwsSettings`` value.

Errors: every botocore failure is turned into ``AwsError`` with a one-line
``explanation`` and a ``retryable`` flag. Explanations never contain
credentials or secret values: AWS error messages do not echo request
parameters, and botocore's parameter-validation messages (which do) are
replaced by a generic text.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn, TypeVar
from urllib.parse import urlparse

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import RefreshableCredentials
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from botocore.loaders import Loader, create_loader
from django.conf import settings as django_settings

from portal.errors import PortalError

if TYPE_CHECKING:
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_organizations import OrganizationsClient
    from mypy_boto3_organizations.type_defs import CreateAccountRequestTypeDef
    from mypy_boto3_rds import RDSClient
    from mypy_boto3_route53 import Route53Client
    from mypy_boto3_route53.literals import RRTypeType
    from mypy_boto3_route53.type_defs import (
        ChangeTypeDef,
        ResourceRecordSetOutputTypeDef,
        ResourceRecordSetTypeDef,
    )
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_secretsmanager.type_defs import (
        CreateSecretRequestTypeDef,
        DescribeSecretResponseTypeDef,
        TagTypeDef,
    )
    from mypy_boto3_sts import STSClient

LogFn = Callable[[str], None]

# Error codes after which the same call may succeed later.
_RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalError",
        "InternalFailure",
        "InternalServiceError",
        "InternalServiceErrorException",
        "ConcurrentModificationException",
        "PriorRequestNotComplete",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "IDPCommunicationError",
        "InvalidDBInstanceState",
        "InvalidDBInstanceStateFault",
        "InvalidDBSnapshotState",
        "InvalidDBSnapshotStateFault",
        "KMSInternalException",
    }
)

_ACCOUNT_ID_RE = re.compile(r"[0-9]{12}")
_SESSION_NAME_RE = re.compile(r"[^\w+=,.@-]")


def _noop_log(_: str) -> None:
    """Default logger: discard."""


def _clock() -> float:
    return time.monotonic()


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


# --------------------------------------------------------------------------- errors


class AwsError(PortalError):
    """An AWS call failed. ``explanation`` is one line for people, never a secret."""

    def __init__(self, explanation: str, *, retryable: bool = False, code: str = "") -> None:
        explanation = " ".join(explanation.split())  # always one line
        super().__init__(explanation, retryable=retryable)
        self.explanation = explanation
        self.code = code


def _client_error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError or AwsError, else ''."""
    if isinstance(exc, AwsError):
        return exc.code
    if isinstance(exc, ClientError):
        return _client_error_code(exc)
    return ""


def translate_error(*, exc: BaseException, what: str) -> AwsError:
    """Turn a botocore exception into an AwsError whose message is safe to show."""
    if isinstance(exc, AwsError):
        return exc
    if isinstance(exc, ClientError):
        code = _client_error_code(exc)
        message = str(exc.response.get("Error", {}).get("Message", "")) or "no message"
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        retryable = code in _RETRYABLE_CODES or status >= 500
        return AwsError(f"{what} failed: {code}: {message}", retryable=retryable, code=code)
    if isinstance(exc, NoCredentialsError):
        return AwsError(f"{what} failed: no AWS credentials found for the builder", code="")
    if isinstance(exc, ParamValidationError):
        # botocore quotes parameter values here (a password could be one): say less.
        return AwsError(f"{what} failed: invalid request parameters", code="ParamValidation")
    if isinstance(exc, BotoConnectionError):
        return AwsError(
            f"{what} failed: cannot reach the AWS endpoint ({type(exc).__name__})",
            retryable=True,
            code="EndpointConnectionError",
        )
    if isinstance(exc, BotoCoreError):
        return AwsError(f"{what} failed: {type(exc).__name__}", retryable=True)
    return AwsError(f"{what} failed: {type(exc).__name__}", retryable=False)


@contextmanager
def aws_call(what: str) -> Iterator[None]:
    """Run AWS calls, re-raising any botocore failure as AwsError(what ...)."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        # `from None`: the botocore exception can quote request parameters.
        raise translate_error(exc=exc, what=what) from None


def _fail(explanation: str, *, retryable: bool = False, code: str = "") -> NoReturn:
    raise AwsError(explanation, retryable=retryable, code=code)


T = TypeVar("T")


def _unless_missing(call: Callable[[], T], *, what: str, missing: str) -> T | None:
    """``call()``, or None when AWS answers with the error code ``missing`` (the thing
    is gone); any other failure becomes an AwsError(what ...)."""
    try:
        return call()
    except ClientError as exc:
        if _client_error_code(exc) == missing:
            return None
        raise translate_error(exc=exc, what=what) from None
    except BotoCoreError as exc:
        raise translate_error(exc=exc, what=what) from None


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class AwsSettings:
    """Where and how to reach AWS. ``from_settings()`` gives the configured values."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    admin_role_name: str = "OrganizationAccountAccessRole"
    email_domain: str = "example.com"

    @classmethod
    def from_settings(cls) -> AwsSettings:
        return cls(
            endpoint_url=django_settings.AWS_ENDPOINT_URL or None,
            region=django_settings.AWS_DEFAULT_REGION,
            admin_role_name=django_settings.PORTAL_AWS_ADMIN_ROLE,
            email_domain=django_settings.PORTAL_AWS_EMAIL_DOMAIN,
        )

    @property
    def is_local(self) -> bool:
        """True when pointed at a local emulator (moto) rather than real AWS."""
        if not self.endpoint_url:
            return False
        # A custom endpoint can also be a real AWS one (VPC or FIPS endpoint), so
        # only loopback addresses and the usual emulator host names count.
        host = urlparse(self.endpoint_url).hostname or ""
        if host in {"localhost", "moto", "localstack"}:
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def _settings(settings: AwsSettings | None) -> AwsSettings:
    return settings if settings is not None else AwsSettings.from_settings()


def partition_for_region(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def check_account_id(account_id: str) -> str:
    if not _ACCOUNT_ID_RE.fullmatch(account_id or ""):
        _fail(f"not an AWS account id: {account_id!r} (expected 12 digits)")
    return account_id


# --------------------------------------------------------------------------- sessions

_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 6},
    connect_timeout=10,
    read_timeout=60,
)


@dataclass(frozen=True)
class Session:
    """A boto3 session plus the configured endpoint URL, with one typed client per service.

    boto3 itself only reads ``AWS_ENDPOINT_URL`` from the environment; an
    explicit setting has to be passed to every client, which these methods do.
    """

    boto: boto3.Session
    endpoint_url: str | None

    def rds(self) -> RDSClient:
        return self.boto.client("rds", endpoint_url=self.endpoint_url, config=_CLIENT_CONFIG)

    def kms(self) -> KMSClient:
        return self.boto.client("kms", endpoint_url=self.endpoint_url, config=_CLIENT_CONFIG)

    def iam(self) -> IAMClient:
        return self.boto.client("iam", endpoint_url=self.endpoint_url, config=_CLIENT_CONFIG)

    def sts(self) -> STSClient:
        return self.boto.client("sts", endpoint_url=self.endpoint_url, config=_CLIENT_CONFIG)

    def organizations(self) -> OrganizationsClient:
        return self.boto.client(
            "organizations", endpoint_url=self.endpoint_url, config=_CLIENT_CONFIG
        )

    def route53(self) -> Route53Client:
        return self.boto.client("route53", endpoint_url=self.endpoint_url, config=_CLIENT_CONFIG)

    def secretsmanager(self) -> SecretsManagerClient:
        return self.boto.client(
            "secretsmanager", endpoint_url=self.endpoint_url, config=_CLIENT_CONFIG
        )


_LOADER: Loader | None = None


def _core_session() -> botocore.session.Session:
    """A new botocore session sharing one model loader.

    Every botocore session otherwise parses the service JSON models again
    (a few hundred ms per client); one session per assumed role makes that add up.
    """
    global _LOADER
    if _LOADER is None:
        _LOADER = create_loader()
    core = botocore.session.get_session()
    core.register_component("data_loader", _LOADER)
    return core


def builder_session(*, settings: AwsSettings | None = None, region: str | None = None) -> Session:
    """The builder account's session: credentials from the normal boto3 chain."""
    s = _settings(settings)
    boto = boto3.Session(botocore_session=_core_session(), region_name=region or s.region)
    return Session(boto=boto, endpoint_url=s.endpoint_url)


def builder_account_id(*, settings: AwsSettings | None = None) -> str:
    """The account of the builder's own credentials."""
    with aws_call("reading the builder account's identity"):
        return str(builder_session(settings=settings).sts().get_caller_identity()["Account"])


def role_arn_for(*, account_id: str, role_name: str, region: str) -> str:
    return f"arn:{partition_for_region(region)}:iam::{account_id}:role/{role_name}"


def _session_name(name: str) -> str:
    cleaned = _SESSION_NAME_RE.sub("-", name)[:64]
    return cleaned if len(cleaned) >= 2 else f"portal-{cleaned}"


def assume_role(
    *,
    account_id: str,
    session_name: str = "portal",
    role_name: str | None = None,
    settings: AwsSettings | None = None,
    region: str | None = None,
) -> tuple[Session, str]:
    """Assume ``role_name`` in ``account_id``; return (session, role ARN).

    The credentials refresh themselves (a new AssumeRole before they expire),
    so a session can outlive the one-hour STS default during long RDS waits.
    """
    s = _settings(settings)
    check_account_id(account_id)
    region = region or s.region
    arn = role_arn_for(
        account_id=account_id, role_name=role_name or s.admin_role_name, region=region
    )
    sts = builder_session(settings=s, region=region).sts()
    name = _session_name(session_name)

    def fetch() -> dict[str, str]:
        with aws_call(f"assuming role {arn}"):
            creds = sts.assume_role(RoleArn=arn, RoleSessionName=name)["Credentials"]
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": creds["Expiration"].isoformat(),
        }

    refreshable = RefreshableCredentials.create_from_metadata(
        metadata=fetch(), refresh_using=fetch, method="sts-assume-role"
    )
    core = _core_session()
    # botocore has no public setter for a ready-made credentials object; this is
    # the documented-by-usage way to plug refreshable credentials into a session.
    core._credentials = refreshable  # type: ignore[attr-defined]
    core.set_config_variable("region", region)
    return Session(boto=boto3.Session(botocore_session=core), endpoint_url=s.endpoint_url), arn


def check_assume_role(
    *, account_id: str, role_name: str | None = None, settings: AwsSettings | None = None
) -> str:
    """Prove the builder can assume the admin role in ``account_id``; return its ARN."""
    session, arn = assume_role(
        account_id=account_id, session_name="portal-check", role_name=role_name, settings=settings
    )
    with aws_call(f"checking the identity of {arn}"):
        identity = session.sts().get_caller_identity()
    if identity.get("Account") != account_id:
        _fail(f"assuming {arn} gave an identity in account {identity.get('Account')}")
    return arn


# --------------------------------------------------------------------------- organizations


def _org_client(s: AwsSettings) -> OrganizationsClient:
    return builder_session(settings=s).organizations()


def _ensure_organization(*, org: OrganizationsClient, s: AwsSettings, log: LogFn) -> None:
    """Create the organization when none exists; only ever against a local endpoint."""
    try:
        org.describe_organization()
        return
    except ClientError as exc:
        if _client_error_code(exc) != "AWSOrganizationsNotInUseException":
            raise translate_error(exc=exc, what="describing the organization") from None
    if not s.is_local:
        _fail("the builder account is not in an AWS Organization; create one first")
    log("no organization on the local endpoint: creating one")
    with aws_call("creating the organization"):
        org.create_organization(FeatureSet="ALL")


def find_account_by_email(*, email: str, settings: AwsSettings | None = None) -> str | None:
    """The id of the organization's account with this e-mail, or None."""
    return _find_account(org=_org_client(_settings(settings)), email=email)


def _find_account(*, org: OrganizationsClient, email: str) -> str | None:
    wanted = email.strip().lower()
    with aws_call("listing the organization's accounts"):
        for page in org.get_paginator("list_accounts").paginate():
            for account in page.get("Accounts", []):
                if str(account.get("Email", "")).lower() == wanted:
                    status = account.get("Status", "ACTIVE")
                    if status != "ACTIVE":
                        _fail(f"account {account['Id']} for {email} is {status}, not ACTIVE")
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
    log: LogFn = _noop_log,
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
    s = _settings(settings)
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

    deadline = _clock() + timeout_s
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
                _fail(
                    f"e-mail {email} already belongs to an AWS account outside this "
                    "organization; choose another account name or e-mail domain",
                    code=reason,
                )
            retryable = reason in {"CONCURRENT_ACCOUNT_MODIFICATION", "INTERNAL_FAILURE"}
            _fail(
                f"creating AWS account {name!r} failed: {reason}", retryable=retryable, code=reason
            )
        if _clock() >= deadline:
            _fail(
                f"AWS account {name!r} not ready after {int(timeout_s)} s (state {state}); "
                "a retry resumes the same request",
                retryable=True,
                code="Timeout",
            )
        _sleep(poll_s)


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
    org = _org_client(_settings(settings))
    try:
        account = org.describe_account(AccountId=check_account_id(account_id))["Account"]
        tags = org.list_tags_for_resource(ResourceId=account_id).get("Tags", [])
    except ClientError as exc:
        if _client_error_code(exc) in {
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
    org = _org_client(_settings(settings))
    try:
        org.close_account(AccountId=check_account_id(account_id))
    except ClientError as exc:
        code = _client_error_code(exc)
        message = str(exc.response.get("Error", {}).get("Message", ""))
        if code == "AccountAlreadyClosedException":
            _fail(f"AWS account {account_id} is already closed", code="ACCOUNT_ALREADY_CLOSED")
        reason = str(exc.response.get("Reason", ""))
        if code == "ConstraintViolationException" and (
            CLOSE_QUOTA_REASON in (reason, message) or "quota" in message.lower()
        ):
            _fail(
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
    log: LogFn = _noop_log,
    settings: AwsSettings | None = None,
    timeout_s: float = 1800.0,
    poll_s: float = 10.0,
) -> dict[str, str]:
    """Built-in hook aws.create_account: outputs {"cloud_account_id": ...}."""
    s = _settings(settings)
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
    log: LogFn = _noop_log,
    settings: AwsSettings | None = None,
    role_name: str | None = None,
) -> dict[str, str]:
    """Built-in hook aws.assume_role: outputs {"role_arn": ...}."""
    arn = check_assume_role(account_id=cloud_account_id, role_name=role_name, settings=settings)
    log(f"the builder can assume {arn}")
    return {"role_arn": arn}


# --------------------------------------------------------------------------- Route 53


def _fqdn(name: str) -> str:
    return name.lower().rstrip(".") + "."


def private_zone_reference(*, account: str, zone: str) -> str:
    """The caller reference of the private zone the portal makes for ``account``: what
    tells our zone from other zones of the same name (Route 53 zones carry no tag)."""
    return f"portal:{account}:{zone.rstrip('.')}"


def find_private_zone(*, session: Session, name: str, caller_reference: str) -> str | None:
    """The id of the private hosted zone ``name`` made with ``caller_reference``, or None."""
    fqdn = _fqdn(name)
    with aws_call(f"looking up the private zone {name}"):
        listed = session.route53().list_hosted_zones_by_name(DNSName=fqdn, MaxItems="100")
    for zone in listed.get("HostedZones", []):
        if _fqdn(str(zone["Name"])) == fqdn and zone.get("CallerReference") == caller_reference:
            return str(zone["Id"])
    return None


def ensure_private_zone(
    *, session: Session, name: str, caller_reference: str, log: LogFn = _noop_log
) -> str:
    """The id of the private hosted zone ``name`` made with ``caller_reference``, created
    once: Route 53 keeps several zones of one name (one per network), and the caller
    reference says which is ours, so the lookup comes first (a retry makes no second)."""
    found = find_private_zone(session=session, name=name, caller_reference=caller_reference)
    if found is not None:
        log(f"private zone {name} exists: {found}")
        return found
    with aws_call(f"creating the private zone {name}"):
        created = session.route53().create_hosted_zone(
            Name=_fqdn(name),
            CallerReference=caller_reference,
            HostedZoneConfig={"Comment": "made by the portal", "PrivateZone": True},
        )
    zone_id = str(created["HostedZone"]["Id"])
    log(f"private zone {name} created: {zone_id}")
    return zone_id


def zone_caller_reference(*, session: Session, zone_id: str) -> str | None:
    """The caller reference of hosted zone ``zone_id``, or None when it is gone."""
    zone = _unless_missing(
        lambda: session.route53().get_hosted_zone(Id=zone_id),
        what=f"reading the hosted zone {zone_id}",
        missing="NoSuchHostedZone",
    )
    return None if zone is None else str(zone["HostedZone"].get("CallerReference", ""))


def zone_records(*, session: Session, zone_id: str, name: str) -> list[tuple[str, str]]:
    """(name, type) of every record set in zone ``name`` except its own SOA and NS
    records, which Route 53 made with the zone and removes with it."""
    with aws_call(f"listing the records of the zone {name}"):
        paginator = session.route53().get_paginator("list_resource_record_sets")
        pages = paginator.paginate(HostedZoneId=zone_id)
        records = [r for page in pages for r in page.get("ResourceRecordSets", [])]
    apex = _fqdn(name)
    return [
        (str(r["Name"]), str(r["Type"]))
        for r in records
        if not (_fqdn(str(r["Name"])) == apex and r["Type"] in ("SOA", "NS"))
    ]


def delete_zone(*, session: Session, zone_id: str) -> bool:
    """Delete an (empty) hosted zone; False when it was gone already."""
    deleted = _unless_missing(
        lambda: session.route53().delete_hosted_zone(Id=zone_id),
        what=f"deleting the hosted zone {zone_id}",
        missing="NoSuchHostedZone",
    )
    return deleted is not None


def upsert_record(
    *,
    session: Session,
    zone_id: str,
    name: str,
    type: RRTypeType,
    value: str | Sequence[str],
    ttl: int = 300,
) -> str:
    """Create or replace a record set; return the Route 53 change id."""
    values = [value] if isinstance(value, str) else list(value)
    change: ChangeTypeDef = {
        "Action": "UPSERT",
        "ResourceRecordSet": {
            "Name": _fqdn(name),
            "Type": type,
            "TTL": ttl,
            "ResourceRecords": [{"Value": v} for v in values],
        },
    }
    with aws_call(f"upserting DNS record {name} {type}"):
        resp = session.route53().change_resource_record_sets(
            HostedZoneId=zone_id, ChangeBatch={"Comment": "portal", "Changes": [change]}
        )
    return str(resp["ChangeInfo"]["Id"])


def wait_change_insync(
    *,
    session: Session,
    change_id: str,
    timeout_s: float = 300.0,
    log: LogFn = _noop_log,
    poll_s: float = 5.0,
) -> None:
    """Wait until a Route 53 change is INSYNC."""
    client = session.route53()
    deadline = _clock() + timeout_s
    while True:
        with aws_call(f"checking DNS change {change_id}"):
            status = str(client.get_change(Id=change_id)["ChangeInfo"]["Status"])
        if status == "INSYNC":
            log(f"DNS change {change_id} is in sync")
            return
        if _clock() >= deadline:
            _fail(
                f"DNS change {change_id} still {status} after {int(timeout_s)} s",
                retryable=True,
                code="Timeout",
            )
        log(f"DNS change {change_id}: {status}, waiting")
        _sleep(poll_s)


def find_record(
    *, session: Session, zone_id: str, name: str, type: RRTypeType
) -> ResourceRecordSetOutputTypeDef | None:
    """The record set with exactly this name and type, or None."""
    fqdn = _fqdn(name)
    with aws_call(f"reading DNS record {name} {type}"):
        resp = session.route53().list_resource_record_sets(
            HostedZoneId=zone_id, StartRecordName=fqdn, StartRecordType=type, MaxItems="1"
        )
    for record in resp.get("ResourceRecordSets", []):
        if _fqdn(str(record["Name"])) == fqdn and record["Type"] == type:
            return record
    return None


def delete_record(*, session: Session, zone_id: str, name: str, type: RRTypeType) -> str | None:
    """Delete a record set; return the change id, or None when it did not exist."""
    found = find_record(session=session, zone_id=zone_id, name=name, type=type)
    if found is None:
        return None
    # The listed record, as a request value: the output type only differs in optionality.
    record: ResourceRecordSetTypeDef = {"Name": found["Name"], "Type": found["Type"]}
    if "TTL" in found:
        record["TTL"] = found["TTL"]
    if "ResourceRecords" in found:
        record["ResourceRecords"] = found["ResourceRecords"]
    try:
        resp = session.route53().change_resource_record_sets(
            HostedZoneId=zone_id,
            ChangeBatch={"Changes": [{"Action": "DELETE", "ResourceRecordSet": record}]},
        )
    except ClientError as exc:
        # Deleted by someone else between the read and the delete: same end state.
        if _client_error_code(exc) == "InvalidChangeBatch" and "not found" in str(exc).lower():
            return None
        raise translate_error(exc=exc, what=f"deleting DNS record {name} {type}") from None
    except BotoCoreError as exc:
        raise translate_error(exc=exc, what=f"deleting DNS record {name} {type}") from None
    return str(resp["ChangeInfo"]["Id"])


# --------------------------------------------------------------------------- Secrets Manager


def _secret_tags(tags: Mapping[str, str] | None) -> list[TagTypeDef]:
    return [{"Key": k, "Value": v} for k, v in (tags or {}).items()]


def put_secret(
    *,
    session: Session,
    name: str,
    value: str,
    tags: Mapping[str, str] | None = None,
    kms_key_id: str | None = None,
) -> str:
    """Create the secret or set its value; return its ARN. Idempotent.

    A secret scheduled for deletion is restored first. No new version is
    written when the stored value is already ``value``.
    """
    client = session.secretsmanager()
    what = f"storing secret {name}"
    try:
        request: CreateSecretRequestTypeDef = {
            "Name": name,
            "SecretString": value,
            "Tags": _secret_tags(tags),
        }
        if kms_key_id:
            request["KmsKeyId"] = kms_key_id
        return str(client.create_secret(**request)["ARN"])
    except ClientError as exc:
        code = _client_error_code(exc)
        # InvalidRequestException: a secret with this name is scheduled for deletion.
        if code not in {"ResourceExistsException", "InvalidRequestException"}:
            raise translate_error(exc=exc, what=what) from None
        create_error = translate_error(exc=exc, what=what)
    except BotoCoreError as exc:
        raise translate_error(exc=exc, what=what) from None

    with aws_call(what):
        described = describe_secret(session=session, secret_id=name)
        if described is None:
            raise create_error
        arn = str(described["ARN"])
        if described.get("DeletedDate"):
            client.restore_secret(SecretId=arn)
        elif create_error.code == "InvalidRequestException":
            raise create_error
        current: str | None
        try:
            current = client.get_secret_value(SecretId=arn).get("SecretString")
        except ClientError as exc:
            if _client_error_code(exc) != "ResourceNotFoundException":  # no version yet
                raise
            current = None
        if current != value:
            client.put_secret_value(SecretId=arn, SecretString=value)
        if tags:
            client.tag_resource(SecretId=arn, Tags=_secret_tags(tags))
    return arn


def describe_secret(*, session: Session, secret_id: str) -> DescribeSecretResponseTypeDef | None:
    """The secret's metadata (no value), or None when it does not exist."""
    return _unless_missing(
        lambda: session.secretsmanager().describe_secret(SecretId=secret_id),
        what=f"reading secret {secret_id}",
        missing="ResourceNotFoundException",
    )


def get_secret(*, session: Session, secret_id: str) -> str:
    """The current string value of a secret (name or ARN)."""
    with aws_call(f"reading secret {secret_id}"):
        value = session.secretsmanager().get_secret_value(SecretId=secret_id).get("SecretString")
    if value is None:
        _fail(f"secret {secret_id} has no string value")
    return str(value)


def delete_secret(*, session: Session, secret_id: str, force: bool = True) -> bool:
    """Delete a secret; False when it did not exist. ``force`` skips the recovery window.

    (A forced delete of a missing secret succeeds in AWS, hence the look first.)
    """
    described = describe_secret(session=session, secret_id=secret_id)
    if described is None or (described.get("DeletedDate") and not force):
        return False
    client = session.secretsmanager()
    deleted = _unless_missing(
        lambda: (
            client.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)
            if force
            else client.delete_secret(SecretId=secret_id, RecoveryWindowInDays=7)
        ),
        what=f"deleting secret {secret_id}",
        missing="ResourceNotFoundException",
    )
    return deleted is not None
