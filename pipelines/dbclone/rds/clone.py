"""Driver ``aws_rds_snapshot``: clone a production RDS instance into a new account, and
delete a clone.

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
``names.clone_identifiers()``, so a retry after a crash at any line continues where
the previous attempt stopped without duplicates. Progress goes to ``log``;
the password goes only to ``add_secret`` (so that logs redact it), Secrets
Manager and the instance, never into a log line, return value or exception.

All AWS calls go through ``pipelines.clients.aws`` (and ``kms``). No Django here.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from pipelines.clients import aws, kms
from pipelines.clients.aws import AwsError, AwsSettings, LogFn, Session, aws_call, error_code
from pipelines.dbclone.rds import calls
from pipelines.dbclone.rds.names import (
    DRIVER,
    SNAPSHOT_PREFIX,
    CloneIds,
    SourceSpec,
    TargetSpec,
    share_key_alias,
)

if TYPE_CHECKING:
    from mypy_boto3_rds import RDSClient
    from mypy_boto3_rds.type_defs import (
        DBInstanceTypeDef,
        DBSnapshotTypeDef,
        RestoreDBInstanceFromDBSnapshotMessageTypeDef,
    )

# Tag written on the instance once the password of this secret version is applied.
PASSWORD_VERSION_TAG = "portal:master-secret-version"  # noqa: S105 (a tag name)

_PASSWORD_ALPHABET = string.ascii_letters + string.digits
PASSWORD_LENGTH = 32


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

    def to_outputs(self) -> dict[str, object]:
        """JSON-serialisable outputs for the stage run (no secrets in here)."""
        out: dict[str, object] = asdict(self)
        out["source_snapshot_ids"] = list(self.source_snapshot_ids)
        out["target_snapshot_ids"] = list(self.target_snapshot_ids)
        return out


# --------------------------------------------------------------------------- steps


@dataclass(kw_only=True)
class _Clone:
    """Everything one clone run needs; the steps below are its methods' bodies."""

    spec: SourceSpec
    target: TargetSpec
    ids: CloneIds
    log: LogFn
    waits: calls.Waits
    src: Session
    tgt: Session
    src_rds: RDSClient
    tgt_rds: RDSClient

    @property
    def target_region(self) -> str:
        return self.target.region or self.spec.region

    @property
    def tags(self) -> dict[str, str]:
        return self.ids.tags()

    # step 1 -----------------------------------------------------------------
    def ensure_share_key(self) -> str:
        alias = share_key_alias(self.target.account_id)
        arn = kms.ensure_key(
            session=self.src,
            alias=alias,
            description=f"portal: RDS snapshots shared with account {self.target.account_id}",
            tags=self.tags,
            log=self.log,
            policy=kms.share_key_policy(
                source_account_id=self.spec.account_id,
                target_account_id=self.target.account_id,
                region=self.spec.region,
            ),
        )
        self.log(f"step 1/4: share key {alias} ready in account {self.spec.account_id}")
        return arn

    # step 2 -----------------------------------------------------------------
    def source_snapshot_id(self) -> str:
        """The snapshot to copy: ours (made if missing), the latest automated one, or a
        masked golden snapshot (refused unless it is tagged as one)."""
        if self.spec.golden_snapshot:
            return calls.checked_golden(rds=self.src_rds, snapshot_id=self.spec.golden_snapshot)
        if not self.spec.use_automated_snapshot:
            snap_id = self.ids.source_snapshot
            if calls.describe_snapshot(
                rds=self.src_rds, snapshot_id=snap_id
            ) is None and calls.start(
                call=lambda: self.src_rds.create_db_snapshot(
                    DBInstanceIdentifier=self.spec.instance_id,
                    DBSnapshotIdentifier=snap_id,
                    Tags=calls.rds_tags(self.tags),
                ),
                what="snapshotting the source",
            ):
                self.log(f"step 2/4: started snapshot {snap_id} of {self.spec.instance_id}")
            calls.wait_snapshot(
                rds=self.src_rds, snapshot_id=snap_id, where="source", waits=self.waits
            )
            return snap_id

        latest: DBSnapshotTypeDef | None = None
        with aws_call(f"listing automated snapshots of {self.spec.instance_id}"):
            pages = self.src_rds.get_paginator("describe_db_snapshots").paginate(
                DBInstanceIdentifier=self.spec.instance_id, SnapshotType="automated"
            )
            for page in pages:
                for snap in page.get("DBSnapshots", []):
                    if snap.get("Status") != "available" or "SnapshotCreateTime" not in snap:
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

    def ensure_encrypted_copy(self, share_key_arn: str) -> DBSnapshotTypeDef:
        return self._ensure_copy(
            rds=self.src_rds,
            source=self.source_snapshot_id,
            copy_id=self.ids.encrypted_copy,
            key_arn=share_key_arn,
            where="source",
            started="step 2/4: started encrypted copy {copy} of {source}",
        )

    def _ensure_copy(
        self,
        *,
        rds: RDSClient,
        source: Callable[[], str],
        copy_id: str,
        key_arn: str,
        where: str,
        started: str,
    ) -> DBSnapshotTypeDef:
        """The snapshot ``copy_id`` (a copy of ``source()`` under ``key_arn``), once ready;
        started only when it does not exist yet, so a retry waits for the same copy."""
        if calls.describe_snapshot(rds=rds, snapshot_id=copy_id) is None:
            source_id = source()
            if calls.start(
                call=lambda: rds.copy_db_snapshot(
                    SourceDBSnapshotIdentifier=source_id,
                    TargetDBSnapshotIdentifier=copy_id,
                    KmsKeyId=key_arn,
                    Tags=calls.rds_tags(self.tags),
                ),
                what=f"copying the snapshot into the {where} account",
            ):
                self.log(started.format(copy=copy_id, source=source_id))
        return calls.wait_snapshot(rds=rds, snapshot_id=copy_id, where=where, waits=self.waits)

    def ensure_shared(self) -> None:
        snap_id = self.ids.encrypted_copy
        with aws_call(f"sharing snapshot {snap_id}"):
            attrs = self.src_rds.describe_db_snapshot_attributes(DBSnapshotIdentifier=snap_id)[
                "DBSnapshotAttributesResult"
            ].get("DBSnapshotAttributes", [])
            restore = next((a for a in attrs if a.get("AttributeName") == "restore"), None)
            if restore and self.target.account_id in restore.get("AttributeValues", []):
                return
            self.src_rds.modify_db_snapshot_attribute(
                DBSnapshotIdentifier=snap_id,
                AttributeName="restore",
                ValuesToAdd=[self.target.account_id],
            )
        self.log(f"step 2/4: shared snapshot {snap_id} with account {self.target.account_id}")

    # step 3 -----------------------------------------------------------------
    def ensure_target_key(self) -> str:
        return kms.ensure_key(
            session=self.tgt,
            alias=self.ids.kms_alias,
            description=f"portal: RDS clones of account {self.ids.account}",
            tags=self.tags,
            log=self.log,
        )

    def ensure_target_copy(self, *, shared_arn: str, target_key_arn: str) -> DBSnapshotTypeDef:
        return self._ensure_copy(
            rds=self.tgt_rds,
            source=lambda: shared_arn,
            copy_id=self.ids.target_copy,
            key_arn=target_key_arn,
            where="target",
            started=f"step 3/4: started copy {{copy}} in account {self.target.account_id}",
        )

    def ensure_instance(self) -> None:
        if calls.describe_instance(rds=self.tgt_rds, instance_id=self.ids.instance) is not None:
            return
        request: RestoreDBInstanceFromDBSnapshotMessageTypeDef = {
            "DBInstanceIdentifier": self.ids.instance,
            "DBSnapshotIdentifier": self.ids.target_copy,
            "DBSubnetGroupName": self.target.subnet_group_name,
            "PubliclyAccessible": False,
            "MultiAZ": self.target.multi_az,
            "CopyTagsToSnapshot": True,
            "DeletionProtection": False,
            "Tags": calls.rds_tags(self.tags),
        }
        if self.target.security_group_ids:
            request["VpcSecurityGroupIds"] = list(self.target.security_group_ids)
        if self.target.instance_class:
            request["DBInstanceClass"] = self.target.instance_class
        if self.target.parameter_group_name:
            request["DBParameterGroupName"] = self.target.parameter_group_name
        if calls.start(
            call=lambda: self.tgt_rds.restore_db_instance_from_db_snapshot(**request),
            what="restoring the new instance",
        ):
            self.log(f"step 3/4: started restore of instance {self.ids.instance}")

    # step 4 -----------------------------------------------------------------
    def ensure_master_password(
        self, *, instance: DBInstanceTypeDef, add_secret: Callable[[str], None]
    ) -> str:
        """Store a new master password in the target's Secrets Manager, then apply it.

        The secret is written before the instance is changed: a crash in
        between leaves the password recoverable, and a retry applies the same
        one. Returns the secret's ARN.
        """
        username = str(instance.get("MasterUsername") or "")
        existing = aws.describe_secret(session=self.tgt, secret_id=self.ids.secret_name)
        password: str | None = None
        if existing is not None and not existing.get("DeletedDate"):
            try:
                password = _password_from_secret(
                    aws.get_secret(session=self.tgt, secret_id=str(existing["ARN"]))
                )
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
        secret_arn = aws.put_secret(
            session=self.tgt, name=self.ids.secret_name, value=secret_value, tags=self.tags
        )
        version = _current_version(session=self.tgt, secret_arn=secret_arn)
        self.log(f"step 4/4: stored master credentials in secret {secret_arn}")

        applied = {t.get("Key"): t.get("Value") for t in instance.get("TagList", [])}.get(
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
            retryable = aws.translate_error(exc=exc, what="").retryable
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


def _current_version(*, session: Session, secret_arn: str) -> str:
    meta = aws.describe_secret(session=session, secret_id=secret_arn)
    stages_by_version = meta.get("VersionIdsToStages", {}) if meta else {}
    for version, stages in stages_by_version.items():
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


def read_master_password(*, session: Session, secret_arn: str) -> str:
    """The clone's master password from its secret (for the scrub step)."""
    password = _password_from_secret(aws.get_secret(session=session, secret_id=secret_arn))
    if password is None:
        raise AwsError(f"secret {secret_arn} does not hold RDS master credentials")
    return password


# --------------------------------------------------------------------------- entry points


def _sessions(
    *, spec: SourceSpec, target: TargetSpec, session_name: str, settings: AwsSettings
) -> tuple[Session, Session]:
    src, _ = aws.assume_role(
        account_id=spec.account_id,
        session_name=session_name,
        role_name=spec.role_name,
        settings=settings,
        region=spec.region,
    )
    tgt, _ = aws.assume_role(
        account_id=target.account_id,
        session_name=session_name,
        role_name=target.role_name,
        settings=settings,
        region=target.region or spec.region,
    )
    return src, tgt


def _intermediate_ids(
    *, spec: SourceSpec, ids: CloneIds
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    # The automated snapshot belongs to production's backups, the golden snapshot to
    # every clone made from it: never one clone's to delete.
    if spec.use_automated_snapshot or spec.golden_snapshot:
        return (ids.encrypted_copy,), (ids.target_copy,)
    return (ids.source_snapshot, ids.encrypted_copy), (ids.target_copy,)


def clone_rds(
    *,
    spec: SourceSpec,
    target: TargetSpec,
    ids: CloneIds,
    log: LogFn,
    add_secret: Callable[[str], None],
    timeout_s: float = 4 * 3600.0,
    poll_s: float = 30.0,
    settings: AwsSettings | None = None,
) -> CloneResult:
    """Clone ``spec``'s instance into ``target`` as ``ids.instance``; see this module's doc.

    Raises AwsError (``retryable`` says whether running it again can help).
    """
    s = settings if settings is not None else AwsSettings.from_settings()
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
    src, tgt = _sessions(
        spec=spec, target=target, session_name=f"portal-{DRIVER}-{ids.run_id}", settings=s
    )
    run = _Clone(
        spec=spec,
        target=target,
        ids=ids,
        log=log,
        waits=calls.Waits.starting_now(timeout_s=timeout_s, poll_s=poll_s, log=log),
        src=src,
        tgt=tgt,
        src_rds=src.rds(),
        tgt_rds=tgt.rds(),
    )

    # Work backwards from the end state: whatever already exists is not redone.
    share_key_arn = ""
    target_key_arn = run.ensure_target_key()
    if calls.describe_instance(rds=run.tgt_rds, instance_id=ids.instance) is None:
        if calls.describe_snapshot(rds=run.tgt_rds, snapshot_id=ids.target_copy) is None:
            share_key_arn = run.ensure_share_key()
            shared = run.ensure_encrypted_copy(share_key_arn)
            run.ensure_shared()
            shared_arn = str(shared["DBSnapshotArn"])
        else:
            shared_arn = ""  # the target copy exists: it needs no source any more
        run.ensure_target_copy(shared_arn=shared_arn, target_key_arn=target_key_arn)
        run.ensure_instance()
    instance = calls.wait_instance(rds=run.tgt_rds, instance_id=ids.instance, waits=run.waits)
    if not share_key_arn:  # source steps skipped: report the key, read-only
        meta = kms.describe_key(kms=src.kms(), key_id=share_key_alias(target.account_id))
        share_key_arn = str(meta["Arn"]) if meta else ""

    secret_arn = run.ensure_master_password(instance=instance, add_secret=add_secret)
    instance = calls.wait_instance(rds=run.tgt_rds, instance_id=ids.instance, waits=run.waits)

    endpoint = instance.get("Endpoint") or {}
    source_ids, target_ids = _intermediate_ids(spec=spec, ids=ids)
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


def delete_clone(
    *,
    spec: SourceSpec,
    target: TargetSpec,
    instance_id: str | None,
    log: LogFn,
    source_snapshot_ids: Sequence[str] = (),
    target_snapshot_ids: Sequence[str] = (),
    secret_arn: str | None = None,
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
    s = settings if settings is not None else AwsSettings.from_settings()
    # Instances are only ever deleted in the target account: never in production.
    if spec.account_id == target.account_id:
        raise AwsError("source and target account are the same; refusing to delete")
    # In production, only snapshots the portal made (named portal-...) may go.
    foreign = [i for i in source_snapshot_ids if not i.lower().startswith(SNAPSHOT_PREFIX)]
    if foreign:
        raise AwsError(f"refusing to delete snapshots not made by the portal: {foreign}")
    src, tgt = _sessions(
        spec=spec, target=target, session_name=f"portal-{DRIVER}-cleanup-{run_id}", settings=s
    )
    tgt_rds = tgt.rds()
    if instance_id:
        calls.delete_instance(
            rds=tgt_rds,
            instance_id=instance_id,
            log=log,
            waits=calls.Waits.starting_now(timeout_s=timeout_s, poll_s=poll_s, log=log),
        )

    src_rds = src.rds()
    for snap_id in source_snapshot_ids:
        calls.delete_snapshot(rds=src_rds, snapshot_id=snap_id, account_id=spec.account_id, log=log)
    for snap_id in target_snapshot_ids:
        calls.delete_snapshot(
            rds=tgt_rds, snapshot_id=snap_id, account_id=target.account_id, log=log
        )
    if secret_arn and aws.delete_secret(session=tgt, secret_id=secret_arn):
        log(f"deleted secret {secret_arn}")
