"""Built-in hooks a blueprint names under hooks.pre / hooks.post. All are idempotent."""

from __future__ import annotations

from dataclasses import replace

from pipelines.clients import aws
from pipelines.stages.base import StageContext, StageError


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
    except aws.AwsError as exc:
        raise StageError(f"{name}: {exc.explanation}", retryable=exc.retryable) from exc
    raise StageError(f"unknown built-in hook {name!r}", retryable=False)
