"""Stage `teardown_checks` (first of every teardown run): the safety rails, then the dry run.

The rails that need no AWS call come first (``teardown_rails.check_offline``); then, for
an account with a cloud account, the admin role is assumed and STS, IAM and
Organizations say which account it really is (``check_live``), before anything is
listed. The dry run lists every resource the sweep would remove, found only by the
account's tag (``pipelines.sweep``), plus the DNS records the portal wrote and the
PostgreSQL clones whose role carries the clone driver's marker: the sweep
removes nothing that is not on this list. Read-only, so safe to run again.
"""

from __future__ import annotations

from typing import Any

from pipelines import sweep, teardown_rails
from pipelines.clients import aws
from pipelines.dbclone.endpoints import output_value
from pipelines.stages.base import StageContext, StageError
from pipelines.stages.builtin_hooks import PRIVATE_ZONE_HOOK, ZONE_ID_OUTPUT, ZONE_NAME_OUTPUT
from pipelines.teardown_rails import RailRefused, Subject
from portal.errors import PortalError

# In a production (source) account only these are ever removed: the clone's snapshots
# and the key shared for them (with its grants).
SOURCE_KINDS = frozenset({sweep.Kind.RDS_SNAPSHOT, sweep.Kind.KMS_KEY})


def subject_of(ctx: StageContext) -> Subject:
    return Subject(
        name=ctx.account.name,
        purpose=ctx.account.purpose,
        protected=ctx.account.protected,
        cloud_account_id=ctx.account.cloud_account_id,
        uses_aws=teardown_rails.uses_aws(
            cloud_account_id=ctx.account.cloud_account_id, blueprint=ctx.blueprint
        ),
    )


def target_session(ctx: StageContext) -> aws.Session:
    """The account's own cloud account, checked by every live rail (StageError if one fails)."""
    subject = subject_of(ctx)
    session, arn = aws.assume_role(
        account_id=subject.cloud_account_id, session_name=f"portal-teardown-{ctx.run_id}"
    )
    ctx.log(f"assumed {arn}")
    try:
        teardown_rails.check_live(
            subject=subject,
            live_account_id=aws.caller_account_id(session),
            aliases=aws.account_aliases(session),
            org_account=aws.organization_account(account_id=subject.cloud_account_id),
            log=ctx.log,
        )
    except RailRefused as exc:
        raise StageError(str(exc), retryable=False) from None
    return session


def source_session(ctx: StageContext, *, account_id: str, region: str) -> aws.Session:
    session, _ = aws.assume_role(
        account_id=account_id,
        session_name=f"portal-teardown-src-{ctx.run_id}",
        region=region or None,
    )
    return session


def execute(ctx: StageContext) -> dict[str, Any]:
    try:
        teardown_rails.check_offline(
            subject_of(ctx), log=ctx.log, aws_settings=aws.AwsSettings.from_settings()
        )
    except RailRefused as exc:
        raise StageError(str(exc), retryable=False) from None
    try:
        items = _dry_run(ctx)
    except aws.AwsError as exc:
        raise StageError(exc.explanation, retryable=exc.retryable) from None
    ctx.log(f"dry run: the sweep would remove {len(items)} resource(s) tagged for this account")
    for item in items:
        ctx.log(f"  would remove {item.describe()}")
    return {
        "rails": "passed",
        "sweep": [item.as_dict() for item in items],
        "sweep_list": [item.describe() for item in items],
    }


def _dry_run(ctx: StageContext) -> list[sweep.Item]:
    """Everything the sweep would remove, in the account and in its production sources."""
    items: list[sweep.Item] = []
    cloud_id = ctx.account.cloud_account_id
    if cloud_id:
        session = target_session(ctx)
        items += sweep.find_tagged(session=session, where=cloud_id, name=ctx.account.name)
        items += _dns(ctx, session=session, where=cloud_id)
    elif _hook_zone(ctx) or _dns_records(ctx, where=sweep.BUILDER):
        # The hook made the zone, and dns_cutover wrote into it, in the builder's account.
        items += _dns(ctx, session=aws.builder_session(), where=sweep.BUILDER)
    else:
        ctx.log("no cloud account on record: nothing of this account to sweep in AWS")
    for source_id, region in sweep.source_accounts(
        blueprint=ctx.blueprint, config=ctx.config
    ).items():
        if source_id == cloud_id:
            continue
        session = source_session(ctx, account_id=source_id, region=region)
        found = sweep.find_tagged(session=session, where=source_id, name=ctx.account.name)
        items += [item for item in found if item.kind in SOURCE_KINDS]
    try:
        items += sweep.find_logical_clones(blueprint=ctx.blueprint, name=ctx.account.name)
    except PortalError as exc:
        raise StageError(f"listing the PostgreSQL clones: {exc.message}") from None
    return items


def _dns_records(ctx: StageContext, *, where: str) -> list[sweep.Item]:
    return sweep.dns_records(
        endpoint_records=sweep.clone_endpoints(ctx.records.endpoints()),
        zone_id=output_value(ctx=ctx, name=ZONE_ID_OUTPUT),
        where=where,
    )


def _hook_zone(ctx: StageContext) -> str:
    """The zone the ``aws.private_zone`` hook made (or may have made, in a run that
    crashed before recording it) for the account, else ''."""
    hooks = ctx.blueprint.hooks
    recorded = output_value(ctx=ctx, name=ZONE_NAME_OUTPUT)
    if PRIVATE_ZONE_HOOK not in (*hooks.pre, *hooks.post) and not recorded:
        return ""
    return str(recorded or ctx.config.get("dns_zone") or "").rstrip(".")


def _dns(ctx: StageContext, *, session: aws.Session, where: str) -> list[sweep.Item]:
    """The portal's DNS records of the account's databases, and the hook's private zone
    (deleted after them)."""
    zone = sweep.private_zones(
        session=session, where=where, account=ctx.account.name, zone=_hook_zone(ctx)
    )
    return _dns_records(ctx, where=where) + zone
