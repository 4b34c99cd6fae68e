"""The one place where the portal talks to AWS (boto3).

Everything else in the project calls these functions, never boto3 directly, so
that endpoint selection (a local moto server in tests and local mode), role
assumption, retries and error translation live in one package.

Settings come from ``django.conf.settings`` (``AwsSettings.from_settings()``) or
are passed in as an ``AwsSettings`` value.

Errors: every botocore failure is turned into ``AwsError`` with a one-line
``explanation`` and a ``retryable`` flag. Explanations never contain
credentials or secret values: AWS error messages do not echo request
parameters, and botocore's parameter-validation messages (which do) are
replaced by a generic text.

Modules: ``core`` (errors, settings, sessions: the base of the others),
``organizations``, ``route53`` and ``secrets_manager``; callers use this package's
names (``aws.assume_role``, ...).
"""

from pipelines.clients.aws.core import (
    AwsError,
    AwsSettings,
    LogFn,
    Session,
    assume_role,
    aws_call,
    builder_account_id,
    builder_session,
    check_account_id,
    check_assume_role,
    clock,
    error_code,
    partition_for_region,
    sleep,
    translate_error,
    unless_missing,
)
from pipelines.clients.aws.organizations import (
    CLOSE_QUOTA_REASON,
    OrgAccount,
    account_aliases,
    account_email,
    caller_account_id,
    close_account,
    ensure_account,
    hook_assume_role,
    hook_create_account,
    organization_account,
)
from pipelines.clients.aws.route53 import (
    delete_record,
    delete_zone,
    ensure_private_zone,
    find_private_zone,
    find_record,
    private_zone_reference,
    upsert_record,
    wait_change_insync,
    zone_caller_reference,
    zone_records,
)
from pipelines.clients.aws.secrets_manager import (
    delete_secret,
    describe_secret,
    get_secret,
    put_secret,
)

__all__ = [
    "CLOSE_QUOTA_REASON",
    "AwsError",
    "AwsSettings",
    "LogFn",
    "OrgAccount",
    "Session",
    "account_aliases",
    "account_email",
    "assume_role",
    "aws_call",
    "builder_account_id",
    "builder_session",
    "caller_account_id",
    "check_account_id",
    "check_assume_role",
    "clock",
    "close_account",
    "delete_record",
    "delete_secret",
    "delete_zone",
    "describe_secret",
    "ensure_account",
    "ensure_private_zone",
    "error_code",
    "find_private_zone",
    "find_record",
    "get_secret",
    "hook_assume_role",
    "hook_create_account",
    "organization_account",
    "partition_for_region",
    "private_zone_reference",
    "put_secret",
    "sleep",
    "translate_error",
    "unless_missing",
    "upsert_record",
    "wait_change_insync",
    "zone_caller_reference",
    "zone_records",
]
