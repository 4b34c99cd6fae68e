"""The RDS calls every step shares: describe, start a create/copy/restore that may
already exist (a retry), wait under one deadline for the whole clone, delete what may
already be gone. A failed snapshot is deleted so that a retry makes it again."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from pipelines.clients import aws
from pipelines.clients.aws import AwsError, LogFn, aws_call, error_code
from pipelines.dbclone.rds.names import GOLDEN_MASKED, GOLDEN_TAG

if TYPE_CHECKING:
    from mypy_boto3_rds import RDSClient
    from mypy_boto3_rds.type_defs import DBInstanceTypeDef, DBSnapshotTypeDef, TagTypeDef

_SNAPSHOT_MISSING = frozenset({"DBSnapshotNotFound", "DBSnapshotNotFoundFault"})
_INSTANCE_MISSING = frozenset({"DBInstanceNotFound", "DBInstanceNotFoundFault"})
_ALREADY_EXISTS = frozenset(
    {
        "DBSnapshotAlreadyExists",
        "DBSnapshotAlreadyExistsFault",
        "DBInstanceAlreadyExists",
        "DBInstanceAlreadyExistsFault",
    }
)

T = TypeVar("T")


@dataclass(kw_only=True)
class Waits:
    """One deadline for the whole clone; each wait gets what is left."""

    deadline: float
    poll_s: float
    log: LogFn
    timeout_s: float
    _last: dict[str, str] = field(default_factory=dict)

    @classmethod
    def starting_now(cls, *, timeout_s: float, poll_s: float, log: LogFn) -> Waits:
        return cls(deadline=aws.clock() + timeout_s, poll_s=poll_s, log=log, timeout_s=timeout_s)

    def expired(self) -> bool:
        return aws.clock() >= self.deadline

    def timeout(self, *, what: str, state: str) -> AwsError:
        return AwsError(
            f"timed out after {int(self.timeout_s)} s waiting for {what} (status {state}); "
            "a retry continues from here",
            retryable=True,
            code="Timeout",
        )

    def progress(self, *, what: str, state: str) -> None:
        # Log status changes only, so long waits stay readable.
        if self._last.get(what) != state:
            self._last[what] = state
            self.log(f"{what}: {state}")

    def until(self, *, what: str, look: Callable[[], tuple[T | None, str]]) -> T:
        """Poll ``look`` (the awaited thing or None, and the state now) until it has the
        thing; past the deadline, a retryable timeout naming the last state."""
        while True:
            found, state = look()
            if found is not None:
                return found
            if self.expired():
                raise self.timeout(what=what, state=state)
            aws.sleep(self.poll_s)


def rds_tags(tags: Mapping[str, str]) -> list[TagTypeDef]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def describe_snapshot(*, rds: RDSClient, snapshot_id: str) -> DBSnapshotTypeDef | None:
    found = aws.unless_missing(
        call=lambda: rds.describe_db_snapshots(DBSnapshotIdentifier=snapshot_id)["DBSnapshots"],
        missing=_SNAPSHOT_MISSING,
        what=f"describing snapshot {snapshot_id}",
    )
    for snap in found or []:
        if str(snap["DBSnapshotIdentifier"]).lower() == snapshot_id.lower():
            return snap
    return None


def describe_instance(*, rds: RDSClient, instance_id: str) -> DBInstanceTypeDef | None:
    found = aws.unless_missing(
        call=lambda: rds.describe_db_instances(DBInstanceIdentifier=instance_id)["DBInstances"],
        missing=_INSTANCE_MISSING,
        what=f"describing instance {instance_id}",
    )
    return found[0] if found else None


_SNAPSHOT_FAILED = frozenset({"failed", "incompatible-restore", "incompatible-parameters"})


def wait_snapshot(
    *, rds: RDSClient, snapshot_id: str, where: str, waits: Waits
) -> DBSnapshotTypeDef:
    """Wait until the snapshot is available; a failed one is deleted so a retry redoes it."""
    what = f"snapshot {snapshot_id} ({where})"

    def look() -> tuple[DBSnapshotTypeDef | None, str]:
        snap = describe_snapshot(rds=rds, snapshot_id=snapshot_id)
        if snap is None:
            raise AwsError(f"{what} disappeared while waiting for it", retryable=True)
        state = str(snap.get("Status", ""))
        progress = snap.get("PercentProgress")
        waits.progress(what=what, state=f"{state} {progress}%" if progress is not None else state)
        if state in _SNAPSHOT_FAILED:
            with aws_call(f"deleting failed {what}"):
                rds.delete_db_snapshot(DBSnapshotIdentifier=snapshot_id)
            raise AwsError(
                f"{what} ended in status {state}; it was deleted so a retry makes it again",
                retryable=True,
            )
        return (snap if state == "available" else None), state

    return waits.until(what=what, look=look)


_INSTANCE_FAILED = frozenset(
    {
        "failed",
        "incompatible-restore",
        "incompatible-network",
        "incompatible-parameters",
        "incompatible-option-group",
        "inaccessible-encryption-credentials",
        "storage-full",
        "deleting",
    }
)


def wait_instance(*, rds: RDSClient, instance_id: str, waits: Waits) -> DBInstanceTypeDef:
    what = f"instance {instance_id}"

    def look() -> tuple[DBInstanceTypeDef | None, str]:
        inst = describe_instance(rds=rds, instance_id=instance_id)
        if inst is None:
            raise AwsError(f"{what} disappeared while waiting for it", retryable=True)
        state = str(inst.get("DBInstanceStatus", ""))
        waits.progress(what=what, state=state)
        if state in _INSTANCE_FAILED:
            raise AwsError(
                f"{what} is in status {state}; delete it (delete_clone) before retrying",
                retryable=False,
            )
        return (inst if state == "available" else None), state

    return waits.until(what=what, look=look)


def start(*, call: Callable[[], object], what: str) -> bool:
    """Start a create/copy/restore; False when its resource already exists (a retry)."""
    try:
        call()
        return True
    except ClientError as exc:
        if error_code(exc) in _ALREADY_EXISTS:
            return False
        raise aws.translate_error(exc=exc, what=what) from None
    except BotoCoreError as exc:
        raise aws.translate_error(exc=exc, what=what) from None


def checked_golden(*, rds: RDSClient, snapshot_id: str) -> str:
    """``snapshot_id`` if it is an available snapshot tagged masked (fail closed)."""
    snap = describe_snapshot(rds=rds, snapshot_id=snapshot_id)
    if snap is None or snap.get("Status") != "available":
        raise AwsError(f"golden snapshot {snapshot_id} is not available", retryable=True)
    with aws_call(f"reading the tags of snapshot {snapshot_id}"):
        tags = rds.list_tags_for_resource(ResourceName=str(snap["DBSnapshotArn"]))["TagList"]
    if {t.get("Key"): t.get("Value") for t in tags}.get(GOLDEN_TAG) != GOLDEN_MASKED:
        raise AwsError(
            f"snapshot {snapshot_id} is not a masked golden snapshot; refusing to share it",
            retryable=False,
        )
    return snapshot_id


def _delete(*, call: Callable[[], object], missing: frozenset[str], what: str) -> bool:
    """Run a delete call; False when the resource was already gone."""
    return aws.unless_missing(call=lambda: call() or True, missing=missing, what=what) is not None


def delete_snapshot(*, rds: RDSClient, snapshot_id: str, account_id: str, log: LogFn) -> None:
    what = f"snapshot {snapshot_id} (account {account_id})"
    if _delete(
        call=lambda: rds.delete_db_snapshot(DBSnapshotIdentifier=snapshot_id),
        missing=_SNAPSHOT_MISSING,
        what=f"deleting {what}",
    ):
        log(f"deleted {what}")


def delete_instance(*, rds: RDSClient, instance_id: str, log: LogFn, waits: Waits) -> None:
    """Delete the instance (no final snapshot) and wait until it is gone."""
    try:
        deleted = _delete(
            call=lambda: rds.delete_db_instance(
                DBInstanceIdentifier=instance_id,
                SkipFinalSnapshot=True,
                DeleteAutomatedBackups=True,
            ),
            missing=_INSTANCE_MISSING,
            what=f"deleting instance {instance_id}",
        )
        log(
            f"deleting instance {instance_id}"
            if deleted
            else f"instance {instance_id} already gone"
        )
    except AwsError as exc:
        # InvalidDBInstanceState: most likely already deleting; wait below.
        if exc.code not in {"InvalidDBInstanceState", "InvalidDBInstanceStateFault"}:
            raise

    def gone() -> tuple[bool | None, str]:
        inst = describe_instance(rds=rds, instance_id=instance_id)
        if inst is None:
            return True, "deleted"
        waits.progress(what=f"instance {instance_id}", state=str(inst.get("DBInstanceStatus")))
        return None, "deleting"

    waits.until(what=f"deletion of instance {instance_id}", look=gone)
