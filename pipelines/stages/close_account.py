"""Stage `close_account` (teardown runs of blueprints with ``teardown.close_account``).

Organizations CloseAccount, after the live rails are checked once more. AWS closes at
most 10 % of an organization's accounts per 30 days: a close refused by that quota
marks the account for a later close (``close_pending``, tried again by a daily task)
and the teardown still succeeds, saying so.
"""

from __future__ import annotations

from typing import Any

from pipelines.clients import aws
from pipelines.stages.base import StageContext, StageError
from pipelines.stages.teardown_checks import target_session


def execute(ctx: StageContext) -> dict[str, Any]:
    if not ctx.blueprint.close_account:
        ctx.log("the blueprint does not close cloud accounts (teardown.close_account)")
        return {"closed": False}
    cloud_id = ctx.account.cloud_account_id
    if not cloud_id:
        ctx.log("no cloud account on record: nothing to close")
        return {"closed": False}
    try:
        target_session(ctx)  # the live rails once more, before the one call not to be undone
        aws.close_account(account_id=cloud_id)
    except aws.AwsError as exc:
        if exc.code == "ACCOUNT_ALREADY_CLOSED":
            ctx.log(exc.explanation)
            ctx.records.record(close_pending=False)
            return {"closed": True}
        if exc.code == aws.CLOSE_QUOTA_REASON:
            ctx.records.record(close_pending=True)
            ctx.log(f"{exc.explanation}; the account is marked for a later close")
            return {"closed": False, "close_pending": True, "reason": exc.explanation}
        raise StageError(exc.explanation, retryable=exc.retryable) from None
    ctx.records.record(close_pending=False)
    ctx.log(f"AWS account {cloud_id} closed (Organizations CloseAccount)")
    return {"closed": True}
