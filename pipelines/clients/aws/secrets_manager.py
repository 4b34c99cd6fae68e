"""Secrets Manager: a clone's credentials, written, read and deleted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from pipelines.clients.aws.core import (
    Session,
    aws_call,
    client_error_code,
    fail,
    translate_error,
    unless_missing,
)

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager.type_defs import (
        CreateSecretRequestTypeDef,
        DescribeSecretResponseTypeDef,
        TagTypeDef,
    )


_SECRET_MISSING = frozenset({"ResourceNotFoundException"})


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
        code = client_error_code(exc)
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
            if client_error_code(exc) != "ResourceNotFoundException":  # no version yet
                raise
            current = None
        if current != value:
            client.put_secret_value(SecretId=arn, SecretString=value)
        if tags:
            client.tag_resource(SecretId=arn, Tags=_secret_tags(tags))
    return arn


def describe_secret(*, session: Session, secret_id: str) -> DescribeSecretResponseTypeDef | None:
    """The secret's metadata (no value), or None when it does not exist."""
    return unless_missing(
        call=lambda: session.secretsmanager().describe_secret(SecretId=secret_id),
        what=f"reading secret {secret_id}",
        missing=_SECRET_MISSING,
    )


def get_secret(*, session: Session, secret_id: str) -> str:
    """The current string value of a secret (name or ARN)."""
    with aws_call(f"reading secret {secret_id}"):
        value = session.secretsmanager().get_secret_value(SecretId=secret_id).get("SecretString")
    if value is None:
        fail(f"secret {secret_id} has no string value")
    return str(value)


def delete_secret(*, session: Session, secret_id: str, force: bool = True) -> bool:
    """Delete a secret; False when it did not exist. ``force`` skips the recovery window.

    (A forced delete of a missing secret succeeds in AWS, hence the look first.)
    """
    described = describe_secret(session=session, secret_id=secret_id)
    if described is None or (described.get("DeletedDate") and not force):
        return False
    client = session.secretsmanager()
    deleted = unless_missing(
        call=lambda: (
            client.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)
            if force
            else client.delete_secret(SecretId=secret_id, RecoveryWindowInDays=7)
        ),
        what=f"deleting secret {secret_id}",
        missing=_SECRET_MISSING,
    )
    return deleted is not None
