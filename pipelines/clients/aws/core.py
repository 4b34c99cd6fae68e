"""Errors, settings and sessions: what every AWS call of the portal goes through."""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Iterator
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
    from mypy_boto3_rds import RDSClient
    from mypy_boto3_route53 import Route53Client
    from mypy_boto3_secretsmanager import SecretsManagerClient
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


def noop_log(_: str) -> None:
    """Default logger: discard."""


def clock() -> float:
    return time.monotonic()


def sleep(seconds: float) -> None:
    time.sleep(seconds)


# --------------------------------------------------------------------------- errors


class AwsError(PortalError):
    """An AWS call failed. ``explanation`` is one line for people, never a secret."""

    def __init__(self, explanation: str, *, retryable: bool = False, code: str = "") -> None:
        explanation = " ".join(explanation.split())  # always one line
        super().__init__(explanation, retryable=retryable)
        self.explanation = explanation
        self.code = code


def client_error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError or AwsError, else ''."""
    if isinstance(exc, AwsError):
        return exc.code
    if isinstance(exc, ClientError):
        return client_error_code(exc)
    return ""


def translate_error(*, exc: BaseException, what: str) -> AwsError:
    """Turn a botocore exception into an AwsError whose message is safe to show."""
    if isinstance(exc, AwsError):
        return exc
    if isinstance(exc, ClientError):
        code = client_error_code(exc)
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


def fail(explanation: str, *, retryable: bool = False, code: str = "") -> NoReturn:
    raise AwsError(explanation, retryable=retryable, code=code)


T = TypeVar("T")


def unless_missing(*, call: Callable[[], T], missing: frozenset[str], what: str) -> T | None:
    """``call()``, or None when AWS answers with one of the error codes ``missing`` (the
    thing is gone); any other failure becomes an AwsError(what ...)."""
    try:
        return call()
    except ClientError as exc:
        if client_error_code(exc) in missing:
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


def resolve_settings(settings: AwsSettings | None) -> AwsSettings:
    return settings if settings is not None else AwsSettings.from_settings()


def partition_for_region(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def check_account_id(account_id: str) -> str:
    if not _ACCOUNT_ID_RE.fullmatch(account_id or ""):
        fail(f"not an AWS account id: {account_id!r} (expected 12 digits)")
    return account_id


# --------------------------------------------------------------------------- sessions

CLIENT_CONFIG = Config(
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
        return self.boto.client("rds", endpoint_url=self.endpoint_url, config=CLIENT_CONFIG)

    def kms(self) -> KMSClient:
        return self.boto.client("kms", endpoint_url=self.endpoint_url, config=CLIENT_CONFIG)

    def iam(self) -> IAMClient:
        return self.boto.client("iam", endpoint_url=self.endpoint_url, config=CLIENT_CONFIG)

    def sts(self) -> STSClient:
        return self.boto.client("sts", endpoint_url=self.endpoint_url, config=CLIENT_CONFIG)

    def organizations(self) -> OrganizationsClient:
        return self.boto.client(
            "organizations", endpoint_url=self.endpoint_url, config=CLIENT_CONFIG
        )

    def route53(self) -> Route53Client:
        return self.boto.client("route53", endpoint_url=self.endpoint_url, config=CLIENT_CONFIG)

    def secretsmanager(self) -> SecretsManagerClient:
        return self.boto.client(
            "secretsmanager", endpoint_url=self.endpoint_url, config=CLIENT_CONFIG
        )


_LOADER: Loader | None = None


def core_session() -> botocore.session.Session:
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
    s = resolve_settings(settings)
    boto = boto3.Session(botocore_session=core_session(), region_name=region or s.region)
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
    s = resolve_settings(settings)
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
    core = core_session()
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
        fail(f"assuming {arn} gave an identity in account {identity.get('Account')}")
    return arn
