"""Stage `drift_plan` of a drift-check run: does the live state still match the code?

``terraform plan -detailed-exitcode`` against the account's state, without the state
lock (a plan writes no state, so a drift check never holds up anyone's apply) and
without keeping the plan file: a drift check never applies. Its outputs are the plan
summary (``PlanSummary.to_dict``, addresses and actions only) and ``drifted``.
"""

from __future__ import annotations

from typing import Any

from pipelines.clients.terraform import TerraformError
from pipelines.stages.base import StageContext, log_with_outcome
from pipelines.stages.terraform_support import (
    backend_for,
    describe_backend,
    lay_out_terraform,
    log_plan,
    register_account_secrets,
    register_plan_secrets,
    stage_error,
    terraform_client,
)


def execute(ctx: StageContext) -> dict[str, Any]:
    # Terraform's output is written a burst at a time; the last lines with the outcome.
    log_with_outcome(ctx)
    register_account_secrets(ctx)
    backend = backend_for(ctx.account.name)
    directory = lay_out_terraform(ctx)
    client = terraform_client(ctx=ctx, directory=directory, backend=backend)
    try:
        summary, drifted = client.drift_plan(ctx.workdir / "drift.bin")
    except TerraformError as exc:
        raise stage_error(exc, backend=backend) from exc
    register_plan_secrets(ctx=ctx, plan=summary.raw)
    changed = [r for r in summary.resources if r.action != "no-op"]
    if drifted:
        outputs = summary.output_changes
        log_plan(
            ctx=ctx,
            summary=summary,
            head="drift",
            tail=f", outputs {', '.join(outputs)}" if outputs else "",
        )
    else:
        ctx.log(f"no drift: the live state matches the code ({len(summary.resources)} resources)")
    data = summary.to_dict()
    return {
        **data,
        "resources": [{"address": r.address, "action": r.action} for r in changed],
        "drifted": drifted,
        "backend": describe_backend(backend),
    }
