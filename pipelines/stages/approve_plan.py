"""Stage `approve_plan`: wait for a human when the blueprint's approval policy asks for one.

``approval.plan`` in blueprint.yaml: ``always``, ``on_destroy`` (the default: any destroy
or replace) or ``never``. Waiting means raising ``StageWaiting``; the engine parks the
stage and ``services.decide_stage`` records who approved or rejected, when, and why.
"""

from __future__ import annotations

from typing import Any

from pipelines.clients.terraform import PlanSummary
from pipelines.models import RunKind, Trigger
from pipelines.selectors import plan_summary_from
from pipelines.stages.base import StageContext, StageError, StageWaiting, log_with_outcome

NO_CHANGES = PlanSummary(add=0, change=0, replace=0, destroy=0, resources=[], output_changes=[])
SUMMARY_KEYS = (
    "add",
    "change",
    "replace",
    "destroy",
    "has_changes",
    "destroy_plan",
    "resources",
    "unchanged",
    "output_changes",
    "plan_sha256",
)


def approval_needed(
    *, mode: str, plan: PlanSummary, expiry_teardown: bool = False, swept: int = 0
) -> tuple[bool, str]:
    """Whether this plan needs a human, and why (one line for the stage's outputs).

    ``swept``: what a teardown removes besides the plan (its dry run's list)."""
    if expiry_teardown:
        # The policy's TTL, approved with the request, already decided this destroy.
        return False, "the account expired: its teardown was approved with its expiry date"
    destructive = plan.destroy + plan.replace + swept
    if mode == "always":
        return True, "the blueprint asks for approval of every plan (approval.plan: always)"
    if mode == "never":
        return False, "the blueprint never asks for plan approval (approval.plan: never)"
    if destructive:
        return True, (
            f"the plan destroys or replaces {destructive} resource(s) (approval.plan: on_destroy)"
        )
    return False, "the plan destroys and replaces nothing (approval.plan: on_destroy)"


def execute(ctx: StageContext) -> dict[str, Any]:
    plan = ctx.previous.get("plan")
    if not plan or "plan_sha256" not in plan:
        raise StageError(
            "approve_plan needs the outputs of a plan stage earlier in the run", retryable=False
        )
    mode = ctx.blueprint.approval_plan
    expiry_teardown = ctx.run_kind == RunKind.TEARDOWN and ctx.trigger == Trigger.EXPIRED
    # A teardown's approver sees what its sweep removes (the dry run), not just the plan.
    sweep = list(ctx.previous.get("teardown_checks", {}).get("sweep_list", []))
    # The plan stage's outputs read as the one plan summary type (counts missing: 0).
    counts = plan_summary_from(plan) or NO_CHANGES
    needed, reason = approval_needed(
        mode=mode, plan=counts, expiry_teardown=expiry_teardown, swept=len(sweep)
    )
    if ctx.approval_reason and plan.get("has_changes", True):
        # The workflow's word (an update the purpose's policy does not auto-approve).
        reason = f"{ctx.approval_reason}; {reason}" if needed else ctx.approval_reason
        needed = True
    summary = {key: plan[key] for key in SUMMARY_KEYS if key in plan}
    outputs = {**summary, "approval_mode": mode, "approval_required": needed, "reason": reason}
    if sweep:
        outputs["sweep"] = sweep
    log_with_outcome(ctx)  # no program runs here: the lines go out with the outcome
    ctx.log(
        f"plan {plan['plan_sha256'][:12]}: {counts.add} to add, {counts.change} to change, "
        f"{counts.replace} to replace, {counts.destroy} to destroy"
    )
    if needed:
        ctx.log(f"approval required: {reason}")
        raise StageWaiting(outputs, timeout_hours=ctx.blueprint.approval_timeout_hours)
    ctx.log(f"approval not required: {reason}")
    return outputs
