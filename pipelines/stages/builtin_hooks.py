"""Built-in hooks a blueprint names under hooks.pre / hooks.post. All are idempotent."""

from __future__ import annotations

from dataclasses import replace

from pipelines.clients import aws
from pipelines.dbclone.dns import session_for
from pipelines.stages.base import StageContext, StageError

# Where aws.private_zone records its zone: the outputs dns_cutover reads, as if
# Terraform had made the zone (a blueprint whose Terraform makes it outputs the same).
ZONE_ID_OUTPUT = "private_zone_id"
ZONE_NAME_OUTPUT = "private_zone_name"
PRIVATE_ZONE_HOOK = "aws.private_zone"


def run_builtin_hook(*, name: str, ctx: StageContext) -> dict[str, str]:
    try:
        if name == "aws.create_account":
            outputs = aws.hook_create_account(account_name=ctx.account.name, log=ctx.log)
            ctx.records.record(cloud_account_id=outputs["cloud_account_id"])
            # Later hooks of this stage see the new id too.
            ctx.account = replace(ctx.account, cloud_account_id=outputs["cloud_account_id"])
            return outputs
        if name == "aws.assume_role":
            if not ctx.account.cloud_account_id:
                raise StageError(
                    "aws.assume_role needs the account's cloud account id: "
                    "run aws.create_account first",
                    retryable=False,
                )
            return aws.hook_assume_role(cloud_account_id=ctx.account.cloud_account_id, log=ctx.log)
        if name == PRIVATE_ZONE_HOOK:
            return _private_zone(ctx)
    except aws.AwsError as exc:
        raise StageError(f"{name}: {exc.explanation}", retryable=exc.retryable) from exc
    raise StageError(f"unknown built-in hook {name!r}", retryable=False)


def _private_zone(ctx: StageContext) -> dict[str, str]:
    """The Route 53 private zone of the config's ``dns_zone`` (in the account's cloud
    account, else the builder's), made once and recorded as the account's outputs
    ``private_zone_id`` and ``private_zone_name``, where dns_cutover finds it."""
    zone = str(ctx.config.get("dns_zone") or "").rstrip(".")
    if not zone:
        raise StageError(
            "aws.private_zone needs the account's config to have a dns_zone", retryable=False
        )
    zone_id = aws.ensure_private_zone(
        session=session_for(ctx),
        name=zone,
        caller_reference=aws.private_zone_reference(account=ctx.account.name, zone=zone),
        log=ctx.log,
    )
    recorded = {
        ZONE_ID_OUTPUT: {"value": zone_id, "sensitive": False, "type": "string"},
        ZONE_NAME_OUTPUT: {"value": zone, "sensitive": False, "type": "string"},
    }
    ctx.records.record(outputs={**ctx.account.outputs, **recorded})
    ctx.account = replace(ctx.account, outputs={**ctx.account.outputs, **recorded})
    return {ZONE_ID_OUTPUT: zone_id, ZONE_NAME_OUTPUT: zone}
