"""Stage `render`: the blueprint's Terraform for this account, stored with the run."""

from __future__ import annotations

from typing import Any

from pipelines.blueprints import Blueprint
from pipelines.rendering import RenderError, render_blueprint
from pipelines.stages.base import StageContext, StageError, log_with_outcome

TERRAFORM_PREFIX = "terraform/"


def template_context(
    blueprint: Blueprint,
    config: dict[str, Any],
    *,
    account_name: str,
    purpose: str,
    cloud_account_id: str = "",
) -> dict[str, Any]:
    """What templates see: config, account (name, purpose, id) and blueprint (name, version)."""
    return {
        "config": config,
        "account": {"name": account_name, "purpose": purpose, "id": cloud_account_id},
        "blueprint": {"name": blueprint.name, "version": blueprint.version},
    }


def execute(ctx: StageContext) -> dict[str, Any]:
    # Milliseconds of work: its lines go out with the outcome.
    log_with_outcome(ctx)
    out_dir = ctx.workdir / "terraform"
    try:
        context = template_context(
            ctx.blueprint,
            ctx.config,
            account_name=ctx.account.name,
            purpose=ctx.account.purpose,
            cloud_account_id=ctx.account.cloud_account_id,
        )
        result = render_blueprint(ctx.blueprint.terraform_dir, context, out_dir)
    except RenderError as exc:
        raise StageError(f"render failed: {exc}", retryable=False) from exc
    # Stored so that a worker on another machine lays out exactly these files.
    digests = ctx.artifacts.replace(
        prefix=TERRAFORM_PREFIX,
        files={TERRAFORM_PREFIX + path: data for path, data in result.files.items()},
    )
    manifest = []
    for path in result.files:
        digest = digests[TERRAFORM_PREFIX + path]
        manifest.append({"path": path, "sha256": digest})
        ctx.log(f"{digest}  {path}")
    ctx.log(f"rendered {len(manifest)} files from {ctx.blueprint.name} {ctx.blueprint.version}")
    return {
        "manifest": manifest,
        "files": len(manifest),
        "blueprint_version": ctx.blueprint.version,
    }
