"""Stage `plan`: init, ``plan -out``, ``show -json``; the saved plan is stored with the run.

Outputs are a summary fit for approvers (counts, each changed resource and its action,
the plan file's sha256). The plan JSON itself is never put in outputs or logs: it holds
sensitive values in clear.
"""

from __future__ import annotations

from typing import Any

from pipelines.clients.terraform import Backend, TerraformError
from pipelines.models import RunKind
from pipelines.stages.base import StageContext, log_with_outcome
from pipelines.stages.plan_parity import check_plan
from pipelines.stages.terraform_support import (
    LOCK_ARTIFACT,
    LOCK_FILE,
    PLAN_ARTIFACT,
    PLAN_PREFIX,
    backend_for,
    describe_backend,
    lay_out_terraform,
    log_plan,
    register_account_secrets,
    register_plan_secrets,
    stage_error,
    state_resource_count,
    terraform_client,
)

# A destroy plan for these run kinds (teardown), a normal plan for every other one.
DESTROY_RUN_KINDS = frozenset({RunKind.TEARDOWN})


def execute(ctx: StageContext) -> dict[str, Any]:
    # Terraform's output is written a burst at a time; the last lines with the outcome.
    log_with_outcome(ctx)
    register_account_secrets(ctx)
    backend = backend_for(ctx.account.name)
    if ctx.run_kind in DESTROY_RUN_KINDS and state_resource_count(backend) == 0:
        # A teardown destroys what the state holds; with nothing there (a provision that
        # failed before apply) Terraform is not even initialised, so no provider is needed.
        ctx.log("the Terraform state holds no resources: nothing to destroy")
        return empty_destroy_plan(backend)
    directory = lay_out_terraform(ctx)
    client = terraform_client(ctx=ctx, directory=directory, backend=backend)
    plan_file = ctx.workdir / "plan.bin"
    destroy = ctx.run_kind in DESTROY_RUN_KINDS
    try:
        summary = client.plan(plan_file, destroy=destroy)
    except TerraformError as exc:
        raise stage_error(exc, backend=backend) from exc
    register_plan_secrets(ctx=ctx, plan=summary.raw)

    # A new plan replaces whatever an earlier attempt stored: apply takes only this one.
    data = plan_file.read_bytes()
    lock_file = directory / LOCK_FILE
    lock = {LOCK_ARTIFACT: lock_file.read_bytes()} if lock_file.is_file() else {}
    digest = ctx.artifacts.replace(prefix=PLAN_PREFIX, files={PLAN_ARTIFACT: data, **lock})[
        PLAN_ARTIFACT
    ]

    unchanged = sum(1 for r in summary.resources if r.action == "no-op")
    changed = log_plan(ctx=ctx, summary=summary, head="plan", tail=f" ({unchanged} unchanged)")
    ctx.log(f"saved plan {PLAN_ARTIFACT}: sha256 {digest}, {len(data)} bytes")
    # A teardown is not held to production's shape.
    checked = None if destroy else check_plan(ctx=ctx, plan=summary.raw)
    return {
        **({"parity": checked} if checked is not None else {}),
        "add": summary.add,
        "change": summary.change,
        "replace": summary.replace,
        "destroy": summary.destroy,
        "has_changes": summary.has_changes,
        "destroy_plan": destroy,
        "resources": [{"address": r.address, "action": r.action} for r in changed],
        "unchanged": unchanged,
        "output_changes": list(summary.output_changes),
        "plan_artifact": PLAN_ARTIFACT,
        "plan_sha256": digest,
        "plan_size": len(data),
        "backend": describe_backend(backend),
        # Where this stage worked: apply works elsewhere, from the stored files.
        "workdir": str(directory),
    }


def empty_destroy_plan(backend: Backend) -> dict[str, Any]:
    """The outputs of a destroy plan of an empty state: apply has nothing to do."""
    return {
        "add": 0,
        "change": 0,
        "replace": 0,
        "destroy": 0,
        "has_changes": False,
        "destroy_plan": True,
        "empty_state": True,
        "resources": [],
        "unchanged": 0,
        "output_changes": [],
        "plan_artifact": "",
        "plan_sha256": "",
        "plan_size": 0,
        "backend": describe_backend(backend),
    }
