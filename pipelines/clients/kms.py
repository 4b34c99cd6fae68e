"""KMS keys found by alias: made when missing, repaired when disabled or scheduled for
deletion, their policy kept equal to the wanted one. All calls go through
``pipelines.clients.aws`` sessions and its error translation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from pipelines.clients.aws import (
    AwsError,
    LogFn,
    Session,
    aws_call,
    error_code,
    partition_for_region,
    translate_error,
)

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_kms.type_defs import CreateKeyRequestTypeDef, KeyMetadataTypeDef

# Tag on KMS keys naming their alias, to find a key whose alias was never created.
ALIAS_TAG = "portal:kms-alias"


def share_key_policy(*, source_account_id: str, target_account_id: str, region: str) -> str:
    """Key policy: the source account administers the key, the target may use it."""
    partition = partition_for_region(region)
    policy = {
        "Version": "2012-10-17",
        "Id": "portal-rds-snapshot-share",
        "Statement": [
            {
                "Sid": "SourceAccountAdministers",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:{partition}:iam::{source_account_id}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "TargetAccountUsesForSnapshotCopies",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:{partition}:iam::{target_account_id}:root"},
                "Action": [
                    "kms:DescribeKey",
                    "kms:CreateGrant",
                    "kms:Decrypt",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                ],
                "Resource": "*",
            },
        ],
    }
    return json.dumps(policy, sort_keys=True)


def describe_key(*, kms: KMSClient, key_id: str) -> KeyMetadataTypeDef | None:
    """The key's metadata (``key_id``: an id, ARN or alias), or None when it does not exist."""
    try:
        return kms.describe_key(KeyId=key_id)["KeyMetadata"]
    except ClientError as exc:
        if error_code(exc) == "NotFoundException":
            return None
        raise translate_error(exc=exc, what=f"describing KMS key {key_id}") from None


def _key_tagged_with_alias(*, kms: KMSClient, alias: str) -> KeyMetadataTypeDef | None:
    """A key created for ``alias`` whose alias was never made (crash in between).

    Costs one call per key, but only runs when the alias does not exist yet.
    """
    with aws_call("listing KMS keys"):
        key_ids = [
            str(k["KeyId"])
            for page in kms.get_paginator("list_keys").paginate()
            for k in page.get("Keys", [])
        ]
    for key_id in key_ids:
        try:
            tags = kms.list_resource_tags(KeyId=key_id).get("Tags", [])
        except ClientError:
            continue  # AWS-managed or inaccessible keys: not ours
        if any(t.get("TagKey") == ALIAS_TAG and t.get("TagValue") == alias for t in tags):
            meta = describe_key(kms=kms, key_id=key_id)
            if meta and meta.get("KeyState") != "PendingDeletion":
                return meta
    return None


def _create_key(
    *, kms: KMSClient, alias: str, description: str, tags: Mapping[str, str], policy: str | None
) -> KeyMetadataTypeDef:
    request: CreateKeyRequestTypeDef = {
        "Description": description,
        "KeyUsage": "ENCRYPT_DECRYPT",
        "Tags": [{"TagKey": k, "TagValue": v} for k, v in {**tags, ALIAS_TAG: alias}.items()],
    }
    if policy is not None:
        request["Policy"] = policy
    with aws_call(f"creating KMS key for {alias}"):
        return kms.create_key(**request)["KeyMetadata"]


def ensure_key(
    *,
    session: Session,
    alias: str,
    description: str,
    tags: Mapping[str, str],
    log: LogFn,
    policy: str | None = None,
) -> str:
    """Return the ARN of the customer-managed key behind ``alias``, creating it if missing.

    With ``policy``, the key policy is made equal to it (updated when different).
    """
    kms = session.kms()
    meta = describe_key(kms=kms, key_id=alias)
    if meta is None:
        meta = _key_tagged_with_alias(kms=kms, alias=alias)
        created = False
        if meta is None:
            meta = _create_key(
                kms=kms, alias=alias, description=description, tags=tags, policy=policy
            )
            created = True
            log(f"created KMS key {meta['KeyId']} for {alias}")
        try:
            kms.create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
            log(f"created KMS alias {alias} -> {meta['KeyId']}")
        except ClientError as exc:
            if error_code(exc) != "AlreadyExistsException":
                raise translate_error(exc=exc, what=f"creating KMS alias {alias}") from None
            # Another worker made the alias first: use its key, drop ours.
            if created:
                with aws_call(f"dropping duplicate KMS key {meta['KeyId']}"):
                    kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
            meta = describe_key(kms=kms, key_id=alias)
            if meta is None:
                raise AwsError(
                    f"KMS alias {alias} exists but cannot be read", retryable=True
                ) from None

    key_id = str(meta["KeyId"])
    with aws_call(f"preparing KMS key {alias}"):
        state = meta.get("KeyState")
        if state == "PendingDeletion":
            log(f"KMS key {key_id} ({alias}) was scheduled for deletion: cancelling that")
            kms.cancel_key_deletion(KeyId=key_id)
            state = "Disabled"
        if state == "Disabled":
            kms.enable_key(KeyId=key_id)
        if policy is not None:
            current = kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]
            if json.loads(current) != json.loads(policy):
                log(f"updating the key policy of {alias}")
                kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy)
    return str(meta["Arn"])
