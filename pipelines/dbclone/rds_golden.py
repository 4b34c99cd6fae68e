"""Masked golden snapshots for RDS: production's data scrubbed once, in a preparation account.

1. Production's instance is snapshotted and restored, with the usual flow of
   ``rds.clone_rds``, into the data-preparation account (the builder account or
   ``PORTAL_RDS_PREP_ACCOUNT_ID``): never into a sandbox account.
2. The restored instance is scrubbed there (``scrub``: the blueprint's scrub SQL).
3. Only then it is snapshotted: the masked golden snapshot, tagged
   ``portal:golden = masked`` when it is made. The preparation instance, its raw
   snapshot copy, production's intermediate snapshots and the master secret are
   deleted.
4. Target accounts clone from the golden snapshot (``SourceSpec(golden_snapshot=...)``
   with the preparation account as the source): it is copied under a key shared with
   the target, shared, copied and restored there, with a new master password. A
   snapshot without the tag is refused, so raw data is never shared with a sandbox.

Every step looks before it creates (names from the build number), so a retry after a
crash continues; a failed scrub leaves no golden snapshot. No Django here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from pipelines.clients import aws
from pipelines.clients.aws import AwsError, AwsSettings, LogFn, aws_call
from pipelines.dbclone import rds

GOLDEN_ACCOUNT = "golden"


@dataclass(frozen=True)
class GoldenSnapshot:
    account_id: str  # the preparation account, which owns it
    region: str
    snapshot_id: str
    snapshot_arn: str
    instance_id: str  # the production instance it was taken from
    scrubbed: tuple[str, ...] = ()

    def source(self, *, role_name: str | None = None) -> rds.SourceSpec:
        """What a target clone names as its source."""
        return rds.SourceSpec(
            account_id=self.account_id,
            region=self.region,
            instance_id=self.instance_id,
            role_name=role_name,
            golden_snapshot=self.snapshot_id,
        )


def golden_identifiers(*, source: rds.SourceSpec, build: int | str) -> rds.CloneIds:
    """Names of one build: the preparation instance and the snapshots on the way."""
    return rds.clone_identifiers(
        account=f"{GOLDEN_ACCOUNT}-{source.account_id}", service=source.instance_id, run_id=build
    )


def golden_snapshot_id(ids: rds.CloneIds) -> str:
    return f"{rds.SNAPSHOT_PREFIX}{ids.instance}-masked"


def build_golden_snapshot(
    *,
    source: rds.SourceSpec,
    prep: rds.TargetSpec,
    build: int | str,
    scrub: Callable[[rds.CloneResult], list[str]],
    log: LogFn,
    add_secret: Callable[[str], None],
    timeout_s: float = 4 * 3600.0,
    poll_s: float = 30.0,
    settings: AwsSettings | None = None,
) -> GoldenSnapshot:
    """Restore production in ``prep``, scrub it (``scrub`` gets the restored instance and
    returns the files it ran), snapshot it, clean up; the masked golden snapshot."""
    s = settings if settings is not None else AwsSettings.from_settings()
    if prep.account_id == source.account_id:
        raise AwsError("the preparation account must not be production's", retryable=False)
    ids = golden_identifiers(source=source, build=build)
    masked_id = golden_snapshot_id(ids)
    prep_session, _ = aws.assume_role(
        account_id=prep.account_id,
        session_name=f"portal-golden-{ids.run_id}",
        role_name=prep.role_name,
        settings=s,
        region=source.region,
    )
    prep_rds = prep_session.rds()
    waits = rds.Waits.starting_now(timeout_s=timeout_s, poll_s=poll_s, log=log)
    scrubbed: list[str] = []
    if rds.describe_snapshot(rds=prep_rds, snapshot_id=masked_id) is None:
        clone = rds.clone_rds(
            spec=replace(source, golden_snapshot=None),
            target=prep,
            ids=ids,
            log=log,
            add_secret=add_secret,
            timeout_s=timeout_s,
            poll_s=poll_s,
            settings=s,
        )
        scrubbed = scrub(clone)  # raises: no golden snapshot, the instance stays for a retry
        log(f"golden: {clone.instance_id} scrubbed in account {prep.account_id}")
        # Made only now, after the scrub: the tag says so from its first moment.
        if rds.start(
            call=lambda: prep_rds.create_db_snapshot(
                DBInstanceIdentifier=ids.instance,
                DBSnapshotIdentifier=masked_id,
                Tags=rds.rds_tags({**ids.tags(), rds.GOLDEN_TAG: rds.GOLDEN_MASKED}),
            ),
            what="snapshotting the scrubbed instance",
        ):
            log(f"golden: started masked snapshot {masked_id}")
    snap = rds.wait_snapshot(rds=prep_rds, snapshot_id=masked_id, where="preparation", waits=waits)
    rds.checked_golden(rds=prep_rds, snapshot_id=masked_id)

    # Nothing raw stays anywhere: production's snapshots for this build, the
    # preparation account's raw copy, its instance and master secret.
    secret = aws.describe_secret(session=prep_session, secret_id=ids.secret_name)
    rds.delete_clone(
        spec=source,
        target=prep,
        instance_id=ids.instance,
        log=log,
        source_snapshot_ids=(ids.encrypted_copy,)
        if source.use_automated_snapshot
        else (ids.source_snapshot, ids.encrypted_copy),
        target_snapshot_ids=(ids.target_copy,),
        secret_arn=str(secret["ARN"]) if secret and not secret.get("DeletedDate") else None,
        timeout_s=timeout_s,
        poll_s=poll_s,
        settings=s,
        run_id=f"golden-{ids.run_id}",
    )
    log(f"golden snapshot {masked_id} ready in account {prep.account_id}")
    return GoldenSnapshot(
        account_id=prep.account_id,
        region=source.region,
        snapshot_id=masked_id,
        snapshot_arn=str(snap["DBSnapshotArn"]),
        instance_id=source.instance_id,
        scrubbed=tuple(scrubbed),
    )


def delete_golden_snapshot(
    *, golden: GoldenSnapshot, log: LogFn, settings: AwsSettings | None = None
) -> None:
    """Delete a golden snapshot (clones made from it keep their own copies)."""
    s = settings if settings is not None else AwsSettings.from_settings()
    session, _ = aws.assume_role(
        account_id=golden.account_id,
        session_name="portal-golden-cleanup",
        settings=s,
        region=golden.region,
    )
    with aws_call(f"deleting golden snapshot {golden.snapshot_id}"):
        if rds.describe_snapshot(rds=session.rds(), snapshot_id=golden.snapshot_id) is None:
            return
        session.rds().delete_db_snapshot(DBSnapshotIdentifier=golden.snapshot_id)
    log(f"deleted golden snapshot {golden.snapshot_id}")
