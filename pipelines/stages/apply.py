"""Stage `apply`: apply exactly the saved plan that was approved, then record the outputs.

The plan file comes from the run's stored artifacts (any worker, any machine) and must
have the sha256 the plan stage reported and the approval covered. A stale plan (the state
moved since) fails with ``retry_from="plan"``: a retry plans again and asks again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from pipelines.clients.terraform import TerraformError
from pipelines.parity import resources_from_module
from pipelines.stages.base import StageContext, StageError, log_with_outcome
from pipelines.stages.terraform_support import (
    LOCK_ARTIFACT,
    LOCK_FILE,
    PLAN_PREFIX,
    backend_for,
    lay_out_terraform,
    register_account_secrets,
    register_plan_secrets,
    register_secret_value,
    stage_error,
    terraform_client,
)


def execute(ctx: StageContext) -> dict[str, Any]:
    # Terraform's output is written a burst at a time; the last lines with the outcome.
    log_with_outcome(ctx)
    plan = ctx.previous.get("plan")
    if plan and plan.get("empty_state"):
        ctx.log("the destroy plan found an empty Terraform state: nothing to apply")
        ctx.records.record(outputs={}, resources=[])
        return {"applied_plan_sha256": "", "outputs": [], "sensitive_outputs": []}
    if not plan or not plan.get("plan_sha256") or not plan.get("plan_artifact"):
        raise StageError(
            "apply needs the outputs of a plan stage earlier in the run", retryable=False
        )
    expected = str(plan["plan_sha256"])
    _check_approval(ctx=ctx, plan_sha256=expected)
    # The plan and the provider lock file the plan stage stored, in one query.
    stored = ctx.artifacts.read(PLAN_PREFIX)
    data = _stored_plan(stored=stored, name=str(plan["plan_artifact"]))
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise StageError(
            f"the stored plan file has sha256 {actual[:12]}, not the {expected[:12]} that was "
            "planned and approved; retry to plan again",
            retryable=True,
            retry_from="plan",
        )
    ctx.log(f"plan {plan['plan_artifact']}: sha256 {actual} matches the approved plan")

    register_account_secrets(ctx)
    backend = backend_for(ctx.account.name)
    directory = lay_out_terraform(ctx)
    lock = stored.get(LOCK_ARTIFACT)
    if lock is not None:
        # The providers the plan was made with; init must pick the very same ones.
        (directory / LOCK_FILE).write_bytes(lock)
    plan_file = ctx.workdir / "plan.bin"
    plan_file.write_bytes(data)
    client = terraform_client(ctx=ctx, directory=directory, backend=backend)
    try:
        # Not shown anywhere: read to know which values to redact before applying, and
        # which resources the account has once applied (parity compares them).
        shown = client.show_plan(plan_file).raw
        register_plan_secrets(ctx=ctx, plan=shown)
        client.apply(plan_file)
        outputs = client.output_json()
    except TerraformError as exc:
        if exc.kind == "cancelled" and "killed" in exc.explanation:
            ctx.log(f"{exc.explanation}: its state may still hold a lock (see force-unlock)")
        elif exc.kind == "cancelled":
            ctx.log(f"{exc.explanation}: Terraform stopped gracefully and saved its state")
        raise stage_error(exc, backend=backend) from exc

    recorded: dict[str, dict[str, Any]] = {}
    for name, output in sorted(outputs.items()):
        sensitive = bool(output.get("sensitive"))
        if sensitive:
            register_secret_value(ctx=ctx, value=output.get("value"))
        recorded[name] = {
            "value": output.get("value"),
            "sensitive": sensitive,
            "type": output.get("type"),
        }
    resources = resources_from_module((shown.get("planned_values") or {}).get("root_module"))
    ctx.records.record(outputs=recorded, resources=resources)
    sensitive_names = [name for name, output in recorded.items() if output["sensitive"]]
    ctx.log(
        f"recorded {len(recorded)} outputs on account {ctx.account.name} "
        f"({len(sensitive_names)} sensitive, hidden)"
    )
    return {
        "applied_plan_sha256": actual,
        "outputs": sorted(recorded),
        "sensitive_outputs": sensitive_names,
        "workdir": str(directory),
    }


def _check_approval(*, ctx: StageContext, plan_sha256: str) -> None:
    """When the run has an approval stage, it must have passed this very plan."""
    if "approve_plan" not in ctx.blueprint.stages:
        return
    approval = ctx.previous.get("approve_plan")
    if approval is None:
        raise StageError(
            "the plan has not been through approval; retry to plan again",
            retryable=True,
            retry_from="plan",
        )
    if approval.get("plan_sha256") != plan_sha256:
        raise StageError(
            "the approved plan is not the latest plan of this run; retry to plan again",
            retryable=True,
            retry_from="plan",
        )
    if approval.get("approval_required") and approval.get("decision") != "approved":
        raise StageError("the plan was not approved", retryable=False)


def _stored_plan(*, stored: Mapping[str, bytes], name: str) -> bytes:
    data = stored.get(name)
    if data is None:
        raise StageError(
            f"the saved plan {name} is not stored with this run; retry to plan again",
            retryable=True,
            retry_from="plan",
        )
    return data
