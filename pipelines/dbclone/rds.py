"""Driver ``aws_rds_snapshot``: clone a production RDS instance into a new account.

The flow (the same as the one production teams run by hand):

1. In the source (production) account: a customer-managed KMS key, found by
   the alias ``alias/portal-share-<target account>``, whose policy lets the
   target account use it.
2. A manual snapshot of the source instance (or its latest automated one),
   copied encrypted with that key, the copy shared with the target account.
3. In the target account: the shared snapshot copied with a key of the target
   account (real AWS cannot restore from another account's encrypted
   snapshot), then restored into a new instance in the target's subnet group
   and security groups.
4. A new master password (never production's), stored in the target
   account's Secrets Manager first, then applied to the instance.

Every step looks before it creates, with deterministic names from
``clone_identifiers()``, so a retry after a crash at any line continues where
the previous attempt stopped without duplicates. Progress goes to ``log``;
the password goes only to ``add_secret`` (so that logs redact it), Secrets
Manager and the instance, never into a log line, return value or exception.

All AWS calls go through ``pipelines.clients.aws``. No Django here.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipelines.clients import aws
from pipelines.clients.aws import AwsError, AwsSettings, LogFn, aws_call, error_code

DRIVER = "aws_rds_snapshot"

# RDS identifiers: 1-63 characters, a letter first, letters/digits/hyphens, no
# trailing hyphen and no two hyphens in a row. We also keep them lower case
# (RDS stores them lower case anyway).
RDS_ID_MAX = 63
_RDS_ID_RE = re.compile(r"^[a-z](?:[a-z0-9]|-(?!-))*(?<!-)$")
# Every snapshot this module creates starts with this.
SNAPSHOT_PREFIX = "portal-"
# "portal-" + stem + "-shared" is the longest name built from a stem.
_STEM_MAX = RDS_ID_MAX - len(SNAPSHOT_PREFIX) - len("-shared")

# Tag written on the instance once the password of this secret version is applied.
PASSWORD_VERSION_TAG = "portal:master-secret-version"  # noqa: S105 (a tag name)
# Tag on KMS keys naming their alias, to find a key whose alias was never created.
KMS_ALIAS_TAG = "portal:kms-alias"

_PASSWORD_ALPHABET = string.ascii_letters + string.digits
PASSWORD_LENGTH = 32


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class SourceSpec:
    """The production database to clone."""

    account_id: str
    region: str
    instance_id: str
    use_automated_snapshot: bool = False
    role_name: str | None = None  # default: the portal's admin role


@dataclass(frozen=True)
class TargetSpec:
    """Where the clone goes: values mostly from the target's Terraform outputs."""

    account_id: str
    subnet_group_name: str
    security_group_ids: tuple[str, ...] = ()
    role_name: str | None = None  # default: the portal's admin role
    region: str | None = None  # must be the source's region (None: the same)
    instance_class: str | None = None  # default: the snapshot's
    parameter_group_name: str | None = None
    multi_az: bool = False


@dataclass(frozen=True)
class CloneIds:
    """Every name the clone creates, all derived from (account, service, run)."""

    account: str
    service: str
    run_id: str
    source_snapshot: str  # manual snapshot of the source instance (source account)
    encrypted_copy: str  # copy encrypted with the share key, shared (source account)
    target_copy: str  # copy encrypted with the target's key (target account)
    instance: str  # the new instance (target account)
    kms_alias: str  # the target account's key for its copies
    secret_name: str  # master credentials (target account's Secrets Manager)

    def tags(self) -> dict[str, str]:
        return {
            "portal:account": self.account,
            "portal:service": self.service,
            "portal:run": self.run_id,
        }


def _slug(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")


def is_valid_rds_identifier(value: str) -> bool:
    return len(value) <= RDS_ID_MAX and bool(_RDS_ID_RE.match(value))


def clone_identifiers(account: str, service: str, run_id: int | str) -> CloneIds:
    """Deterministic names for one clone; every RDS identifier is valid and <= 63 chars.

    Long account/service names are cut and a short hash of the full triple is
    appended, so two different triples never share names.
    """
    acct, svc, run = _slug(account) or "x", _slug(service) or "db", _slug(str(run_id)) or "0"
    stem = f"{acct}-{svc}-r{run}"
    if not stem[0].isalpha():
        stem = f"db-{stem}"
    if len(stem) > _STEM_MAX:
        digest = hashlib.sha256(f"{account}\0{service}\0{run_id}".encode()).hexdigest()[:8]
        tail = f"-r{run}-{digest}"
        if len(tail) > _STEM_MAX - 2:  # absurdly long run id: keep only the hash
            tail = f"-{digest}"
        head = f"{acct}-{svc}"
        if not head[0].isalpha():
            head = f"db-{head}"
        stem = head[: _STEM_MAX - len(tail)].rstrip("-") + tail
    ids = CloneIds(
        account=account,
        service=service,
        run_id=str(run_id),
        source_snapshot=f"{SNAPSHOT_PREFIX}{stem}-snap",
        encrypted_copy=f"{SNAPSHOT_PREFIX}{stem}-shared",
        target_copy=f"{SNAPSHOT_PREFIX}{stem}-copy",
        instance=stem,
        kms_alias=f"alias/portal-rds-{acct}",
        # Not ending in "-" + 6 characters: Secrets Manager would mistake it for
        # the random suffix of an ARN.
        secret_name=f"portal/{acct}/{svc}/r{run}/rds-master-credentials",
    )
    for name in (ids.source_snapshot, ids.encrypted_copy, ids.target_copy, ids.instance):
        assert is_valid_rds_identifier(name), name
    return ids


def share_key_alias(target_account_id: str) -> str:
    """Alias of the source-account key shared with ``target_account_id``."""
    return f"alias/portal-share-{target_account_id}"


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class CloneResult:
    instance_id: str
    instance_arn: str
    address: str
    port: int
    master_username: str
    secret_arn: str  # Secrets Manager secret (JSON, RDS format) in the target account
    # Intermediate snapshots created by the clone, for delete_clone().
    source_snapshot_ids: tuple[str, ...]
    target_snapshot_ids: tuple[str, ...]
    source_kms_key_arn: str = ""
    target_kms_key_arn: str = ""
    region: str = ""

    def to_outputs(self) -> dict[str, Any]:
        """JSON-serialisable outputs for the stage run (no secrets in here)."""
        out = asdict(self)
        out["source_snapshot_ids"] = list(self.source_snapshot_ids)
        out["target_snapshot_ids"] = list(self.target_snapshot_ids)
        return out


# --------------------------------------------------------------------------- helpers


@dataclass
class _Waits:
    """One deadline for the whole clone; each wait gets what is left."""

    deadline: float
    poll_s: float
    log: LogFn
    timeout_s: float
    _last: dict[str, str] = field(default_factory=dict)

    def expired(self) -> bool:
        return aws._clock() >= self.deadline

    def timeout(self, what: str, state: str) -> AwsError:
        return AwsError(
            f"timed out after {int(self.timeout_s)} s waiting for {what} (status {state}); "
            "a retry continues from here",
            retryable=True,
            code="Timeout",
        )

    def progress(self, what: str, state: str) -> None:
        # Log status changes only, so long waits stay readable.
        if self._last.get(what) != state:
            self._last[what] = state
            self.log(f"{what}: {state}")


def _rds_tags(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _describe_snapshot(rds: Any, snapshot_id: str) -> dict[str, Any] | None:
    try:
        found = rds.describe_db_snapshots(DBSnapshotIdentifier=snapshot_id)["DBSnapshots"]
    except ClientError as exc:
        if error_code(exc) in {"DBSnapshotNotFound", "DBSnapshotNotFoundFault"}:
            return None
        raise aws.translate_error(exc, f"describing snapshot {snapshot_id}") from None
    except BotoCoreError as exc:
        raise aws.translate_error(exc, f"describing snapshot {snapshot_id}") from None
    for snap in found:
        if str(snap["DBSnapshotIdentifier"]).lower() == snapshot_id.lower():
            return dict(snap)
    return None


def _describe_instance(rds: Any, instance_id: str) -> dict[str, Any] | None:
    try:
        found = rds.describe_db_instances(DBInstanceIdentifier=instance_id)["DBInstances"]
    except ClientError as exc:
        if error_code(exc) in {"DBInstanceNotFound", "DBInstanceNotFoundFault"}:
            return None
        raise aws.translate_error(exc, f"describing instance {instance_id}") from None
    except BotoCoreError as exc:
        raise aws.translate_error(exc, f"describing instance {instance_id}") from None
    return dict(found[0]) if found else None


def _wait_snapshot(rds: Any, snapshot_id: str, where: str, waits: _Waits) -> dict[str, Any]:
    """Wait until the snapshot is available; a failed one is deleted so a retry redoes it."""
    what = f"snapshot {snapshot_id} ({where})"
    while True:
        snap = _describe_snapshot(rds, snapshot_id)
        if snap is None:
            raise AwsError(f"{what} disappeared while waiting for it", retryable=True)
        state = str(snap.get("Status", ""))
        progress = snap.get("PercentProgress")
        waits.progress(what, f"{state} {progress}%" if progress is not None else state)
        if state == "available":
            return snap
        if state in {"failed", "incompatible-restore", "incompatible-parameters"}:
            with aws_call(f"deleting failed {what}"):
                rds.delete_db_snapshot(DBSnapshotIdentifier=snapshot_id)
            raise AwsError(
                f"{what} ended in status {state}; it was deleted so a retry makes it again",
                retryable=True,
            )
        if waits.expired():
            raise waits.timeout(what, state)
        aws._sleep(waits.poll_s)


_INSTANCE_FAILED = {
    "failed",
    "incompatible-restore",
    "incompatible-network",
    "incompatible-parameters",
    "incompatible-option-group",
    "inaccessible-encryption-credentials",
    "storage-full",
    "deleting",
}


def _wait_instance(rds: Any, instance_id: str, waits: _Waits) -> dict[str, Any]:
    what = f"instance {instance_id}"
    while True:
        inst = _describe_instance(rds, instance_id)
        if inst is None:
            raise AwsError(f"{what} disappeared while waiting for it", retryable=True)
        state = str(inst.get("DBInstanceStatus", ""))
        waits.progress(what, state)
        if state == "available":
            return inst
        if state in _INSTANCE_FAILED:
            raise AwsError(
                f"{what} is in status {state}; delete it (delete_clone) before retrying",
                retryable=False,
            )
        if waits.expired():
            raise waits.timeout(what, state)
        aws._sleep(waits.poll_s)


def _is_already_exists(exc: ClientError) -> bool:
    return error_code(exc) in {
        "DBSnapshotAlreadyExists",
        "DBSnapshotAlreadyExistsFault",
        "DBInstanceAlreadyExists",
        "DBInstanceAlreadyExistsFault",
    }


# --------------------------------------------------------------------------- KMS


def share_key_policy(source_account_id: str, target_account_id: str, region: str) -> str:
    """Key policy: the source account administers the key, the target may use it."""
    partition = aws.partition_for_region(region)
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


def _key_by_alias(kms: Any, alias: str) -> dict[str, Any] | None:
    try:
        return dict(kms.describe_key(KeyId=alias)["KeyMetadata"])
    except ClientError as exc:
        if error_code(exc) == "NotFoundException":
            return None
        raise aws.translate_error(exc, f"describing KMS key {alias}") from None


def _key_tagged_with_alias(kms: Any, alias: str) -> dict[str, Any] | None:
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
        if any(t.get("TagKey") == KMS_ALIAS_TAG and t.get("TagValue") == alias for t in tags):
            meta = _key_by_alias(kms, key_id)
            if meta and meta.get("KeyState") != "PendingDeletion":
                return meta
    return None


def ensure_kms_key(
    session: Any,
    alias: str,
    *,
    description: str,
    tags: Mapping[str, str],
    log: LogFn,
    policy: str | None = None,
) -> str:
    """Return the ARN of the customer-managed key behind ``alias``, creating it if missing.

    With ``policy``, the key policy is made equal to it (updated when different).
    """
    kms = session.client("kms")
    meta = _key_by_alias(kms, alias)
    if meta is None:
        meta = _key_tagged_with_alias(kms, alias)
        created = False
        if meta is None:
            kwargs: dict[str, Any] = {
                "Description": description,
                "KeyUsage": "ENCRYPT_DECRYPT",
                "Tags": [
                    {"TagKey": k, "TagValue": v} for k, v in {**tags, KMS_ALIAS_TAG: alias}.items()
                ],
            }
            if policy is not None:
                kwargs["Policy"] = policy
            with aws_call(f"creating KMS key for {alias}"):
                meta = dict(kms.create_key(**kwargs)["KeyMetadata"])
            created = True
            log(f"created KMS key {meta['KeyId']} for {alias}")
        raced = False
        try:
            kms.create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
            log(f"created KMS alias {alias} -> {meta['KeyId']}")
        except ClientError as exc:
            if error_code(exc) != "AlreadyExistsException":
                raise aws.translate_error(exc, f"creating KMS alias {alias}") from None
            raced = True
        if raced:
            # Another worker made the alias first: use its key, drop ours.
            if created:
                with aws_call(f"dropping duplicate KMS key {meta['KeyId']}"):
                    kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
            meta = _key_by_alias(kms, alias)
            if meta is None:
                raise AwsError(f"KMS alias {alias} exists but cannot be read", retryable=True)

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


# --------------------------------------------------------------------------- steps


@dataclass
class _Clone:
    """Everything one clone run needs; the steps below are its methods' bodies."""

    spec: SourceSpec
    target: TargetSpec
    ids: CloneIds
    log: LogFn
    waits: _Waits
    src: Any  # boto3 sessions
    tgt: Any
    src_rds: Any
    tgt_rds: Any

    @property
    def target_region(self) -> str:
        return self.target.region or self.spec.region

    @property
    def tags(self) -> dict[str, str]:
        return self.ids.tags()

    # step 1 -----------------------------------------------------------------
    def ensure_share_key(self) -> str:
        alias = share_key_alias(self.target.account_id)
        arn = ensure_kms_key(
            self.src,
            alias,
            description=f"portal: RDS snapshots shared with account {self.target.account_id}",
            tags=self.tags,
            log=self.log,
            policy=share_key_policy(self.spec.account_id, self.target.account_id, self.spec.region),
        )
        self.log(f"step 1/4: share key {alias} ready in account {self.spec.account_id}")
        return arn

    # step 2 -----------------------------------------------------------------
    def source_snapshot_id(self) -> str:
        """The snapshot to copy: ours (made if missing) or the latest automated one."""
        if not self.spec.use_automated_snapshot:
            if _describe_snapshot(self.src_rds, self.ids.source_snapshot) is None:
                try:
                    self.src_rds.create_db_snapshot(
                        DBInstanceIdentifier=self.spec.instance_id,
                        DBSnapshotIdentifier=self.ids.source_snapshot,
                        Tags=_rds_tags(self.tags),
                    )
                    self.log(
                        f"step 2/4: started snapshot {self.ids.source_snapshot} "
                        f"of {self.spec.instance_id}"
                    )
                except ClientError as exc:
                    if not _is_already_exists(exc):
                        raise aws.translate_error(exc, "snapshotting the source") from None
            _wait_snapshot(self.src_rds, self.ids.source_snapshot, "source", self.waits)
            return self.ids.source_snapshot

        latest: dict[str, Any] | None = None
        with aws_call(f"listing automated snapshots of {self.spec.instance_id}"):
            pages = self.src_rds.get_paginator("describe_db_snapshots").paginate(
                DBInstanceIdentifier=self.spec.instance_id, SnapshotType="automated"
            )
            for page in pages:
                for snap in page.get("DBSnapshots", []):
                    if snap.get("Status") != "available":
                        continue
                    if latest is None or snap["SnapshotCreateTime"] > latest["SnapshotCreateTime"]:
                        latest = snap
        if latest is None:
            raise AwsError(
                f"instance {self.spec.instance_id} has no available automated snapshot; "
                "enable backups or clone from a new manual snapshot",
                retryable=False,
            )
        snap_id = str(latest["DBSnapshotIdentifier"])
        self.log(f"step 2/4: using automated snapshot {snap_id}")
        return snap_id

    def ensure_encrypted_copy(self, share_key_arn: str) -> dict[str, Any]:
        snap = _describe_snapshot(self.src_rds, self.ids.encrypted_copy)
        if snap is None:
            source_id = self.source_snapshot_id()
            try:
                self.src_rds.copy_db_snapshot(
                    SourceDBSnapshotIdentifier=source_id,
                    TargetDBSnapshotIdentifier=self.ids.encrypted_copy,
                    KmsKeyId=share_key_arn,
                    Tags=_rds_tags(self.tags),
                )
                self.log(
                    f"step 2/4: started encrypted copy {self.ids.encrypted_copy} of {source_id}"
                )
            except ClientError as exc:
                if not _is_already_exists(exc):
                    raise aws.translate_error(exc, "copying the source snapshot") from None
        return _wait_snapshot(self.src_rds, self.ids.encrypted_copy, "source", self.waits)

    def ensure_shared(self) -> None:
        snap_id = self.ids.encrypted_copy
        with aws_call(f"sharing snapshot {snap_id}"):
            attrs = self.src_rds.describe_db_snapshot_attributes(DBSnapshotIdentifier=snap_id)[
                "DBSnapshotAttributesResult"
            ]["DBSnapshotAttributes"]
            restore: dict[str, Any] = next(
                (a for a in attrs if a.get("AttributeName") == "restore"), {}
            )
            if self.target.account_id in restore.get("AttributeValues", []):
                return
            self.src_rds.modify_db_snapshot_attribute(
                DBSnapshotIdentifier=snap_id,
                AttributeName="restore",
                ValuesToAdd=[self.target.account_id],
            )
        self.log(f"step 2/4: shared snapshot {snap_id} with account {self.target.account_id}")

    # step 3 -----------------------------------------------------------------
    def ensure_target_key(self) -> str:
        return ensure_kms_key(
            self.tgt,
            self.ids.kms_alias,
            description=f"portal: RDS clones of account {self.ids.account}",
            tags=self.tags,
            log=self.log,
        )

    def ensure_target_copy(self, shared_arn: str, target_key_arn: str) -> dict[str, Any]:
        if _describe_snapshot(self.tgt_rds, self.ids.target_copy) is None:
            kwargs: dict[str, Any] = {
                "SourceDBSnapshotIdentifier": shared_arn,
                "TargetDBSnapshotIdentifier": self.ids.target_copy,
                "KmsKeyId": target_key_arn,
                "Tags": _rds_tags(self.tags),
            }
            try:
                self.tgt_rds.copy_db_snapshot(**kwargs)
                self.log(
                    f"step 3/4: started copy {self.ids.target_copy} in account "
                    f"{self.target.account_id}"
                )
            except ClientError as exc:
                if not _is_already_exists(exc):
                    raise aws.translate_error(exc, "copying the shared snapshot") from None
        return _wait_snapshot(self.tgt_rds, self.ids.target_copy, "target", self.waits)

    def ensure_instance(self) -> None:
        if _describe_instance(self.tgt_rds, self.ids.instance) is not None:
            return
        kwargs: dict[str, Any] = {
            "DBInstanceIdentifier": self.ids.instance,
            "DBSnapshotIdentifier": self.ids.target_copy,
            "DBSubnetGroupName": self.target.subnet_group_name,
            "PubliclyAccessible": False,
            "MultiAZ": self.target.multi_az,
            "CopyTagsToSnapshot": True,
            "DeletionProtection": False,
            "Tags": _rds_tags(self.tags),
        }
        if self.target.security_group_ids:
            kwargs["VpcSecurityGroupIds"] = list(self.target.security_group_ids)
        if self.target.instance_class:
            kwargs["DBInstanceClass"] = self.target.instance_class
        if self.target.parameter_group_name:
            kwargs["DBParameterGroupName"] = self.target.parameter_group_name
        try:
            self.tgt_rds.restore_db_instance_from_db_snapshot(**kwargs)
            self.log(f"step 3/4: started restore of instance {self.ids.instance}")
        except ClientError as exc:
            if not _is_already_exists(exc):
                raise aws.translate_error(exc, "restoring the new instance") from None

    # step 4 -----------------------------------------------------------------
    def ensure_master_password(
        self, instance: dict[str, Any], add_secret: Callable[[str], None]
    ) -> str:
        """Store a new master password in the target's Secrets Manager, then apply it.

        The secret is written before the instance is changed: a crash in
        between leaves the password recoverable, and a retry applies the same
        one. Returns the secret's ARN.
        """
        username = str(instance.get("MasterUsername") or "")
        existing = aws.describe_secret(self.tgt, self.ids.secret_name)
        password: str | None = None
        if existing is not None and not existing.get("DeletedDate"):
            try:
                password = _password_from_secret(aws.get_secret(self.tgt, str(existing["ARN"])))
            except AwsError:
                password = None  # unreadable or foreign format: replace it
        if password is None:
            password = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))
        add_secret(password)  # before anything could log it

        endpoint = instance.get("Endpoint") or {}
        secret_value = json.dumps(
            {
                "engine": instance.get("Engine"),
                "host": endpoint.get("Address"),
                "port": endpoint.get("Port"),
                "username": username,
                "password": password,
                "dbInstanceIdentifier": self.ids.instance,
            }
        )
        secret_arn = aws.put_secret(self.tgt, self.ids.secret_name, secret_value, self.tags)
        version = _current_version(self.tgt, secret_arn)
        self.log(f"step 4/4: stored master credentials in secret {secret_arn}")

        applied = {t["Key"]: t["Value"] for t in instance.get("TagList", [])}.get(
            PASSWORD_VERSION_TAG
        )
        if applied == version:
            return secret_arn
        try:
            self.tgt_rds.modify_db_instance(
                DBInstanceIdentifier=self.ids.instance,
                MasterUserPassword=password,
                ApplyImmediately=True,
            )
        except (ClientError, BotoCoreError) as exc:
            # Built without the original message: never risk echoing the request.
            code = error_code(exc) or type(exc).__name__
            retryable = aws.translate_error(exc, "").retryable
            raise AwsError(
                f"setting the master password of {self.ids.instance} failed: {code}",
                retryable=retryable,
                code=code,
            ) from None
        with aws_call(f"tagging instance {self.ids.instance}"):
            self.tgt_rds.add_tags_to_resource(
                ResourceName=instance["DBInstanceArn"],
                Tags=[{"Key": PASSWORD_VERSION_TAG, "Value": version}],
            )
        self.log(f"step 4/4: new master password applied to {self.ids.instance}")
        return secret_arn


def _current_version(session: Any, secret_arn: str) -> str:
    meta = aws.describe_secret(session, secret_arn) or {}
    for version, stages in (meta.get("VersionIdsToStages") or {}).items():
        if "AWSCURRENT" in stages:
            return str(version)
    return ""


def _password_from_secret(value: str) -> str | None:
    try:
        data = json.loads(value)
    except ValueError:
        return None
    password = data.get("password") if isinstance(data, dict) else None
    return password if isinstance(password, str) and password else None


def read_master_password(session: Any, secret_arn: str) -> str:
    """The clone's master password from its secret (for the scrub step)."""
    password = _password_from_secret(aws.get_secret(session, secret_arn))
    if password is None:
        raise AwsError(f"secret {secret_arn} does not hold RDS master credentials")
    return password


# --------------------------------------------------------------------------- entry points


def _sessions(
    spec: SourceSpec, target: TargetSpec, session_name: str, settings: AwsSettings
) -> tuple[Any, Any]:
    src, _ = aws.assume_role(
        spec.account_id, spec.role_name, session_name, settings=settings, region=spec.region
    )
    tgt, _ = aws.assume_role(
        target.account_id,
        target.role_name,
        session_name,
        settings=settings,
        region=target.region or spec.region,
    )
    return src, tgt


def _intermediate_ids(spec: SourceSpec, ids: CloneIds) -> tuple[tuple[str, ...], tuple[str, ...]]:
    # The automated snapshot belongs to production's backups: never ours to delete.
    source = (
        (ids.encrypted_copy,)
        if spec.use_automated_snapshot
        else (
            ids.source_snapshot,
            ids.encrypted_copy,
        )
    )
    return source, (ids.target_copy,)


def clone_rds(
    spec: SourceSpec,
    target: TargetSpec,
    ids: CloneIds,
    log: LogFn,
    add_secret: Callable[[str], None],
    timeout_s: float = 4 * 3600.0,
    *,
    settings: AwsSettings | None = None,
    poll_s: float = 30.0,
) -> CloneResult:
    """Clone ``spec``'s instance into ``target`` as ``ids.instance``; see the module doc.

    Raises AwsError (``retryable`` says whether running it again can help).
    """
    s = settings if settings is not None else AwsSettings.from_env()
    aws.check_account_id(spec.account_id)
    aws.check_account_id(target.account_id)
    if spec.account_id == target.account_id:
        raise AwsError("source and target account are the same; refusing to clone")
    if target.region and target.region != spec.region:
        # AWS copies a snapshot shared from another account only within its region.
        raise AwsError(
            f"cross-region clone ({spec.region} -> {target.region}) is not supported: "
            "a shared encrypted snapshot can only be copied in its own region"
        )
    log(
        f"cloning RDS instance {spec.instance_id} of account {spec.account_id} "
        f"into {ids.instance} in account {target.account_id}"
    )
    src, tgt = _sessions(spec, target, f"portal-{DRIVER}-{ids.run_id}", s)
    run = _Clone(
        spec=spec,
        target=target,
        ids=ids,
        log=log,
        waits=_Waits(aws._clock() + timeout_s, poll_s, log, timeout_s),
        src=src,
        tgt=tgt,
        src_rds=src.client("rds"),
        tgt_rds=tgt.client("rds"),
    )

    # Work backwards from the end state: whatever already exists is not redone.
    share_key_arn = ""
    target_key_arn = run.ensure_target_key()
    if _describe_instance(run.tgt_rds, ids.instance) is None:
        if _describe_snapshot(run.tgt_rds, ids.target_copy) is None:
            share_key_arn = run.ensure_share_key()
            shared = run.ensure_encrypted_copy(share_key_arn)
            run.ensure_shared()
            shared_arn = str(shared["DBSnapshotArn"])
        else:
            shared_arn = ""  # the target copy exists: it needs no source any more
        run.ensure_target_copy(shared_arn, target_key_arn)
        run.ensure_instance()
    instance = _wait_instance(run.tgt_rds, ids.instance, run.waits)
    if not share_key_arn:  # source steps skipped: report the key, read-only
        meta = _key_by_alias(src.client("kms"), share_key_alias(target.account_id))
        share_key_arn = str(meta["Arn"]) if meta else ""

    secret_arn = run.ensure_master_password(instance, add_secret)
    instance = _wait_instance(run.tgt_rds, ids.instance, run.waits)

    endpoint = instance.get("Endpoint") or {}
    source_ids, target_ids = _intermediate_ids(spec, ids)
    result = CloneResult(
        instance_id=ids.instance,
        instance_arn=str(instance["DBInstanceArn"]),
        address=str(endpoint.get("Address", "")),
        port=int(endpoint.get("Port", 0)),
        master_username=str(instance.get("MasterUsername") or ""),
        secret_arn=secret_arn,
        source_snapshot_ids=source_ids,
        target_snapshot_ids=target_ids,
        source_kms_key_arn=share_key_arn,
        target_kms_key_arn=target_key_arn,
        region=run.target_region,
    )
    log(f"clone ready: {result.instance_id} at {result.address}:{result.port}")
    return result


def _delete_snapshot(rds: Any, snapshot_id: str, where: str, log: LogFn) -> bool:
    try:
        rds.delete_db_snapshot(DBSnapshotIdentifier=snapshot_id)
    except ClientError as exc:
        if error_code(exc) in {"DBSnapshotNotFound", "DBSnapshotNotFoundFault"}:
            return False
        raise aws.translate_error(exc, f"deleting snapshot {snapshot_id} ({where})") from None
    except BotoCoreError as exc:
        raise aws.translate_error(exc, f"deleting snapshot {snapshot_id} ({where})") from None
    log(f"deleted snapshot {snapshot_id} ({where})")
    return True


def delete_clone(
    spec: SourceSpec,
    target: TargetSpec,
    *,
    instance_id: str | None,
    source_snapshot_ids: Sequence[str] = (),
    target_snapshot_ids: Sequence[str] = (),
    secret_arn: str | None = None,
    log: LogFn,
    timeout_s: float = 3600.0,
    poll_s: float = 30.0,
    settings: AwsSettings | None = None,
    run_id: str = "cleanup",
) -> None:
    """Delete a clone's instance (no final snapshot), its snapshots and secret.

    ``instance_id=None`` keeps the instance and only removes the intermediate
    snapshots (the cleanup after a successful clone). Idempotent: whatever is
    already gone is skipped. The source instance and its automated snapshots
    are never touched.
    """
    s = settings if settings is not None else AwsSettings.from_env()
    # Instances are only ever deleted in the target account: never in production.
    if spec.account_id == target.account_id:
        raise AwsError("source and target account are the same; refusing to delete")
    # In production, only snapshots this module made (named portal-...) may go.
    foreign = [i for i in source_snapshot_ids if not i.lower().startswith(SNAPSHOT_PREFIX)]
    if foreign:
        raise AwsError(f"refusing to delete snapshots not made by the portal: {foreign}")
    src, tgt = _sessions(spec, target, f"portal-{DRIVER}-cleanup-{run_id}", s)
    tgt_rds = tgt.client("rds")
    waits = _Waits(aws._clock() + timeout_s, poll_s, log, timeout_s)

    if instance_id:
        try:
            tgt_rds.delete_db_instance(
                DBInstanceIdentifier=instance_id,
                SkipFinalSnapshot=True,
                DeleteAutomatedBackups=True,
            )
            log(f"deleting instance {instance_id}")
        except ClientError as exc:
            code = error_code(exc)
            if code in {"DBInstanceNotFound", "DBInstanceNotFoundFault"}:
                log(f"instance {instance_id} already gone")
            elif code not in {"InvalidDBInstanceState", "InvalidDBInstanceStateFault"}:
                raise aws.translate_error(exc, f"deleting instance {instance_id}") from None
            # InvalidDBInstanceState: most likely already deleting; wait below.
        while (inst := _describe_instance(tgt_rds, instance_id)) is not None:
            waits.progress(f"instance {instance_id}", str(inst.get("DBInstanceStatus")))
            if waits.expired():
                raise waits.timeout(f"deletion of instance {instance_id}", "deleting")
            aws._sleep(poll_s)

    src_rds = src.client("rds")
    for snap_id in source_snapshot_ids:
        _delete_snapshot(src_rds, snap_id, f"account {spec.account_id}", log)
    for snap_id in target_snapshot_ids:
        _delete_snapshot(tgt_rds, snap_id, f"account {target.account_id}", log)
    if secret_arn and aws.delete_secret(tgt, secret_arn):
        log(f"deleted secret {secret_arn}")
