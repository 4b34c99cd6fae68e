"""Stage `sweep` (teardown runs): remove what the dry run listed, and nothing else.

Runs after the database clones are deleted and before Terraform destroys the network
they sat in. Every item of ``teardown_checks``' list is read again and removed only if it
still carries the account's tag; what is gone already is skipped, so a retry is safe.
"""

from __future__ import annotations

from typing import Any

from pipelines import sweep
from pipelines.clients import aws
from pipelines.dbclone.logical import CloneError
from pipelines.stages.base import StageContext, StageError
from pipelines.stages.teardown_checks import source_session, target_session

# Instances before the snapshots and secrets they use, DNS records before their zone, keys
# last (others were encrypted by them).
ORDER = [
    sweep.Kind.PG_DATABASE,
    sweep.Kind.RDS_INSTANCE,
    sweep.Kind.DNS_RECORD,
    sweep.Kind.DNS_ZONE,
    sweep.Kind.RDS_SNAPSHOT,
    sweep.Kind.SECRET,
    sweep.Kind.KMS_KEY,
]


def execute(ctx: StageContext) -> dict[str, Any]:
    checks = ctx.previous.get("teardown_checks")
    if checks is None:
        raise StageError("sweep needs the dry run of a teardown_checks stage", retryable=False)
    items = [sweep.Item.from_dict(item) for item in checks.get("sweep", [])]
    if not items:
        ctx.log("the dry run listed nothing to remove")
        return {"deleted": []}
    sessions: dict[str, aws.Session] = {}
    sources = sweep.source_accounts(blueprint=ctx.blueprint, config=ctx.config)

    def session_for(where: str) -> aws.Session:
        if where not in sessions:
            if where == sweep.BUILDER:
                sessions[where] = aws.builder_session()
            elif where == ctx.account.cloud_account_id:
                sessions[where] = target_session(ctx)
            else:
                sessions[where] = source_session(
                    ctx, account_id=where, region=sources.get(where, "")
                )
        return sessions[where]

    deleted = []
    for item in sorted(items, key=lambda one: ORDER.index(sweep.Kind(one.kind))):
        if ctx.is_cancelled():
            raise StageError("cancelled during the sweep; a retry goes on where it stopped")
        try:
            if item.kind == sweep.Kind.PG_DATABASE:
                gone = sweep.drop_logical_clone(item=item, log=ctx.log)
            else:
                gone = sweep.delete_item(
                    session=session_for(item.where), item=item, name=ctx.account.name, log=ctx.log
                )
        except (aws.AwsError, CloneError) as exc:
            raise StageError(exc.message, retryable=exc.retryable) from None
        if gone:
            deleted.append(item.describe())
    ctx.log(f"swept {len(deleted)} of {len(items)} listed resource(s)")
    return {"deleted": deleted}
